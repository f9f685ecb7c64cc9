//! `/metrics` (the OpenMetrics text) and `/healthz` (200 while the server listens and its
//! spool is writable, 503 otherwise) over plain HTTP/1.1, one request a connection.

use super::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `/metrics` and `/healthz` until the task is dropped; `healthy` says whether the
/// server can take mail. Anything else gets 404.
pub async fn serve(
    listener: TcpListener,
    metrics: std::sync::Arc<Metrics>,
    healthy: std::sync::Arc<dyn Fn() -> bool + Send + Sync>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let (metrics, healthy) = (metrics.clone(), healthy.clone());
        tokio::spawn(async move {
            let mut req = [0u8; 1024];
            let n = match tokio::time::timeout(
                std::time::Duration::from_secs(5),
                stream.read(&mut req),
            )
            .await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let text = "text/plain; charset=utf-8";
            let (status, kind, body) = if req[..n].starts_with(b"GET /metrics ") {
                let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
                ("200 OK", kind, metrics.render())
            } else if req[..n].starts_with(b"GET /healthz ") {
                match healthy() {
                    true => ("200 OK", text, "ok\n".to_string()),
                    false => ("503 Service Unavailable", text, "unhealthy\n".to_string()),
                }
            } else {
                ("404 Not Found", text, "not found\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            // A scraper that does not read cannot keep the task.
            let wait = std::time::Duration::from_secs(5);
            let _ = tokio::time::timeout(wait, stream.write_all(resp.as_bytes())).await;
        });
    }
}
