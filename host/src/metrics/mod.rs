//! What the server counts, with `prometheus-client` (the Prometheus project's own Rust
//! client): families named `wasmtp_*`, labels of bounded cardinality (listeners, routes
//! and plugins as configured, hooks, outcome kinds; never an address or a domain), served
//! in the OpenMetrics text format at `/metrics` when `[metrics]` is set (`http`).

mod http;
mod labels;
mod queue;

pub use http::serve;
pub use labels::*;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
pub use queue::{Phase, Queue};
use std::time::Duration;

pub type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds, from 100 µs to about 100 s.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 11))
}

/// Seconds, from 1 µs to about 4 s: host calls, disk syncs.
fn short_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.000_001, 4.0, 12))
}

/// Octets, from 1 KiB to 64 MiB.
fn octets() -> Histogram {
    Histogram::new(exponential_buckets(1024.0, 4.0, 9))
}

/// Every family the server keeps; cheap to bump from any task (atomics, and a read lock
/// once a label set exists; a plugin's handles are made once, `plugin::Meter`).
pub struct Metrics {
    registry: Registry,
    pub connections_total: Family<Connection, Counter>,
    pub connections: Family<Listener, Gauge>,
    pub transactions_total: Family<Transaction, Counter>,
    pub recipients_refused_total: Counter,
    pub message_size: Histogram,
    pub auth_results_total: Family<AuthResult, Counter>,
    pub mta_sts_total: Family<MtaSts, Counter>,
    pub deliveries_total: Counter,
    pub deferrals_total: Family<Deferral, Counter>,
    pub failures_total: Counter,
    pub delivery_attempts_total: Family<Attempt, Counter>,
    pub delivery_connections_total: Family<Reuse, Counter>,
    pub plugin_calls: Histograms<PluginCall>,
    pub plugin_verdicts_total: Family<PluginVerdict, Counter>,
    pub plugin_faults_total: Family<PluginFault, Counter>,
    pub plugin_breaker_opened_total: Family<Plugin, Counter>,
    pub plugin_instances: Family<Plugin, Gauge>,
    pub plugin_host_calls: Histograms<HostCall>,
    /// Spool fsyncs: how long each took, and how many records it made durable.
    pub spool_sync: Histogram,
    pub spool_sync_records: Histogram,
    /// Every failed plugin call, whatever its plugin and kind (what the tests wait for);
    /// a refused capability call that the hook survives is not one.
    pub failed_calls: Counter,
    /// Every deferral, whatever its reason.
    deferred: Counter,
    /// What each queued message is doing (set by its delivery task).
    pub queue: Queue,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("wasmtp"),
            connections_total: Family::default(),
            connections: Family::default(),
            transactions_total: Family::default(),
            recipients_refused_total: Counter::default(),
            message_size: octets(),
            auth_results_total: Family::default(),
            mta_sts_total: Family::default(),
            deliveries_total: Counter::default(),
            deferrals_total: Family::default(),
            failures_total: Counter::default(),
            delivery_attempts_total: Family::default(),
            delivery_connections_total: Family::default(),
            plugin_calls: Family::new_with_constructor(seconds),
            plugin_verdicts_total: Family::default(),
            plugin_faults_total: Family::default(),
            plugin_breaker_opened_total: Family::default(),
            plugin_instances: Family::default(),
            plugin_host_calls: Family::new_with_constructor(short_seconds),
            spool_sync: short_seconds(),
            // 1 to 4096 records.
            spool_sync_records: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            failed_calls: Counter::default(),
            deferred: Counter::default(),
            queue: Queue::default(),
        };
        m.register_all();
        m
    }
}

impl Metrics {
    fn register_all(&mut self) {
        let r = &mut self.registry;
        r.register(
            "connections",
            "SMTP connections, by listener and outcome (accepted, refused over the limits)",
            self.connections_total.clone(),
        );
        r.register(
            "open_connections",
            "SMTP sessions open now, by listener",
            self.connections.clone(),
        );
        r.register(
            "transactions",
            "Message transactions ended, by outcome and reply class",
            self.transactions_total.clone(),
        );
        r.register(
            "recipients_refused",
            "RCPT commands refused",
            self.recipients_refused_total.clone(),
        );
        r.register_with_unit(
            "message_size",
            "Size of the messages accepted",
            Unit::Bytes,
            self.message_size.clone(),
        );
        r.register(
            "auth_results",
            "Sender authentication results of received messages, by method and result",
            self.auth_results_total.clone(),
        );
        r.register(
            "mta_sts",
            "MX connections under an MTA-STS policy, by the policy's mode and result",
            self.mta_sts_total.clone(),
        );
        r.register(
            "deliveries",
            "Recipients delivered",
            self.deliveries_total.clone(),
        );
        r.register(
            "deferrals",
            "Recipient delivery attempts that failed temporarily, by reason class",
            self.deferrals_total.clone(),
        );
        r.register(
            "failures",
            "Recipients that failed permanently",
            self.failures_total.clone(),
        );
        r.register(
            "delivery_attempts",
            "Recipients of delivery attempts, by route and outcome",
            self.delivery_attempts_total.clone(),
        );
        r.register(
            "delivery_connections",
            "Connections to next hops that carried a transaction, new or reused",
            self.delivery_connections_total.clone(),
        );
        r.register_with_unit(
            "plugin_call",
            "Latency of plugin hook calls, by plugin and hook",
            Unit::Seconds,
            self.plugin_calls.clone(),
        );
        r.register(
            "plugin_verdicts",
            "Plugin verdicts, by plugin, hook and verdict",
            self.plugin_verdicts_total.clone(),
        );
        r.register(
            "plugin_faults",
            "Plugin faults (traps, deadlines, memory, bad replies, refused capability calls), by plugin and kind",
            self.plugin_faults_total.clone(),
        );
        r.register(
            "plugin_breaker_opened",
            "Times a plugin was switched off by its crash-loop breaker, by plugin",
            self.plugin_breaker_opened_total.clone(),
        );
        r.register(
            "plugin_instances",
            "Plugin instances alive now (one per session and plugin called), by plugin",
            self.plugin_instances.clone(),
        );
        r.register_with_unit(
            "plugin_host_call",
            "Latency of the host calls plugins make, by plugin and capability (kv, dns, http)",
            Unit::Seconds,
            self.plugin_host_calls.clone(),
        );
        r.register_with_unit(
            "spool_sync",
            "Latency of the spool's fsyncs (each makes a group of transactions durable)",
            Unit::Seconds,
            self.spool_sync.clone(),
        );
        r.register(
            "spool_sync_records",
            "Records made durable by one spool fsync (the group commit's batch size)",
            self.spool_sync_records.clone(),
        );
        r.register(
            "queue_messages",
            "Queued messages, by what they are doing (waiting, held, scanning, delivering)",
            queue::Messages(self.queue.clone()),
        );
        r.register_with_unit(
            "queue_oldest",
            "Age of the oldest queued message (0: none queued)",
            Unit::Seconds,
            queue::Oldest(self.queue.clone()),
        );
    }

    /// The OpenMetrics text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// One connection taken (or refused) at `listener`.
    pub fn connection(&self, listener: &str, accepted: bool) {
        let outcome = if accepted { "accepted" } else { "refused" };
        let labels = Connection {
            listener: listener.to_string(),
            outcome,
        };
        self.connections_total.get_or_create(&labels).inc();
    }

    /// A transaction ended with a reply of `code`.
    pub fn transaction(&self, outcome: &'static str, code: u16) {
        let class = match code {
            200..=299 => "2xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let labels = Transaction { outcome, class };
        self.transactions_total.get_or_create(&labels).inc();
    }

    /// Transactions so far that ended so.
    pub fn transactions(&self, outcome: &'static str, class: &'static str) -> u64 {
        let labels = Transaction { outcome, class };
        self.transactions_total.get_or_create(&labels).get()
    }

    /// Plugin faults so far that failed a call, of every plugin and kind.
    pub fn faults(&self) -> u64 {
        self.failed_calls.get()
    }

    /// Faults of `plugin` of `kind` so far.
    pub fn faults_of(&self, plugin: &str, kind: &'static str) -> u64 {
        let labels = PluginFault {
            plugin: plugin.to_string(),
            kind,
        };
        self.plugin_faults_total.get_or_create(&labels).get()
    }

    pub fn auth_result(&self, method: &'static str, result: &'static str) {
        let labels = AuthResult { method, result };
        self.auth_results_total.get_or_create(&labels).inc();
    }

    /// A connection to an MX host under an MTA-STS policy (see `MtaSts`).
    pub fn mta_sts(&self, mode: &'static str, result: &'static str) {
        let labels = MtaSts { mode, result };
        self.mta_sts_total.get_or_create(&labels).inc();
    }

    /// A recipient's outcome in a delivery attempt by `route`; a deferral's `reason` class
    /// (see `Deferral`).
    pub fn attempt(&self, route: &str, outcome: Outcome) {
        let name = match outcome {
            Outcome::Delivered => "delivered",
            Outcome::Deferred(_) => "deferred",
            Outcome::Failed => "failed",
        };
        let labels = Attempt {
            route: route.to_string(),
            outcome: name,
        };
        self.delivery_attempts_total.get_or_create(&labels).inc();
        match outcome {
            Outcome::Delivered => {
                self.deliveries_total.inc();
            }
            Outcome::Deferred(reason) => self.deferral(reason),
            Outcome::Failed => {
                self.failures_total.inc();
            }
        }
    }

    /// One recipient deferred for `reason`.
    pub fn deferral(&self, reason: &'static str) {
        let labels = Deferral { reason };
        self.deferrals_total.get_or_create(&labels).inc();
        self.deferred.inc();
    }

    /// Recipients deferred so far, for every reason.
    pub fn deferrals(&self) -> u64 {
        self.deferred.get()
    }

    /// A transaction carried by a new connection to a next hop, or a `reused` one.
    pub fn delivery_connection(&self, reused: bool) {
        let labels = Reuse { reused };
        self.delivery_connections_total.get_or_create(&labels).inc();
    }
}

impl crate::spool::SyncObserver for Metrics {
    fn synced(&self, took: Duration, records: usize) {
        self.spool_sync.observe(took.as_secs_f64());
        self.spool_sync_records.observe(records as f64);
    }
}

/// A recipient's outcome in one delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// With its reason class (`Deferral`).
    Deferred(&'static str),
    Failed,
}
