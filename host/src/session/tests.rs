//! Session tests over an in-memory stream: no sockets, the same code path as the server.

use super::{Outcome, Session};
use crate::config::{Config, Mode};
use crate::metrics::Metrics;
use crate::session::Context;
use crate::spool::Spool;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

struct Harness {
    client: BufReader<DuplexStream>,
    task: tokio::task::JoinHandle<std::io::Result<Outcome>>,
    _dir: tempfile::TempDir,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

impl Harness {
    async fn start(extra: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "hostname = \"mx.test\"\n[[listen]]\naddress = \"127.0.0.1:0\"\n[spool]\npath = \"{}\"\n[accept]\ndomains = [\"example.test\"]\n{extra}",
            dir.path().display()
        );
        let config = Arc::new(Config::parse("test", &toml).unwrap());
        let (spool, _lock) = Spool::open(&config.spool.path, config.spool.segment_size.0).unwrap();
        let metrics = Arc::new(Metrics::default());
        let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
        let (queue, _) = crate::delivery::start(
            tokio::sync::watch::channel(config.clone()).1,
            spool.clone(),
            metrics.clone(),
            shutdown.clone(),
            Vec::new(),
            tokio::sync::watch::channel(None).1,
        )
        .unwrap();
        let ctx = Arc::new(Context {
            config,
            spool,
            queue,
            tls: None,
            shutdown,
            metrics,
            clients: Default::default(),
            plugins: None,
            verifier: None,
            signers: Default::default(),
            route_tls: Default::default(),
        });
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move {
            let mut session = Session::new(ctx, Mode::Mx, "192.0.2.1:4000".parse().unwrap());
            let greeting = session.greeting();
            session.run(&mut server, Some(greeting)).await
        });
        let mut h = Harness {
            client: BufReader::new(client),
            task,
            _dir: dir,
            _shutdown: shutdown_tx,
        };
        h.expect("220 mx.test").await;
        h
    }

    async fn expect(&mut self, prefix: &str) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            self.client.read_line(&mut line).await.unwrap();
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        assert!(all.starts_with(prefix), "expected {prefix:?}, got {all:?}");
        all
    }

    /// Sends one command line and checks the reply prefix.
    async fn cmd(&mut self, line: &str, expect: &str) -> String {
        self.client
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.expect(expect).await
    }
}

#[tokio::test]
async fn full_transaction() {
    let mut h = Harness::start("").await;
    h.cmd("EHLO c.test", "250-mx.test greets 192.0.2.1").await;
    h.cmd("MAIL FROM:<a@c.test>", "250 2.1.0").await;
    h.cmd("RCPT TO:<b@example.test>", "250 2.1.5").await;
    h.cmd("DATA", "354").await;
    h.cmd("Subject: t\r\n\r\nbody\r\n.", "250 2.0.0 Ok: queued as ")
        .await;
    h.cmd("QUIT", "221 2.0.0").await;
    assert!(matches!(h.task.await.unwrap().unwrap(), Outcome::Closed));
}

#[tokio::test]
async fn relay_from_relay_networks_only() {
    let mut h = Harness::start("[relay]\nnetworks = [\"192.0.2.0/24\"]\n").await;
    h.cmd("HELO c", "250 mx.test").await;
    h.cmd("MAIL FROM:<a@c.test>", "250").await;
    h.cmd("RCPT TO:<x@anywhere.test>", "250").await;
    let mut h = Harness::start("").await;
    h.cmd("HELO c", "250 mx.test").await;
    h.cmd("MAIL FROM:<a@c.test>", "250").await;
    h.cmd("RCPT TO:<x@anywhere.test>", "550 5.7.1").await;
}

#[tokio::test]
async fn starttls_without_tls_config() {
    let mut h = Harness::start("").await;
    h.cmd("EHLO c", "250").await;
    h.cmd("STARTTLS", "502 5.5.1").await;
    h.cmd("NOOP", "250").await;
}

#[tokio::test]
async fn command_timeout_closes_with_421() {
    let mut h = Harness::start("[limits]\ncommand_timeout = \"1s\"\n").await;
    h.expect("421 4.4.2").await;
    assert!(matches!(h.task.await.unwrap().unwrap(), Outcome::Closed));
}
