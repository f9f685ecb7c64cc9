//! What the server counts, with `prometheus-client` (the Prometheus project's own Rust
//! client): families named `wasmtp_*`, labels of bounded cardinality (listeners, routes
//! and plugins as configured, hooks, outcome kinds; never an address or a domain), served
//! in the OpenMetrics text format at `/metrics` when `[metrics]` is set (`http`).

mod http;
mod queue;

pub use http::serve;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
pub use queue::{Phase, Queue};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Listener {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Connection {
    pub listener: String,
    /// `accepted`, `refused` (over the limits).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Transaction {
    /// `accepted`, `held` (quarantined), `refused`, `dropped` (a plugin discarded it).
    pub outcome: &'static str,
    /// The reply's class: `2xx`, `4xx`, `5xx`.
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthResult {
    /// `spf`, `dkim`, `arc`, `dmarc`.
    pub method: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginCall {
    pub plugin: String,
    pub hook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginVerdict {
    pub plugin: String,
    pub hook: &'static str,
    /// `continue`, `accept`, `refuse`, `disconnect`, `quarantine`, `discard`.
    pub verdict: &'static str,
    /// A shadow plugin's (`true`): counted, not applied.
    pub shadow: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Plugin {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginFault {
    pub plugin: String,
    /// `trap`, `deadline`, `no_answer`, `failed`, `bad_reply`, `bad_change`, `config`,
    /// `host`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Attempt {
    /// The route's target as configured: `mx`, `smtp:HOST:PORT`, `lmtp:…`, `maildir`.
    pub route: String,
    /// Per recipient: `delivered`, `deferred`, `failed`.
    pub outcome: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds, from 100 µs to about 100 s.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 11))
}

/// Octets, from 1 KiB to 64 MiB.
fn octets() -> Histogram {
    Histogram::new(exponential_buckets(1024.0, 4.0, 9))
}

/// Every family the server keeps; cheap to bump from any task (atomics, and a read lock
/// once a label set exists).
pub struct Metrics {
    registry: Registry,
    pub connections_total: Family<Connection, Counter>,
    pub connections: Family<Listener, Gauge>,
    pub transactions_total: Family<Transaction, Counter>,
    pub recipients_refused_total: Counter,
    pub message_size: Histogram,
    pub auth_results_total: Family<AuthResult, Counter>,
    pub deliveries_total: Counter,
    pub deferrals_total: Counter,
    pub failures_total: Counter,
    pub delivery_attempts_total: Family<Attempt, Counter>,
    pub plugin_calls: Histograms<PluginCall>,
    pub plugin_verdicts_total: Family<PluginVerdict, Counter>,
    pub plugin_faults_total: Family<PluginFault, Counter>,
    pub plugin_breaker_opened_total: Family<Plugin, Counter>,
    /// Every fault, whatever its plugin and kind (what the tests wait for).
    faults: Counter,
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
            deliveries_total: Counter::default(),
            deferrals_total: Counter::default(),
            failures_total: Counter::default(),
            delivery_attempts_total: Family::default(),
            plugin_calls: Family::new_with_constructor(seconds),
            plugin_verdicts_total: Family::default(),
            plugin_faults_total: Family::default(),
            plugin_breaker_opened_total: Family::default(),
            faults: Counter::default(),
            queue: Queue::default(),
        };
        let r = &mut m.registry;
        r.register(
            "connections",
            "SMTP connections, by listener and outcome (accepted, refused over the limits)",
            m.connections_total.clone(),
        );
        r.register(
            "open_connections",
            "SMTP sessions open now, by listener",
            m.connections.clone(),
        );
        r.register(
            "transactions",
            "Message transactions ended, by outcome and reply class",
            m.transactions_total.clone(),
        );
        r.register(
            "recipients_refused",
            "RCPT commands refused",
            m.recipients_refused_total.clone(),
        );
        r.register_with_unit(
            "message_size",
            "Size of the messages accepted",
            Unit::Bytes,
            m.message_size.clone(),
        );
        r.register(
            "auth_results",
            "Sender authentication results of received messages, by method and result",
            m.auth_results_total.clone(),
        );
        r.register(
            "deliveries",
            "Recipients delivered",
            m.deliveries_total.clone(),
        );
        r.register(
            "deferrals",
            "Recipient delivery attempts that failed temporarily",
            m.deferrals_total.clone(),
        );
        r.register(
            "failures",
            "Recipients that failed permanently",
            m.failures_total.clone(),
        );
        r.register(
            "delivery_attempts",
            "Recipients of delivery attempts, by route and outcome",
            m.delivery_attempts_total.clone(),
        );
        r.register_with_unit(
            "plugin_call",
            "Latency of plugin hook calls, by plugin and hook",
            Unit::Seconds,
            m.plugin_calls.clone(),
        );
        r.register(
            "plugin_verdicts",
            "Plugin verdicts, by plugin, hook and verdict",
            m.plugin_verdicts_total.clone(),
        );
        r.register(
            "plugin_faults",
            "Plugin calls that trapped, timed out, ran out of memory or answered badly, by plugin and kind",
            m.plugin_faults_total.clone(),
        );
        r.register(
            "queue_messages",
            "Queued messages, by what they are doing (waiting, held, scanning, delivering)",
            queue::Messages(m.queue.clone()),
        );
        r.register_with_unit(
            "queue_oldest",
            "Age of the oldest queued message (0: none queued)",
            Unit::Seconds,
            queue::Oldest(m.queue.clone()),
        );
        r.register(
            "plugin_breaker_opened",
            "Times a plugin was switched off by its crash-loop breaker, by plugin",
            m.plugin_breaker_opened_total.clone(),
        );
        m
    }
}

impl Metrics {
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

    /// One plugin hook call and how long it took.
    pub fn plugin_call(&self, plugin: &str, hook: &'static str, took: Duration) {
        let labels = PluginCall {
            plugin: plugin.to_string(),
            hook,
        };
        self.plugin_calls
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn plugin_verdict(
        &self,
        plugin: &str,
        hook: &'static str,
        verdict: &'static str,
        shadow: bool,
    ) {
        let labels = PluginVerdict {
            plugin: plugin.to_string(),
            hook,
            verdict,
            shadow,
        };
        self.plugin_verdicts_total.get_or_create(&labels).inc();
    }

    pub fn plugin_fault(&self, plugin: &str, kind: &'static str) {
        let labels = PluginFault {
            plugin: plugin.to_string(),
            kind,
        };
        self.plugin_faults_total.get_or_create(&labels).inc();
        self.faults.inc();
    }

    pub fn plugin_breaker_opened(&self, plugin: &str) {
        let labels = Plugin {
            plugin: plugin.to_string(),
        };
        self.plugin_breaker_opened_total
            .get_or_create(&labels)
            .inc();
    }

    /// Plugin faults so far, of every plugin and kind.
    pub fn faults(&self) -> u64 {
        self.faults.get()
    }

    pub fn auth_result(&self, method: &'static str, result: &'static str) {
        let labels = AuthResult { method, result };
        self.auth_results_total.get_or_create(&labels).inc();
    }

    /// A recipient's outcome in a delivery attempt by `route`.
    pub fn attempt(&self, route: &str, outcome: &'static str) {
        let labels = Attempt {
            route: route.to_string(),
            outcome,
        };
        self.delivery_attempts_total.get_or_create(&labels).inc();
        match outcome {
            "delivered" => self.deliveries_total.inc(),
            "deferred" => self.deferrals_total.inc(),
            _ => self.failures_total.inc(),
        };
    }
}
