//! Fetching a domain's MTA-STS policy (RFC 8461 3.3): `GET
//! https://mta-sts.DOMAIN/.well-known/mta-sts.txt`, the server's certificate valid for that
//! name, a 200 answer of type `text/plain` only (no redirects followed), at most
//! `MAX_POLICY` octets, all within `FETCH_TIMEOUT`.

use crate::dns::Dns;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;

/// RFC 8461 3.3 suggests senders limit a policy to 64 KiB.
pub const MAX_POLICY: usize = 64 * 1024;
/// The whole fetch: lookup, connection, handshake, answer.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where policies are fetched from, and with what trust anchors.
#[derive(Clone)]
pub struct Fetcher {
    pub dns: Dns,
    /// 443, but for tests.
    pub port: u16,
    pub tls: Arc<rustls::ClientConfig>,
}

impl Fetcher {
    /// The policy text of `domain`, or why there is none to be had.
    pub async fn fetch(&self, domain: &str) -> Result<String, String> {
        tokio::time::timeout(FETCH_TIMEOUT, self.get(domain))
            .await
            .map_err(|_| format!("timed out after {FETCH_TIMEOUT:?}"))?
    }

    async fn get(&self, domain: &str) -> Result<String, String> {
        let host = format!("mta-sts.{domain}");
        let addresses = (self.dns.addresses(&host).await).map_err(|e| format!("{host}: {e}"))?;
        let mut last = String::new();
        for ip in addresses {
            match self.get_from(&host, ip).await {
                Ok(text) => return Ok(text),
                Err(e) => last = format!("{ip}: {e}"),
            }
        }
        Err(last)
    }

    async fn get_from(&self, host: &str, ip: std::net::IpAddr) -> Result<String, String> {
        let tcp = tokio::net::TcpStream::connect((ip, self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let connection = tokio::spawn(connection);
        let authority = match self.port {
            443 => host.to_string(),
            port => format!("{host}:{port}"),
        };
        let request = http::Request::get("/.well-known/mta-sts.txt")
            .header(http::header::HOST, authority)
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let answer = sender.send_request(request).await;
        let result = match answer {
            Ok(answer) => read(answer).await,
            Err(e) => Err(format!("HTTP: {e}")),
        };
        connection.abort();
        result
    }
}

async fn read(answer: http::Response<hyper::body::Incoming>) -> Result<String, String> {
    // RFC 8461 3.3: redirects are not followed; only a 200 counts.
    if answer.status() != http::StatusCode::OK {
        return Err(format!("HTTP status {}", answer.status()));
    }
    let media = answer
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = media.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("text/plain") {
        return Err(format!("media type {media:?} is not text/plain"));
    }
    let body = Limited::new(answer.into_body(), MAX_POLICY)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "the policy is not UTF-8".to_string())
}
