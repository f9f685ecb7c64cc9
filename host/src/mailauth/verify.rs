//! The verifier sessions share: SPF at MAIL, then DKIM, ARC and DMARC over the message.

use super::cache::{MessageKeys, TxtCache};
use super::{
    ArcCheck, AuthResults, AuthStatus, DkimCheck, DmarcPolicy, SpfCheck, SpfResults, absolute,
    is_dns_name,
};
use crate::dns::{Dns, DnsError};
use crate::proto::header;
use crate::spool::Content;
use base64::Engine;
use bytes::Bytes;
use mail_auth::common::crypto::Algorithm;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::{AuthenticatedMessage, DkimResult, Error, MessageAuthenticator, Parameters, Txt};
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// DKIM-Signature fields verified per message; further ones are ignored (each costs a
/// key lookup and possibly a hash of the whole body). OpenDKIM verifies 3 by default.
pub const MAX_SIGNATURES: usize = 5;
/// ARC sets a chain may have (RFC 8617 4.2.1); a message with more fails ARC unread.
const MAX_ARC_SETS: usize = 50;
/// A DKIM-Signature field larger than this is ignored (a real one is under 2 KiB).
const MAX_SIGNATURE_FIELD: usize = 16 << 10;
/// A header section with more fields than this is not given to mail-auth, which keeps an
/// entry per field: DKIM and ARC are not verified, DMARC only with SPF.
const MAX_HEADER_FIELDS: usize = 1000;
/// Octets of answers kept in each record cache, and a record's usual size.
const CACHE_OCTETS: u64 = 4 << 20;
const TYPICAL_RECORD: u64 = 400;

pub struct Verifier {
    pub(super) dns: Dns,
    authenticator: MessageAuthenticator,
    spf: super::spf::Spf,
    dmarc: super::dmarc::Policies,
    keys: TxtCache,
    /// For each check, DNS waits included.
    pub(super) timeout: Duration,
}

impl Verifier {
    pub fn new(dns: Dns, hostname: &str, timeout: Duration) -> Verifier {
        Verifier {
            authenticator: MessageAuthenticator(dns.resolver()),
            dns: dns.clone(),
            spf: super::spf::Spf::new(
                dns.clone(),
                TxtCache::new(CACHE_OCTETS, TYPICAL_RECORD),
                hostname,
                timeout,
            ),
            dmarc: super::dmarc::Policies::new(dns, TxtCache::new(CACHE_OCTETS, TYPICAL_RECORD)),
            keys: TxtCache::new(CACHE_OCTETS, TYPICAL_RECORD),
            timeout,
        }
    }

    /// SPF for the HELO identity (RFC 7208 2.3): `none` for an address literal.
    pub async fn spf_helo(self: &Arc<Self>, ip: IpAddr, helo: &str) -> SpfCheck {
        let sender = format!("postmaster@{helo}");
        self.spf(ip, helo.to_string(), sender, helo.to_string())
            .await
    }

    /// SPF for the MAIL FROM identity (RFC 7208 2.4); `sender` is the address.
    pub async fn spf_mail_from(self: &Arc<Self>, ip: IpAddr, helo: &str, sender: &str) -> SpfCheck {
        let domain = sender.rsplit_once('@').map_or("", |(_, d)| d).to_string();
        self.spf(ip, domain, sender.to_string(), helo.to_string())
            .await
    }

    async fn spf(
        self: &Arc<Self>,
        ip: IpAddr,
        domain: String,
        sender: String,
        helo: String,
    ) -> SpfCheck {
        let verifier = self.clone();
        let fallback = SpfCheck {
            status: AuthStatus::Permerror,
            ..SpfCheck::none()
        };
        isolated(
            async move { verifier.spf.check_host(ip, &domain, &sender, &helo).await },
            fallback,
        )
        .await
    }

    /// `authentication.timeout`: the budget of one message's checks, DNS waits included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// DKIM, ARC and DMARC over a message (as received: no header of ours yet): its
    /// `header` section and its `body` (read from the spool as it is hashed), with the SPF
    /// results of its transaction, waiting at most `budget` for DNS (what the message's
    /// SPF checks left of `timeout`). A large message is verified on a blocking thread:
    /// hashing its body (and reading it) must not hold up the sessions on this worker.
    pub async fn message(
        self: &Arc<Self>,
        header: Bytes,
        body: Content,
        spf: SpfResults,
        budget: Duration,
    ) -> AuthResults {
        let verifier = self.clone();
        let heavy = body.on_disk() || header.len() as u64 + body.len() > HEAVY;
        let fallback = AuthResults {
            dkim: vec![unverified(AuthStatus::Permerror, "verification failed")],
            arc: ArcCheck {
                status: AuthStatus::Permerror,
                sets: 0,
            },
            dmarc: super::DmarcCheck {
                status: AuthStatus::Permerror,
                ..super::DmarcCheck::none(String::new())
            },
            spf: spf.clone(),
        };
        let check = async move { verifier.verify_message(&header, &body, spf, budget).await };
        if heavy {
            let handle = tokio::runtime::Handle::current();
            let blocking = tokio::task::spawn_blocking(move || handle.block_on(check));
            return blocking.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "sender verification failed; the result is permerror");
                fallback
            });
        }
        isolated(check, fallback).await
    }

    async fn verify_message(
        &self,
        header: &[u8],
        body: &Content,
        spf: SpfResults,
        budget: Duration,
    ) -> AuthResults {
        let deadline = Instant::now() + budget.min(self.timeout);
        // The From domains as a reader sees them, by our own scan: DMARC is evaluated for
        // each whatever mail-auth makes of the header section (RFC 7489 6.6.1).
        let froms = super::from_domains(header);
        let dmarc_lookups = self.dmarc.prefetch(&froms, deadline);
        if header_too_large(header) {
            tracing::warn!("header section too large: DKIM and ARC not verified");
            let records = dmarc_lookups.await;
            let dmarc = self
                .dmarc_all(&froms, &spf.mail_from, &[], &records, deadline)
                .await;
            return AuthResults {
                dkim: vec![unverified(
                    AuthStatus::Permerror,
                    "header section too large",
                )],
                dmarc,
                ..AuthResults::only_spf(spf)
            };
        }
        let (capped, too_many_arc) = cap_signatures(header);
        // mail-auth reads the header section; the body hashes its signatures ask for are
        // ours, computed as the body is read.
        let mut parsed = AuthenticatedMessage::parse(&capped);
        if let Some(parsed) = &mut parsed
            && let Err(e) = super::body::fill(&mut parsed.body_hashes, body)
        {
            tracing::error!(error = %e, "message body unreadable: DKIM and ARC not verified");
            let records = dmarc_lookups.await;
            let dmarc = self
                .dmarc_all(&froms, &spf.mail_from, &[], &records, deadline)
                .await;
            return AuthResults {
                dkim: vec![unverified(AuthStatus::Temperror, "message body unreadable")],
                dmarc,
                ..AuthResults::only_spf(spf)
            };
        }
        // Every key the signatures and seals name, looked up at once, within the deadline,
        // beside the DMARC records.
        let mut names: Vec<String> = Vec::new();
        if let Some(parsed) = &parsed {
            let signers = parsed
                .dkim_headers
                .iter()
                .filter_map(|h| h.header.as_ref().ok().map(|s| (&s.s, &s.d)))
                .chain(
                    parsed
                        .ams_headers
                        .iter()
                        .filter_map(|h| h.header.as_ref().ok().map(|s| (&s.s, &s.d))),
                )
                .chain(
                    parsed
                        .as_headers
                        .iter()
                        .filter_map(|h| h.header.as_ref().ok().map(|s| (&s.s, &s.d))),
                );
            let mut seen = std::collections::HashSet::new();
            for (s, d) in signers {
                let name = format!("{s}._domainkey.{d}.");
                if seen.insert(name.clone()) {
                    names.push(name);
                }
            }
        }
        let (found, records) = tokio::join!(self.look_up_keys(names, deadline), dmarc_lookups);
        let (dkim, arc) = match &parsed {
            None => (
                Vec::new(),
                ArcCheck {
                    status: AuthStatus::None,
                    sets: 0,
                },
            ),
            Some(parsed) => {
                let keys = MessageKeys {
                    looked_up: Mutex::new(found),
                };
                // Every key is at hand: mail-auth asks no DNS (see MessageKeys), so this
                // is computing only.
                let params = || Parameters::new(parsed).with_txt_cache(&keys);
                let dkim_outputs = self.authenticator.verify_dkim(params()).await;
                let arc_output = self.authenticator.verify_arc(params()).await;
                let dkim: Vec<DkimCheck> = dkim_outputs.iter().map(dkim_check).collect();
                let sets = too_many_arc.unwrap_or(parsed.as_headers.len());
                let defect = super::arc::chain_defect(header);
                if let Some(why) = &defect {
                    tracing::debug!(%why, "ARC chain fails");
                }
                // A last AMS without c= or with an empty h=: verified as dkimpy does.
                let ours = || {
                    let keys = keys.looked_up.lock().expect("keys lock");
                    super::arc_check::verify(header, body, &keys)
                };
                let lenient = defect.is_none()
                    && too_many_arc.is_none()
                    && !matches!(arc_output.result(), DkimResult::Pass | DkimResult::None)
                    && super::arc_check::wanted(header);
                let arc = ArcCheck {
                    status: match arc_output.result() {
                        _ if too_many_arc.is_some() || defect.is_some() => AuthStatus::Fail,
                        _ if lenient && ours() => AuthStatus::Pass,
                        DkimResult::Pass => AuthStatus::Pass,
                        DkimResult::None => AuthStatus::None,
                        DkimResult::TempError(_) => AuthStatus::Temperror,
                        _ => AuthStatus::Fail,
                    },
                    sets: u32::try_from(sets).unwrap_or(u32::MAX),
                };
                (dkim, arc)
            }
        };
        let dmarc = self
            .dmarc_all(&froms, &spf.mail_from, &dkim, &records, deadline)
            .await;
        AuthResults {
            spf,
            dkim,
            arc,
            dmarc,
        }
    }

    /// DMARC for every From domain (RFC 7489 6.6.1: a message with several is checked
    /// against each): the first failure, else a temporary error, else a pass, else none.
    /// The records were fetched beside the keys; a second is left for what they missed.
    async fn dmarc_all(
        &self,
        froms: &[String],
        spf: &SpfCheck,
        dkim: &[DkimCheck],
        records: &super::dmarc::Records,
        deadline: Instant,
    ) -> super::DmarcCheck {
        // More From domains than anyone sends: no domain may hide among them.
        if froms.len() > super::MAX_FROM_DOMAINS {
            return super::DmarcCheck {
                status: AuthStatus::Fail,
                policy: DmarcPolicy::Reject,
                disposition: DmarcPolicy::Reject,
                ..super::DmarcCheck::none(froms[0].clone())
            };
        }
        // What the record lookups beside the keys missed gets a second more, all at once:
        // one slow domain does not use up the others' time.
        let deadline = deadline.max(Instant::now() + Duration::from_secs(1));
        let checks = froms.iter().map(|from| async move {
            let check = self.dmarc.evaluate(from, spf, dkim, records);
            tokio::time::timeout_at(deadline, check)
                .await
                .unwrap_or_else(|_| super::DmarcCheck {
                    status: AuthStatus::Temperror,
                    ..super::DmarcCheck::none(from.clone())
                })
        });
        let mut results = futures::future::join_all(checks).await;
        // A failure that asks for action, then an unsure result for a domain whose policy
        // does, then any failure, other errors, a pass, none.
        let acts = |p: DmarcPolicy| p != DmarcPolicy::None;
        let rank = |d: &super::DmarcCheck| match d.status {
            AuthStatus::Fail if acts(d.disposition) => (0, 3 - d.disposition as u8),
            AuthStatus::Temperror if acts(d.policy) => (1, 3 - d.policy as u8),
            AuthStatus::Fail => (2, 0),
            AuthStatus::Temperror | AuthStatus::Permerror => (3, 0),
            AuthStatus::Pass => (4, 0),
            _ => (5, 0),
        };
        results.sort_by_key(rank);
        results
            .into_iter()
            .next()
            .unwrap_or_else(|| super::DmarcCheck::none(String::new()))
    }

    /// Looks the keys up concurrently until `deadline`; what is not answered by then is a
    /// DNS error (temperror) for mail-auth, which then never asks DNS itself.
    async fn look_up_keys(&self, names: Vec<String>, deadline: Instant) -> HashMap<String, Txt> {
        let mut found = HashMap::new();
        let mut lookups = tokio::task::JoinSet::new();
        for name in &names {
            if let Some(txt) = self.keys.get(name) {
                found.insert(name.clone(), txt);
            } else if !is_dns_name(name) {
                found.insert(name.clone(), Txt::Error(Error::ParseError));
            } else {
                let (dns, name) = (self.dns.clone(), name.clone());
                lookups.spawn(async move {
                    let answer = dns.txt_records(&absolute(&name)).await;
                    (name, answer)
                });
            }
        }
        while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, lookups.join_next()).await {
            let Ok((name, answer)) = joined else {
                continue;
            };
            let txt = match answer {
                Ok(answer) => {
                    let txt = key_from(&answer.records);
                    let octets = answer.records.iter().map(Vec::len).sum();
                    self.keys
                        .insert(name.clone(), txt.clone(), answer.valid_until, octets);
                    txt
                }
                Err(DnsError::NotFound) => Txt::Error(Error::DnsRecordNotFound(
                    mail_auth::hickory_resolver::proto::op::ResponseCode::NXDomain,
                )),
                Err(e) => Txt::Error(Error::DnsError(e.to_string())),
            };
            found.insert(name, txt);
        }
        lookups.abort_all();
        for name in names {
            found
                .entry(name)
                .or_insert_with(|| Txt::Error(Error::DnsError("DNS timeout".into())));
        }
        found
    }
}

/// Messages larger than this are verified on a blocking thread.
const HEAVY: u64 = 1 << 20;

/// A DKIM result for a message whose signatures were not verified.
fn unverified(status: AuthStatus, why: &str) -> DkimCheck {
    DkimCheck {
        status,
        domain: String::new(),
        selector: String::new(),
        algorithm: String::new(),
        reason: Some(why.into()),
    }
}

/// Runs a check as its own task: a panic in a parser of hostile input (mail-auth's, on
/// records and fields anyone can write) costs that check its result, nothing else.
async fn isolated<T: Send + 'static>(
    check: impl std::future::Future<Output = T> + Send + 'static,
    fallback: T,
) -> T {
    match tokio::spawn(check).await {
        Ok(result) => result,
        Err(e) => {
            tracing::error!(error = %e, "sender verification failed; the result is permerror");
            fallback
        }
    }
}

/// The first TXT record that parses as a DKIM key (as mail-auth does), else the error.
fn key_from(records: &[Vec<u8>]) -> Txt {
    let mut result = Txt::Error(Error::InvalidRecordType);
    for r in records {
        match DomainKey::parse(r).and_then(|key| check_key(r).map(|()| key)) {
            Ok(key) => return Txt::DomainKey(Arc::new(key)),
            Err(e) => result = Txt::Error(e),
        }
    }
    result
}

/// RSA keys of 1024-4096 bits (RFC 8301 3.2: verifiers must take those; ring, which
/// verifies, only reads the key when a signature is checked, so a key that is no key would
/// look like a bad signature) and Ed25519 keys of 32 octets (RFC 8463 4.2). An empty `p=`
/// (a revoked key) is mail-auth's to report.
fn check_key(record: &[u8]) -> Result<(), Error> {
    let text = String::from_utf8_lossy(record);
    let tag = |name: &str| {
        text.split(';').find_map(|t| {
            let (n, v) = t.split_once('=')?;
            (n.trim() == name).then(|| v.split_ascii_whitespace().collect::<String>())
        })
    };
    let p = tag("p").unwrap_or_default();
    if p.is_empty() {
        return Ok(());
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(&p)
        .map_err(|_| Error::Base64)?;
    if tag("k").is_some_and(|k| k.eq_ignore_ascii_case("ed25519")) {
        return match der.len() {
            32 => Ok(()),
            n => Err(Error::CryptoError(format!("an Ed25519 key of {n} octets"))),
        };
    }
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPublicKey::from_public_key_der(&der)
        .or_else(|_| rsa::RsaPublicKey::from_pkcs1_der(&der))
        .map_err(|e| Error::CryptoError(format!("not an RSA key: {e}")))?;
    match key.size() * 8 {
        1024..=4096 => Ok(()),
        bits => Err(Error::CryptoError(format!(
            "an RSA key of {bits} bits (1024-4096 are verified)"
        ))),
    }
}

fn algorithm_name(a: &Algorithm) -> &'static str {
    match a {
        Algorithm::RsaSha1 => "rsa-sha1",
        Algorithm::RsaSha256 => "rsa-sha256",
        Algorithm::Ed25519Sha256 => "ed25519-sha256",
    }
}

/// One signature's result as plugins and Authentication-Results see it (RFC 8601 2.7.1):
/// a body that no longer matches its hash is `fail`, a broken field `permerror`.
fn dkim_check(output: &mail_auth::DkimOutput<'_>) -> DkimCheck {
    let sha1 = output
        .signature()
        .is_some_and(|s| s.a == Algorithm::RsaSha1);
    let (status, reason) = match output.result() {
        // RFC 8301 3.1: rsa-sha1 signatures are not to be taken as valid.
        DkimResult::Pass if sha1 => (
            AuthStatus::Permerror,
            Some("rsa-sha1 is not accepted (RFC 8301)".to_string()),
        ),
        DkimResult::Pass => (AuthStatus::Pass, None),
        DkimResult::Neutral(Error::FailedBodyHashMatch) => (
            AuthStatus::Fail,
            Some("body hash did not verify".to_string()),
        ),
        DkimResult::Neutral(e @ Error::SignatureExpired) => {
            (AuthStatus::Neutral, Some(e.to_string()))
        }
        DkimResult::Neutral(e) | DkimResult::PermError(e) => {
            (AuthStatus::Permerror, Some(e.to_string()))
        }
        DkimResult::Fail(e) => (AuthStatus::Fail, Some(e.to_string())),
        DkimResult::TempError(e) => (AuthStatus::Temperror, Some(e.to_string())),
        DkimResult::None => (AuthStatus::None, None),
    };
    let signature = output.signature();
    DkimCheck {
        status,
        domain: signature.map(|s| s.d.clone()).unwrap_or_default(),
        selector: signature.map(|s| s.s.clone()).unwrap_or_default(),
        algorithm: signature
            .map(|s| algorithm_name(&s.a).to_string())
            .unwrap_or_default(),
        reason,
    }
}

/// More than [`MAX_HEADER_FIELDS`] fields, or a header section past `header::HEADER_MAX`.
fn header_too_large(section: &[u8]) -> bool {
    header::fields(section)
        .enumerate()
        .any(|(i, f)| i >= MAX_HEADER_FIELDS || f.range.end > header::HEADER_MAX)
}

/// The message with at most [`MAX_SIGNATURES`] DKIM-Signature fields (each may make
/// mail-auth hash the whole body once more), none larger than [`MAX_SIGNATURE_FIELD`] (its
/// `h=` list is matched against every field), and, with more than [`MAX_ARC_SETS`] of any
/// ARC field, without its ARC fields (such a chain fails). Copied only when cut. Also the
/// number of ARC sets claimed when there were too many.
fn cap_signatures(message: &[u8]) -> (Cow<'_, [u8]>, Option<usize>) {
    let arc_names = [
        "arc-seal",
        "arc-message-signature",
        "arc-authentication-results",
    ];
    let (mut dkim, mut big, mut arc) = (0, 0, [0usize; 3]);
    for f in header::fields(message) {
        if f.is("dkim-signature") {
            dkim += 1;
            big += usize::from(f.range.len() > MAX_SIGNATURE_FIELD);
        }
        for (count, name) in arc.iter_mut().zip(arc_names) {
            *count += usize::from(f.is(name));
        }
    }
    let too_many_arc = arc.iter().any(|&n| n > MAX_ARC_SETS);
    if dkim <= MAX_SIGNATURES && big == 0 && !too_many_arc {
        return (Cow::Borrowed(message), None);
    }
    let mut signatures = 0;
    let cut = header::without(message, |f| {
        if f.is("dkim-signature") {
            if f.range.len() > MAX_SIGNATURE_FIELD {
                return true;
            }
            signatures += 1;
            return signatures > MAX_SIGNATURES;
        }
        too_many_arc && arc_names.iter().any(|n| f.is(n))
    });
    let cut = cut.map_or(Cow::Borrowed(message), Cow::Owned);
    (
        cut,
        too_many_arc.then(|| arc.into_iter().max().unwrap_or(0)),
    )
}
