//! The host capabilities a plugin may be granted beyond log and config: each one's config
//! name, how a component declares that it needs it, and the check at load that the config
//! grants what the component declares. What an instance holds for each grant is in
//! `grants`; a new capability is a variant here and a field there.

use serde::Deserialize;
use std::fmt;

/// A host capability, named in `[[plugin]] capabilities`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// DNS lookups through the server's resolver (`wasmtp:plugin/dns`).
    Dns,
    /// The plugin's key-value namespace (`wasmtp:plugin/kv`).
    Kv,
    /// Outgoing HTTP to the plugin's `http_allow` URLs (`wasi:http/outgoing-handler`).
    Http,
}

impl Capability {
    pub const ALL: [Capability; 3] = [Capability::Dns, Capability::Kv, Capability::Http];

    pub fn name(self) -> &'static str {
        match self {
            Capability::Dns => "dns",
            Capability::Kv => "kv",
            Capability::Http => "http",
        }
    }

    pub fn from_name(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The custom section in which a component lists the capabilities it needs, comma-separated,
/// or `none` (the SDK's `export!(P, capabilities = [..])` writes it; `wasmtp_sdk::CAPABILITIES_SECTION`).
pub const SECTION: &str = "wasmtp:capabilities";

/// Why a component's declaration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DeclarationError {
    #[error("declares an unknown capability {0:?} (known: dns, kv, http)")]
    Unknown(String),
    #[error("its {SECTION} section is not UTF-8")]
    NotUtf8,
    #[error("not a WebAssembly binary: {0}")]
    Binary(#[from] wasmparser::BinaryReaderError),
}

/// The capabilities a component declares, from its `wasmtp:capabilities` section at the top
/// level or in one of its core modules (where a Rust `link_section` lands); `None` when it
/// declares nothing (a component built without the declaration: a 0.2.0 plugin, or one
/// from a toolchain that cannot write custom sections).
pub fn declared(wasm: &[u8]) -> Result<Option<Vec<Capability>>, DeclarationError> {
    let mut found: Option<Vec<Capability>> = None;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let wasmparser::Payload::CustomSection(section) = payload? else {
            continue;
        };
        if section.name() != SECTION {
            continue;
        }
        let text = std::str::from_utf8(section.data()).map_err(|_| DeclarationError::NotUtf8)?;
        let list = found.get_or_insert_with(Vec::new);
        let names = text.split(',').map(str::trim);
        for name in names.filter(|n| !n.is_empty() && *n != "none") {
            let c = Capability::from_name(name)
                .ok_or_else(|| DeclarationError::Unknown(name.to_string()))?;
            if !list.contains(&c) {
                list.push(c);
            }
        }
    }
    Ok(found)
}

/// What `declared` asks for that `granted` does not give, in declaration order.
pub fn missing(declared: &[Capability], granted: &[Capability]) -> Vec<Capability> {
    declared
        .iter()
        .copied()
        .filter(|c| !granted.contains(c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module with one custom section, in the binary format.
    fn module_with(name: &str, data: &[u8]) -> Vec<u8> {
        let mut payload = vec![name.len() as u8];
        payload.extend_from_slice(name.as_bytes());
        payload.extend_from_slice(data);
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        wasm.push(0);
        wasm.push(payload.len() as u8);
        wasm.extend(payload);
        wasm
    }

    #[test]
    fn reads_the_declaration() {
        let wasm = module_with(SECTION, b"dns, kv,http,kv");
        let got = declared(&wasm).unwrap().unwrap();
        assert_eq!(got, [Capability::Dns, Capability::Kv, Capability::Http]);
        assert_eq!(declared(&module_with(SECTION, b"")).unwrap(), Some(vec![]));
        assert_eq!(
            declared(&module_with(SECTION, b"none")).unwrap(),
            Some(vec![])
        );
        assert_eq!(declared(&module_with("other", b"dns")).unwrap(), None);
        assert!(matches!(
            declared(&module_with(SECTION, b"dns,files")),
            Err(DeclarationError::Unknown(n)) if n == "files"
        ));
    }

    #[test]
    fn missing_is_what_is_declared_and_not_granted() {
        use Capability::*;
        assert_eq!(missing(&[Dns, Kv, Http], &[Kv]), [Dns, Http]);
        assert!(missing(&[Kv], &[Kv, Dns]).is_empty());
    }

    #[test]
    fn names_round_trip() {
        for c in Capability::ALL {
            assert_eq!(Capability::from_name(c.name()), Some(c));
        }
    }
}
