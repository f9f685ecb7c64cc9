//! Big messages: received into the spool as they arrive, read from it by the plugins and
//! by delivery. One goes through the three default plugins to a Maildir, by DATA and by
//! BDAT, octet for octet; and every way a big transaction can fail (a client that hangs up
//! halfway, one past `message_size`, one that stalls past `data_timeout`) leaves no
//! message and gives its space back.

mod common;
use common::{Client, TestServer};
use std::path::Path;

/// The bundled plugins of the embedded default, delivering to a Maildir under the test's
/// directory.
const DEFAULTS: &str = "[accept]\ndomains = [\"example.test\"]\n\
    [limits]\nmessage_size = \"25MiB\"\ndata_timeout = \"2s\"\n\
    [[route]]\ndomain = \"example.test\"\nto = \"maildir:{dir}/maildir\"\n\
    [[plugin]]\nname = \"vrfy-expn-guard\"\npath = \"bundled:vrfy-expn-guard\"\n\
    [[plugin]]\nname = \"size-limit\"\npath = \"bundled:size-limit\"\n\
    [plugin.config]\nmax_size = \"25MiB\"\n\
    [[plugin]]\nname = \"spam-score\"\npath = \"bundled:spam-score\"\n";

/// A message of about `lines` × 64 octets: numbered lines, some starting with a dot, some
/// 8-bit.
fn message(subject: &str, lines: usize) -> String {
    let mut m = format!("From: <s@c.test>\r\nTo: <u@example.test>\r\nSubject: {subject}\r\n\r\n");
    for i in 0..lines {
        let lead = if i % 1000 == 0 { "." } else { "" };
        m.push_str(&format!(
            "{lead}line {i:08} of the big one, grüße 0123456789abcdef01234\r\n"
        ));
    }
    m
}

fn stuffed(m: &str) -> String {
    m.replace("\r\n.", "\r\n..")
}

/// The one file delivered to `user`.
fn delivered(dir: &Path, user: &str) -> String {
    let files = common::maildir_files(&dir.join("maildir"), user);
    assert_eq!(files.len(), 1, "{files:?}");
    String::from_utf8(std::fs::read(&files[0]).unwrap()).unwrap()
}

/// A session up to the 354 of DATA.
async fn start(c: &mut Client) {
    c.cmd("EHLO c.test", "250").await;
    c.cmd("MAIL FROM:<s@c.test>", "250").await;
    c.cmd("RCPT TO:<a@example.test>", "250").await;
    c.cmd("DATA", "354").await;
}

#[tokio::test]
async fn a_big_message_goes_through_the_default_plugins_intact_by_data_and_bdat() {
    let s = TestServer::start(DEFAULTS).await;
    // 8 MiB by DATA.
    let sent = message("by data", 130_000);
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c.test", "250").await;
    // send_mail ends the data with CRLF . CRLF: the last line's CRLF is that one.
    let data = stuffed(&sent);
    let reply = c
        .send_mail(
            "s@c.test",
            &["a@example.test"],
            data.strip_suffix("\r\n").unwrap(),
        )
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    // 8 MiB by BDAT, in three chunks.
    let sent_bdat = message("by bdat", 130_000);
    c.cmd("MAIL FROM:<s@c.test> BODY=8BITMIME", "250").await;
    c.cmd("RCPT TO:<b@example.test>", "250").await;
    let bytes = sent_bdat.as_bytes();
    let (one, rest) = bytes.split_at(100);
    let (two, three) = rest.split_at(5 << 20);
    for (chunk, last) in [(one, false), (two, false), (three, true)] {
        let verb = if last { " LAST" } else { "" };
        c.send(format!("BDAT {}{verb}\r\n", chunk.len()).as_bytes())
            .await;
        c.send(chunk).await;
        let reply = c.reply().await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    for (user, sent) in [("a", &sent), ("b", &sent_bdat)] {
        common::eventually_async("delivered to the Maildir", || async {
            common::maildir_files(&s.dir.path().join("maildir"), user).len() == 1
        })
        .await;
        let file = delivered(s.dir.path(), user);
        // Our fields (Return-Path, the spam score, Received) before the message as sent.
        let (ours, theirs) = file.split_once("From: <s@c.test>\n").unwrap();
        assert!(ours.starts_with("Return-Path: <s@c.test>\n"), "{ours}");
        assert!(ours.contains("Received: from c.test"), "{ours}");
        assert!(ours.contains("X-Spam-Score"), "{ours}");
        let want = sent.replace("\r\n", "\n");
        assert_eq!(theirs.len(), want.len() - "From: <s@c.test>\n".len());
        assert!(
            want.ends_with(theirs),
            "{user}: the content changed on the way"
        );
    }
}

#[tokio::test]
async fn failed_big_transactions_leave_no_message_and_give_their_space_back() {
    let s = TestServer::start(&DEFAULTS.replace("\"25MiB\"\ndata", "\"4MiB\"\ndata")).await;
    let spool = || wasmtp::spool::Spool::attach(&s.dir.path().join("spool")).unwrap();
    let space_back = || async {
        common::eventually("no message and the space back", || {
            spool().list().is_empty() && common::spool_octets(s.dir.path()) < 256 << 10
        })
        .await;
    };
    let big = stuffed(&message("big", 50_000));
    // A client that hangs up halfway through 3 MiB.
    let mut c = Client::connect(s.addr()).await;
    start(&mut c).await;
    c.send(&big.as_bytes()[..big.len() / 2]).await;
    common::eventually("half of it in the spool", || {
        common::spool_octets(s.dir.path()) > 1 << 20
    })
    .await;
    drop(c);
    space_back().await;
    // One past message_size (4 MiB): 552, and nothing past the limit was kept.
    let mut c = Client::connect(s.addr()).await;
    start(&mut c).await;
    for _ in 0..2 {
        c.send(big.as_bytes()).await;
    }
    c.send(b"\r\n.\r\n").await;
    let reply = c.reply().await;
    assert!(reply.starts_with("552 5.3.4"), "{reply}");
    space_back().await;
    // One that stalls past data_timeout (2 s) after 2 MiB.
    let mut c = Client::connect(s.addr()).await;
    start(&mut c).await;
    c.send(&big.as_bytes()[..2 << 20]).await;
    let reply = c.reply().await;
    assert!(reply.starts_with("421"), "{reply}");
    assert!(c.closed().await);
    space_back().await;
    // The server is none the worse: the next message goes through.
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c.test", "250").await;
    let reply = c
        .send_mail("s@c.test", &["a@example.test"], &message("after", 10))
        .await;
    assert!(reply.starts_with("250"), "{reply}");
}

/// Quoted-printable back to octets (RFC 2045 6.7), for checking what a hop got.
fn unquote(qp: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).unwrap() as u8;
    let mut out = Vec::with_capacity(qp.len());
    let mut i = 0;
    while i < qp.len() {
        match &qp[i..] {
            [b'=', b'\r', b'\n', ..] => i += 3,
            [b'=', h, l, ..] => {
                out.push(hex(*h) << 4 | hex(*l));
                i += 3;
            }
            [b, ..] => {
                out.push(*b);
                i += 1;
            }
            [] => unreachable!(),
        }
    }
    out
}

#[tokio::test]
async fn a_big_8bit_message_is_converted_as_it_streams_for_a_hop_without_8bitmime() {
    for chunking in [false, true] {
        let sink = common::sink::Sink::start(common::sink::SinkOptions {
            no_8bitmime: true,
            chunking,
            ..Default::default()
        })
        .await;
        let s = TestServer::start(&format!(
            "[accept]\ndomains = [\"example.test\"]\n[limits]\nmessage_size = \"25MiB\"\n{}",
            sink.config_route("*", "none")
        ))
        .await;
        // 4 MiB of 8-bit text in the second part of a multipart: many spool parts, and a
        // body much larger than a block.
        let text = message("inner", 65_000);
        let (_, eight) = text.split_once("\r\n\r\n").unwrap();
        let sent = format!(
            "From: <s@c.test>\r\nSubject: big 8-bit\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"cut\"\r\n\r\n\
             --cut\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n\
             --cut\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n\r\n{eight}--cut--\r\n"
        );
        let mut c = Client::connect(s.addr()).await;
        c.cmd("EHLO c.test", "250").await;
        c.cmd("MAIL FROM:<s@c.test> BODY=8BITMIME", "250").await;
        c.cmd("RCPT TO:<u@example.test>", "250").await;
        c.cmd("DATA", "354").await;
        c.send(stuffed(&sent).as_bytes()).await;
        c.send(b".\r\n").await;
        let reply = c.reply().await;
        assert!(reply.starts_with("250"), "{reply}");
        let got = &sink.wait_for(1).await[0];
        assert!(got.data.iter().all(u8::is_ascii), "chunking {chunking}");
        // The size announced is the size sent (RFC 1870; a BDAT chunk must be exact).
        assert!(
            got.mail.contains(&format!("SIZE={}", got.data.len())),
            "{} for {} octets",
            got.mail,
            got.data.len()
        );
        let text = got.text();
        assert!(text.contains("--cut\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n--cut\r\n"));
        let (_, qp) = text
            .split_once("Content-Transfer-Encoding: quoted-printable\r\n\r\n")
            .expect("the 8-bit part converted");
        let qp = qp.strip_suffix("\r\n--cut--\r\n").expect("closed");
        assert!(qp.lines().all(|l| l.len() <= 76));
        assert_eq!(
            String::from_utf8(unquote(qp.as_bytes())).unwrap(),
            eight.strip_suffix("\r\n").unwrap(),
            "chunking {chunking}: the content changed"
        );
    }
}
