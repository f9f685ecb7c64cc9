//! Delivery status notifications (RFC 3464) for the sender, through a real next hop: a
//! failure report with the fields RFC 3464 asks for, none for NOTIFY=NEVER or the null
//! sender, and one delay report for NOTIFY=DELAY.

mod common;
use common::sink::{Sink, SinkMessage};
use common::{Client, TestServer};

/// The next hop refuses bad@ for good and defers later@ forever.
async fn setup(extra: &str) -> (Sink, TestServer) {
    let sink = Sink::with_rcpt_rule(|line: &str| {
        if line.contains("bad@") {
            Some("550 5.1.1 no such user".to_string())
        } else if line.contains("later@") {
            Some("450 4.2.0 mailbox busy".to_string())
        } else {
            None
        }
    })
    .await;
    let s = TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\"]\n[relay]\nnetworks = [\"127.0.0.0/8\"]\n{}{extra}",
        sink.config_route("*", "none")
    ))
    .await;
    (sink, s)
}

#[tokio::test]
async fn failure_report_to_the_sender() {
    let (sink, s) = setup("[delivery]\nretry = [\"1h\"]\n").await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    c.cmd("MAIL FROM:<s@c.test> RET=HDRS ENVID=env+2B1", "250")
        .await;
    c.cmd("RCPT TO:<ok@example.test>", "250").await;
    c.cmd(
        "RCPT TO:<bad@example.test> NOTIFY=FAILURE ORCPT=rfc822;bad+40example.test",
        "250",
    )
    .await;
    c.cmd("DATA", "354").await;
    c.send(b"Subject: will bounce\r\n\r\nsecret body\r\n.\r\n")
        .await;
    assert!(c.reply().await.starts_with("250"));
    common::eventually("the report", || sink.reports().len() == 1).await;
    let report = &sink.reports()[0];
    assert_eq!(report.rcpts, vec!["RCPT TO:<s@c.test>".to_string()]);
    let text = report.text();
    for needle in [
        "From: Mail Delivery System <MAILER-DAEMON@mx.test>",
        "Auto-Submitted: auto-replied",
        "Content-Type: multipart/report; report-type=delivery-status;",
        "Reporting-MTA: dns; mx.test",
        "Original-Envelope-Id: env+1",
        "Final-Recipient: rfc822; bad@example.test",
        "Original-Recipient: rfc822; bad@example.test",
        "Action: failed",
        "Status: 5.1.1",
        "Diagnostic-Code: smtp; 550 5.1.1 no such user",
        "Content-Type: text/rfc822-headers",
        "Subject: will bounce",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    assert!(!text.contains("secret body"), "RET=HDRS returned the body");
    assert!(!text.contains("Final-Recipient: rfc822; ok@"), "{text}");
    common::eventually("spool cleanup", || s.spool_ids().is_empty()).await;
}

#[tokio::test]
async fn no_report_for_notify_never_or_the_null_sender() {
    let (sink, s) = setup("[delivery]\nretry = [\"1h\"]\n").await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    c.cmd("MAIL FROM:<s@c.test>", "250").await;
    c.cmd("RCPT TO:<bad@example.test> NOTIFY=NEVER", "250")
        .await;
    c.cmd("DATA", "354").await;
    c.send(b"Subject: quiet\r\n\r\nx\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250"));
    let reply = c
        .send_mail("", &["bad@example.test"], "Subject: from <>\r\n\r\nx")
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    common::eventually("two failures", || {
        s.server.metrics.failures_total.get() == 2
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(sink.reports().is_empty());
    assert_eq!(sink.count(), 0);
}

#[tokio::test]
async fn one_delay_report_when_asked_for() {
    let (sink, s) = setup("[delivery]\nretry = [\"1s\"]\ndelay_warning = \"1s\"\n").await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    c.cmd("MAIL FROM:<s@c.test>", "250").await;
    c.cmd("RCPT TO:<later@example.test> NOTIFY=DELAY,FAILURE", "250")
        .await;
    c.cmd("DATA", "354").await;
    c.send(b"Subject: slow\r\n\r\nx\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250"));
    common::eventually("the delay report", || sink.reports().len() == 1).await;
    let text = sink.reports()[0].text();
    assert!(
        text.contains("Action: delayed") && text.contains("Status: 4.2.0"),
        "{text}"
    );
    assert!(text.contains("Content-Type: message/rfc822\r\n"), "{text}");
    // More attempts follow, but no second delay report.
    common::eventually("three deferrals", || s.deferrals() >= 3).await;
    assert_eq!(sink.reports().len(), 1);
}

#[tokio::test]
async fn expiry_reports_the_last_reply() {
    let (sink, s) = setup("[delivery]\nretry = [\"1s\"]\nmax_age = \"2s\"\n").await;
    s.send_one(&["later@example.test"], "will expire").await;
    common::eventually("the report", || sink.reports().len() == 1).await;
    let text = sink.reports()[0].text();
    // RFC 3463: the last reply's status (a transient one: the recipient was given up,
    // not refused), with that reply as the remote server's diagnostic.
    for needle in [
        "Final-Recipient: rfc822; later@example.test",
        "Action: failed",
        "Status: 4.2.0",
        "Remote-MTA: dns; 127.0.0.1",
        "Diagnostic-Code: smtp; 450 4.2.0 mailbox busy",
        "not delivered in time",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    assert!(!text.contains("Status: 5.0.0"), "{text}");
    common::eventually("spool cleanup", || s.spool_ids().is_empty()).await;
}

/// Sends one message with two recipients, the first with NOTIFY=SUCCESS.
async fn send_asking_for_success(s: &TestServer) {
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    c.cmd("MAIL FROM:<s@c.test> ENVID=e1", "250").await;
    c.cmd("RCPT TO:<want@example.test> NOTIFY=SUCCESS", "250")
        .await;
    c.cmd("RCPT TO:<plain@example.test>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(b"Subject: arrived\r\n\r\nsecret body\r\n.\r\n")
        .await;
    assert!(c.reply().await.starts_with("250"));
}

fn assert_success_report(report: &SinkMessage, action: &str) {
    let text = report.text();
    assert_eq!(report.rcpts, vec!["RCPT TO:<s@c.test>".to_string()]);
    for needle in [
        "Subject: Successful Mail Delivery Report",
        "Original-Envelope-Id: e1",
        "Final-Recipient: rfc822; want@example.test",
        &format!("Action: {action}"),
        "Status: 2.0.0",
        "Content-Type: text/rfc822-headers",
        "Subject: arrived",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    assert!(!text.contains("plain@example.test"), "{text}");
    assert!(
        !text.contains("secret body"),
        "a success report returned the body"
    );
}

#[tokio::test]
async fn relayed_report_when_the_next_hop_lacks_dsn() {
    let sink = Sink::start(common::sink::SinkOptions {
        no_dsn: true,
        ..Default::default()
    })
    .await;
    let s = TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\"]\n{}",
        sink.config_route("*", "none")
    ))
    .await;
    send_asking_for_success(&s).await;
    common::eventually("the report", || sink.reports().len() == 1).await;
    assert_success_report(&sink.reports()[0], "relayed");
    let relayed = &sink.messages.lock().unwrap()[0];
    assert!(
        relayed.rcpts.iter().all(|r| !r.contains("NOTIFY")),
        "{relayed:?}"
    );
}

#[tokio::test]
async fn no_report_when_the_next_hop_takes_the_dsn_request() {
    let (sink, s) = setup("").await;
    send_asking_for_success(&s).await;
    sink.wait_for(1).await;
    common::eventually("spool cleanup", || s.spool_ids().is_empty()).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(sink.reports().is_empty());
    let relayed = &sink.messages.lock().unwrap()[0];
    assert!(relayed.rcpts[0].contains("NOTIFY=SUCCESS"), "{relayed:?}");
}

#[tokio::test]
async fn delivered_report_on_final_delivery() {
    let sink = Sink::start(Default::default()).await;
    let s = TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\"]\n\
         [[route]]\ndomain = \"example.test\"\nto = \"maildir:{{dir}}/mail\"\n{}",
        sink.config_route("*", "none")
    ))
    .await;
    send_asking_for_success(&s).await;
    common::eventually("the report", || sink.reports().len() == 1).await;
    assert_success_report(&sink.reports()[0], "delivered");
    assert_eq!(
        common::maildir_files(&s.dir.path().join("mail"), "want").len(),
        1
    );
}
