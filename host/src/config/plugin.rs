//! `[[plugin]]`: where a plugin's component is, what it is granted, how it is bounded, and
//! when its data hook runs (before the 250, or after the queue).

use super::values::{Dur, Size};
use crate::plugin::capability::Capability;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugin {
    pub name: String,
    pub path: PathBuf,
    #[serde(default)]
    pub on_error: OnError,
    /// Each call's deadline; default 200ms before the queue, 60s after it.
    pub timeout: Option<Dur>,
    #[serde(default = "Plugin::default_memory")]
    pub memory: Size,
    /// Host capabilities beyond log and config: `dns`, `kv`, `http`. Default: for bundled
    /// plugins what they declare, for others none. A call without one is an error, and a
    /// plugin that declares one its config does not grant is refused at load.
    pub capabilities: Option<Vec<Capability>>,
    /// With `http`: the URL prefixes the plugin may call (scheme, host and port must
    /// match; the path is a prefix). Default: for a bundled plugin its `config.url`.
    pub http_allow: Option<Vec<String>>,
    /// With `http`: PEM trust anchors for https (default: the webpki roots).
    pub http_ca: Option<PathBuf>,
    /// With `http`: the largest response body a request may read.
    #[serde(default = "Plugin::default_http_max_response")]
    pub http_max_response: Size,
    /// Most keys, and octets of keys and values, the plugin may keep in its kv namespace.
    #[serde(default = "Plugin::default_kv_max_keys")]
    pub kv_max_keys: usize,
    #[serde(default = "Plugin::default_kv_max_bytes")]
    pub kv_max_bytes: Size,
    /// Before the 250 (the default), or on the spooled message before delivery.
    #[serde(default)]
    pub mode: PluginMode,
    /// After the queue: how many messages it scans at once.
    #[serde(default = "Plugin::default_concurrency")]
    pub concurrency: usize,
    /// Runs, and its verdicts and changes are logged and counted, but none is applied.
    #[serde(default)]
    pub shadow: bool,
    /// Faults in a row that switch the plugin off for `breaker_cooldown`, its `on_error`
    /// answering without a call meanwhile; then one call is tried. 0: never switched off.
    #[serde(default = "Plugin::default_breaker_faults")]
    pub breaker_faults: u32,
    #[serde(default = "Plugin::default_breaker_cooldown")]
    pub breaker_cooldown: Dur,
    #[serde(default)]
    pub config: toml::Table,
}

impl Plugin {
    fn default_memory() -> Size {
        Size(64 << 20)
    }
    fn default_http_max_response() -> Size {
        Size(4 << 20)
    }
    fn default_kv_max_keys() -> usize {
        100_000
    }
    fn default_kv_max_bytes() -> Size {
        Size(64 << 20)
    }
    fn default_concurrency() -> usize {
        16
    }
    fn default_breaker_faults() -> u32 {
        5
    }
    fn default_breaker_cooldown() -> Dur {
        Dur(Duration::from_secs(30))
    }

    /// Each call's deadline: `timeout`, else what fits the mode (a scanner after the queue
    /// holds no session, and antivirus scans take seconds).
    pub fn timeout(&self) -> Duration {
        match (self.timeout, self.mode) {
            (Some(t), _) => t.0,
            (None, PluginMode::BeforeQueue) => Duration::from_millis(200),
            (None, PluginMode::AfterQueue) => Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginMode {
    /// Every hook in the SMTP dialogue, the data hook before the 250.
    #[default]
    BeforeQueue,
    /// Only the data hook, on the spooled message after the 250 and before delivery.
    AfterQueue,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    #[default]
    Tempfail,
    Continue,
    Reject,
}

impl PluginMode {
    /// As the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginMode::BeforeQueue => "before-queue",
            PluginMode::AfterQueue => "after-queue",
        }
    }
}

impl OnError {
    /// As the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Tempfail => "tempfail",
            OnError::Continue => "continue",
            OnError::Reject => "reject",
        }
    }
}

/// Most scans at once one plugin after the queue may run.
const MAX_CONCURRENCY: usize = 10_000;

pub(super) fn validate(plugins: &[Plugin], p: &mut Vec<String>) {
    for (i, pl) in plugins.iter().enumerate() {
        if plugins[..i].iter().any(|o| o.name == pl.name) {
            p.push(format!("plugin[{i}].name: {:?} is used twice", pl.name));
        }
        if !(1..=MAX_CONCURRENCY).contains(&pl.concurrency) {
            p.push(format!(
                "plugin[{i}].concurrency: must be from 1 to {MAX_CONCURRENCY}"
            ));
        }
    }
}
