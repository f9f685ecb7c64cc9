//! One delivery attempt: pending recipients grouped by route (one connection per next hop,
//! MX routes per domain), each group handed to its transport, outcomes recorded.

use super::client::{self, ClientSettings, Hop, Protocol, SmtpTransport, TlsMode};
use super::conn::Timeouts;
use super::shared::Delivery;
use super::slots::{Destination, SlotKey};
use super::{BoxFuture, DeliveryOutcome, Outgoing, Transport, bounce, maildir, mx, odmr};
use crate::config::{Config, Route, Target, TlsPolicy};
use crate::metrics::Outcome;
use crate::proto::Reply;
use crate::spool::{Content, Envelope, QueueState, RecipientStatus};
use crate::tls::RouteTls;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A route that cannot be used now (its trust anchors are not loaded: deferred) or for
/// this message (REQUIRETLS over a route that does not verify: failed): every recipient
/// gets the reply.
struct Unavailable(Reply);

impl Transport for Unavailable {
    fn deliver<'a>(&'a self, msg: &'a Outgoing<'a>) -> BoxFuture<'a, Vec<DeliveryOutcome>> {
        Box::pin(std::future::ready(msg.every(self.0.clone())))
    }
}

/// How `route` uses TLS, with the client config loaded for its trust anchors (missing only
/// for a moment after a reload that added the route).
fn tls_mode(route: &Route, loaded: &RouteTls) -> Result<TlsMode, Reply> {
    Ok(match route.tls {
        TlsPolicy::None => TlsMode::Off,
        TlsPolicy::Opportunistic => TlsMode::Opportunistic,
        TlsPolicy::Required => match loaded.get(&route.ca) {
            Some(anchors) => TlsMode::Required {
                config: anchors.config,
                anchors: route.ca.clone(),
            },
            None => {
                let why = "TLS required: the route's trust anchors are not loaded yet";
                return Err(Reply::dynamic(451, 7, 5, why));
            }
        },
    })
}

/// Builds the transport for a route; `domain` is the recipients' domain (for MX routes).
fn transport_for(
    d: &Delivery,
    config: &Config,
    route: &Route,
    (domain, requiretls): (&str, bool),
    settings: &Arc<ClientSettings>,
    loaded: &RouteTls,
) -> Box<dyn Transport> {
    let tls = match tls_mode(route, loaded) {
        Ok(tls) => tls,
        Err(reply) => return Box::new(Unavailable(reply)),
    };
    // RFC 8689 4.2.1: a fixed next hop takes a REQUIRETLS message only where the route
    // verifies its certificate; a mailbox directory is the message's end.
    // An ODMR link is TLS, but the customer's certificate is not validated.
    let relays = matches!(route.to, Target::Smtp(..) | Target::Lmtp(..) | Target::Odmr);
    if requiretls && relays && !matches!(tls, TlsMode::Required { .. }) {
        let why = format!(
            "route {} does not verify TLS (tls = \"required\")",
            route.to
        );
        return Box::new(Unavailable(client::requiretls_refused(&why)));
    }
    let hop = |host: &str, port: u16, protocol| {
        let hop = Hop {
            host: host.to_string(),
            port,
            tls_name: host.to_string(),
            tls: tls.clone(),
            protocol,
        };
        Box::new(SmtpTransport::new(hop, settings.clone()))
    };
    match &route.to {
        Target::Smtp(host, port) => hop(host, *port, Protocol::Smtp),
        Target::Lmtp(host, port) => hop(host, *port, Protocol::Lmtp),
        Target::Maildir(path) => Box::new(maildir::MaildirTransport::new(path, &config.hostname)),
        // Over the link of the customer collecting the domain now, else it keeps waiting.
        Target::Odmr => match odmr::OdmrTransport::for_domain(
            &d.odmr,
            domain,
            settings.clone(),
            d.slots.clone(),
        ) {
            Some(transport) => Box::new(transport),
            None => Box::new(Unavailable(odmr::waiting())),
        },
        Target::Mx => {
            let dns = d.resolver(config);
            // RFC 8461 for MX routes, with the route's trust anchors.
            let sts = match (&dns, loaded.get(&route.ca)) {
                (Ok(dns), Some(anchors)) if config.delivery.mta_sts => Some(mx::Sts {
                    policies: d.mta_sts.clone(),
                    fetcher: crate::mta_sts::Fetcher {
                        dns: dns.clone(),
                        port: config.delivery.mta_sts_port,
                        tls: anchors.config.clone(),
                    },
                    anchors,
                    ca: route.ca.clone(),
                }),
                _ => None,
            };
            let slots = d.slots.clone();
            Box::new(mx::MxTransport::new(
                config,
                domain,
                tls,
                settings.clone(),
                dns,
                slots,
                sts,
            ))
        }
    }
}

/// One attempt over every pending recipient, grouped by route. Returns the recipients
/// whose success the sender may want to hear of (RFC 3461 NOTIFY=SUCCESS): delivered, or
/// relayed to a hop that cannot pass DSN requests on.
pub(super) async fn attempt(
    d: &Delivery,
    envelope: &Envelope,
    content: &Content,
    state: &mut QueueState,
) -> Vec<(usize, RecipientStatus, bounce::Kind)> {
    let mut successes = Vec::new();
    let Some(loaded) = d.loaded().await else {
        return successes;
    };
    let config = d.config.borrow().clone();
    let settings = Arc::new(ClientSettings {
        hostname: config.hostname.clone(),
        timeouts: Timeouts::from_config(&config.delivery),
        own_addrs: d.own_addrs.clone(),
        pool: d.pool.clone(),
        reuse_limit: config.delivery.reuse_limit,
        reuse_idle: config.delivery.reuse_idle.0,
        reuse_keep: config.delivery.destination_concurrency,
        metrics: d.metrics.clone(),
    });
    // Recipients go together when they share the next hop and how TLS is used to reach it.
    let mut groups: BTreeMap<Destination, (Route, Vec<usize>)> = BTreeMap::new();
    for i in state.pending() {
        let route = config.route_for(&envelope.recipients[i].address.domain);
        let destination = Destination {
            to: route.to.clone(),
            // MX and ODMR routes go by domain: one lookup, or one customer's link, each.
            domain: matches!(route.to, Target::Mx | Target::Odmr)
                .then(|| envelope.recipients[i].address.domain_lower()),
            tls: route.tls,
            ca: route.ca.clone(),
        };
        groups
            .entry(destination)
            .or_insert((route, Vec::new()))
            .1
            .push(i);
    }
    for (destination, (route, recipients)) in groups {
        // A fixed next hop's slot for the whole group; an MX route takes one per MX host
        // it tries, so domains hosted together share their host's slots.
        let _slot = match route.to {
            // Each MX host, and an ODMR link, takes its own (mx.rs, odmr.rs).
            Target::Mx | Target::Odmr => None,
            _ => {
                let limit = config.delivery.destination_concurrency;
                Some(d.slots.take(SlotKey::Route(destination), limit).await)
            }
        };
        let domain = envelope.recipients[recipients[0]].address.domain_lower();
        let how = (domain.as_str(), envelope.params.requiretls);
        let transport = transport_for(d, &config, &route, how, &settings, &loaded.route_tls);
        let target = &route.to;
        let outgoing = Outgoing {
            envelope,
            content,
            recipients: &recipients,
        };
        let outcomes = transport.deliver(&outgoing).await;
        let route_name = target.to_string();
        // Seconds since the message came in (Postfix's `delay=`), and which attempt this is.
        let delay = chrono::Utc::now().timestamp() - envelope.received_at;
        let attempt = state.attempts + 1;
        for (&i, outcome) in recipients.iter().zip(outcomes) {
            let rcpt = &envelope.recipients[i].address;
            let report = match &outcome {
                DeliveryOutcome::Delivered(_) => Some(bounce::Kind::Delivered),
                DeliveryOutcome::Relayed { dsn: false, .. } => Some(bounce::Kind::Relayed),
                _ => None,
            };
            state.recipients[i] = match outcome {
                DeliveryOutcome::Delivered(a) | DeliveryOutcome::Relayed { answer: a, .. } => {
                    d.metrics.attempt(&route_name, Outcome::Delivered);
                    tracing::info!(id = %envelope.id, %rcpt, route = %target, relay = a.remote.as_deref().unwrap_or(""), delay_s = delay, attempt, reply = %a, "delivered");
                    let status = RecipientStatus::Delivered(a.stored());
                    if let Some(kind) = report {
                        successes.push((i, status.clone(), kind));
                    }
                    status
                }
                DeliveryOutcome::Transient(a) => {
                    d.metrics
                        .attempt(&route_name, Outcome::Deferred(a.deferral_reason()));
                    tracing::warn!(id = %envelope.id, %rcpt, route = %target, relay = a.remote.as_deref().unwrap_or(""), delay_s = delay, attempt, reply = %a, "deferred");
                    RecipientStatus::Deferred(a.stored())
                }
                DeliveryOutcome::Permanent(a) => {
                    d.metrics.attempt(&route_name, Outcome::Failed);
                    tracing::warn!(id = %envelope.id, %rcpt, route = %target, relay = a.remote.as_deref().unwrap_or(""), delay_s = delay, attempt, reply = %a, "failed permanently");
                    RecipientStatus::Failed(a.stored())
                }
            };
        }
    }
    successes
}
