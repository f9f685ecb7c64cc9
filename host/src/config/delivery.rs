//! `[delivery]`: retries, concurrency and the client's timeouts.

use super::{Dur, Size};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Port for MX delivery (tests point it at a high port).
    pub smtp_port: u16,
    /// MTA-STS (RFC 8461) for MX delivery: domains with a policy get validated TLS to the
    /// MX hosts it names (`enforce`), or reports of what would fail (`testing`).
    pub mta_sts: bool,
    /// The policy servers' HTTPS port (443; tests point it at a high port, as `smtp_port`).
    pub mta_sts_port: u16,
    /// Intervals between attempts; the last repeats.
    pub retry: Vec<Dur>,
    /// Then the sender gets a failure report.
    pub max_age: Dur,
    /// A delay report when NOTIFY=DELAY asks for one.
    pub delay_warning: Dur,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Deliveries in flight to one destination (a next-hop host, or an MX host) at once,
    /// within `concurrency`, so that one slow destination cannot take every slot (Postfix's
    /// default_destination_concurrency_limit).
    pub destination_concurrency: usize,
    /// MX host addresses tried per attempt (Postfix's smtp_mx_address_limit).
    pub mx_address_limit: usize,
    /// Messages one connection to a next hop carries before it is closed (1: a connection
    /// per message; Postfix's smtp_connection_reuse_count_limit).
    pub reuse_limit: u32,
    /// How long an idle connection waits for the next message to its hop (Postfix's
    /// smtp_connection_cache_time_limit).
    pub reuse_idle: Dur,
    pub connect_timeout: Dur,
    /// The server's 220 greeting (RFC 5321 4.5.3.2.1: 5 minutes).
    pub greeting_timeout: Dur,
    /// The TLS handshake after STARTTLS.
    pub tls_timeout: Dur,
    /// Each command's reply and each write (RFC 5321 4.5.3.2.2-4: 5 minutes).
    pub command_timeout: Dur,
    /// Each block of message data written (RFC 5321 4.5.3.2.5: 3 minutes).
    pub data_timeout: Dur,
    /// The reply to the end of data (RFC 5321 4.5.3.2.6: 10 minutes).
    pub data_end_timeout: Dur,
    /// A failure report returns the whole message up to this size, else only its header
    /// section (Postfix's bounce_size_limit).
    pub bounce_size_limit: Size,
}

fn secs(s: u64) -> Dur {
    Dur(Duration::from_secs(s))
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            smtp_port: 25,
            mta_sts: true,
            mta_sts_port: 443,
            retry: [60, 300, 900, 3600, 14400].into_iter().map(secs).collect(),
            max_age: secs(5 * 86400),
            delay_warning: secs(4 * 3600),
            concurrency: 64,
            destination_concurrency: 20,
            mx_address_limit: 5,
            reuse_limit: 100,
            reuse_idle: secs(2),
            connect_timeout: secs(30),
            greeting_timeout: secs(300),
            tls_timeout: secs(120),
            command_timeout: secs(300),
            data_timeout: secs(180),
            data_end_timeout: secs(600),
            bounce_size_limit: Size(50_000),
        }
    }
}

impl Delivery {
    /// Every problem, with its key path.
    pub(super) fn validate(&self, p: &mut Vec<String>) {
        if self.retry.is_empty() {
            p.push("delivery.retry: needs at least one interval".into());
        }
        for (key, n) in [
            ("concurrency", self.concurrency),
            ("destination_concurrency", self.destination_concurrency),
            ("mx_address_limit", self.mx_address_limit),
            ("reuse_limit", self.reuse_limit as usize),
        ] {
            if n == 0 {
                p.push(format!("delivery.{key}: must be at least 1"));
            }
        }
        for (key, d) in [
            ("connect_timeout", self.connect_timeout),
            ("greeting_timeout", self.greeting_timeout),
            ("tls_timeout", self.tls_timeout),
            ("command_timeout", self.command_timeout),
            ("data_timeout", self.data_timeout),
            ("data_end_timeout", self.data_end_timeout),
        ] {
            if d.0.is_zero() {
                p.push(format!("delivery.{key}: must be longer than 0"));
            }
        }
    }
}
