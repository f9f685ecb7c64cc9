//! Why a plugin call failed, and whose fault it was (HOUSE_STYLE: say guest or host). Set
//! where the failure happens, never guessed later from a message's text.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// The plugin misbehaved: trap, deadline, bad reply. Answered per its `on_error`.
    #[error(transparent)]
    Guest(#[from] GuestFault),
    /// The host could not run it: the instance pool is full, a resource could not be made.
    #[error(transparent)]
    Host(#[from] HostFault),
}

impl Fault {
    /// Its kind in metrics: `trap`, `deadline`, `memory`, `capability`, `no_answer`,
    /// `failed`, `config`, `bad_reply`, `bad_change`, or `host`.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Guest(GuestFault::Memory) => "memory",
            Fault::Guest(GuestFault::Capability(_)) => "capability",
            Fault::Guest(GuestFault::NoAnswer(_)) => "no_answer",
            Fault::Guest(GuestFault::Deadline(_)) => "deadline",
            Fault::Guest(GuestFault::Trap(_)) => "trap",
            Fault::Guest(GuestFault::Failed(_)) => "failed",
            Fault::Guest(GuestFault::ConfigRefused(_)) => "config",
            Fault::Guest(GuestFault::BadReply { .. }) => "bad_reply",
            Fault::Guest(GuestFault::BadChange(_)) => "bad_change",
            Fault::Host(_) => "host",
        }
    }

    /// `guest` or `host`, for logs.
    pub fn side(&self) -> &'static str {
        match self {
            Fault::Guest(_) => "guest",
            Fault::Host(_) => "host",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GuestFault {
    /// The tokio timer fired before the epoch deadline did (a guest blocked in a host call).
    #[error("took longer than {0:?}")]
    NoAnswer(Duration),
    #[error("ran past its {0:?} deadline")]
    Deadline(Duration),
    #[error("trapped: {0}")]
    Trap(wasmtime::Trap),
    /// It asked for more memory than its `memory` limit.
    #[error("ran out of its memory limit")]
    Memory,
    /// It called what its config does not grant (the 0.2.0 `kv`, whose WIT has no error).
    #[error("{0}")]
    Capability(NotGranted),
    #[error("failed: {0:#}")]
    Failed(wasmtime::Error),
    /// `init` returned an error for the plugin's `[plugin.config]`.
    #[error("refused its config: {0}")]
    ConfigRefused(String),
    /// A verdict whose reply does not fit it (a reject with 250).
    #[error("bad reply {code} {enhanced} {text:?}: {why}")]
    BadReply {
        code: u16,
        enhanced: String,
        text: String,
        why: &'static str,
    },
    /// A change the host will not apply (bad header name, too many octets).
    #[error("{0}")]
    BadChange(String),
}

#[derive(Debug, thiserror::Error)]
pub enum HostFault {
    #[error("plugin instance pool is full: {0}")]
    PoolFull(String),
    #[error("resource table: {0}")]
    Table(#[from] wasmtime::component::ResourceTableError),
}

/// A call of a capability the plugin was not granted, for a host call to fail with.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "plugin {plugin} called {capability} without the {capability} capability (capabilities = [\"{capability}\"])"
)]
pub struct NotGranted {
    pub plugin: std::sync::Arc<str>,
    pub capability: super::Capability,
}

impl Fault {
    /// Classifies an error from a guest call: refused memory (`out_of_memory`: the store's
    /// limiter refused a growth during the call), a capability not granted, a trap (the
    /// epoch interrupt is the deadline), or another failure.
    pub fn from_call(e: wasmtime::Error, timeout: Duration, out_of_memory: bool) -> Fault {
        if let Some(pool) = e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
            return HostFault::PoolFull(pool.to_string()).into();
        }
        if out_of_memory {
            return GuestFault::Memory.into();
        }
        if let Some(denied) = e.downcast_ref::<NotGranted>() {
            return GuestFault::Capability(denied.clone()).into();
        }
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => GuestFault::Deadline(timeout),
            Some(&trap) => GuestFault::Trap(trap),
            None => GuestFault::Failed(e),
        }
        .into()
    }
}
