//! An MTA-STS policy server (RFC 8461 3.3) for tests: HTTPS on 127.0.0.1, policies by the
//! domain the request's Host field names.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTPS server that answers `GET /.well-known/mta-sts.txt` with the policy of the
/// domain its Host field names (`mta-sts.DOMAIN`), 404 otherwise; counts the requests.
pub struct PolicyServer {
    pub port: u16,
    pub fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PolicyServer {
    /// Answers each domain's request with its policy (200, `text/plain`).
    pub async fn start(tls: Arc<rustls::ServerConfig>, policies: HashMap<String, String>) -> Self {
        let answers = policies
            .into_iter()
            .map(|(domain, body)| (domain, ok("text/plain", &body)))
            .collect();
        PolicyServer::answering(tls, answers).await
    }

    /// Answers each domain's request with the whole HTTP response given for it.
    pub async fn answering(
        tls: Arc<rustls::ServerConfig>,
        policies: HashMap<String, String>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let fetches = Arc::new(AtomicUsize::new(0));
        let (count, policies) = (fetches.clone(), Arc::new(policies));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (tls, count, policies) = (tls.clone(), count.clone(), policies.clone());
                tokio::spawn(async move {
                    let Ok(mut s) = tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                        if s.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let domain = head
                        .lines()
                        .find_map(|l| l.strip_prefix("host: "))
                        .and_then(|h| h.split(':').next())
                        .and_then(|h| h.strip_prefix("mta-sts."))
                        .unwrap_or("");
                    let path_ok = head.starts_with("get /.well-known/mta-sts.txt ");
                    let answer = match policies.get(domain).filter(|_| path_ok) {
                        Some(answer) => answer.clone(),
                        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
                    };
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        PolicyServer {
            port,
            fetches,
            task,
        }
    }
}

/// A 200 response of `media` type carrying `body`.
pub fn ok(media: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {media}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A policy file of `mode` naming `mx`, kept a day.
pub fn policy(mode: &str, mx: &[&str]) -> String {
    let mx: String = mx.iter().map(|m| format!("mx: {m}\r\n")).collect();
    format!("version: STSv1\r\nmode: {mode}\r\n{mx}max_age: 86400\r\n")
}
