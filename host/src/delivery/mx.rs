//! Delivery by MX lookup (RFC 5321 5.1): the domain's MX hosts in preference order, or the
//! domain itself when it has no MX ("implicit MX"); a null MX (RFC 7505) means the domain
//! takes no mail. Each host's addresses are tried in turn on `[delivery] smtp_port` until
//! one answers; a temporary failure moves on to the next, a permanent one ends the attempt.
//! Hosts of equal preference are tried in random order. A lookup that fails (SERVFAIL, a
//! timeout) defers; only "no such domain" and a null MX are permanent.
//! Lookups use the server's resolver (`[dns] nameservers`). A domain with an MTA-STS policy
//! (RFC 8461) in `enforce` mode is delivered to only over TLS validated for an MX host the
//! policy names; others are skipped, and failures defer with 4.7.5. In `testing` mode what
//! would fail is logged and counted. Lookups take a global delivery
//! slot; each MX host tried takes one of its own (`delivery.destination_concurrency`), so
//! many domains hosted on one MX host share its slots.

use super::client::{ClientSettings, Hop, Protocol, SmtpTransport, TlsMode};
use super::client::{is_loop, is_requiretls_refusal, requiretls_refused};
use super::slots::{SlotKey, Slots};
use super::{Answer, BoxFuture, DeliveryOutcome, Outgoing, Transport};
use crate::config::Config;
use crate::dns::{Dns, DnsError, ResolverError};
use crate::mta_sts::{Fetcher, Lookup, Mode, Policies, Policy};
use crate::proto::Reply;
use std::sync::Arc;

pub struct MxTransport {
    domain: String,
    port: u16,
    tls: TlsMode,
    settings: Arc<ClientSettings>,
    /// Addresses tried per attempt, over all MX hosts.
    address_limit: usize,
    /// The delivery's shared resolver, or why there is none.
    dns: Result<Dns, ResolverError>,
    slots: Arc<Slots>,
    /// Attempts at once to one MX host.
    host_limit: usize,
    /// MTA-STS, when `delivery.mta_sts` is on.
    sts: Option<Sts>,
}

/// What MTA-STS needs: the policies seen, how to fetch them, and the trust anchors (the
/// route's `ca`, else Mozilla's roots) for the policy servers and the MX hosts.
pub struct Sts {
    pub policies: Arc<Policies>,
    pub fetcher: Fetcher,
    pub anchors: crate::tls::Anchors,
    pub ca: Option<std::path::PathBuf>,
}

/// Where to go: MX hosts in order, or why there is nowhere.
enum Hosts {
    Found(Vec<String>),
    Refused(Reply),
}

impl MxTransport {
    pub fn new(
        config: &Config,
        domain: &str,
        tls: TlsMode,
        settings: Arc<ClientSettings>,
        dns: Result<Dns, ResolverError>,
        slots: Arc<Slots>,
        sts: Option<Sts>,
    ) -> MxTransport {
        MxTransport {
            domain: domain.to_string(),
            port: config.delivery.smtp_port,
            tls,
            settings,
            address_limit: config.delivery.mx_address_limit,
            dns,
            slots,
            host_limit: config.delivery.destination_concurrency,
            sts,
        }
    }

    /// How TLS reaches `host` under `policy`, enforced (`enforce`: the policy's mode, or a
    /// REQUIRETLS message) or not; `None`: an enforced policy does not name it (the host is
    /// skipped).
    fn tls_for(&self, policy: Option<&Policy>, enforce: bool, host: &str) -> Option<TlsMode> {
        let (Some(policy), Some(sts)) = (policy, &self.sts) else {
            return Some(self.tls.clone());
        };
        let mode = policy.mode.as_str();
        if !policy.allows(host) {
            self.settings.metrics.mta_sts(mode, "mx_mismatch");
            tracing::warn!(domain = %self.domain, %host, mode, "MX host not named by the domain's MTA-STS policy");
            if enforce {
                return None;
            }
        }
        Some(match (enforce, &self.tls) {
            (true, _) => TlsMode::Required {
                config: sts.anchors.config.clone(),
                anchors: sts.ca.clone(),
            },
            // A route that verifies anyway keeps doing so.
            (_, TlsMode::Required { .. }) => self.tls.clone(),
            _ => TlsMode::Testing {
                verifier: sts.anchors.verifier.clone(),
                anchors: sts.ca.clone(),
            },
        })
    }

    async fn hosts(&self, dns: &Dns) -> Hosts {
        match dns.mx(&self.domain).await {
            // RFC 7505 3: a single MX with preference 0 and the root as exchange.
            Ok(mx) if mx.len() == 1 && mx[0].1.is_empty() => Hosts::Refused(Reply::dynamic(
                556,
                1,
                10,
                format!("{} does not accept mail (null MX)", self.domain),
            )),
            Ok(mut mx) if !mx.is_empty() => {
                // RFC 5321 5.1: hosts of equal preference in random order, so that they
                // share the load.
                for equal in mx.chunk_by_mut(|a, b| a.0 == b.0) {
                    fastrand::shuffle(equal);
                }
                Hosts::Found(mx.into_iter().map(|(_, host)| host).collect())
            }
            // RFC 5321 5.1: no MX records: the domain itself is the implicit MX.
            Ok(_) | Err(DnsError::NotFound) => Hosts::Found(vec![self.domain.clone()]),
            Err(e) => Hosts::Refused(Reply::dynamic(
                451,
                4,
                3,
                format!("MX lookup for {} failed: {e:?}", self.domain),
            )),
        }
    }

    async fn run(&self, msg: &Outgoing<'_>) -> Vec<DeliveryOutcome> {
        let dns = match &self.dns {
            Ok(d) => d,
            Err(e) => {
                return msg.every(Reply::dynamic(451, 4, 3, format!("no resolver: {e}")));
            }
        };
        let global = self.slots.global().await;
        let hosts = match self.hosts(dns).await {
            Hosts::Found(h) => h,
            Hosts::Refused(reply) => return msg.every(reply),
        };
        let lookup = match &self.sts {
            Some(sts) if !msg.envelope.tls_optional => {
                sts.policies.policy(&sts.fetcher, &self.domain).await
            }
            _ => Lookup::Absent,
        };
        // RFC 8689 4.2.1: a REQUIRETLS message needs the MX hosts validated by MTA-STS (we
        // have no DNSSEC), and then is delivered as under an enforced policy.
        let requiretls = msg.envelope.params.requiretls;
        match (&lookup, requiretls) {
            (Lookup::Absent, true) => {
                let why = format!(
                    "{} has no MTA-STS policy to validate its MX hosts",
                    self.domain
                );
                return msg.every(requiretls_refused(&why));
            }
            (Lookup::Unknown, true) => {
                let why = format!(
                    "REQUIRETLS: the MTA-STS policy of {} cannot be had now",
                    self.domain
                );
                return msg.every(Reply::dynamic(451, 7, 5, why));
            }
            _ => {}
        }
        let policy = lookup.policy();
        let enforced = policy
            .as_ref()
            .is_some_and(|p| p.mode == Mode::Enforce || requiretls);
        let mode = policy.as_ref().map_or("none", |p| p.mode.as_str());
        let mut last = None;
        let mut skipped = false;
        let mut nowhere = true;
        let mut tried = 0;
        drop(global);
        for host in &hosts {
            let Some(tls) = self.tls_for(policy.map(|p| &**p), enforced, host) else {
                skipped = true;
                continue;
            };
            let global = self.slots.global().await;
            let addresses = match dns.addresses(host).await {
                Ok(a) => a,
                Err(e) => {
                    // Only names with no address records at all make the domain nowhere.
                    nowhere &= e == DnsError::NotFound;
                    continue;
                }
            };
            drop(global);
            nowhere = false;
            if tried == self.address_limit {
                break;
            }
            let _slot = (self.slots)
                .take(SlotKey::MxHost(host.to_lowercase()), self.host_limit)
                .await;
            for ip in addresses {
                // Postfix's smtp_mx_address_limit: a domain with many MX addresses that all
                // hang cannot hold a delivery slot for all of their timeouts.
                if tried == self.address_limit {
                    break;
                }
                tried += 1;
                let hop = SmtpTransport::new(
                    Hop {
                        host: ip.to_string(),
                        port: self.port,
                        tls_name: host.clone(),
                        tls: tls.clone(),
                        protocol: Protocol::Smtp,
                    },
                    self.settings.clone(),
                );
                let result = hop.run(msg).await;
                let result = match (enforced, result) {
                    // Our own TLS failure (no STARTTLS, a certificate that does not validate).
                    (true, Err(answer))
                        if answer.remote.is_none()
                            && answer.reply.is_transient()
                            && answer.reply.enhanced.is_some_and(|e| e.1 == 7) =>
                    {
                        self.settings.metrics.mta_sts(mode, "tls_failed");
                        let why =
                            format!("MTA-STS policy of {}: {}", self.domain, answer.reply.text);
                        Err(Reply::dynamic(451, 7, 5, why).into())
                    }
                    (true, Ok(outcomes)) => {
                        self.settings.metrics.mta_sts(mode, "valid");
                        Ok(outcomes)
                    }
                    (_, result) => result,
                };
                match result {
                    Ok(outcomes) => return outcomes,
                    // We are one of the domain's MX hosts: only better ones may be tried
                    // (RFC 5321 5.1). With none of them reachable that is a deferral, not a
                    // loop; a loop only when we come first.
                    Err(answer) if is_loop(&answer.reply) => {
                        return msg.every(match last {
                            Some(better) => Reply::dynamic(
                                451,
                                4,
                                4,
                                format!(
                                    "{}: the MX hosts preferred to this one failed: {better}",
                                    self.domain
                                ),
                            )
                            .into(),
                            None => answer,
                        });
                    }
                    // A hop without REQUIRETLS: another MX host may have it.
                    Err(answer)
                        if answer.reply.is_transient() || is_requiretls_refusal(&answer) =>
                    {
                        tracing::debug!(domain = %self.domain, %host, %ip, reply = %answer, "trying the next MX address");
                        // A host that may take it later outweighs one without REQUIRETLS.
                        if !is_requiretls_refusal(&answer) || last.is_none() {
                            last = Some(answer);
                        }
                    }
                    Err(answer) => return msg.every(answer),
                }
            }
        }
        msg.every(last.unwrap_or_else(|| {
            Answer::from(if skipped {
                let why = format!("{}: no MX host named by its MTA-STS policy", self.domain);
                Reply::dynamic(451, 7, 5, why)
            } else if nowhere {
                Reply::dynamic(
                    550,
                    1,
                    2,
                    format!("{}: no MX or address records", self.domain),
                )
            } else {
                Reply::dynamic(
                    451,
                    4,
                    4,
                    format!("{}: no MX host could be reached", self.domain),
                )
            })
        }))
    }
}

impl Transport for MxTransport {
    fn deliver<'a>(&'a self, msg: &'a Outgoing<'a>) -> BoxFuture<'a, Vec<DeliveryOutcome>> {
        Box::pin(self.run(msg))
    }
}
