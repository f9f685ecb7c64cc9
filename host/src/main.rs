//! The `wasmtp` command line (SPEC.md "Commands").

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use wasmtp::config::{Config, ConfigError};
use wasmtp::plugin::kv::{EmbeddedKv, Kv};
use wasmtp::resources::Resources;

/// Beyond the grace period: time for the delivery queue's last attempts (10 s from the
/// signal) and the kv store's last write.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(12);

#[derive(Parser)]
#[command(
    name = "wasmtp",
    version,
    about = "SMTP/ESMTP gateway with WebAssembly policy plugins"
)]
struct Cli {
    /// Config file (default: ./wasmtp.toml if present, else the embedded default)
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server
    Serve,
    /// Validate the config; print every problem with its key path
    CheckConfig,
    /// Read a password from standard input and print its argon2id hash for [[user]]
    HashPassword,
    /// Make a DKIM key pair for [[dkim]]: prints the private key (PEM) and the DNS TXT
    /// record to publish
    DkimKeygen {
        /// The signing domain (d=)
        #[arg(long)]
        domain: String,
        /// The selector (s=): the key is published at SELECTOR._domainkey.DOMAIN
        #[arg(long)]
        selector: String,
        /// rsa or ed25519 (RFC 8463; not every verifier knows it yet: sign with both)
        #[arg(long, default_value = "rsa")]
        algorithm: String,
        /// RSA key size (2048-4096; RFC 8301 asks for at least 1024, 2048 is usual)
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Write the private key to this file (readable by its owner only) instead of
        /// printing it
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Work with plugins
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// List and act on the spool (while the server runs or not)
    #[command(subcommand)]
    Queue(QueueCommand),
}

#[derive(Subcommand)]
enum QueueCommand {
    /// One message a line: id, age, size, sender, recipients with their state
    List {
        /// One JSON object a line
        #[arg(long)]
        json: bool,
    },
    /// Retry deferred mail now, all or for one domain
    Flush { domain: Option<String> },
    /// Delete a message from the queue
    Remove { id: String },
    /// Keep a message from being delivered until released
    Hold { id: String },
    /// Deliver a held message again
    Release { id: String },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Run a plugin's hooks offline, as a session would, and print each verdict and change
    Test(wasmtp::plugin::offline::OfflineTest),
    /// Write a new plugin project (Rust, JavaScript, Python or C) that builds with the
    /// command it prints and passes `plugin test` as it is
    New(wasmtp::scaffold::New),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("WASMTP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // WASMTP_LOG_FORMAT=json: one JSON object a line, with the spans it belongs to (the
    // session with its id and client, the transaction or the delivery with its queue id).
    if std::env::var("WASMTP_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        logs.json()
            .with_current_span(false)
            .with_span_list(true)
            .init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    match cli.command {
        Command::Serve => serve(cli.config),
        Command::CheckConfig => check_config(cli.config),
        Command::Plugin(PluginCommand::New(new)) => report(wasmtp::scaffold::run(&new)),
        Command::Plugin(PluginCommand::Test(test)) => {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            report(runtime.block_on(wasmtp::plugin::offline::run(&test)))
        }
        Command::Queue(command) => {
            let config = match Config::load(cli.config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let spool = match wasmtp::spool::Spool::attach(&config.spool.path) {
                Ok(s) => s,
                Err(e) => return report(Err::<String, _>(e)),
            };
            report(match command {
                QueueCommand::List { json } => wasmtp::queue::list(&spool, json),
                QueueCommand::Flush { domain } => wasmtp::queue::flush(&spool, domain.as_deref()),
                QueueCommand::Remove { id } => wasmtp::queue::remove(&spool, &id),
                QueueCommand::Hold { id } => wasmtp::queue::hold(&spool, &id),
                QueueCommand::Release { id } => wasmtp::queue::release(&spool, &id),
            })
        }
        Command::DkimKeygen {
            domain,
            selector,
            algorithm,
            bits,
            out,
        } => report(dkim_keygen(&domain, &selector, &algorithm, bits, out)),
        Command::HashPassword => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err()
                || line.trim_end_matches(['\r', '\n']).is_empty()
            {
                eprintln!("error: expected a password on standard input");
                return ExitCode::FAILURE;
            }
            report(
                wasmtp::session::hash_password(line.trim_end_matches(['\r', '\n']))
                    .map(|h| format!("{h}\n")),
            )
        }
    }
}

/// Prints a command's output, or its error as one line; exit 0 or 1.
/// `wasmtp dkim-keygen`: the key (printed, or written to `out`), the record to publish and
/// the config lines that use it.
fn dkim_keygen(
    domain: &str,
    selector: &str,
    algorithm: &str,
    bits: usize,
    out: Option<PathBuf>,
) -> Result<String, String> {
    use wasmtp::proto::address::is_domain;
    if !is_domain(domain) {
        return Err(format!("--domain: {domain:?} is not a domain name"));
    }
    if !is_domain(selector) {
        return Err(format!("--selector: {selector:?} is not a selector"));
    }
    let rsa_bits = match algorithm {
        "rsa" if (2048..=4096).contains(&bits) => Some(bits),
        "rsa" => return Err(format!("--bits: {bits} is not within 2048-4096")),
        "ed25519" => None,
        other => return Err(format!("--algorithm: {other:?} is neither rsa nor ed25519")),
    };
    let key = wasmtp::mailauth::keygen(domain, selector, rsa_bits).map_err(|e| e.to_string())?;
    let mut text = String::new();
    let key_path = match &out {
        Some(path) => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut f| f.write_all(key.private_pem.as_bytes()))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            path.display().to_string()
        }
        None => {
            text.push_str(
                "# The private key for [[dkim]] private_key: save it where only wasmtp reads it.\n",
            );
            text.push_str(&key.private_pem);
            format!("dkim-{selector}.pem")
        }
    };
    let strings: Vec<String> = key.txt.iter().map(|s| format!("\"{s}\"")).collect();
    text.push_str(&format!(
        "# Publish in DNS:\n{} IN TXT ( {} )\n# In wasmtp.toml:\n[[dkim]]\ndomain = \"{domain}\"\nselector = \"{selector}\"\nprivate_key = \"{key_path}\"\n",
        key.name,
        strings.join(" ")
    ));
    Ok(text)
}

fn report<E: std::fmt::Display>(result: Result<String, E>) -> ExitCode {
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Validates the config and loads what it names (TLS files, plugins: compiled and
/// initialized), listing every problem at once with its key path.
fn check_config(path: Option<PathBuf>) -> ExitCode {
    let (source, config) = match Config::read(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut problems = config.validate();
    // Loading runs even when validation found problems, so that one run names them all.
    match load_resources(&config) {
        Ok(Err(e)) => problems.extend(e.problems()),
        Ok(Ok(_)) => {}
        Err(e) => problems.push(format!("{e:#}")),
    }
    if !problems.is_empty() {
        eprint!("{}", ConfigError { source, problems });
        return ExitCode::FAILURE;
    }
    println!(
        "config OK: {} listener(s), {} route(s), {} plugin(s)",
        config.listen.len(),
        config.route.len(),
        config.plugin.len()
    );
    ExitCode::SUCCESS
}

/// `check-config`'s load, with a throwaway kv store.
fn load_resources(
    config: &Config,
) -> anyhow::Result<Result<Resources, wasmtp::resources::ResourceErrors>> {
    let runtime = tokio::runtime::Runtime::new()?;
    let kv = Kv::Embedded(Arc::new(EmbeddedKv::open(
        &std::env::temp_dir().join("wasmtp-check-config-kv.json"),
    )?));
    let metrics = Arc::new(wasmtp::metrics::Metrics::default());
    Ok(runtime.block_on(Resources::load(config, kv, metrics)))
}

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Plugin code runs on the workers in slices of one epoch tick (10 ms) between yields; a
    // worker looks for new I/O every `event_interval` polls (61 by default), which behind
    // spinning guests would be over half a second. Every 4th poll keeps it near 40 ms.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .event_interval(4)
        .build()
        .expect("tokio runtime");
    let config_grace = config.limits.shutdown_grace.0;
    runtime.block_on(async move {
        let server = match wasmtp::server::Server::start(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        let mut grace = config_grace;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => match Config::load(config_path.as_deref()) {
                    Err(e) => tracing::error!("reload refused, old configuration kept: {}", e.to_string().trim_end()),
                    Ok(config) => match (config.limits.shutdown_grace.0, server.reload(config).await) {
                        (new_grace, Ok(())) => {
                            grace = new_grace;
                            tracing::info!("configuration reloaded")
                        }
                        (_, Err(e)) => tracing::error!("reload refused, old configuration kept: {e:#}"),
                    },
                },
            }
        }
        tracing::info!("shutting down");
        // A second SIGTERM or SIGINT stops at once; past the grace period (and the queue's
        // moment to save its state) nothing stuck can hold the process.
        let forced = tokio::select! {
            done = tokio::time::timeout(
                grace + SHUTDOWN_SLACK,
                server.shutdown(grace),
            ) => {
                if done.is_err() {
                    tracing::warn!("shutdown did not finish in time; stopping anyway");
                }
                false
            }
            _ = term.recv() => true,
            _ = int.recv() => true,
        };
        if forced {
            tracing::warn!("second signal: stopping now");
        }
        tracing::info!("stopped");
        // Not the runtime's orderly drop, which would wait for whatever is still stuck in a
        // plugin or a blocking call; what was acknowledged is on disk already.
        std::process::exit(if forced { 1 } else { 0 })
    })
}
