//! Outgoing HTTP for plugins granted `http` (`capabilities = ["http"]` and `http_allow` in
//! the `[[plugin]]` table; declare it with `export!(P, capabilities = [http])`), over
//! `wasi:http/outgoing-handler`. Calls block the plugin, not the server: the host waits
//! asynchronously, and ends every request by the hook's deadline.
//!
//! ```ignore
//! let reply = wasmtp_sdk::http::Request::post("http://127.0.0.1:11333/checkv2")
//!     .header("Content-Type", "message/rfc822")
//!     .timeout(std::time::Duration::from_secs(2))
//!     .send_chunks(chunks_of_the_message)?;
//! if reply.status == 200 { /* reply.body */ }
//! ```

use std::time::Duration;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

/// Octets written to the request stream at once (wasi:io's `blocking-write-and-flush`
/// takes at most 4096).
const WRITE_CHUNK: usize = 4096;
/// Octets asked for at once when reading a response.
const READ_CHUNK: u64 = 64 * 1024;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The URL is not in the plugin's `http_allow`, or `http` is not granted.
    Denied,
    /// The URL could not be used (no scheme or host, an unsupported scheme).
    Url(String),
    /// The request failed on the way (refused connection, timeout, a body over the cap);
    /// the text names the `wasi:http` error code.
    Failed(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Denied => f.write_str("HTTP request denied (not in http_allow)"),
            Error::Url(m) => write!(f, "bad URL: {m}"),
            Error::Failed(m) => write!(f, "HTTP request failed: {m}"),
        }
    }
}

impl std::error::Error for Error {}

fn code(e: ErrorCode) -> Error {
    match e {
        ErrorCode::HttpRequestDenied => Error::Denied,
        other => Error::Failed(format!("{other:?}")),
    }
}

/// A response, its body read whole (within the host's `http_max_response`).
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header fields as received.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header field (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// An HTTP request being built.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    timeout: Option<Duration>,
}

impl Request {
    /// A GET of `url`.
    pub fn get(url: &str) -> Request {
        Request::new(Method::Get, url)
    }

    /// A POST to `url`.
    pub fn post(url: &str) -> Request {
        Request::new(Method::Post, url)
    }

    fn new(method: Method, url: &str) -> Request {
        Request {
            method,
            url: url.to_string(),
            headers: Vec::new(),
            timeout: None,
        }
    }

    /// Adds a header field.
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Request {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// How long to wait for the answer (connection and first byte together, and then
    /// between bytes); the host cuts it to what is left of the hook's deadline.
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request with `body` (empty for none; its `Content-Length` is set) and
    /// reads the response.
    pub fn send(self, body: &[u8]) -> Result<Response, Error> {
        let has_length = self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        let request = if has_length {
            self
        } else {
            self.header("Content-Length", body.len().to_string())
        };
        request.send_chunks(std::iter::once(body.to_vec()))
    }

    /// Sends the request with a body written chunk by chunk (a large message is never
    /// whole in the guest's memory) and reads the response. Without a `Content-Length`
    /// header the body goes chunked (HTTP/1.1 chunked transfer coding).
    pub fn send_chunks(self, body: impl IntoIterator<Item = Vec<u8>>) -> Result<Response, Error> {
        let (scheme, rest) = self
            .url
            .split_once("://")
            .ok_or_else(|| Error::Url(format!("{}: no scheme", self.url)))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(Error::Url(format!("unsupported scheme {other:?}"))),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() {
            return Err(Error::Url(format!("{}: no host", self.url)));
        }
        let fields = Fields::from_list(&self.headers)
            .map_err(|e| Error::Url(format!("header field: {e:?}")))?;
        let request = OutgoingRequest::new(fields);
        let bad = |what: &str| Error::Url(format!("{}: bad {what}", self.url));
        request
            .set_method(&self.method)
            .map_err(|_| bad("method"))?;
        request
            .set_scheme(Some(&scheme))
            .map_err(|_| bad("scheme"))?;
        request
            .set_authority(Some(authority))
            .map_err(|_| bad("host"))?;
        request
            .set_path_with_query(Some(&path))
            .map_err(|_| bad("path"))?;
        let options = self.timeout.map(|t| {
            let ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
            let options = RequestOptions::new();
            // Refused only where the host does not support one; then its default holds.
            let _ = options.set_connect_timeout(Some(ns));
            let _ = options.set_first_byte_timeout(Some(ns));
            let _ = options.set_between_bytes_timeout(Some(ns));
            options
        });
        let outgoing = request.body().map_err(|_| bad("body"))?;
        let pending = outgoing_handler::handle(request, options).map_err(code)?;
        write_body(&outgoing, body)?;
        OutgoingBody::finish(outgoing, None).map_err(code)?;
        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(e))) => return Err(code(e)),
            Some(Err(())) | None => return Err(Error::Failed("response already taken".into())),
        };
        let status = response.status();
        let headers = response.headers().entries();
        let incoming = response
            .consume()
            .map_err(|_| Error::Failed("no body".into()))?;
        let body = read_body(&incoming)?;
        drop(IncomingBody::finish(incoming));
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

fn stream_error(e: StreamError) -> Error {
    match e {
        StreamError::Closed => Error::Failed("connection closed".into()),
        StreamError::LastOperationFailed(e) => match wasip2::http::types::http_error_code(&e) {
            Some(c) => code(c),
            None => Error::Failed(e.to_debug_string()),
        },
    }
}

fn write_body(
    outgoing: &OutgoingBody,
    body: impl IntoIterator<Item = Vec<u8>>,
) -> Result<(), Error> {
    let stream = outgoing
        .write()
        .map_err(|_| Error::Failed("request body already written".into()))?;
    for chunk in body {
        for piece in chunk.chunks(WRITE_CHUNK) {
            stream
                .blocking_write_and_flush(piece)
                .map_err(stream_error)?;
        }
    }
    Ok(())
}

fn read_body(incoming: &IncomingBody) -> Result<Vec<u8>, Error> {
    let stream = incoming
        .stream()
        .map_err(|_| Error::Failed("response body already read".into()))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(bytes) => body.extend_from_slice(&bytes),
            Err(StreamError::Closed) => return Ok(body),
            Err(e) => return Err(stream_error(e)),
        }
    }
}
