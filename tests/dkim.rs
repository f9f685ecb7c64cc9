//! DKIM through real sockets and a DNS server started by each test: signed by an outside
//! signer (dkimpy) and tampered with, signed by wasmtp and checked by dkimpy (also after a
//! plugin's edits, before and after the queue), signatures only for a user's own From
//! addresses, and hostile input (broken signatures, 100 signatures, absurd keys).

mod common;
use common::auth::*;
use common::dns::Zone;
use common::sink::{Sink, SinkOptions};
use common::{Client, TestServer};
use std::time::{Duration, Instant};

/// A message signed by dkimpy: pass; tampered after signing: fail; with DMARC p=reject
/// and the dmarc-policy plugin the tampered one is refused with 550 5.7.1.
#[tokio::test]
async fn outside_signatures_verify_and_tampering_fails() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = outside_key("rsa", &dir.path().join("rsa.key"));
    let ed = outside_key("ed25519", &dir.path().join("ed.key"));
    let dns = Zone::default()
        .txt("s1._domainkey.signer.test.", &rsa)
        .txt("e1._domainkey.signer.test.", &ed)
        .txt("_dmarc.signer.test.", "v=DMARC1; p=reject")
        .start()
        .await;
    let sink = Sink::start(SinkOptions::default()).await;
    let s = gateway(&dns, &sink, &echo_and_dmarc("")).await;
    let body = plain("Signer <news@signer.test>", "signed");
    let key = |name: &str| dir.path().join(name).display().to_string();
    let signed_rsa = dkim_tool(
        &["sign", "s1", "signer.test", &key("rsa.key"), "rsa"],
        &body,
    );
    let signed_ed = dkim_tool(
        &["sign", "e1", "signer.test", &key("ed.key"), "ed25519"],
        &body,
    );
    // The envelope sender has no SPF: only DKIM can make DMARC pass.
    for signed in [&signed_rsa, &signed_ed] {
        let reply = send(&s, "client.test", "bounce@nospf.test", signed).await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    let got = sink.wait_for(2).await;
    for (selector, algorithm) in [("s1", "rsa-sha256"), ("e1", "ed25519-sha256")] {
        let fields = delivered_fields(&got, &format!("s={selector};"));
        let results = field(&fields, "Authentication-Results")[0];
        assert!(
            results.contains(&format!(
                "dkim=pass header.d=signer.test header.s={selector} header.a={algorithm}"
            )),
            "{results}"
        );
        assert!(results.contains("dmarc=pass"), "{results}");
        let echo = field(&fields, "X-Echo-Auth")[0];
        assert!(
            echo.contains(&format!("dkim=[pass:signer.test:{selector}:{algorithm}]"))
                && echo.contains("dmarc=pass from=signer.test policy=reject")
                && echo.contains("aligned=dkim"),
            "{echo}"
        );
    }
    // Tampered: the body changed after signing. DMARC fails; the policy plugin refuses.
    let tampered = String::from_utf8(signed_rsa.clone())
        .unwrap()
        .replace("Hello.", "Hello!");
    let reply = send(&s, "client.test", "bounce@nospf.test", tampered.as_bytes()).await;
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    // A 3 MiB body (in the spool's parts, hashed as it is read back), with white space
    // that relaxed canonicalization folds: passes; one octet changed in its middle fails.
    let mut big = String::from_utf8(plain("Signer <news@signer.test>", "signed big")).unwrap();
    for i in 0..60_000 {
        big.push_str(&format!(
            "line {i}  with \t spaces and\ttabs at its end \t \r\n"
        ));
    }
    big.push_str("\r\n\r\n");
    let signed_big = dkim_tool(
        &["sign", "s1", "signer.test", &key("rsa.key"), "rsa"],
        big.as_bytes(),
    );
    let reply = send(&s, "client.test", "bounce@nospf.test", &signed_big).await;
    assert!(reply.starts_with("250"), "{reply}");
    let got = sink.wait_for(3).await;
    let fields = delivered_fields(&got, "Subject: signed big");
    let results = field(&fields, "Authentication-Results")[0];
    assert!(
        results.contains("dkim=pass header.d=signer.test"),
        "{results}"
    );
    let mut broken = signed_big.clone();
    let middle = memchr::memmem::find(&broken, b"line 30000 ").unwrap();
    broken[middle] = b'L';
    let reply = send(&s, "client.test", "bounce@nospf.test", &broken).await;
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    // A changed signed header, with enforce off to see the results.
    let s2 = gateway(&dns, &sink, &echo_and_dmarc("enforce = false\n")).await;
    let tampered = String::from_utf8(signed_rsa)
        .unwrap()
        .replace("Subject: signed", "Subject: forged");
    let reply = send(&s2, "client.test", "bounce@nospf.test", tampered.as_bytes()).await;
    assert!(reply.starts_with("250"), "{reply}");
    let got = sink.wait_for(4).await;
    let fields = header_of(&got[3].text());
    let results = field(&fields, "Authentication-Results")[0];
    assert!(
        results.contains("dkim=fail") && results.contains("dmarc=fail"),
        "{results}"
    );
    let tag = field(&fields, "X-DMARC-Policy")[0];
    assert_eq!(
        tag,
        "fail; from=signer.test; policy=reject; disposition=reject; action=tagged"
    );
}

/// Mail from relay.networks is signed by wasmtp with keys from `wasmtp dkim-keygen`
/// (RSA and Ed25519); dkimpy verifies both, and so does wasmtp itself on the way in.
#[tokio::test]
async fn wasmtp_signs_and_dkimpy_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut records = Vec::new();
    for (selector, algorithm, domain) in [("r1", "rsa", "ours.test"), ("e1", "ed25519", "ed.test")]
    {
        let key = dir.path().join(format!("{selector}.pem"));
        let out = std::process::Command::new(common::BIN)
            .args(["dkim-keygen", "--domain", domain, "--selector", selector])
            .args(["--algorithm", algorithm, "--out", key.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        // `NAME IN TXT ( "part" "part" )`: the strings joined are the record.
        let line = text.lines().find(|l| l.contains(" IN TXT ")).unwrap();
        let record: String = line
            .split('"')
            .skip(1)
            .step_by(2)
            .collect::<Vec<_>>()
            .concat();
        assert!(
            record.starts_with(&format!("v=DKIM1; k={algorithm}; p=")),
            "{record}"
        );
        records.push((format!("{selector}._domainkey.{domain}."), record));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the private key is readable by others");
        }
    }
    let sink = Sink::start(SinkOptions::default()).await;
    let mut zone = Zone::default();
    for (name, record) in &records {
        zone = zone.txt(name, record);
    }
    let dns = zone.start().await;
    let signing = format!(
        "[relay]\nnetworks = [\"127.0.0.0/8\"]\n\
         [[dkim]]\ndomain = \"ours.test\"\nselector = \"r1\"\nprivate_key = \"{0}/r1.pem\"\n\
         [[dkim]]\ndomain = \"ed.test\"\nselector = \"e1\"\nprivate_key = \"{0}/e1.pem\"\n",
        dir.path().display()
    );
    let s = gateway(&dns, &sink, &signing).await;
    for from in ["Me <me@ours.test>", "me@mail.ed.test", "me@unsigned.test"] {
        let reply = send(&s, "client.test", "me@ours.test", &plain(from, "outgoing")).await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    let got = sink.wait_for(3).await;
    let from = |f: &str| delivered(&got, &format!("\r\nFrom: {f}\r\n"));
    for (text, (name, record)) in [from("Me <me@ours.test>"), from("me@mail.ed.test")]
        .iter()
        .zip(&records)
    {
        assert!(text.starts_with("DKIM-Signature: "), "{text}");
        // Our own mail is not verified on the way out: no Authentication-Results.
        assert!(!text.contains("Authentication-Results"), "{text}");
        let verdict = dkim_tool(&["verify", name, record], text.as_bytes());
        assert_eq!(String::from_utf8_lossy(&verdict).trim(), "pass", "{text}");
    }
    assert!(
        !from("me@unsigned.test").contains("DKIM-Signature"),
        "no key for unsigned.test"
    );
    // The signed message, received from outside: wasmtp verifies its own signature.
    let outside = gateway(&dns, &sink, "").await;
    let signed = from("Me <me@ours.test>");
    let reply = send(&outside, "client.test", "x@nospf.test", signed.as_bytes()).await;
    assert!(reply.starts_with("250"), "{reply}");
    let again = sink.wait_for(4).await;
    let results = delivered_fields(&again, "Authentication-Results");
    let ar = field(&results, "Authentication-Results")[0];
    assert!(
        ar.contains("dkim=pass header.d=ours.test header.s=r1"),
        "{ar}"
    );
    // A 3 MiB message of ours is signed as its body is read from the spool; dkimpy agrees.
    let mut big = String::from_utf8(plain("Me <me@ours.test>", "outgoing big")).unwrap();
    for i in 0..60_000 {
        big.push_str(&format!("line {i} of a big one, with  spaces \t\r\n"));
    }
    let reply = send(&s, "client.test", "me@ours.test", big.as_bytes()).await;
    assert!(reply.starts_with("250"), "{reply}");
    let got = sink.wait_for(5).await;
    let text = delivered(&got, "Subject: outgoing big");
    assert!(text.starts_with("DKIM-Signature: "), "{}", &text[..200]);
    let (name, record) = &records[0];
    let verdict = dkim_tool(&["verify", name, record], text.as_bytes());
    assert_eq!(String::from_utf8_lossy(&verdict).trim(), "pass");
    // A plugin's edits (a new body, fields inserted, changed and deleted), before the 250
    // and after the queue: our signature covers the message as they leave it.
    for (n, mode) in [(6, "before-queue"), (7, "after-queue")] {
        let edits = format!(
            "{signing}[[plugin]]\nname = \"mb\"\npath = \"{}\"\nmode = \"{mode}\"\ntimeout = \"10s\"\n",
            common::guest("misbehave")
        );
        let s = gateway(&dns, &sink, &edits).await;
        let message = plain("Me <me@ours.test>", "edit me");
        let reply = send(&s, "client.test", "me@ours.test", &message).await;
        assert!(reply.starts_with("250"), "{mode}: {reply}");
        let text = sink.wait_for(n).await[n - 1].text();
        assert!(text.contains("replaced body, chunk 2"), "{mode}");
        assert!(
            text.starts_with("DKIM-Signature: "),
            "{mode}: {}",
            &text[..200]
        );
        let verdict = dkim_tool(&["verify", name, record], text.as_bytes());
        assert_eq!(String::from_utf8_lossy(&verdict).trim(), "pass", "{mode}");
    }
}

/// Broken and hostile signatures: each a quick permerror or temperror, the message
/// accepted, the server fine.
#[tokio::test]
async fn hostile_signatures_and_keys_fail_quickly() {
    let huge_key = format!("v=DKIM1; k=rsa; p={}", "A".repeat(12_000));
    // A well-formed RSA key of 8192 bits is refused, not computed with.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.key");
    std::process::Command::new("openssl")
        .args([
            "genrsa",
            "-traditional",
            "-out",
            big.to_str().unwrap(),
            "8192",
        ])
        .output()
        .unwrap();
    let der = std::process::Command::new("openssl")
        .args([
            "rsa",
            "-in",
            big.to_str().unwrap(),
            "-pubout",
            "-outform",
            "DER",
        ])
        .output()
        .unwrap()
        .stdout;
    use base64::Engine;
    let big_record = format!(
        "v=DKIM1; k=rsa; p={}",
        base64::engine::general_purpose::STANDARD.encode(der)
    );
    let dns = Zone::default()
        .txt("huge._domainkey.bad.test.", &huge_key)
        .txt("big._domainkey.bad.test.", &big_record)
        .start()
        .await;
    let sink = Sink::start(SinkOptions::default()).await;
    let s = gateway(&dns, &sink, &echo_plugin()).await;
    let body = "From: a@bad.test\r\nSubject: hostile\r\n\r\nx\r\n";
    let sig = |tags: &str| format!("DKIM-Signature: {tags}\r\n");
    let cases = [
        // Not a signature at all.
        sig("garbage ;;; = = ="),
        // Missing tags.
        sig("v=1; a=rsa-sha256; d=bad.test"),
        // An unknown algorithm.
        sig("v=1; a=rsa-md5; d=bad.test; s=s; h=from; bh=AAAA; b=AAAA"),
        // A key of 12,000 base64 'A's, and a real 8192-bit key.
        sig(
            "v=1; a=rsa-sha256; c=relaxed/relaxed; d=bad.test; s=huge; h=from; bh=s14J+iztnrytnRYzb7lhFG/jS/vrxWJnnahfijFMnco=; b=AAAA",
        ),
        sig(
            "v=1; a=rsa-sha256; c=relaxed/relaxed; d=bad.test; s=big; h=from; bh=s14J+iztnrytnRYzb7lhFG/jS/vrxWJnnahfijFMnco=; b=AAAA",
        ),
        // A key that never answers, and one whose name is not a domain.
        sig(
            "v=1; a=rsa-sha256; d=x.hang.test; s=s; h=from; bh=s14J+iztnrytnRYzb7lhFG/jS/vrxWJnnahfijFMnco=; b=AAAA",
        ),
        sig(
            "v=1; a=rsa-sha256; d=bad..test; s=s; h=from; bh=s14J+iztnrytnRYzb7lhFG/jS/vrxWJnnahfijFMnco=; b=AAAA",
        ),
    ];
    for (i, case) in cases.iter().enumerate() {
        let started = Instant::now();
        let content = format!("{case}{}", body.replace("hostile", &format!("hostile {i}")));
        let r = send(&s, "c.test", "a@nospf.test", content.as_bytes()).await;
        assert!(r.starts_with("250"), "case {i}: {r}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "case {i}: {:?}",
            started.elapsed()
        );
    }
    // 100 signatures with distinct l= values: at most five are looked at.
    let mut many = String::new();
    for i in 0..100 {
        many.push_str(&sig(&format!(
            "v=1; a=rsa-sha256; d=d{i}.bad.test; s=s; l={i}; h=from; bh=s14J+iztnrytnRYzb7lhFG/jS/vrxWJnnahfijFMnco=; b=AAAA"
        )));
    }
    let started = Instant::now();
    let content = format!("{many}{}", body.replace("hostile", "hostile many"));
    let r = send(&s, "c.test", "a@nospf.test", content.as_bytes()).await;
    assert!(r.starts_with("250"), "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A header section over 1 MiB (200,000 fields, 1.4 MB) is refused whole (the header
    // section is what the gateway holds in memory).
    let fields = "X-A: b\r\n".repeat(200_000);
    let content = format!("{fields}{}", body.replace("hostile", "hostile huge"));
    let r = send(&s, "c.test", "a@nospf.test", content.as_bytes()).await;
    assert!(r.starts_with("552 5.3.4"), "{r}");
    // 100,000 header fields (800 KB): not handed to mail-auth (which keeps one entry per
    // field); DKIM unverified, DMARC still evaluated.
    let started = Instant::now();
    let fields = "X-A: b\r\n".repeat(100_000);
    let content = format!(
        "{fields}{}{}",
        sig("v=1; a=rsa-sha256; d=bad.test; s=s; h=from; bh=x; b=x"),
        body.replace("hostile", "hostile wide")
    );
    let r = send(&s, "c.test", "a@nospf.test", content.as_bytes()).await;
    assert!(r.starts_with("250"), "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let got = sink.wait_for(cases.len() + 2).await;
    let fields = delivered_fields(&got, "Subject: hostile wide\r\n");
    let results = field(&fields, "Authentication-Results")[0];
    assert!(
        results.contains("dkim=permerror (header section too large)")
            && results.contains("dmarc=none header.from=bad.test"),
        "{results}"
    );
    let expect = [
        "permerror",
        "permerror",
        "permerror",
        "permerror",
        "permerror",
        "temperror",
        "permerror",
    ];
    for (i, expected) in expect.iter().enumerate() {
        let fields = delivered_fields(&got, &format!("Subject: hostile {i}\r\n"));
        let results = field(&fields, "Authentication-Results")[0];
        assert!(
            results.contains(&format!("dkim={expected}")),
            "case {i}: {results}"
        );
    }
    let fields = delivered_fields(&got, "Subject: hostile many\r\n");
    let echo = field(&fields, "X-Echo-Auth")[0];
    let list = echo
        .split("dkim=[")
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap();
    assert_eq!(list.split(',').count(), 5, "{echo}");
}

/// An authenticated user's mail is signed only for a From address the user may use.
#[tokio::test]
async fn users_get_signatures_only_for_their_own_from_addresses() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let mut dkim = String::new();
    for domain in ["ours.test", "theirs.test"] {
        let key = wasmtp::mailauth::keygen(domain, "s1", None).unwrap();
        let path = dir.path().join(format!("{domain}.pem"));
        std::fs::write(&path, key.private_pem).unwrap();
        dkim.push_str(&format!(
            "[[dkim]]\ndomain = \"{domain}\"\nselector = \"s1\"\nprivate_key = \"{}\"\n",
            path.display()
        ));
    }
    let hash = wasmtp::session::hash_password("secret").unwrap();
    let sink = Sink::start(SinkOptions::default()).await;
    let s = TestServer::start(&format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\nmode = \"submission\"\n{}\
         [[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\naddresses = [\"alice@ours.test\"]\n\
         {dkim}{}",
        common::tls_section(dir.path()),
        sink.config_route("*", "none")
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    let mut c = c.starttls().await;
    c.cmd("EHLO c", "250").await;
    let plain_auth = base64::engine::general_purpose::STANDARD.encode("\0alice\0secret");
    c.cmd(&format!("AUTH PLAIN {plain_auth}"), "235").await;
    for from in ["alice@ours.test", "ceo@theirs.test"] {
        let reply = c
            .send_mail(
                "alice@ours.test",
                &["x@elsewhere.test"],
                &format!("From: {from}\r\nSubject: {from}\r\n\r\nhi"),
            )
            .await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    let got = sink.wait_for(2).await;
    let text = |from: &str| delivered(&got, &format!("Subject: {from}\r\n"));
    assert!(text("alice@ours.test").starts_with("DKIM-Signature: "));
    assert!(!text("ceo@theirs.test").contains("DKIM-Signature"));
}
