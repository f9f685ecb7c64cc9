//! xtext (RFC 3461 4) and the MAIL/RCPT parameters.
//!
//! Checks (on UTF-8 input): `is_xtext` agrees with a direct reading of the RFC grammar;
//! `decode_xtext` gives `Some` exactly for xtext that decodes to printable US-ASCII, never
//! longer than its input, and inverts a plain xtext encoder; MAIL and RCPT parameters that
//! parse, rendered with `to_wire()` and joined by spaces, parse equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmtp_fuzz::proto::params::{MailParams, RcptParams, decode_xtext, is_xtext};

/// xtext = *( xchar / hexchar ); xchar = %d33-126 but "+" and "="; hexchar = "+" 2(0-9/A-F).
fn reference_is_xtext(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let ok = |j: usize| matches!(b.get(j), Some(b'0'..=b'9' | b'A'..=b'F'));
                if !(ok(i + 1) && ok(i + 2)) {
                    return false;
                }
                i += 3;
            }
            b'=' => return false,
            33..=126 => i += 1,
            _ => return false,
        }
    }
    true
}

/// `+HH` is the octet HH; `None` unless xtext decoding to printable US-ASCII (RFC 3461 4.2).
fn reference_decode(s: &str) -> Option<String> {
    if !reference_is_xtext(s) {
        return None;
    }
    let b = s.as_bytes();
    let (mut out, mut i) = (String::new(), 0);
    while i < b.len() {
        let byte = if b[i] == b'+' {
            i += 3;
            u8::from_str_radix(&s[i - 2..i], 16).unwrap()
        } else {
            i += 1;
            b[i - 1]
        };
        if !(b' '..=b'~').contains(&byte) {
            return None;
        }
        out.push(byte as char);
    }
    Some(out)
}

fn encode_xtext(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'+' | b'=' => format!("+{b:02X}"),
            33..=126 => (b as char).to_string(),
            _ => format!("+{b:02X}"),
        })
        .collect()
}

fn wire(params: Vec<wasmtp_fuzz::proto::params::Param>) -> String {
    params
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    let x = is_xtext(s);
    assert_eq!(x, reference_is_xtext(s), "{s:?}");
    assert!(!x || s.is_ascii());
    let decoded = decode_xtext(s);
    assert_eq!(decoded, reference_decode(s), "{s:?}");
    if let Some(d) = &decoded {
        assert!(x && d.len() <= s.len(), "{s:?} grew");
        assert!(d.bytes().all(|b| (b' '..=b'~').contains(&b)), "{d:?}");
    }
    let encoded = encode_xtext(s);
    assert!(is_xtext(&encoded), "{encoded:?}");
    let printable = s.bytes().all(|b| (b' '..=b'~').contains(&b));
    assert_eq!(
        decode_xtext(&encoded),
        printable.then(|| s.to_string()),
        "{encoded:?}"
    );

    if let Ok(p) = MailParams::parse(s) {
        let w = wire(p.to_wire());
        assert_eq!(MailParams::parse(&w), Ok(p), "{w:?}");
    }
    if let Ok(p) = RcptParams::parse(s) {
        let w = wire(p.to_wire());
        assert_eq!(RcptParams::parse(&w), Ok(p), "{w:?}");
    }
});
