//! The queue: recovers every spooled message at start, takes new ones from sessions and
//! requests from `wasmtp queue`, and runs one task per message (`retry::run_message`).

use super::retry::run_message;
use super::shared::{Delivery, QueueEvent, QueueHandle};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::spool::{Spool, SpoolId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, broadcast, mpsc, watch};

/// Starts the queue: recovers every spooled message, then serves new ones.
pub fn start(
    config: watch::Receiver<Arc<Config>>,
    spool: Spool,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    own_addrs: Vec<std::net::SocketAddr>,
) -> std::io::Result<(QueueHandle, tokio::task::JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let concurrency = config.borrow().delivery.concurrency;
    let recovered = spool.list()?;
    if !recovered.is_empty() {
        tracing::info!(count = recovered.len(), "recovered spooled messages");
    }
    let delivery = Arc::new(Delivery {
        permits: Semaphore::new(concurrency),
        config,
        spool,
        metrics,
        flush: broadcast::channel(64).0,
        shutdown,
        queue: QueueHandle::new(tx.clone()),
        own_addrs,
        destinations: Default::default(),
        resolver: Default::default(),
    });
    let task = tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for id in recovered {
            tasks.spawn(run_message(delivery.clone(), id));
        }
        let mut shutdown = delivery.shutdown.clone();
        let mut control = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = control.tick() => {
                    for request in read_control(&delivery.spool) {
                        match request {
                            QueueEvent::Submit(id) => {
                                tasks.spawn(run_message(delivery.clone(), id));
                            }
                            QueueEvent::Flush(domain) => {
                                let _ = delivery.flush.send(domain);
                            }
                        }
                    }
                }
                event = rx.recv() => match event {
                    Some(QueueEvent::Submit(id)) => {
                        tasks.spawn(run_message(delivery.clone(), id));
                    }
                    Some(QueueEvent::Flush(domain)) => {
                        let _ = delivery.flush.send(domain);
                    }
                    None => break,
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        // Attempts in flight get a moment to finish; the spool keeps the rest.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
    });
    Ok((QueueHandle::new(tx), task))
}

/// Takes the requests `wasmtp queue` left in `spool/control/`: `flush` (its content an
/// optional domain) and `release-ID`. Each file is removed once read.
fn read_control(spool: &Spool) -> Vec<QueueEvent> {
    let Ok(entries) = std::fs::read_dir(spool.control_dir()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let content = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        if name.starts_with("flush") {
            let domain = content.trim();
            out.push(QueueEvent::Flush(
                (!domain.is_empty()).then(|| domain.to_string()),
            ));
        } else if let Some(id) = name.strip_prefix("release-").and_then(SpoolId::parse) {
            out.push(QueueEvent::Submit(id));
        }
    }
    out
}
