//! Paths and mailboxes: `parse_path`, `parse_mailbox`, `is_domain`.
//!
//! Checks (on UTF-8 input): nothing panics; a parsed mailbox keeps the length limits, prints
//! (Display, `local@domain`) as exactly the text it was parsed from, and parses back equal;
//! a mailbox from a path, put back in `<>` with the rest of the line, parses to the same
//! result; a domain accepted by `is_domain` makes a mailbox `a@domain`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmtp_fuzz::proto::address::{
    MAX_DOMAIN, MAX_LOCAL_PART, MAX_PATH, Mailbox, is_domain, parse_mailbox, parse_path,
};

fn check_mailbox(m: &Mailbox) {
    assert!(m.local.len() <= MAX_LOCAL_PART);
    assert!(m.domain.len() <= MAX_DOMAIN);
    assert!(!m.domain.contains('@'));
    let printed = m.to_string();
    assert_eq!(parse_mailbox(&printed).as_ref(), Ok(m), "{printed:?}");
    let _ = (m.local_unquoted(), m.is_utf8(), m.domain_lower());
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    if is_domain(s) {
        assert!(!s.is_empty() && s.len() <= MAX_DOMAIN);
        let m = parse_mailbox(&format!("a@{s}")).expect("a@ + is_domain");
        assert_eq!(m.domain, s);
    }

    if let Ok(m) = parse_mailbox(s) {
        assert_eq!(m.to_string(), s);
        check_mailbox(&m);
    }

    match parse_path(s) {
        Ok((Some(m), rest)) => {
            check_mailbox(&m);
            assert!(s.ends_with(rest));
            assert!(rest.is_empty() || rest.starts_with(' '), "{rest:?}");
            let again = format!("<{m}>{rest}");
            assert!(again.len() - rest.len() <= MAX_PATH);
            assert_eq!(parse_path(&again), Ok((Some(m.clone()), rest)), "{again:?}");
        }
        Ok((None, rest)) => {
            assert!(s.trim_start_matches(' ').starts_with("<>"));
            assert!(rest.is_empty() || rest.starts_with(' '), "{rest:?}");
        }
        Err(_) => {}
    }
});
