//! A bounded SMTP load generator for throughput figures:
//! `cargo run --release --example smtp_load -- 127.0.0.1:2525 50 10000 1024`
//! (address, concurrent sessions, total messages, message size in bytes).
//! Each session sends messages back to back over one connection, then QUITs.
//! Prints messages per second over the whole run. Targets must be loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

async fn reply(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(all);
        }
    }
}

async fn session(
    addr: SocketAddr,
    next: Arc<AtomicUsize>,
    total: usize,
    body: Arc<Vec<u8>>,
) -> std::io::Result<usize> {
    let mut s = BufReader::new(TcpStream::connect(addr).await?);
    s.get_mut().set_nodelay(true)?;
    reply(&mut s).await?;
    s.get_mut().write_all(b"EHLO load.test\r\n").await?;
    reply(&mut s).await?;
    let mut sent = 0;
    while next.fetch_add(1, Ordering::Relaxed) < total {
        // PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write.
        s.get_mut()
            .write_all(b"MAIL FROM:<load@load.test>\r\nRCPT TO:<sink@example.test>\r\nDATA\r\n")
            .await?;
        for expect in ["250", "250", "354"] {
            let r = reply(&mut s).await?;
            if !r.starts_with(expect) {
                return Err(std::io::Error::other(format!("expected {expect}, got {r}")));
            }
        }
        s.get_mut().write_all(&body).await?;
        let r = reply(&mut s).await?;
        if !r.starts_with("250") {
            return Err(std::io::Error::other(format!("DATA refused: {r}")));
        }
        sent += 1;
    }
    s.get_mut().write_all(b"QUIT\r\n").await?;
    Ok(sent)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr: SocketAddr = args
        .get(1)
        .map_or("127.0.0.1:2525", |s| s)
        .parse()
        .expect("address");
    assert!(
        addr.ip().is_loopback(),
        "load is only ever sent to loopback addresses"
    );
    let sessions: usize = args.get(2).map_or(Ok(50), |s| s.parse()).expect("sessions");
    let total: usize = args
        .get(3)
        .map_or(Ok(10_000), |s| s.parse())
        .expect("messages");
    let size: usize = args.get(4).map_or(Ok(1024), |s| s.parse()).expect("size");
    let mut body = b"Subject: load\r\n\r\n".to_vec();
    // 68 characters and CRLF a line, the last line cut to reach `size`.
    let line = [b'x'; 68];
    while body.len() + 2 < size {
        let n = (size - body.len() - 2).min(line.len());
        body.extend_from_slice(&line[..n]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b".\r\n");
    let body = Arc::new(body);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..sessions {
        let (next, body) = (next.clone(), body.clone());
        tasks.spawn(tokio::time::timeout(
            Duration::from_secs(600),
            session(addr, next, total, body),
        ));
    }
    let (mut ok, mut errors) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(Ok(n))) => ok += n,
            other => {
                errors += 1;
                eprintln!("session failed: {other:?}");
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{ok} messages of {size} bytes over {sessions} sessions in {secs:.2}s: {:.0} msgs/s ({errors} failed sessions)",
        ok as f64 / secs
    );
}
