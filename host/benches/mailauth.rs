//! The CPU cost of sender authentication per message with warm caches: SPF for the HELO and
//! MAIL FROM identities (with an include), DKIM, ARC (none on the message) and DMARC
//! (p=reject, passing), against a DNS server in this process (its records are cached after
//! the first message, so no DNS wait is measured); for a message without a signature, with
//! an RSA-2048 one, and with RSA-2048 and Ed25519. `cargo bench --bench mailauth [--
//! MESSAGES]`; the target of issue 9 is under 100 µs per message.

#[path = "../../tests/common/dns.rs"]
#[allow(dead_code)]
mod dns;

use bytes::Bytes;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtp::config::Dkim;
use wasmtp::mailauth::{AuthStatus, Signers, SpfResults, Verifier};
use wasmtp::spool::Content;

/// CPU time of this process (user + system).
/// A message's header section (with its empty line) and body.
fn split(message: &[u8]) -> (&[u8], &[u8]) {
    message.split_at(wasmtp::proto::header::body_start(message).unwrap())
}

fn cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given.
    #[allow(unsafe_code)]
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn main() {
    let messages: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(messages));
}

async fn run(messages: u32) {
    let dir = tempfile::tempdir().unwrap();
    let mut zone = dns::Zone::default()
        .txt("client.bench.test.", "v=spf1 ip4:127.0.0.1 -all")
        .txt(
            "sender.test.",
            "v=spf1 ip4:192.0.2.0/24 include:_spf.sender.test ~all",
        )
        .txt("_spf.sender.test.", "v=spf1 ip4:127.0.0.1 -all")
        .txt("_dmarc.sender.test.", "v=DMARC1; p=reject");
    let mut config = Vec::new();
    for (selector, bits) in [("r1", Some(2048)), ("e1", None)] {
        let key = wasmtp::mailauth::keygen("sender.test", selector, bits).unwrap();
        let path = dir.path().join(format!("{selector}.pem"));
        std::fs::write(&path, key.private_pem).unwrap();
        zone = zone.txt(&key.name, &key.txt.concat());
        config.push(Dkim {
            domain: "sender.test".into(),
            selector: selector.into(),
            private_key: path,
            headers: Vec::new(),
        });
    }
    let server = zone.start().await;
    let body = "From: News <news@sender.test>\r\nTo: you@example.test\r\nSubject: bench\r\n\
        Date: Tue, 24 Nov 2026 05:00:00 +0000\r\nMessage-ID: <1@sender.test>\r\n\r\n"
        .to_string()
        + &"A line of text of the usual length for a mail body, more or less.\r\n".repeat(15);
    // Unsigned, signed by the RSA key, then by both (each over the message as it was).
    let mut variants = vec![("no signature", body.clone().into_bytes())];
    let mut signed = body.into_bytes();
    for (key, label) in config
        .iter()
        .zip(["one RSA-2048 signature", "RSA-2048 and Ed25519"])
    {
        let one = Signers::load(std::slice::from_ref(key), None).unwrap();
        let (header, body) = split(&signed);
        let header = one
            .sign(&[], header, &Content::from(body.to_vec()), |_| true)
            .unwrap();
        signed = [header.as_bytes(), &signed].concat();
        variants.push((label, signed.clone()));
    }
    let dns = wasmtp::dns::Dns::new(&[server.addr]).unwrap();
    let verifier = Arc::new(Verifier::new(dns, "mx.bench.test", Duration::from_secs(5)));
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    for (label, bytes) in variants {
        let (header, body) = split(&bytes);
        let (header, body) = (Bytes::copy_from_slice(header), Content::from(body.to_vec()));
        let signatures = label.matches("RSA").count() + label.matches("Ed25519").count();
        let one = async || {
            let (helo, mail_from) = tokio::join!(
                verifier.spf_helo(ip, "client.bench.test"),
                verifier.spf_mail_from(ip, "client.bench.test", "bounce@sender.test")
            );
            let results = verifier
                .message(
                    header.clone(),
                    body.clone(),
                    SpfResults { helo, mail_from },
                    verifier.timeout(),
                )
                .await;
            assert_eq!(results.spf.mail_from.status, AuthStatus::Pass);
            assert_eq!(results.dmarc.status, AuthStatus::Pass);
            assert_eq!(results.dkim.len(), signatures);
            assert!(results.dkim.iter().all(|d| d.status == AuthStatus::Pass));
            results
        };
        // Warm the caches (and check the results once).
        one().await;
        let queries = server.queries.load(std::sync::atomic::Ordering::SeqCst);
        let (wall0, cpu0) = (Instant::now(), cpu());
        for _ in 0..messages {
            std::hint::black_box(one().await);
        }
        let (wall, used) = (wall0.elapsed(), cpu() - cpu0);
        let asked = server.queries.load(std::sync::atomic::Ordering::SeqCst) - queries;
        println!(
            "{label:<24} {messages} messages of {} octets: {:6.1} µs CPU, {:6.1} µs wall per message; \
             DNS queries after warm-up: {asked}",
            header.len() as u64 + body.len(),
            used.as_secs_f64() * 1e6 / f64::from(messages),
            wall.as_secs_f64() * 1e6 / f64::from(messages),
        );
    }
}
