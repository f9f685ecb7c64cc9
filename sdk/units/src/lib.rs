//! Sizes and durations as wasmtp's config and its plugins' configs write them, shared by the
//! host and the guest SDK so that `"25MiB"` means the same on both sides.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::time::Duration;

/// Why a size or duration was not understood; the message quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// No number where one was expected.
    #[error("{0:?}: expected a size such as \"10MiB\"")]
    NotASize(String),
    /// No number where one was expected.
    #[error("{0:?}: expected a duration such as \"30s\" or \"5m\"")]
    NotADuration(String),
    /// A size unit other than B, KiB, MiB, GiB.
    #[error("{input:?}: unknown unit {unit:?}")]
    SizeUnit {
        /// The whole input.
        input: String,
        /// The unit that was not understood.
        unit: String,
    },
    /// A duration unit other than ms, s, m, h, d.
    #[error("{input:?}: unknown unit {unit:?} (use ms, s, m, h, d)")]
    DurationUnit {
        /// The whole input.
        input: String,
        /// The unit that was not understood.
        unit: String,
    },
    /// More than fits in 64 bits.
    #[error("{0:?}: too large")]
    TooLarge(String),
}

/// Plugins' `init` reports errors as text.
impl From<UnitError> for String {
    fn from(e: UnitError) -> String {
        e.to_string()
    }
}

/// Splits `"25MiB"` into 25 and `"MiB"`.
fn number_and_unit(s: &str) -> Option<(u64, &str)> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    Some((num.parse().ok()?, unit))
}

/// Parses sizes such as `"10KiB"`, `"25MiB"` or `"1000"` (bytes).
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let (n, unit) = number_and_unit(s).ok_or_else(|| UnitError::NotASize(s.into()))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        u => {
            return Err(UnitError::SizeUnit {
                input: s.into(),
                unit: u.into(),
            });
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| UnitError::TooLarge(s.into()))
}

/// Parses durations such as `"30s"`, `"5m"`, `"1h"`, `"5d"` or `"200ms"`.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let (n, unit) = number_and_unit(s).ok_or_else(|| UnitError::NotADuration(s.into()))?;
    let secs = |mult: u64| {
        n.checked_mul(mult)
            .map(Duration::from_secs)
            .ok_or_else(|| UnitError::TooLarge(s.into()))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86400),
        u => Err(UnitError::DurationUnit {
            input: s.into(),
            unit: u.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10KiB"), Ok(10240));
        assert_eq!(parse_size("25MiB"), Ok(25 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("s").is_err());
    }
}
