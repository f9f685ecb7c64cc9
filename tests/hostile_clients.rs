//! Clients that flood, never read, guess passwords, forge senders or fill the disk: each
//! costs only itself.

mod common;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::sink::{Sink, SinkOptions};
use common::{Client, Process, TestServer};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const ACCEPT: &str = "[accept]\ndomains = [\"example.test\"]\n";

/// A connection from another loopback address, reading the greeting.
async fn greeting_from(source: &str, server: SocketAddr) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let tcp = socket.connect(server).await.unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(tcp);
    tokio::time::timeout(common::TIMEOUT, reader.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    line
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let s = TestServer::start(&format!("{ACCEPT}[limits]\nconnections_per_ip = 3\n")).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(s.addr()).await;
        c.cmd("NOOP", "250").await;
        held.push(c);
    }
    let refused = greeting_from("127.0.0.1", s.addr()).await;
    assert!(refused.starts_with("421 4.7.0"), "{refused}");
    // Another client is still served.
    let other = greeting_from("127.0.0.2", s.addr()).await;
    assert!(other.starts_with("220"), "{other}");
    // A slot comes back when a connection ends.
    held.pop();
    common::eventually_async("a slot back", || async {
        greeting_from("127.0.0.1", s.addr())
            .await
            .starts_with("220")
    })
    .await;
}

#[tokio::test]
async fn a_client_that_never_reads_loses_its_slot() {
    let s = TestServer::start(&format!(
        "{ACCEPT}[limits]\nconnections = 1\ncommand_timeout = \"1s\"\n"
    ))
    .await;
    let mut flood = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
    // Commands, and never a read: the replies fill the socket buffers.
    let writer = tokio::spawn(async move {
        let burst = "NOOP\r\n".repeat(100_000);
        let _ = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if flood.write_all(burst.as_bytes()).await.is_err() {
                    return;
                }
            }
        })
        .await;
    });
    common::eventually_async("the slot is free again", || async {
        greeting_from("127.0.0.1", s.addr())
            .await
            .starts_with("220")
    })
    .await;
    writer.abort();
}

#[tokio::test]
async fn errors_are_slowed_then_cut() {
    let s = TestServer::start(&format!(
        "{ACCEPT}[limits]\nsoft_error_limit = 2\nerror_delay = \"300ms\"\nerror_limit = 5\n"
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("BOGUS", "500").await;
    // A refusal of any kind counts: 4xx too.
    c.cmd("RCPT TO:<u@example.test>", "503").await;
    let started = Instant::now();
    c.cmd("BOGUS", "500").await;
    assert!(started.elapsed() >= Duration::from_millis(300), "no delay");
    c.cmd("BOGUS", "500").await;
    c.send(b"BOGUS\r\n").await;
    assert!(c.reply().await.starts_with("500"));
    assert!(c.reply().await.starts_with("421 4.7.0"));
    assert!(c.closed().await);
}

fn plain(user: &str, pass: &str) -> String {
    B64.encode(format!("\0{user}\0{pass}"))
}

/// A submission listener with TLS; users alice (default addresses) and sales (a domain).
async fn submission() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let tls = common::tls_section(dir.path());
    let hash = wasmtp::session::hash_password("secret").unwrap();
    TestServer::start(&format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\nmode = \"submission\"\n{tls}{ACCEPT}\
         [[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n\
         [[user]]\nname = \"sales\"\npassword_hash = \"{hash}\"\naddresses = [\"@sales.example.test\"]\n\
         [[route]]\ndomain = \"*\"\nto = \"smtp:127.0.0.1:9\"\n"
    ))
    .await
}

async fn authenticated_tls(s: &TestServer) -> Client {
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    let mut c = c.starttls().await;
    c.cmd("EHLO c", "250").await;
    c
}

#[tokio::test]
async fn password_guessing_is_cut_per_connection_and_throttled_per_client() {
    let s = submission().await;
    // Three failures close the connection.
    let mut c = authenticated_tls(&s).await;
    c.cmd(&format!("AUTH PLAIN {}", plain("alice", "a")), "535 5.7.8")
        .await;
    c.cmd(&format!("AUTH PLAIN {}", plain("nobody", "b")), "535 5.7.8")
        .await;
    c.cmd(&format!("AUTH PLAIN {}", plain("alice", "c")), "421 4.7.0")
        .await;
    assert!(c.closed().await);
    // Across connections: after ten failures from this address even the right password
    // is not tried.
    for _ in 0..2 {
        let mut c = authenticated_tls(&s).await;
        for _ in 0..2 {
            c.cmd(&format!("AUTH PLAIN {}", plain("alice", "x")), "535")
                .await;
        }
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", "x")), "421")
            .await;
    }
    let mut c = authenticated_tls(&s).await;
    c.cmd(&format!("AUTH PLAIN {}", plain("alice", "x")), "535")
        .await;
    c.cmd(
        &format!("AUTH PLAIN {}", plain("alice", "secret")),
        "454 4.7.0",
    )
    .await;
}

#[tokio::test]
async fn long_sasl_responses_and_senders_of_ones_own() {
    let s = submission().await;
    let mut c = authenticated_tls(&s).await;
    // RFC 4954 4: a SASL response line may be up to 12 KiB.
    c.cmd("AUTH PLAIN", "334").await;
    let long = B64.encode(vec![b'x'; 6000]);
    c.cmd(&long, "535").await;
    c.cmd("AUTH PLAIN", "334").await;
    c.cmd(&plain("alice", "secret"), "235").await;
    c.cmd("MAIL FROM:<ceo@example.test>", "553 5.7.1").await;
    c.cmd("MAIL FROM:<alice@example.test>", "250").await;
    c.cmd("RSET", "250").await;
    let mut c = authenticated_tls(&s).await;
    c.cmd(&format!("AUTH PLAIN {}", plain("sales", "secret")), "235")
        .await;
    c.cmd("MAIL FROM:<sales@example.test>", "553 5.7.1").await;
    c.cmd("MAIL FROM:<anyone@sales.example.test>", "250").await;
}

#[tokio::test]
async fn maildir_refuses_bad_mailbox_names_at_rcpt() {
    let s = TestServer::start(&format!(
        "{ACCEPT}[[route]]\ndomain = \"example.test\"\nto = \"maildir:{{dir}}/mail\"\n"
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    c.cmd("MAIL FROM:<a@b.test>", "250").await;
    c.cmd("RCPT TO:<\".hidden\"@example.test>", "553 5.1.3")
        .await;
    c.cmd("RCPT TO:<\"a/../../x\"@example.test>", "553 5.1.3")
        .await;
    c.cmd("RCPT TO:<alice@example.test>", "250").await;
}

#[tokio::test]
async fn a_full_spool_defers_and_service_resumes() {
    let sink = Sink::start(SinkOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let config = |min_free: &str| {
        let toml = format!(
            "hostname = \"mx.test\"\n[[listen]]\naddress = \"127.0.0.1:0\"\n\
             [spool]\npath = \"{}/spool\"\nmin_free = \"{min_free}\"\n{ACCEPT}{}",
            root.display(),
            sink.config_route("*", "none")
        );
        wasmtp::config::Config::parse("t", &toml).unwrap()
    };
    // More free space asked for than any disk has.
    let server = wasmtp::server::Server::start(config("1000000GiB"))
        .await
        .unwrap();
    let s = TestServer { server, dir };
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    c.cmd("MAIL FROM:<a@b.test>", "452 4.3.1").await;
    assert!(s.spool_ids().is_empty());
    // Space comes back (here: the threshold is lowered by a reload).
    s.server.reload(config("1MiB")).await.unwrap();
    let reply = s.send_one(&["u@example.test"], "room again").await;
    drop(reply);
    sink.wait_for(1).await;
}

#[tokio::test]
async fn sigterm_ends_a_stuck_transaction_after_the_grace_and_twice_at_once() {
    let dir = tempfile::tempdir().unwrap();
    for (grace, signals, code) in [("2s", 1, 0), ("60s", 2, 1)] {
        let port = common::free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            format!(
                "hostname = \"mx.test\"\n[[listen]]\naddress = \"{addr}\"\n[spool]\npath = \"spool\"\n\
                 {ACCEPT}[limits]\nshutdown_grace = \"{grace}\"\n"
            ),
        )
        .unwrap();
        let server = Process::serve(&config, dir.path(), addr).await;
        let mut stuck = Client::connect(addr).await;
        stuck.cmd("EHLO c", "250").await;
        stuck.cmd("MAIL FROM:<a@b.test>", "250").await;
        stuck.cmd("RCPT TO:<u@example.test>", "250").await;
        stuck.cmd("DATA", "354").await;
        stuck.send(b"Subject: never ends\r\n\r\n").await;
        let started = Instant::now();
        server.signal("TERM");
        if signals == 2 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            server.signal("TERM");
        }
        assert_eq!(server.wait().await, Some(code));
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_really_full_disk_refuses_with_452_and_loses_nothing() {
    // The spool on a 4 MiB tmpfs of its own, in a mount namespace of the server's own
    // (needs root, as CI has; nothing of the host's mounts changes).
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let hop = common::free_port();
    let port = common::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.test\"\n[[listen]]\naddress = \"{addr}\"\n\
             [spool]\npath = \"{}\"\nmin_free = \"64KiB\"\n{ACCEPT}\
             [delivery]\nretry = [\"1s\"]\n\
             [[route]]\ndomain = \"*\"\nto = \"smtp:127.0.0.1:{hop}\"\ntls = \"none\"\n",
            spool.display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=4m tmpfs '{}' && exec '{}' serve --config '{}'",
            spool.display(),
            common::BIN,
            config.display()
        ))
        .env("WASMTP_LOG", "error")
        .spawn()
        .expect("unshare");
    let server = Process { child, addr };
    server.wait_ready().await;
    let body = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(76).repeat(10_000));
    let mut c = Client::connect(addr).await;
    c.cmd("EHLO c", "250").await;
    let mut acknowledged = 0;
    let refusal = loop {
        let reply = c.send_mail("a@b.test", &["u@example.test"], &body).await;
        if reply.starts_with("250") {
            acknowledged += 1;
            assert!(
                acknowledged < 10,
                "4 MiB took {acknowledged} messages of 760 KiB"
            );
        } else {
            break reply;
        }
    };
    assert!(refusal.starts_with("452 4.3.1"), "{refusal}");
    assert!(acknowledged >= 1);
    c.cmd("RSET", "250").await;
    // Space returns as the next hop takes the queue; nothing acknowledged is lost.
    let sink = Sink::start_on(&format!("127.0.0.1:{hop}"), SinkOptions::default()).await;
    sink.wait_for(acknowledged).await;
    let reply = c
        .send_mail("a@b.test", &["u@example.test"], "Subject: small\r\n\r\nx")
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    sink.wait_for(acknowledged + 1).await;
    assert_eq!(sink.count(), acknowledged + 1);
}
