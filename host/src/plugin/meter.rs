//! One plugin's metric handles, made once (at load, or at a handle's first use) so that a
//! hook call bumps atomics only: no label set allocated, no family lock taken, per call.

use super::capability::Capability;
use crate::metrics::{HostCall, Metrics, Plugin, PluginCall, PluginFault, PluginVerdict};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How many hooks and verdict kinds there are (`Hook::ALL`, `Decision::KINDS`; checked
/// where the labels are made, in `session`).
pub const HOOKS: usize = 8;
pub const VERDICTS: usize = 6;

/// A hook or a verdict kind as counted: its place in `Hook::ALL` or `Decision::KINDS`, and
/// its name.
#[derive(Clone, Copy)]
pub struct Label {
    pub index: usize,
    pub name: &'static str,
}

pub struct Meter {
    metrics: Arc<Metrics>,
    plugin: String,
    shadow: bool,
    calls: [OnceLock<Histogram>; HOOKS],
    verdicts: [[OnceLock<Counter>; VERDICTS]; HOOKS],
    host_calls: [OnceLock<Histogram>; Capability::ALL.len()],
    /// Refused capability calls: a guest may make them in a loop.
    refused: OnceLock<Counter>,
    instances: Gauge,
}

impl Meter {
    pub fn new(metrics: Arc<Metrics>, plugin: &str, shadow: bool) -> Meter {
        let labels = Plugin {
            plugin: plugin.to_string(),
        };
        let instances = metrics.plugin_instances.get_or_create(&labels).clone();
        Meter {
            metrics,
            plugin: plugin.to_string(),
            shadow,
            calls: Default::default(),
            verdicts: Default::default(),
            host_calls: Default::default(),
            refused: OnceLock::new(),
            instances,
        }
    }

    /// One call at `hook` and how long it took.
    pub fn call(&self, hook: Label, took: Duration) {
        self.calls[hook.index]
            .get_or_init(|| {
                let labels = PluginCall {
                    plugin: self.plugin.clone(),
                    hook: hook.name,
                };
                self.metrics.plugin_calls.get_or_create(&labels).clone()
            })
            .observe(took.as_secs_f64());
    }

    /// The verdict of a call at `hook` (`shadow`: counted, not applied).
    pub fn verdict(&self, hook: Label, verdict: Label) {
        self.verdicts[hook.index][verdict.index]
            .get_or_init(|| {
                let labels = PluginVerdict {
                    plugin: self.plugin.clone(),
                    hook: hook.name,
                    verdict: verdict.name,
                    shadow: self.shadow,
                };
                self.metrics
                    .plugin_verdicts_total
                    .get_or_create(&labels)
                    .clone()
            })
            .inc();
    }

    /// A call that failed, of `kind` (rare: an instance is dropped after each, so looked
    /// up each time).
    pub fn fault(&self, kind: &'static str) {
        self.fault_counter(kind).inc();
        self.metrics.failed_calls.inc();
    }

    /// A capability call refused for want of a grant; the guest is told, and may go on.
    pub fn refused(&self) {
        self.refused
            .get_or_init(|| self.fault_counter("capability"))
            .inc();
    }

    fn fault_counter(&self, kind: &'static str) -> Counter {
        let labels = PluginFault {
            plugin: self.plugin.clone(),
            kind,
        };
        self.metrics
            .plugin_faults_total
            .get_or_create(&labels)
            .clone()
    }

    pub fn breaker_opened(&self) {
        let labels = Plugin {
            plugin: self.plugin.clone(),
        };
        let opened = self
            .metrics
            .plugin_breaker_opened_total
            .get_or_create(&labels);
        opened.inc();
    }

    /// One host call of `capability` and how long it took.
    pub fn host_call(&self, capability: Capability, took: Duration) {
        let i = Capability::ALL
            .iter()
            .position(|&c| c == capability)
            .expect("every capability is in Capability::ALL");
        self.host_calls[i]
            .get_or_init(|| {
                let labels = HostCall {
                    plugin: self.plugin.clone(),
                    call: capability.name(),
                };
                self.metrics
                    .plugin_host_calls
                    .get_or_create(&labels)
                    .clone()
            })
            .observe(took.as_secs_f64());
    }

    /// Counts one live instance until the guard is dropped (with its store).
    pub fn instance(&self) -> Alive {
        self.instances.inc();
        Alive(self.instances.clone())
    }
}

/// One live instance, counted in `wasmtp_plugin_instances` while held.
pub struct Alive(Gauge);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.dec();
    }
}
