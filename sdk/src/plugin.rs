//! The trait a plugin implements: one method per hook, each with an example.

use crate::{
    AuthResults, DataResult, EnvelopeFrom, Hook, Message, Param, Session, SpfResults, Verdict,
};

/// A policy plugin. One value lives per (SMTP session, plugin), created by [`Plugin::new`]
/// at the first hook the session needs; `&mut self` state lasts for that session only. For
/// state across sessions use [`kv`](crate::kv).
pub trait Plugin: Sized + 'static {
    /// The plugin's `[plugin.config]` table, deserialized with serde.
    type Config: serde::de::DeserializeOwned;
    /// The hooks the server should call; others are never called.
    const HOOKS: &'static [Hook];

    /// Builds the plugin from its config; an error is reported by `check-config`. Called
    /// once per instance (an instance serves one SMTP session).
    ///
    /// ```no_run
    /// # use wasmtp_sdk::*;
    /// #[derive(serde::Deserialize)]
    /// #[serde(deny_unknown_fields)]
    /// struct Config { max_size: String }
    /// struct Limit { max: u64 }
    /// impl Plugin for Limit {
    ///     type Config = Config;
    ///     const HOOKS: &'static [Hook] = &[Hook::Mail];
    ///     fn new(config: Config) -> Result<Self, String> {
    ///         // "25MiB" and the like; a bad value makes `check-config` name this plugin.
    ///         Ok(Limit { max: parse_size(&config.max_size)? })
    ///     }
    /// }
    /// ```
    fn new(config: Self::Config) -> Result<Self, String>;

    /// A client connected.
    ///
    /// ```no_run
    /// # use wasmtp_sdk::*;
    /// # struct P;
    /// # impl Plugin for P {
    /// #     type Config = serde_json::Value;
    /// #     const HOOKS: &'static [Hook] = &[Hook::Connect];
    /// #     fn new(_: serde_json::Value) -> Result<Self, String> { Ok(P) }
    /// fn connect(&mut self, session: &Session) -> Verdict {
    ///     if session.client_ip.starts_with("192.0.2.") {
    ///         return Verdict::disconnect("4.7.0", "not from this network");
    ///     }
    ///     Verdict::Continue
    /// }
    /// # }
    /// ```
    fn connect(&mut self, _session: &Session) -> Verdict {
        Verdict::Continue
    }
    /// HELO or EHLO (`extended`).
    ///
    /// ```no_run
    /// # use wasmtp_sdk::*;
    /// # struct P;
    /// # impl Plugin for P {
    /// #     type Config = serde_json::Value;
    /// #     const HOOKS: &'static [Hook] = &[Hook::Helo];
    /// #     fn new(_: serde_json::Value) -> Result<Self, String> { Ok(P) }
    /// fn helo(&mut self, _session: &Session, name: &str, _extended: bool) -> Verdict {
    ///     // Like Postfix's reject_non_fqdn_helo_hostname.
    ///     if !name.contains('.') && !name.starts_with('[') {
    ///         return Verdict::reject(504, "5.5.2", "Helo command rejected: need fully-qualified hostname");
    ///     }
    ///     Verdict::Continue
    /// }
    /// # }
    /// ```
    fn helo(&mut self, _session: &Session, _name: &str, _extended: bool) -> Verdict {
        Verdict::Continue
    }
    /// An AUTH exchange ended; `success` says whether the credentials were valid.
    ///
    /// ```no_run
    /// # use wasmtp_sdk::*;
    /// # struct P;
    /// # impl Plugin for P {
    /// #     type Config = serde_json::Value;
    /// #     const HOOKS: &'static [Hook] = &[Hook::Auth];
    /// #     fn new(_: serde_json::Value) -> Result<Self, String> { Ok(P) }
    /// fn auth(&mut self, session: &Session, _mechanism: &str, user: &str, success: bool) -> Verdict {
    ///     if !success {
    ///         log::warn(&format!("failed login for {user} from {}", session.client_ip));
    ///     }
    ///     Verdict::Continue
    /// }
    /// # }
    /// ```
    fn auth(
        &mut self,
        _session: &Session,
        _mechanism: &str,
        _user: &str,
        _success: bool,
    ) -> Verdict {
        Verdict::Continue
    }
    /// MAIL FROM; `spf` has the SPF results of the HELO and MAIL FROM identities, checked
    /// by the server (all `none` for authenticated and `relay.networks` clients).
    ///
    /// ```no_run
    /// # use wasmtp_sdk::*;
    /// # struct P;
    /// # impl Plugin for P {
    /// #     type Config = serde_json::Value;
    /// #     const HOOKS: &'static [Hook] = &[Hook::Mail];
    /// #     fn new(_: serde_json::Value) -> Result<Self, String> { Ok(P) }
    /// fn mail(&mut self, _session: &Session, sender: &EnvelopeFrom, spf: &SpfResults) -> Verdict {
    ///     if spf.mail_from.status == AuthStatus::Fail {
    ///         return Verdict::reject(550, "5.7.23", "SPF: sender not allowed"); // RFC 7372
    ///     }
    ///     // RFC 1870: a declared size over the limit is refused before the data.
    ///     if sender.param("SIZE").and_then(|s| s.parse::<u64>().ok()) > Some(10 << 20) {
    ///         return Verdict::reject(552, "5.3.4", "Message too big");
    ///     }
    ///     Verdict::Continue
    /// }
    /// # }
    /// ```
    fn mail(&mut self, _session: &Session, _sender: &EnvelopeFrom, _spf: &SpfResults) -> Verdict {
        Verdict::Continue
    }
    /// RCPT TO; `accepted` lists the recipients accepted so far.
    ///
    /// ```no_run
    /// // Needs the kv capability: `wasmtp_sdk::export!(P, capabilities = [kv])` and
    /// // `capabilities = ["kv"]` in its `[[plugin]]`.
    /// # use wasmtp_sdk::*;
    /// # struct P;
    /// # impl Plugin for P {
    /// #     type Config = serde_json::Value;
    /// #     const HOOKS: &'static [Hook] = &[Hook::Rcpt];
    /// #     fn new(_: serde_json::Value) -> Result<Self, String> { Ok(P) }
    /// fn rcpt(&mut self, session: &Session, _sender: &EnvelopeFrom, _recipient: &str,
    ///         _params: &[Param], accepted: &[String]) -> Verdict {
    ///     if accepted.len() >= 50 {
    ///         return Verdict::tempfail(452, "4.5.3", "Too many recipients");
    ///     }
    ///     // At most 1000 recipients an hour per client address, across sessions.
    ///     let key = format!("rcpt:{}", session.client_ip);
    ///     match kv::increment(&key, 1, Some(3600)) {
    ///         Ok(n) if n > 1000 => Verdict::tempfail(450, "4.7.1", "Slow down"),
    ///         Ok(_) => Verdict::Continue,
    ///         Err(_) => fault_verdict("rate store unavailable"), // per the plugin's on_error
    ///     }
    /// }
    /// # }
    /// ```
    fn rcpt(
        &mut self,
        _session: &Session,
        _sender: &EnvelopeFrom,
        _recipient: &str,
        _params: &[Param],
        _accepted: &[String],
    ) -> Verdict {
        Verdict::Continue
    }
    /// The message arrived; read it through `message` and answer with a verdict and changes.
    /// `auth` has the server's sender authentication results: SPF, each DKIM signature,
    /// the ARC chain and DMARC (see [`AuthResults`]). For milter-like changes (the body,
    /// the envelope, a header at a position) see [`edit`](crate::edit).
    ///
    /// ```no_run
    /// # use wasmtp_sdk::*;
    /// # struct P;
    /// # impl Plugin for P {
    /// #     type Config = serde_json::Value;
    /// #     const HOOKS: &'static [Hook] = &[Hook::Data];
    /// #     fn new(_: serde_json::Value) -> Result<Self, String> { Ok(P) }
    /// fn data(&mut self, _session: &Session, _sender: &EnvelopeFrom, _recipients: &[String],
    ///         message: &Message, auth: &AuthResults) -> DataResult {
    ///     if auth.dmarc.status == AuthStatus::Fail && auth.dmarc.disposition == DmarcPolicy::Reject {
    ///         return DataResult::verdict(Verdict::reject(550, "5.7.1", "DMARC policy"));
    ///     }
    ///     // The message is read in ranges, never handed over whole.
    ///     let start = message.body(0, 64 * 1024);
    ///     if start.windows(7).any(|w| w == b"bitcoin") {
    ///         return DataResult::default().add_header("X-Spam-Flag", "YES");
    ///     }
    ///     let subject = message.header("Subject").into_iter().next().unwrap_or_default();
    ///     DataResult::default().add_header("X-Subject-Length", &subject.len().to_string())
    /// }
    /// # }
    /// ```
    fn data(
        &mut self,
        _session: &Session,
        _sender: &EnvelopeFrom,
        _recipients: &[String],
        _message: &Message,
        _auth: &AuthResults,
    ) -> DataResult {
        DataResult::default()
    }
    /// VRFY.
    ///
    /// ```no_run
    /// # use wasmtp_sdk::*;
    /// # struct P;
    /// # impl Plugin for P {
    /// #     type Config = serde_json::Value;
    /// #     const HOOKS: &'static [Hook] = &[Hook::Vrfy];
    /// #     fn new(_: serde_json::Value) -> Result<Self, String> { Ok(P) }
    /// fn vrfy(&mut self, _session: &Session, _argument: &str) -> Verdict {
    ///     // RFC 5321 3.5.3: 252 is the answer that neither confirms nor denies.
    ///     Verdict::reject(502, "5.5.1", "VRFY disabled")
    /// }
    /// # }
    /// ```
    fn vrfy(&mut self, _session: &Session, _argument: &str) -> Verdict {
        Verdict::Continue
    }
    /// EXPN.
    ///
    /// ```no_run
    /// # use wasmtp_sdk::*;
    /// # struct P;
    /// # impl Plugin for P {
    /// #     type Config = serde_json::Value;
    /// #     const HOOKS: &'static [Hook] = &[Hook::Expn];
    /// #     fn new(_: serde_json::Value) -> Result<Self, String> { Ok(P) }
    /// fn expn(&mut self, session: &Session, argument: &str) -> Verdict {
    ///     // Only clients that logged in may expand lists.
    ///     if session.auth_user.is_none() {
    ///         return Verdict::reject(502, "5.5.1", &format!("EXPN {argument}: not for you"));
    ///     }
    ///     Verdict::Continue
    /// }
    /// # }
    /// ```
    fn expn(&mut self, _session: &Session, _argument: &str) -> Verdict {
        Verdict::Continue
    }
}
