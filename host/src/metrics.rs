//! Counters, served in the Prometheus text format at `/metrics` when `[metrics]` is set.

use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

macro_rules! counters {
    ($($name:ident: $help:literal),* $(,)?) => {
        /// Process-wide counters; cheap to bump from any task.
        #[derive(Debug, Default)]
        pub struct Metrics { $(pub $name: AtomicU64,)* }

        impl Metrics {
            /// The Prometheus text exposition of every counter.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    out.push_str(&format!(
                        "# HELP wasmtp_{0} {1}\n# TYPE wasmtp_{0} counter\nwasmtp_{0} {2}\n",
                        stringify!($name), $help, self.$name.load(Ordering::Relaxed)
                    ));
                )*
                out
            }
        }
    };
}

counters! {
    connections_total: "SMTP connections accepted",
    connections_refused_total: "SMTP connections refused over limits.connections",
    messages_accepted_total: "Messages spooled and acknowledged with 250",
    messages_refused_total: "Message transactions refused at DATA or BDAT",
    recipients_refused_total: "RCPT commands refused",
    deliveries_total: "Recipients delivered",
    deferrals_total: "Recipient delivery attempts that failed temporarily",
    failures_total: "Recipients that failed permanently",
    plugin_faults_total: "Plugin calls that trapped, timed out, ran out of memory or answered badly",
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Serves `/metrics` until the task is dropped. Anything else gets 404.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let metrics = metrics.clone();
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
            let ok = req[..n].starts_with(b"GET /metrics ");
            let (status, body) = if ok {
                ("200 OK", metrics.render())
            } else {
                ("404 Not Found", "not found\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
        });
    }
}
