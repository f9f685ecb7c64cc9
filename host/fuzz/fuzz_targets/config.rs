//! Config loading: `Config::parse` on any text. Checks: nothing panics; a config that parses
//! has no `validate()` problems, names every route's target, and answers `route_for` and
//! the relay rules for any name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmtp_fuzz::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse("fuzz", text) {
        Ok(config) => {
            assert!(config.validate().is_empty());
            for domain in ["example.test", "", "*", text] {
                let _ = config.route_for(domain);
                let _ = config.accepts_domain(domain);
            }
            let _ = config.relay_allowed("192.0.2.1".parse().unwrap());
        }
        Err(e) => {
            assert!(!e.problems.is_empty());
            let _ = e.to_string();
        }
    }
});
