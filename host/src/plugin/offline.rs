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
    #[error("--kv {}: {why}", path.display())]
    KvSeed { path: PathBuf, why: String },
    #[error(transparent)]
    Resolver(#[from] crate::dns::ResolverError),
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
    /// A server config whose resolver (`[dns]`) and `[authentication] timeout` to use: the
    /// host then checks SPF, DKIM, ARC and DMARC, and the plugin sees real results
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A JSON object of the plugin's kv state to start from (`{"key": "value"}`)
    #[arg(long)]
    pub kv: Option<PathBuf>,
    /// The report as JSON (each hook's verdict, reply and changes), for a plugin's own CI
    #[arg(long)]
    pub json: bool,
}

/// One hook as the report tells it.
#[derive(serde::Serialize)]
struct Step {
    step: String,
    verdict: &'static str,
    /// A refusal's reply, a quarantine's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<String>,
    /// The changes asked for, as the text report prints them.
    changes: Vec<String>,
}

#[derive(serde::Serialize, Default)]
struct Report {
    hooks: Vec<&'static str>,
    steps: Vec<Step>,
    /// Why the run could not go on (a message file that cannot be read).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<String>,
}

impl Report {
    fn step(&mut self, step: String, d: &Decision) -> &mut Step {
        let reply = match d {
            Decision::Refuse(r) | Decision::Disconnect(r) => Some(r.to_string()),
            Decision::Quarantine(reason) => Some(reason.clone()),
            _ => None,
        };
        self.steps.push(Step {
            step,
            verdict: d.kind(),
            reply,
            changes: Vec::new(),
        });
        self.steps.last_mut().expect("just pushed")
    }

    /// As text: a line for the hooks wanted, one a hook with its verdict, its changes
    /// under it.
    fn text(&self) -> String {
        let mut out = String::new();
        writeln!(out, "hooks wanted: {}", self.hooks.join(", ")).ok();
        for p in &self.problems {
            writeln!(out, "{p}").ok();
        }
        for s in &self.steps {
            match &s.reply {
                Some(r) => writeln!(out, "{}: {}: {r}", s.step, s.verdict).ok(),
                None => writeln!(out, "{}: {}", s.step, s.verdict).ok(),
            };
            for c in &s.changes {
                writeln!(out, "  {c}").ok();
            }
        }
        out
    }
}

fn ends(d: &Decision) -> bool {
    matches!(d, Decision::Refuse(_) | Decision::Disconnect(_))
}

/// The plugin's name in the run (its kv namespace).
const PLUGIN: &str = "plugin-under-test";

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
    plugin.insert("name".into(), PLUGIN.into());
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

/// The host's sender checks, when `--config` names a server config: its resolver and its
/// authentication timeout.
fn verifier(t: &OfflineTest) -> Result<Option<Arc<crate::mailauth::Verifier>>, OfflineError> {
    let Some(path) = &t.config else {
        return Ok(None);
    };
    let server = Config::load(Some(path))?;
    let dns = crate::dns::Dns::new(&server.dns.nameservers).map_err(OfflineError::Resolver)?;
    let timeout = server.authentication.timeout.0;
    let verifier = crate::mailauth::Verifier::new(dns, &server.hostname, timeout);
    Ok(Some(Arc::new(verifier)))
}

/// `--kv`: the plugin's state to start from, in its namespace.
async fn seed(t: &OfflineTest, kv: &super::kv::Kv, namespace: &str) -> Result<(), OfflineError> {
    let Some(path) = &t.kv else {
        return Ok(());
    };
    let read = |why: String| OfflineError::KvSeed {
        path: path.clone(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
    let values: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| read(e.to_string()))?;
    for (key, value) in values {
        let value = match value {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        kv.set(namespace, &key, value.into_bytes(), None)
            .await
            .map_err(|e| read(e.to_string()))?;
    }
    Ok(())
}

/// Runs the hooks; returns the report, one line per hook (or JSON with `--json`).
pub async fn run(t: &OfflineTest) -> Result<String, OfflineError> {
    let work = std::env::temp_dir().join(format!("wasmtp-plugin-test-{}", std::process::id()));
    let config = config(t, &work)?;
    let verifier = verifier(t)?;
    let kv = super::kv::Kv::Embedded(Arc::new(
        super::kv::EmbeddedKv::open(&work.join("kv.json")).map_err(OfflineError::Kv)?,
    ));
    seed(t, &kv, PLUGIN).await?;
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
    let mut report = Report {
        hooks: set.hooks(0).iter().map(super::Hook::name).collect(),
        ..Report::default()
    };
    let mut info = SessionInfo {
        client_ip: t.client_ip.to_string(),
        client_port: 50000,
        listener: "mx".into(),
        tls: None,
        auth_user: None,
        helo: None,
    };
    macro_rules! hook {
        ($label:expr, $call:expr) => {{
            let wanted = session.wants($call.hook());
            let d = session.run(&info, $call).await;
            if wanted {
                report.step($label, &d);
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
        // Without --config, no sender authentication: plugins see `none` results.
        let spf = match &verifier {
            Some(v) => {
                let (helo, mail_from) = tokio::join!(
                    v.spf_helo(t.client_ip, &t.helo),
                    v.spf_mail_from(t.client_ip, &t.helo, &t.from)
                );
                super::SpfResults { helo, mail_from }
            }
            None => super::SpfResults::none(),
        };
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
                report
                    .problems
                    .push(format!("data: cannot read {}: {e}", p.display()));
                Vec::new()
            }),
            None => format!(
                "From: <{}>\r\nTo: <{}>\r\nSubject: plugin test\r\n\r\nHello.\r\n",
                t.from, accepted[0]
            )
            .into_bytes(),
        };
        let auth = match &verifier {
            Some(v) => {
                let at = crate::proto::header::body_start(&message).unwrap_or(message.len());
                let (header, body) = message.split_at(at);
                let body = crate::spool::Content::from(body.to_vec());
                v.message(header.to_vec().into(), body, spf, v.timeout())
                    .await
            }
            None => super::AuthResults::only_spf(spf),
        };
        let message = super::message::Message::parse(message);
        for (after_queue, stage) in [(false, "data"), (true, "data after the queue")] {
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
            let label = format!("{stage} ({} octets)", message.size());
            let step = report.step(label, &outcome.decision);
            for c in outcome.changes {
                step.changes.push(match c {
                    super::PluginChange::AddHeader(h) => {
                        format!("add header {}: {}", h.name, h.value)
                    }
                    super::PluginChange::RemoveHeader(n) => format!("remove header {n}"),
                    super::PluginChange::AddRecipient(r) => format!("add recipient <{r}>"),
                    super::PluginChange::RemoveRecipient(r) => format!("remove recipient <{r}>"),
                });
            }
            step.changes.extend(outcome.edits.iter().map(describe_edit));
            if let Some(body) = &outcome.body {
                step.changes
                    .push(format!("replace body ({} octets)", body.written()));
            }
            if let Some(lines) = &outcome.reply {
                step.changes
                    .push(format!("250 text: {}", lines.join(" / ")));
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
    Ok(if t.json {
        serde_json::to_string_pretty(&report).expect("plain data") + "\n"
    } else {
        report.text()
    })
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
