//! Write wasmtp policy plugins in Rust.
//!
//! Implement [`Plugin`] (every hook defaults to [`Verdict::Continue`]), list the hooks you
//! want in [`Plugin::HOOKS`], and call [`export!`]. Build with
//! `cargo build --release --target wasm32-wasip2`; the `.wasm` is a component the server
//! loads from `[[plugin]] path`.
//!
//! ```ignore
//! use wasmtp_sdk::{Hook, Plugin, Session, Verdict};
//!
//! #[derive(serde::Deserialize)]
//! struct Config { banned: Vec<String> }
//!
//! struct NoBanned(Config);
//!
//! impl Plugin for NoBanned {
//!     type Config = Config;
//!     const HOOKS: &'static [Hook] = &[Hook::Helo];
//!     fn new(config: Config) -> Result<Self, String> { Ok(NoBanned(config)) }
//!     fn helo(&mut self, _session: &Session, name: &str, _extended: bool) -> Verdict {
//!         if self.0.banned.iter().any(|b| b == name) {
//!             Verdict::reject(550, "5.7.1", "go away")
//!         } else {
//!             Verdict::Continue
//!         }
//!     }
//! }
//!
//! wasmtp_sdk::export!(NoBanned);
//! ```
//!
//! Sender authentication is the server's: the `mail` hook gets the SPF results of the HELO
//! and MAIL FROM identities ([`SpfResults`]), the `data` hook all of them ([`AuthResults`]:
//! SPF, each DKIM signature, ARC, DMARC with the policy that applies to this message):
//!
//! ```ignore
//! fn data(&mut self, _: &Session, _: &EnvelopeFrom, _: &[String], _: &Message,
//!         auth: &AuthResults) -> DataResult {
//!     let d = &auth.dmarc;
//!     if d.status == AuthStatus::Fail && d.disposition == DmarcPolicy::Reject {
//!         return DataResult::verdict(Verdict::reject(550, "5.7.1", "DMARC policy"));
//!     }
//!     if auth.dkim_pass_for("partner.example") {
//!         return DataResult::verdict(Verdict::Accept);
//!     }
//!     DataResult::default().add_header("X-SPF", auth.spf.mail_from.status.as_str())
//! }
//! ```
#![deny(missing_docs)]

#[doc(hidden)]
#[allow(missing_docs)]
pub mod wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "wasmtp_sdk::wit",
    });
}

pub mod http;
mod plugin;
pub use plugin::Plugin;

use std::cell::RefCell;
use wit::exports::wasmtp::plugin::hooks::Guest;
pub use wit::wasmtp::plugin::config::FaultAnswer;
pub use wit::wasmtp::plugin::dns;
/// What a milter can change (0.2.3), called during a hook: `write_body` (a new body, in
/// chunks: each goes to the spool), `set_sender`, `insert_header`, `change_header` (the
/// n-th occurrence; `None` deletes), `add_recipient` with ESMTP parameters (NOTIFY,
/// ORCPT), `set_reply` (the lines of a refusal, or of the 250 at data). Each returns an
/// `EditError` the plugin can read when the host cannot apply it.
pub use wit::wasmtp::plugin::edit;
pub use wit::wasmtp::plugin::message::Message;
/// The plugin's key-value store (the `kv` capability): `get`, `set` with a TTL, atomic
/// `increment`, `delete`, each a `Result` whose `KvError` says why nothing was done
/// (`Denied`, `OverQuota`, `BackendDown`). It is the contract's `store` interface (0.2.2).
pub use wit::wasmtp::plugin::store as kv;
pub use wit::wasmtp::plugin::types::{
    ArcCheck, AuthResults, AuthStatus, Change, DataResult, DataVerdict, DkimCheck, DmarcCheck,
    DmarcPolicy, EnvelopeFrom, Header, Hook, Param, Reply, Session, SpfCheck, SpfResults, Verdict,
};

fn reply(code: u16, enhanced: &str, text: &str) -> Reply {
    Reply {
        code,
        enhanced: enhanced.to_string(),
        text: text.to_string(),
    }
}

impl Verdict {
    /// A permanent refusal: `code` must be 5xx, `enhanced` "5.x.y".
    pub fn reject(code: u16, enhanced: &str, text: &str) -> Verdict {
        Verdict::Reject(reply(code, enhanced, text))
    }
    /// A temporary refusal: `code` must be 4xx, `enhanced` "4.x.y".
    pub fn tempfail(code: u16, enhanced: &str, text: &str) -> Verdict {
        Verdict::Tempfail(reply(code, enhanced, text))
    }
    /// Answer 421 with this text and close the connection.
    pub fn disconnect(enhanced: &str, text: &str) -> Verdict {
        Verdict::Disconnect(reply(421, enhanced, text))
    }
}

impl From<Verdict> for DataVerdict {
    fn from(v: Verdict) -> DataVerdict {
        match v {
            Verdict::Continue => DataVerdict::Continue,
            Verdict::Accept => DataVerdict::Accept,
            Verdict::Reject(r) => DataVerdict::Reject(r),
            Verdict::Tempfail(r) => DataVerdict::Tempfail(r),
            Verdict::Disconnect(r) => DataVerdict::Disconnect(r),
        }
    }
}

impl Default for DataResult {
    fn default() -> DataResult {
        DataResult {
            verdict: DataVerdict::Continue,
            changes: Vec::new(),
        }
    }
}

impl DataResult {
    /// A verdict without changes.
    pub fn verdict(verdict: impl Into<DataVerdict>) -> DataResult {
        DataResult {
            verdict: verdict.into(),
            changes: Vec::new(),
        }
    }
    /// Adds a header field to the message.
    pub fn add_header(mut self, name: &str, value: &str) -> DataResult {
        self.changes.push(Change::AddHeader(Header {
            name: name.to_string(),
            value: value.to_string(),
        }));
        self
    }
}

impl AuthStatus {
    /// The result's name as in Authentication-Results (RFC 8601 2.7): "pass", "fail", ...
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
    /// "none", "quarantine" or "reject", as in the DMARC record.
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }
}

impl AuthResults {
    /// Did any DKIM signature of `domain` (case-insensitive) verify?
    pub fn dkim_pass_for(&self, domain: &str) -> bool {
        self.dkim
            .iter()
            .any(|d| d.status == AuthStatus::Pass && d.domain.eq_ignore_ascii_case(domain))
    }
}

impl EnvelopeFrom {
    /// The value of an ESMTP parameter (`SIZE`, `BODY`, ...), if given with a value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .and_then(|p| p.value.as_deref())
    }
}

/// Logs through the server, tagged with the plugin's name.
pub mod log {
    use super::wit::wasmtp::plugin::log::log;
    use super::wit::wasmtp::plugin::types::Level;
    /// Debug detail.
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    /// Normal events.
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    /// Something an operator should look at.
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    /// Something failed.
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

thread_local! {
    static INSTANCE: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
}

/// Runs `f` on the plugin instance created by `init`.
fn with<P: Plugin, R>(f: impl FnOnce(&mut P) -> R) -> R {
    INSTANCE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let plugin = slot
            .as_mut()
            .and_then(|b| b.downcast_mut::<P>())
            .expect("wasmtp called a hook before init");
        f(plugin)
    })
}

/// Connects a [`Plugin`] to the generated bindings; used by [`export!`].
#[doc(hidden)]
pub struct Adapter<P>(std::marker::PhantomData<P>);

impl<P: Plugin> Guest for Adapter<P> {
    fn init(config_json: String) -> Result<Vec<Hook>, String> {
        let config: P::Config =
            serde_json::from_str(&config_json).map_err(|e| format!("bad [plugin.config]: {e}"))?;
        let plugin = P::new(config)?;
        INSTANCE.with(|cell| *cell.borrow_mut() = Some(Box::new(plugin)));
        Ok(P::HOOKS.to_vec())
    }
    fn on_connect(session: Session) -> Verdict {
        with::<P, _>(|p| p.connect(&session))
    }
    fn on_helo(session: Session, name: String, extended: bool) -> Verdict {
        with::<P, _>(|p| p.helo(&session, &name, extended))
    }
    fn on_auth(session: Session, mechanism: String, user: String, success: bool) -> Verdict {
        with::<P, _>(|p| p.auth(&session, &mechanism, &user, success))
    }
    fn on_mail(session: Session, sender: EnvelopeFrom, spf: SpfResults) -> Verdict {
        with::<P, _>(|p| p.mail(&session, &sender, &spf))
    }
    fn on_rcpt(
        session: Session,
        sender: EnvelopeFrom,
        recipient: String,
        params: Vec<Param>,
        accepted: Vec<String>,
    ) -> Verdict {
        with::<P, _>(|p| p.rcpt(&session, &sender, &recipient, &params, &accepted))
    }
    fn on_data(
        session: Session,
        sender: EnvelopeFrom,
        recipients: Vec<String>,
        message: &Message,
        auth: AuthResults,
    ) -> DataResult {
        with::<P, _>(|p| p.data(&session, &sender, &recipients, message, &auth))
    }
    fn on_vrfy(session: Session, argument: String) -> Verdict {
        with::<P, _>(|p| p.vrfy(&session, &argument))
    }
    fn on_expn(session: Session, argument: String) -> Verdict {
        with::<P, _>(|p| p.expn(&session, &argument))
    }
}

/// Exports a [`Plugin`] type as the component's `hooks`, and declares the host
/// capabilities it needs: `export!(Greylist, capabilities = [kv])` (names: `dns`, `kv`,
/// `http`). The server refuses to start a plugin whose config does not grant what it
/// declares, naming the missing grant; `export!(Plugin)` declares none.
///
/// The declaration is a custom section, [`CAPABILITIES_SECTION`], holding the names
/// separated by commas. The exports exist only when building for wasm (`wasm32-wasip2`); a
/// native build (for the plugin's unit tests) only checks that the type implements
/// [`Plugin`].
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        $crate::export!($plugin, capabilities = []);
    };
    ($plugin:ty, capabilities = [$($cap:ident),* $(,)?]) => {
        #[cfg(target_arch = "wasm32")]
        type __WasmtpAdapter = $crate::Adapter<$plugin>;
        #[cfg(target_arch = "wasm32")]
        $crate::wit::__export_plugin!(__WasmtpAdapter with_types_in $crate::wit);
        #[cfg(target_arch = "wasm32")]
        #[unsafe(link_section = "wasmtp:capabilities")]
        #[used]
        static __WASMTP_CAPABILITIES: [u8; $crate::__declaration(&[$(stringify!($cap)),*]).1] =
            $crate::__declaration_bytes(&[$(stringify!($cap)),*]);
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = || {
            fn implements_plugin<P: $crate::Plugin>() {}
            implements_plugin::<$plugin>();
        };
    };
}

/// The custom section in which a component declares the capabilities it needs: their names
/// separated by commas, or `none`.
pub const CAPABILITIES_SECTION: &str = "wasmtp:capabilities";

/// The longest declaration [`export!`] writes.
const DECLARATION_MAX: usize = 64;

/// The declaration of `names` (comma-separated; `none` for none, since an empty section
/// would not be written) and its length, at compile time.
#[doc(hidden)]
pub const fn __declaration(names: &[&str]) -> ([u8; DECLARATION_MAX], usize) {
    let mut out = [0u8; DECLARATION_MAX];
    let mut len = 0;
    let mut i = 0;
    let names: &[&str] = if names.is_empty() { &["none"] } else { names };
    while i < names.len() {
        if i > 0 {
            out[len] = b',';
            len += 1;
        }
        let name = names[i].as_bytes();
        let mut j = 0;
        while j < name.len() {
            out[len] = name[j];
            len += 1;
            j += 1;
        }
        i += 1;
    }
    (out, len)
}

/// The declaration of `names` as an array of exactly its length.
#[doc(hidden)]
pub const fn __declaration_bytes<const N: usize>(names: &[&str]) -> [u8; N] {
    let (all, len) = __declaration(names);
    assert!(len == N);
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = all[i];
        i += 1;
    }
    out
}

pub use wasmtp_units::{UnitError, parse_duration, parse_size};

/// This plugin's `[[plugin]] on_error`: how the server answers when the plugin fails.
pub fn on_error() -> FaultAnswer {
    wit::wasmtp::plugin::config::on_error()
}

/// The answer the server gives for a fault of this plugin (`on_error`), with `text` saying
/// why: for a plugin whose own dependency failed (a scanner that does not answer), so that
/// it answers as configured without trapping. `tempfail` is `451 4.3.0`, `reject`
/// `554 5.3.0`, `continue` lets the next plugin decide.
pub fn fault_verdict(text: &str) -> Verdict {
    match on_error() {
        FaultAnswer::Tempfail => Verdict::tempfail(451, "4.3.0", text),
        FaultAnswer::Continue => Verdict::Continue,
        FaultAnswer::Reject => Verdict::reject(554, "5.3.0", text),
    }
}

/// Seconds since the Unix epoch (the guest clock is the host's).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
