//! `wasmtp plugin test`: runs one plugin's hooks offline, in the order a session would call
//! them, and reports each verdict and the changes asked for. A refusal ends the run where
//! it would end the session or the transaction.

use super::{Call, Decision, LoadError, PluginSet, SessionInfo};
use crate::config::{Config, ConfigError};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

/// Why the offline run could not start.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("{}: {source}", path.display())]
    PluginConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    PluginConfigParse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{}", .0.to_string().trim_end())]
    Config(#[from] ConfigError),
    #[error("kv store: {0}")]
    Kv(std::io::Error),
    #[error("scratch spool (for a body the plugin writes): {0}")]
    Spool(std::io::Error),
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// What to run: the arguments of `wasmtp plugin test`.
#[derive(clap::Args)]
pub struct OfflineTest {
    /// The plugin component (.wasm), or bundled:NAME
    pub plugin: PathBuf,
    /// TOML file with the plugin's [plugin.config] table
    #[arg(long)]
    pub plugin_config: Option<PathBuf>,
    #[arg(long, default_value = "192.0.2.1")]
    pub client_ip: std::net::IpAddr,
    #[arg(long, default_value = "client.example")]
    pub helo: String,
    #[arg(long)]
    pub from: String,
    #[arg(long, required = true, num_args = 1..)]
    pub to: Vec<String>,
    /// The message for the data hook (RFC 5322, CRLF or LF line ends); a small one is made
    /// up without it
    #[arg(long)]
    pub message: Option<PathBuf>,
}

fn describe(d: &Decision) -> String {
    match d {
        Decision::Continue => "continue".into(),
        Decision::Accept => "accept".into(),
        Decision::Refuse(r) => format!("refuse: {r}"),
        Decision::Disconnect(r) => format!("disconnect: {r}"),
        Decision::Quarantine(reason) => format!("quarantine: {reason}"),
        Decision::Discard => "discard".into(),
    }
}

fn ends(d: &Decision) -> bool {
    matches!(d, Decision::Refuse(_) | Decision::Disconnect(_))
}

/// Builds a one-plugin config (spool, compile cache and kv under `work`).
fn config(t: &OfflineTest, work: &std::path::Path) -> Result<Config, OfflineError> {
    let plugin_config: toml::Table = match &t.plugin_config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| OfflineError::PluginConfigRead {
                    path: path.clone(),
                    source,
                })?;
            toml::from_str(&text).map_err(|source| OfflineError::PluginConfigParse {
                path: path.clone(),
                source,
            })?
        }
        None => toml::Table::new(),
    };
    let mut plugin = toml::Table::new();
    plugin.insert("name".into(), "plugin-under-test".into());
    plugin.insert("path".into(), t.plugin.display().to_string().into());
    plugin.insert("timeout".into(), "5s".into());
    // Offline, the plugin gets every capability: what it would need is what is being tried.
    plugin.insert(
        "capabilities".into(),
        toml::Value::Array(vec!["dns".into(), "kv".into(), "http".into()]),
    );
    plugin.insert("config".into(), toml::Value::Table(plugin_config));
    let mut listen = toml::Table::new();
    listen.insert("address".into(), "127.0.0.1:0".into());
    let mut spool = toml::Table::new();
    spool.insert("path".into(), work.display().to_string().into());
    let mut root = toml::Table::new();
    root.insert("hostname".into(), "plugin-test.invalid".into());
    root.insert("listen".into(), toml::Value::Array(vec![listen.into()]));
    root.insert("spool".into(), spool.into());
    root.insert("plugin".into(), toml::Value::Array(vec![plugin.into()]));
    let text = toml::to_string(&root).expect("a table of strings and tables serializes");
    Ok(Config::parse("plugin test", &text)?)
}

/// Runs the hooks; returns the report, one line per hook.
pub async fn run(t: &OfflineTest) -> Result<String, OfflineError> {
    let work = std::env::temp_dir().join(format!("wasmtp-plugin-test-{}", std::process::id()));
    let config = config(t, &work)?;
    let kv = super::kv::Kv::Embedded(Arc::new(
        super::kv::EmbeddedKv::open(&work.join("kv.json")).map_err(OfflineError::Kv)?,
    ));
    let dns = crate::dns::Dns::new(&[]).ok();
    let metrics = Arc::new(crate::metrics::Metrics::default());
    // Compiled code is cached across runs (large components take seconds to compile).
    let cache = std::env::temp_dir().join("wasmtp-plugin-cache");
    let set = Arc::new(PluginSet::load(&config, &cache, kv, dns, metrics).await?);
    let (spool, _lock) =
        crate::spool::Spool::open(&work.join("spool"), config.spool.segment_size.0)
            .map_err(OfflineError::Spool)?;
    let target = super::EditTarget {
        spool,
        min_free: 0,
        max_body: config.limits.message_size.0,
        max_recipients: config.limits.recipients,
    };
    let mut session = set.session();
    let mut out = String::new();
    let hooks: Vec<&str> = set.hooks(0).iter().map(super::Hook::name).collect();
    writeln!(out, "hooks wanted: {}", hooks.join(", ")).ok();
    let mut info = SessionInfo {
        client_ip: t.client_ip.to_string(),
        client_port: 50000,
        listener: "mx".into(),
        tls: None,
        auth_user: None,
        helo: None,
    };
    macro_rules! step {
        ($name:expr, $d:expr) => {
            writeln!(out, "{}: {}", $name, describe($d)).ok()
        };
    }
    macro_rules! hook {
        ($label:expr, $call:expr) => {{
            let wanted = session.wants($call.hook());
            let d = session.run(&info, $call).await;
            if wanted {
                step!($label, &d);
            }
            d
        }};
    }
    let result = async {
        if ends(&hook!(format!("connect {}", t.client_ip), Call::Connect)) {
            return;
        }
        if ends(&hook!(
            format!("helo {}", t.helo),
            Call::Helo {
                name: &t.helo,
                extended: true
            }
        )) {
            return;
        }
        info.helo = Some(t.helo.clone());
        let sender = super::PluginSender {
            address: t.from.clone(),
            params: Vec::new(),
        };
        // Offline: no sender authentication; plugins see `none` results.
        let spf = super::SpfResults::none();
        if ends(&hook!(
            format!("mail <{}>", t.from),
            Call::Mail {
                sender: &sender,
                spf: &spf
            }
        )) {
            return;
        }
        let mut accepted: Vec<String> = Vec::new();
        for rcpt in &t.to {
            let call = Call::Rcpt {
                sender: &sender,
                recipient: rcpt,
                params: &[],
                accepted: &accepted,
            };
            if !ends(&hook!(format!("rcpt <{rcpt}>"), call)) {
                accepted.push(rcpt.clone());
            }
        }
        if accepted.is_empty() {
            return;
        }
        let message = match &t.message {
            Some(p) => std::fs::read(p).unwrap_or_else(|e| {
                writeln!(out, "data: cannot read {}: {e}", p.display()).ok();
                Vec::new()
            }),
            None => format!(
                "From: <{}>\r\nTo: <{}>\r\nSubject: plugin test\r\n\r\nHello.\r\n",
                t.from, accepted[0]
            )
            .into_bytes(),
        };
        let auth = super::AuthResults::only_spf(spf);
        let message = super::message::Message::parse(message);
        for (after_queue, step) in [(false, "data"), (true, "data after the queue")] {
            if !session.wants_data(after_queue) {
                continue;
            }
            let call = super::DataCall {
                session: &info,
                sender: &sender,
                recipients: &accepted,
                message: message.clone(),
                auth: &auth,
                target: &target,
            };
            let outcome = session.data(after_queue, &call).await;
            step!(
                format!("{step} ({} octets)", message.size()),
                &outcome.decision
            );
            for c in outcome.changes {
                let line = match c {
                    super::PluginChange::AddHeader(h) => {
                        format!("  add header {}: {}", h.name, h.value)
                    }
                    super::PluginChange::RemoveHeader(n) => format!("  remove header {n}"),
                    super::PluginChange::AddRecipient(r) => format!("  add recipient <{r}>"),
                    super::PluginChange::RemoveRecipient(r) => format!("  remove recipient <{r}>"),
                };
                writeln!(out, "{line}").ok();
            }
            for e in &outcome.edits {
                writeln!(out, "  {}", describe_edit(e)).ok();
            }
            if let Some(body) = &outcome.body {
                writeln!(out, "  replace body ({} octets)", body.written()).ok();
            }
            if let Some(lines) = &outcome.reply {
                writeln!(out, "  250 text: {}", lines.join(" / ")).ok();
            }
            // Accept ends only its own stage; after the queue the scan still runs.
            if !matches!(
                outcome.decision,
                super::Decision::Continue | super::Decision::Accept
            ) {
                break;
            }
        }
    };
    result.await;
    let _ = std::fs::remove_dir_all(&work);
    Ok(out)
}

/// One `edit` call, as `plugin test` prints it.
fn describe_edit(e: &super::Edit) -> String {
    use super::Edit;
    let wire = |params: Vec<crate::proto::params::Param>| {
        params.iter().map(|p| format!(" {p}")).collect::<String>()
    };
    match e {
        Edit::InsertHeader { index, name, value } => {
            format!("insert header at {index}: {name}: {value}")
        }
        Edit::ChangeHeader {
            name,
            occurrence,
            value: Some(v),
        } => format!("change header {name}[{occurrence}]: {v}"),
        Edit::ChangeHeader {
            name,
            occurrence,
            value: None,
        } => format!("delete header {name}[{occurrence}]"),
        Edit::SetSender { sender, params } => {
            let sender = sender.as_ref().map(ToString::to_string).unwrap_or_default();
            format!("set sender <{sender}>{}", wire(params.to_wire()))
        }
        Edit::AddRecipient(r) => {
            format!("add recipient <{}>{}", r.address, wire(r.params.to_wire()))
        }
    }
}
