//! One delivery attempt: pending recipients grouped by route (one connection per next hop,
//! MX routes per domain), each group handed to its transport, outcomes recorded.

use super::client::{self, Protocol};
use super::shared::Delivery;
use super::{DeliveryOutcome, Outgoing, Transport, maildir, mx};
use crate::config::{Config, Target, TlsPolicy};
use crate::metrics::Metrics;
use crate::spool::{Envelope, QueueState, RecipientStatus};
use std::collections::BTreeMap;

/// Builds the transport for a route; `domain` is the recipients' domain (for MX routes).
fn transport_for(
    d: &Delivery,
    config: &Config,
    target: &Target,
    tls: TlsPolicy,
    domain: &str,
) -> Box<dyn Transport> {
    match target {
        Target::Smtp(host, port) => Box::new(client::SmtpTransport::new(
            &config.hostname,
            host,
            *port,
            tls,
            Protocol::Smtp,
        )),
        Target::Lmtp(host, port) => Box::new(client::SmtpTransport::new(
            &config.hostname,
            host,
            *port,
            tls,
            Protocol::Lmtp,
        )),
        Target::Maildir(path) => Box::new(maildir::MaildirTransport::new(path, &config.hostname)),
        Target::Mx => Box::new(mx::MxTransport::new(
            config,
            domain,
            tls,
            d.resolver(config),
        )),
    }
}

/// One attempt over every pending recipient, grouped by route.
pub(super) async fn attempt(
    d: &Delivery,
    envelope: &Envelope,
    content: &[u8],
    state: &mut QueueState,
) {
    let config = d.config.borrow().clone();
    let mut groups: BTreeMap<String, (Target, TlsPolicy, Vec<usize>)> = BTreeMap::new();
    for i in state.pending() {
        let (target, tls) = config.route_for(&envelope.recipients[i].address.domain);
        // One connection per next hop; MX routes group per domain.
        let key = match &target {
            Target::Mx => format!("mx:{}", envelope.recipients[i].address.domain_lower()),
            other => format!("{other:?}{tls:?}"),
        };
        groups
            .entry(key)
            .or_insert((target, tls, Vec::new()))
            .2
            .push(i);
    }
    for (target, tls, recipients) in groups.into_values() {
        let domain = envelope.recipients[recipients[0]].address.domain_lower();
        let transport = transport_for(d, &config, &target, tls, &domain);
        let outgoing = Outgoing {
            envelope,
            content,
            recipients: &recipients,
        };
        let outcomes = transport.deliver(&outgoing).await;
        for (&i, outcome) in recipients.iter().zip(outcomes) {
            let rcpt = &envelope.recipients[i].address;
            state.recipients[i] = match outcome {
                DeliveryOutcome::Delivered(r) => {
                    Metrics::inc(&d.metrics.deliveries_total);
                    tracing::info!(id = %envelope.id, %rcpt, route = ?target, reply = %r, "delivered");
                    RecipientStatus::Delivered(r.to_string())
                }
                DeliveryOutcome::Transient(r) => {
                    Metrics::inc(&d.metrics.deferrals_total);
                    tracing::warn!(id = %envelope.id, %rcpt, route = ?target, reply = %r, "deferred");
                    RecipientStatus::Deferred(r.to_string())
                }
                DeliveryOutcome::Permanent(r) => {
                    Metrics::inc(&d.metrics.failures_total);
                    tracing::warn!(id = %envelope.id, %rcpt, route = ?target, reply = %r, "failed permanently");
                    RecipientStatus::Failed(r.to_string())
                }
            };
        }
    }
}
