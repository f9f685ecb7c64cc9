//! Shared test helpers: an in-process server on 127.0.0.1:0, an SMTP client, a receiving
//! SMTP server (the next hop), and certificates generated with rcgen.
#![allow(dead_code)]

pub mod auth;
pub mod ca;
pub mod dns;
pub mod haproxy;
pub mod policy;
pub mod redis;
pub mod rspamd;
pub mod sink;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use wasmtp::config::Config;
use wasmtp::server::Server;

pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A running server with its own temporary directory.
pub struct TestServer {
    pub server: Server,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// `extra` is appended to a base config whose spool lives in a temporary directory.
    /// `{dir}` in `extra` is replaced with that directory.
    pub async fn start(extra: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let toml = base_config(dir.path(), extra);
        let config = Config::parse("test", &toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let server = Server::start(config).await.unwrap();
        TestServer { server, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.listen_addrs[0]
    }

    pub fn deferrals(&self) -> u64 {
        self.server.metrics.deferrals()
    }

    pub fn deliveries(&self) -> u64 {
        self.server.metrics.deliveries_total.get()
    }

    /// The value of one sample of the server's exposition, `name{labels}` as written
    /// there (labels in their family's order); 0 when it has none.
    pub fn metric(&self, sample: &str) -> f64 {
        let text = self.server.metrics.render();
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
            .map_or(0.0, |v| v.parse().unwrap())
    }

    /// Connects, says EHLO and sends one message; asserts it was queued.
    pub async fn send_one(&self, to: &[&str], subject: &str) -> Client {
        let mut c = Client::connect(self.addr()).await;
        c.cmd("EHLO c", "250").await;
        let reply = c
            .send_mail("s@c.test", to, &format!("Subject: {subject}\r\n\r\nx"))
            .await;
        assert!(reply.starts_with("250"), "{reply}");
        c
    }

    /// The spool as `wasmtp queue` sees it beside the server.
    pub fn spool(&self) -> wasmtp::spool::Spool {
        wasmtp::spool::Spool::attach(&self.dir.path().join("spool")).unwrap()
    }

    pub fn spool_ids(&self) -> Vec<String> {
        self.spool()
            .list()
            .iter()
            .map(|id| id.as_str().to_string())
            .collect()
    }
}

/// A config with one mx listener on port 0, `accept.domains = ["example.test"]`.
pub fn base_config(dir: &Path, extra: &str) -> String {
    let extra = extra.replace("{dir}", &dir.display().to_string());
    let has_listen = extra.contains("[[listen]]");
    let listen = if has_listen {
        ""
    } else {
        "[[listen]]\naddress = \"127.0.0.1:0\"\nmode = \"mx\"\n"
    };
    // Sender verification only where a test asks for it (with its own DNS server).
    let verify = if extra.contains("[authentication]") {
        ""
    } else {
        "[authentication]\nverify = false\n"
    };
    format!(
        "hostname = \"mx.test\"\n{listen}\n[spool]\npath = \"{}/spool\"\n{verify}\n{extra}\n",
        dir.display()
    )
}

/// Writes a self-signed certificate for `localhost` into `dir`; returns the `[tls]` section.
pub fn tls_section(dir: &Path) -> String {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "mx.test".into()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    format!(
        "[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    )
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A line-oriented SMTP client for tests.
pub struct Client {
    stream: BufReader<Box<dyn Io>>,
}

impl Client {
    /// Connects and checks the 220 greeting.
    pub async fn connect(addr: SocketAddr) -> Client {
        let mut c = Client::connect_raw(addr).await;
        let greeting = c.reply().await;
        assert!(greeting.starts_with("220 "), "greeting: {greeting}");
        c
    }

    /// From a socket bound to `local` (a loopback address: 127.0.0.2, say), so that the
    /// server sees that client address; checks the greeting.
    pub async fn connect_from(addr: SocketAddr, local: std::net::IpAddr) -> Client {
        let mut c = Client::connect_raw_from(addr, local).await;
        let greeting = c.reply().await;
        assert!(greeting.starts_with("220 "), "greeting: {greeting}");
        c
    }

    /// `connect_from` without reading the greeting.
    pub async fn connect_raw_from(addr: SocketAddr, local: std::net::IpAddr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(local, 0)).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        Client {
            stream: BufReader::new(Box::new(tcp)),
        }
    }

    pub async fn connect_raw(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Client {
            stream: BufReader::new(Box::new(tcp)),
        }
    }

    /// Implicit TLS (port 465 style); checks the greeting.
    pub async fn connect_tls(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Client::greeted_over_tls(tcp).await
    }

    /// `connect_tls` from a socket bound to `local` (a loopback address).
    pub async fn connect_tls_from(addr: SocketAddr, local: std::net::IpAddr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(local, 0)).unwrap();
        Client::greeted_over_tls(socket.connect(addr).await.unwrap()).await
    }

    async fn greeted_over_tls(tcp: TcpStream) -> Client {
        let tls = tls_connect(tcp).await;
        let mut c = Client {
            stream: BufReader::new(Box::new(tls)),
        };
        let greeting = c.reply().await;
        assert!(greeting.starts_with("220 "), "greeting: {greeting}");
        c
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.unwrap();
        self.stream.get_mut().flush().await.unwrap();
    }

    /// Reads one reply, all lines joined with '\n'.
    pub async fn reply(&mut self) -> String {
        tokio::time::timeout(TIMEOUT, async {
            let mut all = Vec::new();
            loop {
                let mut line = String::new();
                let n = self.stream.read_line(&mut line).await.unwrap();
                assert!(n > 0, "connection closed; got so far: {all:?}");
                let line = line.trim_end().to_string();
                let last = line.as_bytes().get(3) != Some(&b'-');
                all.push(line);
                if last {
                    return all.join("\n");
                }
            }
        })
        .await
        .expect("reply timed out")
    }

    /// Sends a command and asserts the reply starts with `expect`; returns the reply.
    pub async fn cmd(&mut self, line: &str, expect: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        let reply = self.reply().await;
        assert!(
            reply.starts_with(expect),
            "{line:?}: expected {expect:?}, got {reply:?}"
        );
        reply
    }

    /// True when the server has closed the connection (EOF) within the timeout.
    pub async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 256];
        matches!(
            tokio::time::timeout(TIMEOUT, self.stream.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// The connection itself, for a test that turns it around (ATRN); nothing may be
    /// buffered.
    pub fn into_stream(self) -> Box<dyn Io> {
        assert!(self.stream.buffer().is_empty(), "unread bytes");
        self.stream.into_inner()
    }

    /// STARTTLS: asserts 220, drops anything buffered, performs the handshake.
    pub async fn starttls(mut self) -> Client {
        self.cmd("STARTTLS", "220").await;
        let inner = self.stream.into_inner();
        let tls = tls_connect(inner).await;
        Client {
            stream: BufReader::new(Box::new(tls)),
        }
    }

    /// A whole transaction by DATA; returns the final reply.
    pub async fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> String {
        self.cmd(&format!("MAIL FROM:<{from}>"), "250").await;
        for rcpt in to {
            self.cmd(&format!("RCPT TO:<{rcpt}>"), "250").await;
        }
        self.cmd("DATA", "354").await;
        self.send(format!("{body}\r\n.\r\n").as_bytes()).await;
        self.reply().await
    }
}

async fn tls_connect<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
) -> tokio_rustls::client::TlsStream<S> {
    let connector = tokio_rustls::TlsConnector::from(wasmtp::tls::delivery_client_config());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, stream).await.unwrap()
}

/// Waits until `f` is true, polling; panics after the timeout.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    eventually_async(what, || std::future::ready(f())).await
}

/// Polls `f` until it yields true; panics after the timeout. For conditions that need to
/// await (a new connection, say).
pub async fn eventually_async<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Octets of the segments of the spool under `dir` (`dir/spool/log`), none when it is not
/// there yet.
pub fn spool_octets(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("spool/log"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

pub fn maildir_files(root: &Path, user: &str) -> Vec<PathBuf> {
    std::fs::read_dir(root.join(user).join("new"))
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default()
}

pub fn shared<T>(v: T) -> Arc<std::sync::Mutex<T>> {
    Arc::new(std::sync::Mutex::new(v))
}

/// The path of a test guest component (`tests/guests/NAME`, built by host/build.rs).
pub fn guest(name: &str) -> String {
    format!("{}/{name}.wasm", env!("WASMTP_PLUGIN_DIR"))
}

/// An example plugin built by `examples/build.sh` into `target/examples/`.
pub fn example(name: &str) -> String {
    let path = format!(
        "{}/../target/examples/{name}.wasm",
        env!("CARGO_MANIFEST_DIR")
    );
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: run examples/build.sh (tests/run.sh does)"
    );
    path
}

/// The `wasmtp` binary built by Cargo for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_wasmtp");

/// A free loopback port (bound, then released), never one this test process was given
/// before: tests run in parallel, and between one's choosing a port and its server's binding
/// it the kernel could hand the same port to another.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Runs `wasmtp queue ARGS --config FILE`: (exit status, stdout, stderr). Asynchronous, so
/// that a server in the test's own runtime can answer it.
pub async fn queue_cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(BIN)
        .arg("queue")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The binary running `serve --config FILE` in its own process.
pub struct Process {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl Process {
    /// Starts `wasmtp serve` and waits until it accepts connections on `addr`.
    pub async fn serve(config: &Path, cwd: &Path, addr: SocketAddr) -> Process {
        let child = std::process::Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .current_dir(cwd)
            .env("WASMTP_LOG", "error")
            .spawn()
            .unwrap();
        let p = Process { child, addr };
        p.wait_ready().await;
        p
    }

    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while TcpStream::connect(self.addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "server did not start on {}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for exit; returns the exit code (None when killed by a signal).
    pub async fn wait(mut self) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "process did not exit"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A conformance suite's verdict: every case in `wrong` (name: what we answered instead)
/// is one of `different` (name: why we answer otherwise), and each of those still differs.
pub fn check_suite(
    wrong: &std::collections::BTreeMap<String, String>,
    different: &[(&str, &str)],
    run: usize,
) {
    let unexpected: Vec<String> = wrong
        .iter()
        .filter(|(n, _)| !different.iter().any(|(d, _)| d == n))
        .map(|(n, p)| format!("{n}: {p}"))
        .collect();
    for (name, _) in different {
        assert!(
            wrong.contains_key(*name),
            "{name} now agrees with the suite"
        );
    }
    assert!(
        unexpected.is_empty(),
        "{} of {run} cases disagree:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
}
