//! What a milter can change (the `edit` interface, 0.2.3), through a real socket with the
//! misbehave guest, before the 250 and after the queue: a new body written in chunks into
//! the spool, a new sender with its parameters, fields inserted at a position, the n-th
//! occurrence of a field changed or deleted, a recipient added with NOTIFY and ORCPT, the
//! lines of a refusal and of the 250; bounded (a body past limits.message_size, edits the
//! host refuses); and `wasmtp plugin test` prints each.

mod common;
use common::sink::{Sink, SinkMessage, SinkOptions};
use common::{Client, TestServer};

const ACCEPT: &str = "[accept]\ndomains = [\"example.test\"]\n";

fn misbehave(mode: &str) -> String {
    format!(
        "[[plugin]]\nname = \"mb\"\npath = \"{}\"\nmode = \"{mode}\"\ntimeout = \"10s\"\n",
        common::guest("misbehave")
    )
}

const MESSAGE: &str = "Subject: edit me\r\nX-Change: first\r\nX-Delete: gone\r\n\
                       X-Change: second\r\n\r\nthe original body\r\n";

async fn start(mode: &str, sink: &Sink, extra: &str) -> TestServer {
    TestServer::start(&format!(
        "{ACCEPT}{extra}{}{}",
        sink.config_route("*", "none"),
        misbehave(mode)
    ))
    .await
}

async fn send(s: &TestServer, content: &str) -> String {
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c.test", "250").await;
    c.send_mail("old-sender@b.test", &["u@example.test"], content)
        .await
}

/// The message the sink got, edited: checked the same in both modes.
fn check_edited(m: &SinkMessage) {
    // SIZE is the delivering client's own (the new message's size).
    assert!(
        m.mail
            .starts_with("MAIL FROM:<new-sender@example.test> SIZE=")
            && m.mail.ends_with(" RET=HDRS"),
        "{}",
        m.mail
    );
    assert_eq!(m.rcpts.len(), 2, "{:?}", m.rcpts);
    assert_eq!(m.rcpts[0], "RCPT TO:<u@example.test>");
    assert_eq!(
        m.rcpts[1],
        "RCPT TO:<dsn@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig@example.test"
    );
    let text = m.text();
    let (header, body) = text.split_once("\r\n\r\n").unwrap();
    // Inserted on top of the message's own fields (ours stay above), and at index 2.
    let fields: Vec<&str> = header
        .split("\r\n")
        .filter(|l| !l.starts_with([' ', '\t']))
        .skip_while(|l| !l.starts_with("X-Inserted"))
        .collect();
    assert_eq!(
        fields,
        [
            "X-Inserted: on top",
            "Subject: edit me",
            "X-Third: third",
            "X-Change: first",
            "X-Change: second changed",
        ],
        "{header}"
    );
    assert!(!header.contains("X-Delete"), "{header}");
    assert!(!body.contains("original"), "{body}");
    for chunk in 0..3 {
        assert!(body.contains(&format!("replaced body, chunk {chunk}\r\n")));
    }
    assert!(body.len() > 290 * 1024, "{}", body.len());
}

#[tokio::test]
async fn every_edit_applies_before_the_250_and_sets_its_text() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = start("before-queue", &sink, "").await;
    let reply = send(&s, MESSAGE).await;
    let lines: Vec<&str> = reply.lines().collect();
    assert_eq!(lines.len(), 2, "{reply}");
    assert_eq!(lines[0], "250-2.0.0 edited by misbehave");
    assert!(
        lines[1].starts_with("250 2.0.0 all of it (queued as "),
        "{reply}"
    );
    check_edited(&sink.wait_for(1).await[0]);
}

#[tokio::test]
async fn every_edit_applies_after_the_queue() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = start("after-queue", &sink, "").await;
    let reply = send(&s, MESSAGE).await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued as"), "{reply}");
    check_edited(&sink.wait_for(1).await[0]);
    common::eventually("the spool emptied", || s.spool_ids().is_empty()).await;
}

#[tokio::test]
async fn refusals_have_their_lines_and_edits_are_bounded() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = start("before-queue", &sink, "[limits]\nmessage_size = \"1MiB\"\n").await;
    let reply = send(&s, "Subject: refuse in lines\r\n\r\nx\r\n").await;
    assert_eq!(
        reply,
        "550-5.7.1 refused, first line\n550 5.7.1 and a second"
    );
    // A body past limits.message_size is refused to the guest as it writes it.
    let reply = send(&s, "Subject: body too big\r\n\r\nx\r\n").await;
    assert!(
        reply.starts_with("552 5.3.4 EditError::OverLimit"),
        "{reply}"
    );
    assert!(reply.contains("limits.message_size"), "{reply}");
    // Every malformed edit is an error the guest reads.
    let reply = send(&s, "Subject: bad edits\r\n\r\nx\r\n").await;
    assert_eq!(
        reply,
        "550 5.7.1 refused [true, true, true, true, true, true, true, true, true]"
    );
    assert_eq!(sink.count(), 0);
    // A body past the limit after a first part: none of the new body is used (nor what
    // the guest writes after), and the message goes with its own.
    let reply = send(&s, "Subject: keep my body\r\n\r\nthe original").await;
    assert!(
        reply.starts_with("250 2.0.0 refused true true (queued as "),
        "{reply}"
    );
    let got = sink.wait_for(1).await;
    assert!(
        got[0].text().ends_with("\r\n\r\nthe original\r\n"),
        "{}",
        got[0].text()
    );
    // Bare CRs and LFs (across parts too) become CRLF: a `.` line stays a line of text.
    let reply = send(&s, "Subject: bare line ends\r\n\r\nx\r\n").await;
    assert!(reply.starts_with("250 "), "{reply}");
    let got = sink.wait_for(2).await;
    assert!(
        got[1]
            .text()
            .ends_with("\r\n\r\none\r\ntwo\r\n.\r\nthree\r\n\r\nfour\r\n"),
        "{:?}",
        got[1].text()
    );
    // What the refused bodies wrote is dead space: nothing stays queued.
    common::eventually("the spool emptied", || s.spool_ids().is_empty()).await;
}

#[tokio::test]
async fn plugin_test_prints_every_edit() {
    let dir = tempfile::tempdir().unwrap();
    let message = dir.path().join("m.eml");
    std::fs::write(&message, MESSAGE).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmtp"))
        .current_dir(dir.path())
        .args(["plugin", "test", &common::guest("misbehave")])
        .args(["--from", "a@b.test", "--to", "u@example.test", "--message"])
        .arg(&message)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "  insert header at 0: X-Inserted: on top\n",
        "  insert header at 2: X-Third: third\n",
        "  change header X-Change[2]: second changed\n",
        "  delete header X-Delete[1]\n",
        "  set sender <new-sender@example.test> RET=HDRS\n",
        "  add recipient <dsn@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig@example.test\n",
        "  replace body (",
        "  250 text: edited by misbehave / all of it\n",
    ] {
        assert!(report.contains(line), "{line:?} not in:\n{report}");
    }
}
