//! The `http` capability through the binary: a Rust guest (tests/guests/http-probe) calls a
//! loopback HTTP server started by the test, at EHLO, and answers with what came back. URLs
//! outside `http_allow` are denied to the guest, a body over the cap fails, connections are
//! kept alive, a slow server costs no worker, and a plugin that declares `http` without the
//! grant is refused at start.

mod common;
use common::dns::TestDns;
use common::{BIN, Client, Process};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// A keep-alive HTTP/1.1 server answering each POST by its body (the EHLO name):
/// `slow.test` after a second, `big.test` with 2 MiB, anything else `hello NAME`.
struct Scanner {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Scanner {
    async fn start() -> Scanner {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, r.clone()));
            }
        });
        Scanner {
            addr,
            connections,
            requests,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn serve(stream: tokio::net::TcpStream, requests: Arc<AtomicUsize>) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.unwrap();
        requests.fetch_add(1, Ordering::SeqCst);
        let name = String::from_utf8_lossy(&body).into_owned();
        let answer = match name.as_str() {
            "slow.test" => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                b"slow answer".to_vec()
            }
            "big.test" => vec![b'x'; 2 << 20],
            _ => format!("hello {name}").into_bytes(),
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n",
            answer.len()
        );
        let s = stream.get_mut();
        if s.write_all(head.as_bytes()).await.is_err() || s.write_all(&answer).await.is_err() {
            return;
        }
    }
}

fn probe_wasm() -> String {
    format!("{}/http_probe.wasm", env!("WASMTP_PLUGIN_DIR"))
}

/// A config for the binary with the probe plugin: `grant` goes in its `[[plugin]]` table,
/// `settings` in its `[plugin.config]`, `urls` maps EHLO names to URLs.
fn config(
    dir: &std::path::Path,
    grant: &str,
    settings: &str,
    urls: &[(&str, String)],
) -> (std::path::PathBuf, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let urls: String = urls
        .iter()
        .map(|(name, url)| format!("{name:?} = {url:?}\n"))
        .collect();
    let path = dir.join("c.toml");
    std::fs::write(
        &path,
        format!(
            "hostname = \"mx.test\"\n[[listen]]\naddress = \"{addr}\"\n[spool]\npath = \"spool\"\n\
             [accept]\ndomains = [\"example.test\"]\n\
             [[plugin]]\nname = \"probe\"\npath = {:?}\ntimeout = \"5s\"\n{grant}\n\
             [plugin.config]\n{settings}\n[plugin.config.urls]\n{urls}",
            probe_wasm()
        ),
    )
    .unwrap();
    (path, addr)
}

/// The binary with the probe calling a scanner for EHLO `slow.test`; `settings` go in the
/// probe's `[plugin.config]`.
async fn slow_scanner(settings: &str) -> (Scanner, tempfile::TempDir, Process) {
    let scanner = Scanner::start().await;
    let dir = tempfile::tempdir().unwrap();
    let grant = format!(
        "capabilities = [\"http\"]\nhttp_allow = [{:?}]",
        scanner.url("/")
    );
    let urls = [("slow.test", scanner.url("/"))];
    let (path, addr) = config(dir.path(), &grant, settings, &urls);
    let server = Process::serve(&path, dir.path(), addr).await;
    (scanner, dir, server)
}

async fn ehlo(addr: SocketAddr, name: &str) -> String {
    let mut c = Client::connect(addr).await;
    c.cmd(&format!("EHLO {name}"), "").await
}

#[tokio::test]
async fn allowed_urls_are_called_over_kept_alive_connections_and_others_denied() {
    let scanner = Scanner::start().await;
    let other = Scanner::start().await;
    let dir = tempfile::tempdir().unwrap();
    let grant = format!(
        "capabilities = [\"http\"]\nhttp_allow = [{:?}]\nhttp_max_response = \"1M\"",
        scanner.url("/scan/")
    );
    let urls = [
        ("ok.test", scanner.url("/scan/check")),
        ("big.test", scanner.url("/scan/check")),
        ("path.test", scanner.url("/admin")),
        ("climb.test", scanner.url("/scan/../admin")),
        ("port.test", other.url("/scan/check")),
        ("https.test", format!("https://{}/scan/check", scanner.addr)),
    ];
    let (path, addr) = config(dir.path(), &grant, "", &urls);
    let server = Process::serve(&path, dir.path(), addr).await;

    for _ in 0..3 {
        let reply = ehlo(server.addr, "ok.test").await;
        assert_eq!(reply, "451 4.0.0 status=200 body=hello ok.test");
    }
    assert_eq!(scanner.requests.load(Ordering::SeqCst), 3);
    assert_eq!(
        scanner.connections.load(Ordering::SeqCst),
        1,
        "three requests, one kept-alive connection"
    );

    for name in ["path.test", "climb.test", "port.test", "https.test"] {
        let reply = ehlo(server.addr, name).await;
        assert_eq!(
            reply, "451 4.0.0 error=HTTP request denied (not in http_allow)",
            "{name}"
        );
    }
    assert_eq!(
        scanner.requests.load(Ordering::SeqCst),
        3,
        "no denied request was sent"
    );
    assert_eq!(other.connections.load(Ordering::SeqCst), 0);

    let reply = ehlo(server.addr, "big.test").await;
    assert!(
        reply.contains("response body size exceeds limit: 1048576"),
        "{reply}"
    );
    // Plain EHLO names the probe does not know still work.
    let reply = ehlo(server.addr, "client.test").await;
    assert!(reply.starts_with("250"), "{reply}");
}

/// Fifteen sessions wait on a scanner that takes a second each: they wait together (the
/// guest's wait holds no tokio worker; two workers serving them in turn would take seven
/// and a half seconds), and a session that does not call the scanner is served meanwhile.
#[tokio::test]
async fn sessions_waiting_on_a_slow_scanner_hold_no_worker() {
    let (_scanner, _dir, server) = slow_scanner("").await;
    let start = Instant::now();
    let waiting: Vec<_> = (0..15)
        .map(|_| tokio::spawn(ehlo(server.addr, "slow.test")))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quick = Instant::now();
    let reply = ehlo(server.addr, "client.test").await;
    assert!(reply.starts_with("250"), "{reply}");
    assert!(
        quick.elapsed() < Duration::from_millis(900),
        "a session not calling the scanner waited {:?}",
        quick.elapsed()
    );
    for w in waiting {
        assert_eq!(w.await.unwrap(), "451 4.0.0 status=200 body=slow answer");
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "15 one-second requests took {:?}",
        start.elapsed()
    );
}

/// A host name in `http_allow` is resolved on the server's resolver (`[dns] nameservers`,
/// here a DNS server started by the test), not the machine's.
#[tokio::test]
async fn host_names_are_resolved_on_the_servers_resolver() {
    let scanner = Scanner::start().await;
    let dns = TestDns::start(&[("scanner.test.", "127.0.0.1".parse().unwrap())]).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://scanner.test:{}/", scanner.addr.port());
    let grant = format!("capabilities = [\"http\"]\nhttp_allow = [{url:?}]");
    let urls = [
        ("ok.test", format!("{url}check")),
        (
            "unknown.test",
            format!("http://unknown.test:{}/", scanner.addr.port()),
        ),
    ];
    let (path, addr) = config(dir.path(), &grant, "", &urls);
    let text = std::fs::read_to_string(&path).unwrap()
        + &format!("[dns]\nnameservers = [\"{}\"]\n", dns.addr);
    std::fs::write(&path, text).unwrap();
    let server = Process::serve(&path, dir.path(), addr).await;
    let reply = ehlo(server.addr, "ok.test").await;
    assert_eq!(reply, "451 4.0.0 status=200 body=hello ok.test");
    assert!(dns.queries.load(Ordering::Relaxed) > 0);
    // Not in http_allow: denied before any lookup or connection.
    let reply = ehlo(server.addr, "unknown.test").await;
    assert_eq!(
        reply,
        "451 4.0.0 error=HTTP request denied (not in http_allow)"
    );
    assert_eq!(scanner.requests.load(Ordering::SeqCst), 1);
}

/// The guest's own timeout ends a request to a slow scanner, and the guest reads why.
#[tokio::test]
async fn a_request_past_its_timeout_fails_to_the_guest() {
    let (_scanner, _dir, server) = slow_scanner("timeout_ms = 200").await;
    let reply = ehlo(server.addr, "slow.test").await;
    assert!(
        reply.starts_with("451 4.0.0 error=HTTP request failed"),
        "{reply}"
    );
    assert!(reply.contains("Timeout"), "{reply}");
}

/// A component that declares `http` (the SDK's section) is refused by `check-config` and
/// at start when its config does not grant it, naming the plugin and the grant.
#[test]
fn a_plugin_declaring_http_without_the_grant_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, addr) = config(dir.path(), "capabilities = [\"dns\"]", "", &[]);
    // Port 0: the listener binds before the plugins load, and must not race other tests.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace(&addr.to_string(), "127.0.0.1:0")).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "plugin[0] (probe): needs the http capability that its config does not grant: set capabilities = [\"dns\", \"http\"]"
        ),
        "{err}"
    );
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs the http capability"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
