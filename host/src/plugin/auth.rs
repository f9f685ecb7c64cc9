//! The sender authentication records of the WIT (`auth-results` and its parts): their
//! names in Authentication-Results, and the values for what was not checked. Filled in by
//! `crate::mailauth`.

use super::bindings::types::{
    ArcCheck, AuthResults, AuthStatus, DmarcCheck, DmarcPolicy, SpfCheck, SpfResults,
};

impl AuthStatus {
    /// The result's name in Authentication-Results (RFC 8601 2.7).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthStatus::None => "none",
            AuthStatus::Pass => "pass",
            AuthStatus::Fail => "fail",
            AuthStatus::Softfail => "softfail",
            AuthStatus::Neutral => "neutral",
            AuthStatus::Temperror => "temperror",
            AuthStatus::Permerror => "permerror",
        }
    }
}

impl DmarcPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }
}

impl SpfCheck {
    /// Not checked.
    pub fn none() -> SpfCheck {
        SpfCheck {
            status: AuthStatus::None,
            domain: String::new(),
            explanation: None,
        }
    }
}

impl SpfResults {
    /// Nothing checked (trusted clients, verification off).
    pub fn none() -> SpfResults {
        SpfResults {
            helo: SpfCheck::none(),
            mail_from: SpfCheck::none(),
        }
    }
}

impl AuthResults {
    /// Nothing checked but SPF.
    pub fn only_spf(spf: SpfResults) -> AuthResults {
        AuthResults {
            spf,
            dkim: Vec::new(),
            arc: ArcCheck {
                status: AuthStatus::None,
                sets: 0,
            },
            dmarc: DmarcCheck::none(String::new()),
        }
    }
}

impl DmarcCheck {
    /// No DMARC evaluation (no record, or no single From domain).
    pub fn none(from_domain: String) -> DmarcCheck {
        DmarcCheck {
            status: AuthStatus::None,
            from_domain,
            policy: DmarcPolicy::None,
            percent: 100,
            disposition: DmarcPolicy::None,
            spf_aligned: false,
            dkim_aligned: false,
        }
    }
}
