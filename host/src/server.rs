//! Listeners, connection limits, TLS handshakes and graceful shutdown.

use crate::clients::{Clients, Connection};
use crate::config::{Config, Mode, Network};
use crate::delivery::{self, QueueHandle};
use crate::metrics::Metrics;
use crate::plugin::kv::Kv;
use crate::proto::replies;
use crate::resources::Resources;
use crate::session::{Context, Outcome, Session};
use crate::spool::{Spool, SpoolLock};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

/// A client that has not finished the TLS handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the server could not start, or a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("spool.path {}: {source}", path.display())]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kv store under {}: {source}", path.display())]
    Kv {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `key` is the config key of the address (`listen[0].address`, `metrics.address`).
    #[error("{key} {address}: {source}")]
    Bind {
        key: String,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("delivery queue: {0}")]
    Queue(std::io::Error),
    #[error("{0}")]
    Resources(#[from] crate::resources::ResourceErrors),
    #[error("spool.path cannot change while running; restart to move the spool")]
    SpoolMoved,
}

/// A running server.
pub struct Server {
    /// The bound address of each `[[listen]]`, in config order (port 0 resolved).
    pub listen_addrs: Vec<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    sessions: Arc<Semaphore>,
    max_sessions: u32,
    tasks: Vec<JoinHandle<()>>,
    queue_task: JoinHandle<()>,
    kv_task: JoinHandle<()>,
    /// What new sessions get; replaced by `reload`.
    current: watch::Sender<Arc<Context>>,
    config_tx: watch::Sender<Arc<Config>>,
    fixed: Fixed,
}

/// What stays the same across reloads.
struct Fixed {
    spool: Spool,
    queue: QueueHandle,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    kv: Kv,
    clients: Arc<Clients>,
    /// What delivery takes of the current load: the after-queue plugins and keys, the
    /// routes' TLS client configs.
    loaded: watch::Sender<Option<Arc<delivery::Loaded>>>,
    /// One server per spool; `wasmtp queue` sees it is held and asks instead of writing.
    _spool_lock: SpoolLock,
}

impl Fixed {
    /// Delivery gets what `ctx` loaded: the scan after the queue its plugins and keys, a
    /// route its TLS client config (messages recovered at start wait for this).
    fn publish_loaded(&self, ctx: &Context) {
        self.loaded.send_replace(Some(Arc::new(delivery::Loaded {
            plugins: ctx.plugins.clone(),
            signers: ctx.signers.clone(),
            route_tls: ctx.route_tls.clone(),
        })));
    }
}

/// Builds what sessions share from a config, loading its TLS files and plugins.
async fn context(config: Arc<Config>, fixed: &Fixed) -> Result<Context, ServerError> {
    let Resources {
        tls,
        plugins,
        verifier,
        signers,
        route_tls,
    } = Resources::load(&config, fixed.kv.clone(), fixed.metrics.clone()).await?;
    Ok(Context {
        config,
        spool: fixed.spool.clone(),
        queue: fixed.queue.clone(),
        tls,
        shutdown: fixed.shutdown.clone(),
        metrics: fixed.metrics.clone(),
        clients: fixed.clients.clone(),
        plugins,
        verifier,
        signers,
        route_tls,
    })
}

impl Server {
    /// Opens the spool, binds every listener, recovers the queue and starts serving.
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        let config = Arc::new(config);
        let (spool, spool_lock) = Spool::open(&config.spool.path, config.spool.segment_size.0)
            .map_err(|source| ServerError::Spool {
                path: config.spool.path.clone(),
                source,
            })?;
        let metrics = Arc::new(Metrics::default());
        spool.observe(metrics.clone());
        let (shutdown_tx, shutdown) = watch::channel(false);
        let kv = Kv::open(&config.kv, &config.spool.path).map_err(|source| ServerError::Kv {
            path: config.spool.path.clone(),
            source,
        })?;
        let mut listeners = Vec::new();
        for (i, l) in config.listen.iter().enumerate() {
            let (listener, addr) = bind(format!("listen[{i}].address"), l.address).await?;
            listeners.push((listener, addr, (l.mode, l.proxy())));
        }
        let mut tasks = Vec::new();
        let metrics_addr = match &config.metrics {
            Some(m) => {
                let (listener, addr) = bind("metrics.address".into(), m.address).await?;
                let healthy = health_check(&config, &spool, &shutdown);
                tasks.push(tokio::spawn(crate::metrics::serve(
                    listener,
                    metrics.clone(),
                    healthy,
                )));
                Some(addr)
            }
            None => None,
        };
        let (config_tx, config_rx) = watch::channel(config.clone());
        let (loaded, loaded_rx) = watch::channel(None);
        let (queue, queue_task) = delivery::start(
            config_rx,
            spool.clone(),
            metrics.clone(),
            shutdown.clone(),
            listeners.iter().map(|(_, addr, _)| *addr).collect(),
            loaded_rx,
        )
        .map_err(ServerError::Queue)?;
        let fixed = Fixed {
            spool,
            queue,
            shutdown: shutdown.clone(),
            metrics: metrics.clone(),
            kv: kv.clone(),
            clients: Arc::new(Clients::default()),
            loaded,
            _spool_lock: spool_lock,
        };
        let ctx = context(config.clone(), &fixed).await?;
        fixed.publish_loaded(&ctx);
        let kv_task = tokio::spawn(flush_kv(kv, shutdown.clone()));
        let (current, current_rx) = watch::channel(Arc::new(ctx));
        let max_sessions = u32::try_from(config.limits.connections).unwrap_or(u32::MAX >> 3);
        let sessions = Arc::new(Semaphore::new(max_sessions as usize));
        let mut listen_addrs = Vec::new();
        for (listener, addr, door) in listeners {
            let proxy_protocol = door.1.is_some();
            tracing::info!(%addr, mode = door.0.as_str(), proxy_protocol, "listening");
            listen_addrs.push(addr);
            tasks.push(tokio::spawn(accept_loop(
                (listener, addr.to_string()),
                door,
                current_rx.clone(),
                shutdown.clone(),
                sessions.clone(),
            )));
        }
        Ok(Server {
            listen_addrs,
            metrics_addr,
            metrics,
            shutdown: shutdown_tx,
            sessions,
            max_sessions,
            tasks,
            queue_task,
            kv_task,
            current,
            config_tx,
            fixed,
        })
    }

    /// SIGHUP: builds everything from `config` (TLS, plugins) and, only when all of it
    /// loads, switches new sessions and the next delivery attempts to it. Sessions already
    /// running keep what they started with. Listeners, the spool and limits.connections
    /// stay as they are until a restart.
    pub async fn reload(&self, config: Config) -> Result<(), ServerError> {
        let old = self.current.borrow().config.clone();
        if config.spool.path != old.spool.path {
            return Err(ServerError::SpoolMoved);
        }
        let listen = |c: &Config| {
            c.listen
                .iter()
                .map(|l| (l.address, l.mode))
                .collect::<Vec<_>>()
        };
        if listen(&config) != listen(&old) || config.limits.connections != old.limits.connections {
            tracing::warn!("[[listen]] and limits.connections changes take effect after a restart");
        }
        if config.kv != old.kv {
            tracing::warn!("[kv] changes take effect after a restart");
        }
        let ctx = context(Arc::new(config), &self.fixed).await?;
        self.config_tx.send_replace(ctx.config.clone());
        self.fixed.publish_loaded(&ctx);
        self.current.send_replace(Arc::new(ctx));
        Ok(())
    }

    /// Stops accepting, answers idle sessions 421 4.3.2 and lets transactions in flight
    /// finish within `grace`. Delivery stops at the signal (attempts in flight get 10 s);
    /// the spool is synced, and the kv store written once more after the sessions, which
    /// may have changed it.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(grace, self.sessions.acquire_many(self.max_sessions))
            .await
            .is_err()
        {
            tracing::warn!("grace period over; closing remaining sessions");
        }
        let _ = self.queue_task.await;
        // Delivery progress written "soon" is made durable before the process goes.
        if let Err(e) = self.fixed.spool.sync().await {
            tracing::error!(error = %e, "cannot sync the spool");
        }
        let _ = self.kv_task.await;
        let kv = self.fixed.kv.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || kv.flush()).await {
            tracing::error!(error = %e, "cannot persist the plugin kv store");
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Pending connections the kernel queues per listener (tokio's default, 128, drops SYNs
/// under a burst of a few hundred clients; the kernel caps it at net.core.somaxconn).
const LISTEN_BACKLOG: u32 = 1024;

/// Binds the address of config key `key`; returns the listener and its bound address (port
/// 0 resolved).
async fn bind(key: String, address: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let failed = |source| ServerError::Bind {
        key: key.clone(),
        address,
        source,
    };
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(&failed)?;
    // As std's and tokio's own bind do: a restart can rebind while old connections linger.
    socket.set_reuseaddr(true).map_err(&failed)?;
    socket.bind(address).map_err(&failed)?;
    let listener = socket.listen(LISTEN_BACKLOG).map_err(&failed)?;
    let bound = listener.local_addr().map_err(&failed)?;
    Ok((listener, bound))
}

/// Persists the kv store once a second while it changes, and once more at shutdown.
async fn flush_kv(kv: Kv, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
            _ = shutdown.wait_for(|s| *s) => true,
        };
        let kv2 = kv.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || kv2.flush()).await {
            tracing::error!(error = %e, "cannot persist the plugin kv store");
        }
        if stop {
            return;
        }
    }
}

/// A session's id in the logs: the process's session count, in hex, with the time the
/// process started (as queue ids are made), so ids do not repeat across restarts.
fn session_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    static STARTED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let started = *STARTED.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    format!("{started:X}-{:X}", COUNT.fetch_add(1, Ordering::Relaxed))
}

/// `/healthz`: the server is not stopping, and its spool takes writes (its directory is
/// there and has `spool.min_free` free).
fn health_check(
    config: &Config,
    spool: &Spool,
    shutdown: &watch::Receiver<bool>,
) -> Arc<dyn Fn() -> bool + Send + Sync> {
    let (spool, shutdown, min_free) = (spool.clone(), shutdown.clone(), config.spool.min_free.0);
    Arc::new(move || !*shutdown.borrow() && spool.free_space().is_ok_and(|f| f >= min_free))
}

/// One open SMTP session in `wasmtp_open_connections`, for as long as it lives.
struct Open(Arc<Metrics>, crate::metrics::Listener);

impl Open {
    fn new(metrics: Arc<Metrics>, listener: &str) -> Open {
        let labels = crate::metrics::Listener {
            listener: listener.to_string(),
        };
        metrics.connections.get_or_create(&labels).inc();
        Open(metrics, labels)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections.get_or_create(&self.1).dec();
    }
}

/// Takes `listener`'s connections (`name`: its address, the metrics' label) in `mode`;
/// with `proxy` (`proxy_protocol = true`), only from those peers, each with its PROXY header
/// read first (in the connection's own task, holding a slot of `limits.connections`).
async fn accept_loop(
    (listener, name): (TcpListener, String),
    (mode, proxy): (Mode, Option<Vec<Network>>),
    current: watch::Receiver<Arc<Context>>,
    mut shutdown: watch::Receiver<bool>,
    sessions: Arc<Semaphore>,
) {
    let name: Arc<str> = name.into();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (mut tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let ctx = current.borrow().clone();
        if let Some(trusted) = &proxy
            && !trusted.iter().any(|n| n.contains(peer.ip()))
        {
            // Not our balancer: closed without a word.
            tracing::debug!(%peer, "a peer outside proxy_from: connection closed");
            ctx.metrics.connection(&name, false);
            continue;
        }
        let permit = sessions.clone().try_acquire_owned().ok();
        let (name, proxied) = (name.clone(), proxy.is_some());
        tokio::spawn(async move {
            let client = match proxied {
                false => peer,
                true => match crate::proxy::read(&mut tcp).await {
                    Ok(client) => client.unwrap_or(peer),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "connection closed");
                        ctx.metrics.connection(&name, false);
                        return;
                    }
                },
            };
            admit(ctx, &name, mode, tcp, client, permit).await;
        });
    }
}

/// A connection from `client` (the peer, or whom its PROXY header named): with a slot of
/// `limits.connections` (`permit`) and one of the client's `limits.connections_per_ip`, its
/// session; else the refusal, written without waiting long for the client to read it.
async fn admit(
    ctx: Arc<Context>,
    name: &str,
    mode: Mode,
    mut tcp: TcpStream,
    client: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
) {
    let per_ip = ctx.config.limits.connections_per_ip;
    let refusal = match permit {
        None => replies::TOO_MANY_CONNECTIONS,
        Some(permit) => match ctx.clients.connect(client.ip(), per_ip) {
            Some(slot) => {
                ctx.metrics.connection(name, true);
                let open = Open::new(ctx.metrics.clone(), name);
                // Every line of the session carries its id and client.
                let span = tracing::info_span!(
                    "session",
                    session = %session_id(),
                    client = %client,
                );
                let session = serve_connection(ctx, mode, tcp, client, (permit, slot, open));
                tracing::Instrument::instrument(session, span).await;
                return;
            }
            None => replies::TOO_MANY_FROM_CLIENT,
        },
    };
    ctx.metrics.connection(name, false);
    let mut out = Vec::new();
    refusal.write_to(&mut out);
    // A client that does not read cannot keep this task.
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.write_all(&out)).await;
}

async fn serve_connection(
    ctx: Arc<Context>,
    mode: Mode,
    mut tcp: TcpStream,
    peer: SocketAddr,
    // Held for the connection's life: a slot of `limits.connections`, one of the
    // client's `limits.connections_per_ip`, and its place in the open-connections gauge.
    _slots: (OwnedSemaphorePermit, Connection, Open),
) {
    let mut session = Session::new(ctx.clone(), mode, peer);
    let greeting = session.greeting();
    // The TLS part is boxed: a TLS stream and its session future are large, and an idle
    // session in the clear should not carry room for them.
    let result = if mode == Mode::Submissions {
        // RFC 8314 3: implicit TLS, the greeting comes after the handshake.
        match Box::pin(over_tls(&ctx, tcp, &mut session, Some(greeting))).await {
            Some(result) => result,
            None => return,
        }
    } else {
        match session.run(&mut tcp, Some(greeting)).await {
            Ok(Outcome::StartTls) => {
                match Box::pin(over_tls(&ctx, tcp, &mut session, None)).await {
                    Some(result) => result,
                    None => return,
                }
            }
            other => other,
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "session ended with an I/O error");
    }
}

/// The handshake, then the session over TLS; `None` when the handshake failed.
async fn over_tls(
    ctx: &Context,
    tcp: TcpStream,
    session: &mut Session,
    greeting: Option<crate::proto::Reply>,
) -> Option<std::io::Result<Outcome>> {
    let (mut tls, description) = handshake(ctx, tcp).await?;
    session.tls_started(description);
    Some(match session.run(&mut tls, greeting).await {
        // RFC 2645: the roles turn; the grant delivers over this connection, then QUIT.
        Ok(Outcome::Atrn(grant)) => {
            let timeouts = crate::delivery::Timeouts::from_config(&ctx.config.delivery);
            grant.serve(tls, &ctx.config.hostname, timeouts).await;
            Ok(Outcome::Closed)
        }
        other => other,
    })
}

async fn handshake(
    ctx: &Context,
    tcp: TcpStream,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, String)> {
    let config = ctx.tls.clone()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            let conn = tls.get_ref().1;
            let version = conn
                .protocol_version()
                .map(|v| format!("{v:?}").replace('_', "."))
                .unwrap_or_default();
            let cipher = conn
                .negotiated_cipher_suite()
                .map(|c| format!("{:?}", c.suite()))
                .unwrap_or_default();
            Some((tls, format!("{version} with cipher {cipher}")))
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}
