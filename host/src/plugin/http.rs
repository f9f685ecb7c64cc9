//! The `http` capability: `wasi:http/outgoing-handler` (wasmtime-wasi-http) for plugins,
//! to the URL prefixes of the plugin's `http_allow` only; any other request fails with
//! `HTTP-request-denied`, which the guest reads as an error (a JavaScript `fetch` rejects).
//!
//! One connection pool per plugin, shared by its instances: keep-alive connections per
//! origin, plain or TLS (rustls; the plugin's `http_ca` as trust anchors, else the webpki
//! roots); host names resolved by the server's resolver (`[dns] nameservers`). A request's
//! timeouts (the guest's `request-options`, else none) are cut to what is left of the
//! hook's deadline, less a margin for the guest to answer, and a response body over
//! `http_max_response` fails the read. The guest waits in async host calls: a slow scanner holds no tokio worker.

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// How long an idle pooled connection is kept.
const IDLE: Duration = Duration::from_secs(60);
/// Idle connections kept per origin.
const IDLE_PER_ORIGIN: usize = 32;
/// At most one "denied" warning per plugin in this time; the others are counted in it.
const DENIED_WARN_EVERY: Duration = Duration::from_secs(10);

/// One `http_allow` entry: scheme, host and port must equal the request's, and the
/// request's path must start with the entry's.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Prefix {
    https: bool,
    host: String,
    port: u16,
    path: String,
}

/// Whether the URL is https (`Some(true)`) or http (`Some(false)`); `None` for any other.
fn is_https(uri: &http::Uri) -> Option<bool> {
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => Some(true),
        Some(s) if s.eq_ignore_ascii_case("http") => Some(false),
        _ => None,
    }
}

fn default_port(https: bool) -> u16 {
    if https { 443 } else { 80 }
}

impl Prefix {
    fn parse(url: &str) -> Result<Prefix, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
        let Some(https) = is_https(&uri) else {
            return Err(format!("{url:?}: not an http:// or https:// URL"));
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{url:?}: no host"))?;
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(format!("{url:?}: user information is not allowed"));
        }
        Ok(Prefix {
            https,
            host: host.to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(default_port(https)),
            path: uri.path().to_string(),
        })
    }

    fn matches(&self, uri: &http::Uri) -> bool {
        let Some(https) = is_https(uri) else {
            return false;
        };
        https == self.https
            && uri.authority().is_some_and(|a| !a.as_str().contains('@'))
            && uri
                .host()
                .is_some_and(|h| h.eq_ignore_ascii_case(&self.host))
            && uri.port_u16().unwrap_or(default_port(https)) == self.port
            && uri.path().starts_with(&self.path)
            && !climbs(uri.path())
    }
}

/// Whether a path has a `.` or `..` segment (also percent-encoded), which a server may
/// resolve to outside the allowed prefix.
fn climbs(path: &str) -> bool {
    path.split('/').any(|segment| {
        let s = segment.to_ascii_lowercase().replace("%2e", ".");
        s == "." || s == ".."
    })
}

/// Host names of requests resolved on the server's resolver (A and AAAA), like MX hosts;
/// IP literals never reach it.
#[derive(Clone)]
struct Resolve(Option<crate::dns::Dns>);

type Addrs = std::vec::IntoIter<std::net::SocketAddr>;

impl tower_service::Service<Name> for Resolve {
    type Response = Addrs;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Addrs, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let dns = self.0.clone();
        Box::pin(async move {
            let host = name.as_str();
            let dns = dns.ok_or_else(|| std::io::Error::other("no resolver configured"))?;
            let (a, aaaa) = tokio::join!(dns.a(host), dns.aaaa(host));
            let ips: Vec<_> = a.into_iter().chain(aaaa).flatten().collect();
            if ips.is_empty() {
                let e = format!("{host}: no address");
                return Err(std::io::Error::new(std::io::ErrorKind::NotFound, e));
            }
            // The connector sets the URL's port.
            let addrs: Vec<_> = ips
                .into_iter()
                .map(|ip| std::net::SocketAddr::new(ip, 0))
                .collect();
            Ok(addrs.into_iter())
        })
    }
}

/// What a plugin granted `http` holds, shared by its instances.
pub struct HttpGrant {
    plugin: Arc<str>,
    allow: Vec<Prefix>,
    client: Client<HttpsConnector<HttpConnector<Resolve>>, WasiBody>,
    max_response: u64,
    /// When the last "denied" warning was written, and the denials since.
    denied: Mutex<(Option<Instant>, u64)>,
}

impl HttpGrant {
    /// A grant for `allow` (URL prefixes), trusting the PEM anchors in `ca` (else the
    /// webpki roots) for https, reading at most `max_response` octets of a response body,
    /// resolving host names on `dns`.
    pub fn new(
        plugin: &str,
        allow: &[String],
        ca: Option<&Path>,
        max_response: u64,
        dns: Option<crate::dns::Dns>,
    ) -> Result<HttpGrant, String> {
        let allow = allow
            .iter()
            .map(|u| Prefix::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = crate::tls::verifying_client_config(ca).map_err(|e| e.to_string())?;
        let mut tcp = HttpConnector::new_with_resolver(Resolve(dns));
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(IDLE)
            .pool_max_idle_per_host(IDLE_PER_ORIGIN)
            .build(connector);
        Ok(HttpGrant {
            plugin: plugin.into(),
            allow,
            client,
            max_response,
            denied: Mutex::new((None, 0)),
        })
    }

    fn allows(&self, uri: &http::Uri) -> bool {
        self.allow.iter().any(|p| p.matches(uri))
    }

    /// Logs a denied request, at most once per `DENIED_WARN_EVERY` (a guest looping on
    /// denied requests must not flood the log).
    fn warn_denied(&self, uri: &http::Uri) {
        let mut d = self.denied.lock().expect("denied lock");
        d.1 += 1;
        let now = Instant::now();
        if d.0
            .is_none_or(|last| now.duration_since(last) >= DENIED_WARN_EVERY)
        {
            let url: String = uri.to_string().chars().take(256).collect();
            tracing::warn!(
                plugin = %self.plugin,
                url,
                denied = d.1,
                "plugin HTTP request denied: the URL is not in its http_allow"
            );
            *d = (Some(now), 0);
        }
    }
}

/// The wasi:http hooks of one instance: its plugin's grant (`None`: not granted), the
/// deadline of the call in progress, and its plugin's metrics (a refused request is a
/// `capability` fault; each sent one is timed to its response's head).
pub struct Hooks {
    pub grant: Option<Arc<HttpGrant>>,
    pub deadline: Instant,
    pub meter: Arc<super::meter::Meter>,
}

type Sent = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        let grant = self.grant.clone();
        let deadline = self.deadline;
        let meter = self.meter.clone();
        Box::new(async move {
            let Some(grant) = grant else {
                meter.refused();
                return Err(Error::HttpRequestDenied);
            };
            if !grant.allows(request.uri()) {
                meter.refused();
                grant.warn_denied(request.uri());
                return Err(Error::HttpRequestDenied);
            }
            let started = Instant::now();
            // What is left of the hook's deadline, less a tenth (at most 100 ms) so that the
            // guest can still answer after a request that timed out.
            let left = deadline.saturating_duration_since(Instant::now());
            let left = left - (left / 10).min(Duration::from_millis(100));
            let within = |t: Option<Duration>| t.map_or(left, |t| t.min(left));
            let options = options.unwrap_or_default();
            let wait = within(
                match (options.connect_timeout, options.first_byte_timeout) {
                    (Some(c), Some(f)) => Some(c + f),
                    (c, f) => c.or(f),
                },
            );
            let response = tokio::time::timeout(wait, grant.client.request(request)).await;
            meter.host_call(super::Capability::Http, started.elapsed());
            let response = response
                .map_err(|_| Error::ConnectionReadTimeout)?
                .map_err(client_error)?;
            let between = within(options.between_bytes_timeout);
            let max = grant.max_response;
            let response = response.map(|body| Capped::new(body, max, between).boxed_unsync());
            let io: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}

/// The guest's error for a request the pool could not send.
fn client_error(e: hyper_util::client::legacy::Error) -> Error {
    if e.is_connect() {
        let io = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .map(std::io::Error::kind);
        return match io {
            Some(std::io::ErrorKind::TimedOut) => Error::ConnectionTimeout,
            Some(std::io::ErrorKind::ConnectionRefused) | None => Error::ConnectionRefused,
            Some(_) => Error::DestinationUnavailable,
        };
    }
    tracing::debug!(error = %e, "plugin HTTP request failed");
    Error::HttpProtocolError
}

/// A response body read at most `left` octets far, failing when no frame comes within
/// `between` of the last.
struct Capped {
    inner: hyper::body::Incoming,
    limit: u64,
    left: u64,
    between: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl Capped {
    fn new(inner: hyper::body::Incoming, limit: u64, between: Duration) -> Capped {
        Capped {
            inner,
            limit,
            left: limit,
            between,
            idle: Box::pin(tokio::time::sleep(between)),
        }
    }
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                if n > this.left {
                    return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(this.limit)))));
                }
                this.left -= n;
                let next = tokio::time::Instant::now() + this.between;
                this.idle.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::Hyper(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(this.idle.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(prefix: &str, url: &str) -> bool {
        Prefix::parse(prefix)
            .unwrap()
            .matches(&url.parse().unwrap())
    }

    #[test]
    fn scheme_host_and_port_must_match() {
        let p = "http://127.0.0.1:11333";
        assert!(allowed(p, "http://127.0.0.1:11333/checkv2"));
        assert!(allowed(p, "HTTP://127.0.0.1:11333/"));
        assert!(!allowed(p, "https://127.0.0.1:11333/checkv2"));
        assert!(!allowed(p, "http://127.0.0.1:11334/checkv2"));
        assert!(!allowed(p, "http://127.0.0.2:11333/checkv2"));
        assert!(!allowed(p, "http://127.0.0.1/checkv2"));
        assert!(!allowed(p, "http://127.0.0.1:11333@evil.test/"));
        assert!(allowed(
            "https://Scanner.Test",
            "https://scanner.test:443/x"
        ));
        assert!(!allowed(
            "https://scanner.test",
            "https://scanner.test.evil/x"
        ));
    }

    #[test]
    fn the_path_is_a_prefix_that_cannot_be_climbed_out_of() {
        let p = "http://127.0.0.1:8080/api/";
        assert!(allowed(p, "http://127.0.0.1:8080/api/check?x=1"));
        assert!(!allowed(p, "http://127.0.0.1:8080/admin"));
        assert!(!allowed(p, "http://127.0.0.1:8080/api/../admin"));
        assert!(!allowed(p, "http://127.0.0.1:8080/api/%2E%2e/admin"));
    }

    #[test]
    fn bad_prefixes_are_refused() {
        assert!(Prefix::parse("ftp://127.0.0.1/").is_err());
        assert!(Prefix::parse("127.0.0.1:11333").is_err());
        assert!(Prefix::parse("http://user@127.0.0.1/").is_err());
    }
}
