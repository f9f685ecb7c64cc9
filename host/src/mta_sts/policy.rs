//! MTA-STS's DNS record (RFC 8461 3.1), its policy file (3.2) and the policy's MX patterns
//! (4.1).

/// What a policy asks of senders (RFC 8461 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deliver only over TLS, validated, to MX hosts the policy names.
    Enforce,
    /// Deliver as without a policy, and report what enforcing would have refused.
    Testing,
    /// The domain withdrew its policy.
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// MX host patterns, lower case, without a trailing dot.
    pub mx: Vec<String>,
    /// Seconds a policy may be kept.
    pub max_age: u64,
}

/// RFC 8461 3.2: at most a year.
const MAX_AGE_LIMIT: u64 = 31_557_600;
/// MX patterns one policy may have (a policy is kept in memory for as long as it is valid).
const MAX_PATTERNS: usize = 100;

/// The `id` of a domain's `_mta-sts` TXT records: of the records that begin with
/// `v=STSv1`, exactly one must be there and valid, else the domain has no policy (3.1).
pub fn record_id(records: &[String]) -> Option<String> {
    let version =
        |r: &&String| r.split(';').next().map(|v| v.trim_matches([' ', '\t'])) == Some("v=STSv1");
    let mut ours = records.iter().filter(version);
    let (Some(record), None) = (ours.next(), ours.next()) else {
        return None;
    };
    let fields = record
        .split(';')
        .map(|f| f.trim_matches([' ', '\t']))
        .skip(1);
    let mut id = None;
    for field in fields.filter(|f| !f.is_empty()) {
        let (name, value) = field.split_once('=')?;
        let name_ok = name.len() <= 32
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        let value_ok = !value.is_empty()
            && value
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b';' && b != b'=');
        if !name_ok || !value_ok {
            return None;
        }
        if name == "id" && id.is_none() {
            if value.len() > 32 || !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return None;
            }
            id = Some(value.to_string());
        }
    }
    id
}

/// Parses a policy file: `key: value` lines ending in CRLF or LF; `version`, `mode` and
/// `max_age` once each (the first counts), one or more `mx` unless the mode is `none`;
/// unknown keys ignored (3.2).
pub fn parse(text: &str) -> Result<Policy, String> {
    let (mut version, mut mode, mut max_age) = (None, None, None);
    let mut mx = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches([' ', '\t']);
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("not a key: value line: {line:?}"));
        };
        let value = value.trim_start_matches([' ', '\t']);
        match key {
            "version" => drop(version.get_or_insert(value)),
            "mode" => drop(mode.get_or_insert(value)),
            "max_age" => drop(max_age.get_or_insert(value)),
            "mx" => mx.push(value.trim_end_matches('.').to_ascii_lowercase()),
            _ => {}
        }
    }
    if version != Some("STSv1") {
        return Err("version is not STSv1".into());
    }
    let mode = match mode {
        Some("enforce") => Mode::Enforce,
        Some("testing") => Mode::Testing,
        Some("none") => Mode::None,
        other => return Err(format!("mode {other:?} is not enforce, testing or none")),
    };
    let max_age = max_age
        .filter(|v| (1..=10).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or("max_age is not a number of seconds")?
        .min(MAX_AGE_LIMIT);
    if mode != Mode::None && mx.is_empty() {
        return Err("no mx patterns".into());
    }
    if mx.len() > MAX_PATTERNS {
        return Err(format!("more than {MAX_PATTERNS} mx patterns"));
    }
    if let Some(bad) = mx.iter().find(|p| !valid_pattern(p)) {
        return Err(format!("mx pattern {bad:?} is not a host name or *.domain"));
    }
    Ok(Policy { mode, mx, max_age })
}

fn valid_pattern(pattern: &str) -> bool {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Policy {
    /// Does an MX host's name match one of the patterns? `*.` stands for exactly one
    /// leftmost label (4.1); names compare without case and trailing dot.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(parent) => host
                    .split_once('.')
                    .is_some_and(|(first, rest)| !first.is_empty() && rest == parent),
                None => *pattern == host,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(records: &[&str]) -> Vec<String> {
        records.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn the_record_needs_exactly_one_valid_stsv1_record_with_an_id() {
        let id = |r: &[&str]| record_id(&texts(r));
        assert_eq!(
            id(&["v=STSv1; id=20160831085700Z;"]),
            Some("20160831085700Z".into())
        );
        assert_eq!(id(&["v=STSv1;id=abc", "v=spf1 -all"]), Some("abc".into()));
        assert_eq!(id(&["v=STSv1; ext=1; id=abc"]), Some("abc".into()));
        assert_eq!(id(&["v=STSv1; id=a", "v=STSv1; id=b"]), None);
        // A record of another version is not one of ours, so the valid one stands.
        assert_eq!(
            id(&["v=STSv10; id=x", "v=STSv1 ; id=abc"]),
            Some("abc".into())
        );
        assert_eq!(id(&["v=STSv1;"]), None);
        assert_eq!(id(&["v=STSv1; id=has-dash"]), None);
        assert_eq!(id(&["v=STSv1; id=abc; junk"]), None);
        assert_eq!(id(&["id=abc; v=STSv1"]), None);
        assert_eq!(id(&[&format!("v=STSv1; id={}", "a".repeat(33))]), None);
        assert_eq!(id(&[]), None);
    }

    #[test]
    fn a_policy_file_is_parsed_as_rfc_8461_writes_it() {
        let p = parse(
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.Example.NET.\r\nmax_age: 604800\r\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.mx, ["mail.example.com", "*.example.net"]);
        assert_eq!(p.max_age, 604800);
        // LF alone, unknown keys, a huge max_age cut to a year.
        let p =
            parse("version: STSv1\nmode: testing\nfuture: x\nmx: a.test\nmax_age: 9999999999\n");
        assert_eq!(p.unwrap().max_age, MAX_AGE_LIMIT);
        assert!(parse("version: STSv1\nmode: none\nmax_age: 1\n").is_ok());
        for bad in [
            "mode: enforce\nmx: a.test\nmax_age: 1\n",
            "version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n",
            "version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n",
            "version: STSv1\nmode: enforce\nmx: a.test\n",
            "version: STSv1\nmode: enforce\nmx: a.*.test\nmax_age: 1\n",
            "<html>not a policy</html>",
            &format!(
                "version: STSv1\nmode: enforce\nmax_age: 1\n{}",
                "mx: a.test\n".repeat(101)
            ),
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_wildcard_stands_for_one_label() {
        let p = parse(
            "version: STSv1\nmode: enforce\nmx: *.example.com\nmx: mx.other.test\nmax_age: 1\n",
        )
        .unwrap();
        assert!(p.allows("mx1.example.com"));
        assert!(p.allows("MX1.Example.COM."));
        assert!(p.allows("mx.other.test"));
        assert!(!p.allows("example.com"));
        assert!(!p.allows("a.b.example.com"));
        assert!(!p.allows("mx1.example.com.evil.test"));
        assert!(!p.allows("x.mx.other.test"));
    }
}
