//! A request to retry deferred mail now: from ETRN, `wasmtp queue flush`, or an ATRN
//! session that is collecting a domain's mail.

use std::time::Instant;

/// A request to retry deferred mail now (all, or for one domain), stamped with when it was
/// made: an attempt that started after that answers it.
#[derive(Debug, Clone)]
pub(super) struct Flush {
    pub domain: Option<String>,
    pub at: Instant,
}

impl Flush {
    /// Is it for a message with pending recipients in `domains` (lower case)?
    pub fn concerns(&self, domains: &[String]) -> bool {
        self.domain
            .as_ref()
            .is_none_or(|d| domains.contains(&d.to_lowercase()))
    }
}
