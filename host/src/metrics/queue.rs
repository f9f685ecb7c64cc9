//! What the queued messages are doing, read at each scrape from the delivery tasks' own
//! record (no spool reads): `wasmtp_queue_messages{state}` (waiting, held, scanning,
//! delivering) and `wasmtp_queue_oldest_seconds` (the age of the oldest queued message).

use crate::spool::SpoolId;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What a queued message is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Waiting for its first or next attempt.
    Waiting,
    /// Quarantined or held by the operator.
    Held,
    /// Being scanned after the queue.
    Scanning,
    /// In a delivery attempt.
    Delivering,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Held => "held",
            Phase::Scanning => "scanning",
            Phase::Delivering => "delivering",
        }
    }
}

/// Every queued message's phase and arrival time (seconds since the epoch).
#[derive(Clone, Debug, Default)]
pub struct Queue(Arc<Mutex<HashMap<SpoolId, (Phase, i64)>>>);

impl Queue {
    pub fn set(&self, id: &SpoolId, phase: Phase, received_at: i64) {
        let mut map = self.0.lock().expect("queue metrics lock");
        map.insert(id.clone(), (phase, received_at));
    }

    pub fn remove(&self, id: &SpoolId) {
        self.0.lock().expect("queue metrics lock").remove(id);
    }

    fn counts(&self) -> ([u64; 4], Option<i64>) {
        let map = self.0.lock().expect("queue metrics lock");
        let mut counts = [0u64; 4];
        for (phase, _) in map.values() {
            counts[*phase as usize] += 1;
        }
        (counts, map.values().map(|(_, at)| *at).min())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: &'static str,
}

/// `wasmtp_queue_messages{state}`.
#[derive(Debug)]
pub(super) struct Messages(pub Queue);

impl TypedMetric for Messages {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for Messages {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (counts, _) = self.0.counts();
        for phase in [
            Phase::Waiting,
            Phase::Held,
            Phase::Scanning,
            Phase::Delivering,
        ] {
            let labels = State {
                state: phase.name(),
            };
            let count = i64::try_from(counts[phase as usize]).unwrap_or(i64::MAX);
            encoder.encode_family(&labels)?.encode_gauge(&count)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// `wasmtp_queue_oldest_seconds`: 0 with an empty queue.
#[derive(Debug)]
pub(super) struct Oldest(pub Queue);

impl TypedMetric for Oldest {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for Oldest {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let now = chrono::Utc::now().timestamp();
        let age = self.0.counts().1.map_or(0, |at| (now - at).max(0));
        encoder.encode_gauge(&age)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}
