//! A receiving SMTP server for tests: the next hop. It records every transaction and can
//! refuse or defer recipients by rule, offer STARTTLS, and omit extensions.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct SinkMessage {
    /// The MAIL command line as received.
    pub mail: String,
    /// The RCPT command lines that were accepted.
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
    pub tls: bool,
    /// Which connection it came on (1 for the sink's first), and the RSETs on it before.
    pub connection: usize,
    pub resets: usize,
    /// It came in BDAT chunks (RFC 3030), not DATA.
    pub chunked: bool,
}

impl SinkMessage {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// Decides the reply to a RCPT line; `None` means 250.
pub type RcptRule = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

#[derive(Clone, Default)]
pub struct SinkOptions {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub rcpt_rule: Option<RcptRule>,
    pub no_pipelining: bool,
    /// Speak LMTP (RFC 2033): LHLO, and one reply per recipient after the data.
    pub lmtp: bool,
    /// Hang up (without a word) after each message's reply.
    pub hang_up_after_message: bool,
    /// Leave DSN, 8BITMIME, SMTPUTF8 out of the EHLO reply.
    pub no_dsn: bool,
    pub no_8bitmime: bool,
    pub no_smtputf8: bool,
    /// Offer CHUNKING (RFC 3030) and take BDAT.
    pub chunking: bool,
    /// Offer REQUIRETLS (RFC 8689) once TLS is up.
    pub requiretls: bool,
    /// How long to wait before the reply to each message's data (a slow next hop).
    pub hold: Duration,
}

/// Transactions open at once (from MAIL to the reply to the data, or RSET, or hang-up), and
/// the most there were.
#[derive(Default)]
pub struct Busy {
    now: AtomicUsize,
    peak: AtomicUsize,
}

/// One open transaction, counted in `Busy` until dropped.
struct Open(Arc<Busy>);

impl Open {
    fn new(busy: &Arc<Busy>) -> Open {
        let now = busy.now.fetch_add(1, Ordering::SeqCst) + 1;
        busy.peak.fetch_max(now, Ordering::SeqCst);
        Open(busy.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct Sink {
    pub addr: SocketAddr,
    pub messages: Arc<Mutex<Vec<SinkMessage>>>,
    busy: Arc<Busy>,
    options: SinkOptions,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sink {
    pub async fn start(options: SinkOptions) -> Sink {
        Sink::start_on("127.0.0.1:0", options).await
    }

    /// A sink whose RCPT replies come from `rule` (`None` accepts).
    pub async fn with_rcpt_rule(
        rule: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Sink {
        Sink::start(SinkOptions {
            rcpt_rule: Some(Arc::new(rule)),
            ..Default::default()
        })
        .await
    }

    pub async fn start_on(addr: &str, options: SinkOptions) -> Sink {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let store = messages.clone();
        let busy = Arc::new(Busy::default());
        let counted = busy.clone();
        let kept = options.clone();
        let task = tokio::spawn(async move {
            for connection in 1.. {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (store, options) = (store.clone(), options.clone());
                let busy = counted.clone();
                tokio::spawn(async move {
                    let on = On {
                        options: &options,
                        store: &store,
                        busy: &busy,
                        connection,
                    };
                    if let Some(tcp) = session(tcp, &on, false).await
                        && let Some(cfg) = options.tls.clone()
                        && let Ok(tls) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await
                    {
                        session(tls, &on, true).await;
                    }
                });
            }
        });
        Sink {
            addr,
            messages,
            busy,
            options: kept,
            task,
        }
    }

    /// Serves a connection it did not accept: one turned around by ATRN (RFC 2645), under
    /// TLS already. Greets, then serves it as any session until QUIT or hang-up.
    pub async fn serve_reversed<S: AsyncRead + AsyncWrite + Unpin>(&self, mut stream: S) {
        stream
            .write_all(b"220 customer.test ESMTP\r\n")
            .await
            .unwrap();
        let on = On {
            options: &self.options,
            store: &self.messages,
            busy: &self.busy,
            connection: 0,
        };
        session(stream, &on, true).await;
    }

    /// The most transactions that were open at once.
    pub fn peak_transactions(&self) -> usize {
        self.busy.peak.load(Ordering::SeqCst)
    }

    pub fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    /// The delivery status reports it got (MAIL FROM:<>).
    pub fn reports(&self) -> Vec<SinkMessage> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.mail.starts_with("MAIL FROM:<>"))
            .cloned()
            .collect()
    }

    /// Waits until at least `n` messages arrived; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<SinkMessage> {
        super::eventually(&format!("{n} message(s) at the sink"), || self.count() >= n).await;
        self.messages.lock().unwrap().clone()
    }

    /// The route target to this sink as the config writes it (`smtp:127.0.0.1:PORT`).
    pub fn smtp_target(&self) -> String {
        format!("smtp:{}", self.addr)
    }

    pub fn config_route(&self, domain: &str, tls: &str) -> String {
        self.route(domain, "smtp", tls)
    }

    pub fn lmtp_route(&self, domain: &str) -> String {
        self.route(domain, "lmtp", "none")
    }

    fn route(&self, domain: &str, scheme: &str, tls: &str) -> String {
        format!(
            "[[route]]\ndomain = \"{domain}\"\nto = \"{scheme}:{}\"\ntls = \"{tls}\"\n",
            self.addr
        )
    }
}

/// What a connection is served with.
struct On<'a> {
    options: &'a SinkOptions,
    store: &'a Mutex<Vec<SinkMessage>>,
    busy: &'a Arc<Busy>,
    connection: usize,
}

/// Serves one connection; returns the stream when the client asked for STARTTLS.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    on: &On<'_>,
    tls: bool,
) -> Option<S> {
    let (options, store) = (on.options, on.store);
    let mut resets = 0;
    let mut chunks = Vec::new();
    let mut s = BufReader::new(stream);
    if !tls {
        s.get_mut()
            .write_all(b"220 sink.test ESMTP\r\n")
            .await
            .ok()?;
    }
    let mut mail = None;
    let mut open = None;
    let mut rcpts = Vec::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(30), s.read_line(&mut line))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        let line = line.trim_end().to_string();
        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" | "LHLO" if (verb == "LHLO") == options.lmtp => {
                let mut ext = vec!["250-sink.test"];
                if !options.no_pipelining {
                    ext.push("250-PIPELINING");
                }
                if options.tls.is_some() && !tls {
                    ext.push("250-STARTTLS");
                }
                ext.push("250-SIZE 100000000");
                if options.chunking {
                    ext.push("250-CHUNKING");
                }
                if options.requiretls && tls {
                    ext.push("250-REQUIRETLS");
                }
                for (name, off) in [
                    ("250-8BITMIME", options.no_8bitmime),
                    ("250-SMTPUTF8", options.no_smtputf8),
                    ("250-DSN", options.no_dsn),
                ] {
                    if !off {
                        ext.push(name);
                    }
                }
                ext.push("250 HELP");
                ext.join("\r\n")
            }
            "STARTTLS" if options.tls.is_some() && !tls => {
                s.get_mut().write_all(b"220 go ahead\r\n").await.ok()?;
                return Some(s.into_inner());
            }
            "MAIL" => {
                open.get_or_insert_with(|| Open::new(on.busy));
                mail = Some(line.clone());
                rcpts.clear();
                "250 ok".into()
            }
            "RCPT" => match options.rcpt_rule.as_ref().and_then(|r| r(&line)) {
                Some(reply) => reply,
                None => {
                    rcpts.push(line.clone());
                    "250 ok".into()
                }
            },
            "DATA" if mail.is_some() && !rcpts.is_empty() => {
                s.get_mut().write_all(b"354 go\r\n").await.ok()?;
                let mut data = Vec::new();
                loop {
                    let mut l = Vec::new();
                    if s.read_until(b'\n', &mut l).await.ok()? == 0 {
                        return None;
                    }
                    if l == b".\r\n" {
                        break;
                    }
                    let l = if l.starts_with(b".") { &l[1..] } else { &l[..] };
                    data.extend_from_slice(l);
                }
                let accepted = rcpts.len();
                store.lock().unwrap().push(SinkMessage {
                    mail: mail.take().unwrap(),
                    rcpts: std::mem::take(&mut rcpts),
                    data,
                    tls,
                    connection: on.connection,
                    resets,
                    chunked: false,
                });
                tokio::time::sleep(options.hold).await;
                open = None;
                if options.hang_up_after_message {
                    let _ = s.get_mut().write_all(b"250 2.0.0 queued at sink\r\n").await;
                    return None;
                }
                if options.lmtp {
                    // RFC 2033 4.2: one reply per accepted recipient; the last one is refused
                    // here so that tests see per-recipient outcomes.
                    let mut replies: Vec<&str> = vec!["250 2.0.0 delivered"; accepted];
                    if accepted > 1 {
                        replies[accepted - 1] = "452 4.2.2 mailbox full";
                    }
                    replies.join("\r\n")
                } else {
                    "250 2.0.0 queued at sink".into()
                }
            }
            "DATA" => "503 no valid recipients".into(),
            "BDAT" if options.chunking && mail.is_some() && !rcpts.is_empty() => {
                let mut args = line.split(' ').skip(1);
                let size: usize = args.next()?.parse().ok()?;
                let last = args.next().is_some_and(|a| a.eq_ignore_ascii_case("LAST"));
                let mut chunk = vec![0u8; size];
                tokio::io::AsyncReadExt::read_exact(&mut s, &mut chunk)
                    .await
                    .ok()?;
                chunks.extend_from_slice(&chunk);
                if last {
                    store.lock().unwrap().push(SinkMessage {
                        mail: mail.take().unwrap(),
                        rcpts: std::mem::take(&mut rcpts),
                        data: std::mem::take(&mut chunks),
                        tls,
                        connection: on.connection,
                        resets,
                        chunked: true,
                    });
                    tokio::time::sleep(options.hold).await;
                    open = None;
                    "250 2.0.0 queued at sink".into()
                } else {
                    format!("250 2.0.0 {size} octets")
                }
            }
            "RSET" => {
                resets += 1;
                open = None;
                mail = None;
                rcpts.clear();
                "250 ok".into()
            }
            "QUIT" => {
                let _ = s.get_mut().write_all(b"221 bye\r\n").await;
                return None;
            }
            _ => "250 ok".into(),
        };
        s.get_mut()
            .write_all(format!("{reply}\r\n").as_bytes())
            .await
            .ok()?;
    }
}
