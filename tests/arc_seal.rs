//! ARC sealing (`[arc]`, RFC 8617 5.1) through a real socket, checked by dkimpy's
//! arc_verify as the outside verifier: a fresh message sealed at i=1 (cv=none), one that
//! came with a valid chain (signed by dkimpy as a forwarder) sealed at i=2 (cv=pass), and
//! one whose chain broke on the way sealed at i=2 with cv=fail, over our set alone; and
//! dkimpy-sealed chains spoilt one way each (RFC 8617, RFC 6376 3.2) fail.

mod common;
use common::auth::{dkim_tool, gateway, outside_key, send};
use common::dns::Zone;
use common::sink::{Sink, SinkOptions};

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: a@sender.test\r\nTo: rcpt@example.test\r\nSubject: {subject}\r\n\
         Date: Fri, 04 Dec 2026 01:00:00 +0000\r\n\r\nthe body of {subject}\r\n"
    )
    .into_bytes()
}

/// `m` as it leaves a forwarder that verified nothing (arc=none) and sealed it.
fn forwarded(m: &[u8], key: &std::path::Path) -> Vec<u8> {
    let mut with_results = b"Authentication-Results: forwarder.test; arc=none\r\n".to_vec();
    with_results.extend_from_slice(m);
    let key = key.to_str().unwrap();
    dkim_tool(
        &["arc-sign", "fwd", "forwarder.test", key, "forwarder.test"],
        &with_results,
    )
}

#[tokio::test]
async fn our_seal_verifies_on_fresh_forwarded_and_broken_chains() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (dir.path().join("ours.pem"), dir.path().join("fwd.pem"));
    let (our_txt, their_txt) = (outside_key("rsa", &ours), outside_key("rsa", &theirs));
    let dns = Zone::default()
        .txt("seal._domainkey.mx.test.", &our_txt)
        .txt("fwd._domainkey.forwarder.test.", &their_txt)
        .txt("sender.test.", "v=spf1 ip4:127.0.0.1 -all")
        .start()
        .await;
    let sink = Sink::start(SinkOptions::default()).await;
    let arc = format!(
        "[arc]\ndomain = \"mx.test\"\nselector = \"seal\"\nprivate_key = \"{}\"\n",
        ours.display()
    );
    let s = gateway(&dns, &sink, &arc).await;
    let chained = forwarded(&message("forwarded"), &theirs);
    // Broken on the way: the body changed after the forwarder sealed it.
    let broken = String::from_utf8(forwarded(&message("broken"), &theirs))
        .unwrap()
        .replace("the body of broken", "a body changed on the way")
        .into_bytes();
    for m in [message("fresh"), chained, broken] {
        let reply = send(&s, "client.sender.test", "a@sender.test", &m).await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    let got = sink.wait_for(3).await;
    let verify = |subject: &str| {
        let m = got
            .iter()
            .find(|m| m.text().contains(&format!("Subject: {subject}")));
        let text = m.unwrap().text();
        let records = [
            "seal._domainkey.mx.test",
            &our_txt,
            "fwd._domainkey.forwarder.test",
            &their_txt,
        ];
        let out = dkim_tool(&[&["arc-verify"][..], &records].concat(), text.as_bytes());
        (String::from_utf8(out).unwrap(), text)
    };
    let (fresh, text) = verify("fresh");
    assert!(fresh.starts_with("pass 1"), "{fresh}\n{text}");
    assert!(text.starts_with("ARC-Seal: i=1;"), "{text}");
    assert!(text.contains("cv=none"), "{text}");
    let (chained, text) = verify("forwarded");
    assert!(chained.starts_with("pass 2"), "{chained}\n{text}");
    assert!(
        text.contains("arc=pass") && text.contains("cv=pass"),
        "{text}"
    );
    let (broken, text) = verify("broken");
    // dkimpy reads our cv=fail, and the chain ends there.
    assert!(
        broken.contains("ARC-Seal[2] reported failure"),
        "{broken}\n{text}"
    );
    assert!(text.contains("arc=fail"), "{text}");
    assert!(
        text.starts_with("ARC-Seal: i=2;") && text.contains("cv=fail"),
        "{text}"
    );
    assert!(!text.contains("i=3"), "{text}");
}

#[tokio::test]
async fn after_the_queue_the_seal_covers_the_scan_changes() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.pem");
    let our_txt = outside_key("rsa", &ours);
    let dns = Zone::default()
        .txt("seal._domainkey.mx.test.", &our_txt)
        .txt("sender.test.", "v=spf1 ip4:127.0.0.1 -all")
        .start()
        .await;
    let sink = Sink::start(SinkOptions::default()).await;
    let extra = format!(
        "[arc]\ndomain = \"mx.test\"\nselector = \"seal\"\nprivate_key = \"{}\"\n\
         [[plugin]]\nname = \"scan\"\npath = \"{}\"\nmode = \"after-queue\"\n",
        ours.display(),
        common::guest("misbehave")
    );
    let s = gateway(&dns, &sink, &extra).await;
    let reply = send(
        &s,
        "client.sender.test",
        "a@sender.test",
        // "edit me": the scan writes a new body (and edits fields and the envelope).
        &message("edit me"),
    )
    .await;
    assert!(reply.starts_with("250"), "{reply}");
    let text = sink.wait_for(1).await[0].text();
    // The new body is what our seal's body hash covers.
    assert!(text.contains("replaced body, chunk 0"), "{text}");
    let records = ["seal._domainkey.mx.test", our_txt.as_str()];
    let out = dkim_tool(&[&["arc-verify"][..], &records].concat(), text.as_bytes());
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("pass 1"), "{out}\n{text}");
}

/// Chains dkimpy sealed, then spoilt in one way each that RFC 8617 and RFC 6376 3.2 make a
/// failure (whatever the signatures say): each is `arc=fail` in our results.
#[tokio::test]
async fn malformed_chains_fail() {
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("fwd.pem");
    let their_txt = outside_key("rsa", &theirs);
    let dns = Zone::default()
        .txt("fwd._domainkey.forwarder.test.", &their_txt)
        .txt("sender.test.", "v=spf1 ip4:127.0.0.1 -all")
        .start()
        .await;
    let sink = Sink::start(SinkOptions::default()).await;
    let s = gateway(&dns, &sink, "").await;
    let sealed = String::from_utf8(forwarded(&message("sound"), &theirs)).unwrap();
    // The seal as dkimpy wrote it, and the chain without the message signature.
    let seal_start = "ARC-Seal: i=1; cv=none; a=rsa-sha256;";
    assert!(sealed.starts_with(seal_start), "{sealed}");
    let ams = sealed.find("ARC-Message-Signature:").unwrap();
    let aar = sealed.find("ARC-Authentication-Results:").unwrap();
    let spoilt = [
        ("no a=", sealed.replacen(" a=rsa-sha256;", "", 1)),
        ("rsa-sha1", sealed.replacen("a=rsa-sha256", "a=rsa-sha1", 1)),
        (
            "d= twice",
            sealed.replacen("cv=none;", "cv=none; d=forwarder.test;", 1),
        ),
        ("upper-case tag", sealed.replacen("cv=none", "CV=none", 1)),
        ("stray ;", sealed.replacen("cv=none;", "cv=none;;", 1)),
        (
            "bad tag name",
            sealed.replacen("cv=none;", "cv=none; x-y=1;", 1),
        ),
        ("no AMS", format!("{}{}", &sealed[..ams], &sealed[aar..])),
    ];
    for (i, (kind, m)) in spoilt.iter().enumerate() {
        let m = m.replace("Subject: sound", &format!("Subject: spoilt {i}"));
        let reply = send(&s, "client.sender.test", "a@sender.test", m.as_bytes()).await;
        assert!(reply.starts_with("250"), "{kind}: {reply}");
    }
    // The sound chain itself passes (the changes above are what fail).
    let reply = send(&s, "client.sender.test", "a@sender.test", sealed.as_bytes()).await;
    assert!(reply.starts_with("250"), "{reply}");
    let got = sink.wait_for(spoilt.len() + 1).await;
    for (i, (kind, _)) in spoilt.iter().enumerate() {
        let m = got
            .iter()
            .find(|m| m.text().contains(&format!("Subject: spoilt {i}\r\n")));
        let text = m.unwrap().text();
        let ours = text.split("Received:").next().unwrap();
        assert!(ours.contains("arc=fail"), "{kind}: {ours}");
    }
    let sound = got
        .iter()
        .find(|m| m.text().contains("Subject: sound\r\n"))
        .unwrap();
    assert!(sound.text().contains("arc=pass"), "{}", sound.text());
}
