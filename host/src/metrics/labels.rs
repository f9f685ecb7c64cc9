//! The label sets of the families: each a closed set of values (hooks, outcome kinds) or a
//! configured name (a listener, a route, a plugin), never an address or a domain.

use prometheus_client::encoding::EncodeLabelSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Listener {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Connection {
    pub listener: String,
    /// `accepted`, `refused` (over the limits).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Transaction {
    /// `accepted`, `held` (quarantined), `refused`, `dropped` (a plugin discarded it).
    pub outcome: &'static str,
    /// The reply's class: `2xx`, `4xx`, `5xx`.
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthResult {
    /// `spf`, `dkim`, `arc`, `dmarc`.
    pub method: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MtaSts {
    /// The policy's mode: `enforce`, `testing`.
    pub mode: &'static str,
    /// `valid` (TLS validated to a host the policy names), `mx_mismatch` (a host it does
    /// not name), `tls_failed` (no TLS, or a certificate that does not validate).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginCall {
    pub plugin: String,
    pub hook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginVerdict {
    pub plugin: String,
    pub hook: &'static str,
    /// `continue`, `accept`, `refuse`, `disconnect`, `quarantine`, `discard`.
    pub verdict: &'static str,
    /// A shadow plugin's (`true`): counted, not applied.
    pub shadow: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Plugin {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginFault {
    pub plugin: String,
    /// `trap`, `deadline`, `memory`, `capability` (a call refused for want of a grant,
    /// counted whether or not the hook then fails), `no_answer`, `failed`, `bad_reply`,
    /// `bad_change`, `config`, `host`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Attempt {
    /// The route's target as configured: `mx`, `smtp:HOST:PORT`, `lmtp:…`, `maildir`.
    pub route: String,
    /// Per recipient: `delivered`, `deferred`, `failed`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostCall {
    pub plugin: String,
    /// The capability called: `kv`, `dns`, `http`.
    pub call: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Deferral {
    /// Why, by who answered and the enhanced status code (RFC 3463): `reply` (the next
    /// hop's 4xx), `connection` (no connection, or it broke: X.4.x), `dns` (a lookup
    /// failed: X.4.3), `tls` (X.7.x: TLS required and not had), `expired` (X.4.7), `scan`
    /// (an after-queue plugin's tempfail), `local` (our side: a mailbox, the spool).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reuse {
    /// `true`: an idle connection kept from an earlier message (after an RSET).
    pub reused: bool,
}
