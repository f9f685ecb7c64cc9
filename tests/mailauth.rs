//! Sender authentication through real sockets and a DNS server started by each test: SPF
//! (include, redirect, macros, -all/~all, lookup and void limits, temperror on a DNS server
//! that fails or never answers), DKIM signed by an outside signer (dkimpy) and tampered
//! with, DKIM signed by wasmtp and checked by dkimpy, DMARC alignment, organizational
//! domains, `sp=` and `pct=`, the bundled dmarc-policy plugin, forged
//! Authentication-Results, and hostile input (broken signatures, 100 signatures, absurd
//! keys, looping records).

mod common;
use common::dns::{TestDns, Zone};
use common::sink::{Sink, SinkMessage, SinkOptions};
use common::{Client, TestServer};
use std::path::Path;
use std::time::{Duration, Instant};

/// The outside signer and verifier (dkimpy, from Debian's python3-dkim and python3-nacl).
const PYTHON: &str = "/usr/bin/python3";

fn dkim_tool(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/common/dkim_tool.py");
    let mut child = std::process::Command::new(PYTHON)
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with dkimpy (apt-get install python3-dkim python3-nacl)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dkim_tool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A key made by the outside tool; returns its TXT record.
fn outside_key(kind: &str, path: &Path) -> String {
    let txt = dkim_tool(&["keygen", kind, path.to_str().unwrap()], b"");
    String::from_utf8(txt).unwrap().trim().to_string()
}

/// The gateway: mail for example.test relayed to `sink`, our resolver the test's DNS,
/// `plugins` appended.
async fn gateway(dns: &TestDns, sink: &Sink, extra: &str) -> TestServer {
    TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\"]\n[dns]\nnameservers = [\"{}\"]\n\
         [authentication]\nverify = true\ntimeout = \"3s\"\n{}\n{extra}",
        dns.addr,
        sink.config_route("example.test", "none")
    ))
    .await
}

fn echo_plugin() -> String {
    format!(
        "[[plugin]]\nname = \"echo\"\npath = \"{}/misbehave.wasm\"\ncapabilities = [\"kv\"]\n[plugin.config]\nmode = \"echo-auth\"\n",
        env!("WASMTP_PLUGIN_DIR")
    )
}

/// One message from `from` (MAIL FROM) with `content`; the final reply.
async fn send(s: &TestServer, helo: &str, from: &str, content: &[u8]) -> String {
    let mut c = Client::connect(s.addr()).await;
    c.cmd(&format!("EHLO {helo}"), "250").await;
    c.cmd(&format!("MAIL FROM:<{from}>"), "250").await;
    c.cmd("RCPT TO:<rcpt@example.test>", "250").await;
    c.cmd("DATA", "354").await;
    let mut data = content.to_vec();
    data.extend_from_slice(b".\r\n");
    c.send(&data).await;
    c.reply().await
}

/// The header section of a delivered message, unfolded: one field a line.
fn header_of(message: &str) -> Vec<String> {
    let head = message.split("\r\n\r\n").next().unwrap_or_default();
    let mut fields: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            fields.push(line.to_string());
        }
    }
    fields
}

/// The text of the delivered message that contains `marker` (its Subject line, say).
fn delivered(got: &[SinkMessage], marker: &str) -> String {
    got.iter()
        .map(|m| m.text())
        .find(|t| t.contains(marker))
        .unwrap_or_else(|| panic!("no delivered message with {marker:?}"))
}

/// The header fields of that message, unfolded.
fn delivered_fields(got: &[SinkMessage], marker: &str) -> Vec<String> {
    header_of(&delivered(got, marker))
}

fn field<'a>(fields: &'a [String], name: &str) -> Vec<&'a str> {
    fields
        .iter()
        .filter_map(|f| f.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

fn plain(from_header: &str, subject: &str) -> Vec<u8> {
    format!("From: {from_header}\r\nTo: rcpt@example.test\r\nSubject: {subject}\r\n\r\nHello.\r\n")
        .into_bytes()
}

#[tokio::test]
async fn spf_results_reach_plugins_and_the_header() {
    let ip = std::net::Ipv4Addr::LOCALHOST;
    let dns = Zone::default()
        .txt("pass.test.", "v=spf1 ip4:127.0.0.0/8 -all")
        .txt("fail.test.", "v=spf1 ip4:192.0.2.1 -all")
        .txt("soft.test.", "v=spf1 ~all")
        .txt("neutral.test.", "v=spf1 ?all")
        .txt("inc.test.", "v=spf1 include:_spf.inc.test -all")
        .txt("_spf.inc.test.", "v=spf1 a:host.inc.test -all")
        .a("host.inc.test.", ip)
        .txt("red.test.", "v=spf1 redirect=_spf.red.test")
        .txt("_spf.red.test.", "v=spf1 mx -all")
        .mx("_spf.red.test.", 10, "mx.red.test.")
        .a("mx.red.test.", ip)
        // %{i} of 127.0.0.1 reversed is 1.0.0.127, %{l} the local part.
        .txt(
            "macro.test.",
            "v=spf1 exists:%{ir}.%{l}._spf.macro.test -all",
        )
        .a("1.0.0.127.alice._spf.macro.test.", ip)
        .txt("helo.test.", "v=spf1 ip4:127.0.0.1 -all")
        .start()
        .await;
    let sink = Sink::start(SinkOptions::default()).await;
    let s = gateway(&dns, &sink, &echo_plugin()).await;
    let cases = [
        ("a@pass.test", "pass"),
        ("a@fail.test", "fail"),
        ("a@soft.test", "softfail"),
        ("a@neutral.test", "neutral"),
        ("a@none.test", "none"),
        ("a@inc.test", "pass"),
        ("a@red.test", "pass"),
        ("alice@macro.test", "pass"),
        ("bob@macro.test", "fail"),
    ];
    for (i, (from, _)) in cases.iter().enumerate() {
        let reply = send(
            &s,
            "helo.test",
            from,
            &plain("x@x.test", &format!("case {i}")),
        )
        .await;
        assert!(reply.starts_with("250"), "{from}: {reply}");
    }
    let got = sink.wait_for(cases.len()).await;
    for (i, (from, expected)) in cases.iter().enumerate() {
        let fields = delivered_fields(&got, &format!("Subject: case {i}\r\n"));
        let domain = from.split('@').nth(1).unwrap();
        let results = field(&fields, "Authentication-Results");
        assert_eq!(results.len(), 1, "{fields:?}");
        assert!(results[0].starts_with("mx.test;"), "{}", results[0]);
        assert!(
            results[0].contains(&format!("spf={expected} smtp.mailfrom={domain}")),
            "{from}: {}",
            results[0]
        );
        assert!(
            results[0].contains("spf=pass smtp.helo=helo.test"),
            "{}",
            results[0]
        );
        // The typed results: the mail hook's (MAIL FROM/HELO) and the data hook's.
        let echo = field(&fields, "X-Echo-Auth");
        assert!(
            echo[0].starts_with(&format!("mail={expected}/pass:{domain}; spf={expected};")),
            "{from}: {echo:?}"
        );
    }
}

#[tokio::test]
async fn spf_limits_loops_and_dns_failures_give_errors_quickly() {
    let mut zone = Zone::default()
        // Three lookups that find nothing: RFC 7208 4.6.4 allows two.
        .txt(
            "void.test.",
            "v=spf1 a:nx1.void.test a:nx2.void.test a:nx3.void.test -all",
        )
        .txt(
            "twovoid.test.",
            "v=spf1 a:nx1.void.test a:nx2.void.test ip4:127.0.0.1 -all",
        )
        .txt("loop.test.", "v=spf1 include:loop.test -all")
        .txt("two.test.", "v=spf1 -all")
        .txt("two.test.", "v=spf1 +all")
        .txt("syntax.test.", "v=spf1 ip4:not-an-address -all")
        .txt("cidr.test.", "v=spf1 ip4:0.0.0.0/0 -all")
        .txt("dead.test.", "v=spf1 include:x.servfail.test -all")
        .txt("slow.test.", "v=spf1 a:x.hang.test -all")
        .txt("noinclude.test.", "v=spf1 include:nothing.test -all")
        .txt(
            "huge.test.",
            &format!("v=spf1 {} -all", "ip4:192.0.2.1 ".repeat(300)),
        );
    // Eleven includes, each with a record: over the limit of ten lookups.
    let chain: Vec<String> = (0..11)
        .map(|i| format!("include:c{i}.chain.test"))
        .collect();
    zone = zone.txt("chain.test.", &format!("v=spf1 {} -all", chain.join(" ")));
    for i in 0..11 {
        zone = zone.txt(&format!("c{i}.chain.test."), "v=spf1 ip4:192.0.2.1 -all");
    }
    let dns = zone.start().await;
    let sink = Sink::start(SinkOptions::default()).await;
    let s = gateway(&dns, &sink, &echo_plugin()).await;
    let cases = [
        ("a@void.test", "permerror"),
        ("a@twovoid.test", "pass"),
        ("a@loop.test", "permerror"),
        ("a@two.test", "permerror"),
        ("a@syntax.test", "permerror"),
        ("a@cidr.test", "permerror"),
        ("a@dead.test", "temperror"),
        ("a@slow.test", "temperror"),
        ("a@noinclude.test", "permerror"),
        ("a@chain.test", "permerror"),
        ("a@huge.test", "fail"),
    ];
    for (i, (from, _)) in cases.iter().enumerate() {
        let started = Instant::now();
        let reply = send(
            &s,
            "client.test",
            from,
            &plain("x@x.test", &format!("case {i}")),
        )
        .await;
        assert!(reply.starts_with("250"), "{from}: {reply}");
        // The timeout is 3 s: a check never waits longer than that for DNS.
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{from}: {:?}",
            started.elapsed()
        );
    }
    let got = sink.wait_for(cases.len()).await;
    for (i, (from, expected)) in cases.iter().enumerate() {
        let fields = delivered_fields(&got, &format!("Subject: case {i}\r\n"));
        let results = field(&fields, "Authentication-Results");
        let domain = from.split('@').nth(1).unwrap();
        assert!(
            results[0].contains(&format!("spf={expected} smtp.mailfrom={domain}")),
            "{from}: {}",
            results[0]
        );
    }
}

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
    let plugins = format!(
        "{}[[plugin]]\nname = \"dmarc\"\npath = \"bundled:dmarc-policy\"\n",
        echo_plugin()
    );
    let s = gateway(&dns, &sink, &plugins).await;
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
    let s2 = gateway(
        &dns,
        &sink,
        &format!(
            "{}[[plugin]]\nname = \"dmarc\"\npath = \"bundled:dmarc-policy\"\n[plugin.config]\nenforce = false\n",
            echo_plugin()
        ),
    )
    .await;
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
}

/// DMARC: relaxed and strict alignment, the organizational domain's record with sp=,
/// pct=0, quarantine (held), allow_domains, and a From domain without a record.
#[tokio::test]
async fn dmarc_alignment_policies_and_the_policy_plugin() {
    let dns = Zone::default()
        .txt("bounce.org.test.", "v=spf1 ip4:127.0.0.1 -all")
        .txt("_dmarc.org.test.", "v=DMARC1; p=none; sp=reject")
        .txt("bounce.strict.test.", "v=spf1 ip4:127.0.0.1 -all")
        .txt("_dmarc.strict.test.", "v=DMARC1; p=reject; aspf=s")
        .txt("_dmarc.quar.test.", "v=DMARC1; p=quarantine")
        .txt("_dmarc.sampled.test.", "v=DMARC1; p=reject; pct=0")
        .txt("_dmarc.partner.test.", "v=DMARC1; p=reject")
        .start()
        .await;
    let sink = Sink::start(SinkOptions::default()).await;
    let plugins = format!(
        "{}[[plugin]]\nname = \"dmarc\"\npath = \"bundled:dmarc-policy\"\n[plugin.config]\nallow_domains = [\"partner.test\"]\n",
        echo_plugin()
    );
    let s = gateway(&dns, &sink, &plugins).await;
    let cases = [
        // Relaxed SPF alignment: MAIL FROM bounce.org.test, From org.test (p=none).
        ("x@bounce.org.test", "a@org.test", "relaxed", "250"),
        // A subdomain without a record gets the organizational domain's sp=reject.
        ("x@nospf.test", "a@news.org.test", "sub", "550 5.7.1"),
        // Strict SPF alignment: bounce.strict.test is not strict.test.
        (
            "x@bounce.strict.test",
            "a@strict.test",
            "strict",
            "550 5.7.1",
        ),
        // pct=0: reject becomes quarantine (RFC 7489 6.6.4): held, not refused.
        ("x@nospf.test", "a@sampled.test", "sampled", "250"),
        ("x@nospf.test", "a@quar.test", "quarantine", "250"),
        // Allowlisted: tagged, delivered.
        ("x@nospf.test", "a@partner.test", "allowed", "250"),
        ("x@nospf.test", "a@nodmarc.test", "none", "250"),
    ];
    for (mail_from, from, subject, expected) in cases {
        let r = send(&s, "c.test", mail_from, &plain(from, subject)).await;
        assert!(r.starts_with(expected), "{subject}: {r}");
    }
    let got = sink.wait_for(3).await;
    let find = |subject: &str| delivered_fields(&got, &format!("Subject: {subject}\r\n"));
    let relaxed = find("relaxed");
    let echo = field(&relaxed, "X-Echo-Auth")[0];
    assert!(
        echo.contains("dmarc=pass from=org.test policy=none") && echo.contains("aligned=spf"),
        "{echo}"
    );
    let allowed = find("allowed");
    assert_eq!(
        field(&allowed, "X-DMARC-Policy")[0],
        "fail; from=partner.test; policy=reject; disposition=reject; action=allowed"
    );
    let none = find("none");
    assert!(
        field(&none, "Authentication-Results")[0].contains("dmarc=none header.from=nodmarc.test")
    );
    assert!(field(&none, "X-DMARC-Policy").is_empty());
    // The two quarantined messages are held in the spool.
    common::eventually("only the two held messages stay in the spool", || {
        s.spool().list().len() == 2
    })
    .await;
    assert_eq!(sink.count(), 3);
}

/// Authentication-Results claiming our name are removed from received mail; others stay.
#[tokio::test]
async fn forged_authentication_results_are_removed() {
    let dns = Zone::default().start().await;
    let sink = Sink::start(SinkOptions::default()).await;
    let s = gateway(&dns, &sink, "").await;
    let content = b"Authentication-Results: mx.test; dkim=pass header.d=bank.test; dmarc=pass\r\n\
Authentication-Results: upstream.test; spf=pass\r\n\
From: a@bank.test\r\nSubject: forged\r\n\r\nPay now.\r\n";
    let r = send(&s, "c.test", "a@nospf.test", content).await;
    assert!(r.starts_with("250"), "{r}");
    let got = sink.wait_for(1).await;
    let fields = header_of(&got[0].text());
    let results = field(&fields, "Authentication-Results");
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results[0].starts_with("mx.test;") && results[0].contains("dkim=none"));
    assert_eq!(results[1], "upstream.test; spf=pass");
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

/// What a forger tries against DMARC: a header line without a colon first (mail-auth would
/// see no header section), two From domains, a signature with rsa-sha1 (RFC 8301), a flood
/// of ARC fields; and an IPv4 client seen as ::ffff:a.b.c.d.
#[tokio::test]
async fn dmarc_is_not_dodged_by_malformed_or_doubled_from() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = outside_key("rsa", &dir.path().join("rsa.key"));
    let dns = Zone::default()
        .txt("_dmarc.bank.test.", "v=DMARC1; p=reject")
        .txt("_dmarc.xn--bnk-qla.test.", "v=DMARC1; p=reject")
        .txt("s1._domainkey.bank.test.", &rsa)
        .txt("ok.test.", "v=spf1 ip4:127.0.0.1 -all")
        .start()
        .await;
    let sink = Sink::start(SinkOptions::default()).await;
    let plugins = format!(
        "{}[[plugin]]\nname = \"dmarc\"\npath = \"bundled:dmarc-policy\"\n",
        echo_plugin()
    );
    let s = gateway(&dns, &sink, &plugins).await;
    let colonless = b"Not a header line\r\nFrom: ceo@bank.test\r\nSubject: pay\r\n\r\nx\r\n";
    let r = send(&s, "c.test", "x@ok.test", colonless).await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    let two = b"From: me@ok.test\r\nFrom: ceo@bank.test\r\nSubject: pay\r\n\r\nx\r\n";
    let r = send(&s, "c.test", "x@ok.test", two).await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    let list = b"From: me@ok.test, ceo@bank.test\r\nSubject: pay\r\n\r\nx\r\n";
    let r = send(&s, "c.test", "x@ok.test", list).await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    // Names our resolver cannot ask for (a HELO or a selector with '+') are permanent
    // errors, not temporary ones that would let DMARC say "temperror".
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO x+y.bank.test", "250").await;
    let r = c
        .send_mail(
            "",
            &["rcpt@example.test"],
            "From: ceo@bank.test\r\nSubject: pay\r\n\r\nx",
        )
        .await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    let bad_selector = "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=bank.test; s=x+y; h=from; \
         bh=s14J+iztnrytnRYzb7lhFG/jS/vrxWJnnahfijFMnco=; b=AAAA\r\n\
         From: ceo@bank.test\r\nSubject: pay\r\n\r\nx\r\n";
    let r = send(&s, "c.test", "x@ok.test", bad_selector.as_bytes()).await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    // An internationalized From domain is checked under its ASCII name.
    let idn = "From: ceo@b\u{e4}nk.test\r\nSubject: pay\r\n\r\nx\r\n";
    let r = send(&s, "c.test", "x@ok.test", idn.as_bytes()).await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    // More From domains than anyone sends: refused, whatever the order.
    let many: Vec<String> = (0..11).map(|i| format!("a@d{i}.test")).collect();
    let crowd = format!(
        "From: {}, ceo@bank.test\r\nSubject: pay\r\n\r\nx\r\n",
        many.join(", ")
    );
    let r = send(&s, "c.test", "x@ok.test", crowd.as_bytes()).await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    // rsa-sha1 by the domain's own key: not a valid signature (RFC 8301 3.1).
    let key = dir.path().join("rsa.key").display().to_string();
    let sha1 = dkim_tool(
        &["sign", "s1", "bank.test", &key, "rsa-sha1"],
        &plain("ceo@bank.test", "sha1"),
    );
    let r = send(&s, "c.test", "x@nospf.test", &sha1).await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    // 400 ARC-Message-Signature fields (a chain has at most 50): no lookups for them, the
    // chain fails.
    let before = dns.queries.load(std::sync::atomic::Ordering::SeqCst);
    let mut flood = String::new();
    for i in 0..400 {
        flood.push_str(&format!(
            "ARC-Message-Signature: i=1; a=rsa-sha256; d=d{i}.flood.test; s=s; h=from; bh=x; b=x\r\n"
        ));
    }
    flood.push_str("From: me@ok.test\r\nSubject: flood\r\n\r\nx\r\n");
    let started = Instant::now();
    let r = send(&s, "c.test", "x@ok.test", flood.as_bytes()).await;
    assert!(r.starts_with("250"), "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let asked = dns.queries.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(asked < 20, "{asked} DNS queries for one message");
    let got = sink.wait_for(1).await;
    let fields = header_of(&got[0].text());
    let echo = field(&fields, "X-Echo-Auth")[0];
    assert!(echo.contains("arc=fail/400"), "{echo}");
    // A dual-stack listener sees an IPv4 client as ::ffff:127.0.0.1: still IPv4 for SPF.
    let verifier = std::sync::Arc::new(wasmtp::mailauth::Verifier::new(
        wasmtp::dns::Dns::new(&[dns.addr]).unwrap(),
        "mx.test",
        Duration::from_secs(3),
    ));
    let mapped: std::net::IpAddr = "::ffff:127.0.0.1".parse().unwrap();
    let check = verifier.spf_mail_from(mapped, "c.test", "a@ok.test").await;
    assert_eq!(check.status, wasmtp::mailauth::AuthStatus::Pass);
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
