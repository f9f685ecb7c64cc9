//! Delivery status notifications (RFC 3464) to the sender: a failure report when
//! recipients fail permanently (or expire at `delivery.max_age`), one delay report when
//! NOTIFY=DELAY asked for it and the message is older than `delivery.delay_warning`
//! (RFC 3461 4.1), and for NOTIFY=SUCCESS a "delivered" report on final delivery or a
//! "relayed" one when the next hop does not support DSN (RFC 3461 6.2.1; a hop that does
//! was given the NOTIFY and reports itself). Never for the null sender, so reports cannot
//! loop; never for NOTIFY=NEVER.

use crate::proto::EnhancedCode;
use crate::proto::params::{MailParams, Ret, decode_xtext};
use crate::spool::{Content, Envelope, Recipient, RecipientStatus, Spool, SpoolId};

/// Which report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Failed,
    Delayed,
    Delivered,
    Relayed,
}

/// Does this recipient want a report of this kind? RFC 3461 4.1: without NOTIFY the
/// server decides: failures are reported, delays are not.
pub fn wanted(recipient: &Recipient, kind: Kind) -> bool {
    match (&recipient.params.notify, kind) {
        (None, Kind::Failed) => true,
        (None, _) => false,
        (Some(n), Kind::Failed) => n.failure,
        (Some(n), Kind::Delayed) => n.delay,
        (Some(n), Kind::Delivered | Kind::Relayed) => n.success,
    }
}

/// A recipient's Status (RFC 3464 2.3.4): the enhanced code of the reply that decided it
/// (RFC 3463), else the class of the report with "delivery time expired" (4.4.7) for one
/// given up at `delivery.max_age`, "other" (X.0.0) for the rest.
fn status_of(status: &RecipientStatus, kind: Kind) -> EnhancedCode {
    status
        .reply()
        .and_then(|r| r.enhanced)
        .unwrap_or(match (status, kind) {
            (RecipientStatus::Expired(_), _) => EnhancedCode(4, 4, 7),
            (_, Kind::Failed) => EnhancedCode(5, 0, 0),
            (_, Kind::Delayed) => EnhancedCode(4, 0, 0),
            (_, Kind::Delivered | Kind::Relayed) => EnhancedCode(2, 0, 0),
        })
}

/// The per-recipient fields of the report after Final-Recipient and Original-Recipient.
/// Remote-MTA and Diagnostic-Code (RFC 3464 2.3.5, 2.3.6) only for a reply a remote server
/// gave: ours is told in the text part, not passed off as another server's.
fn recipient_fields(action: &str, status: &RecipientStatus, kind: Kind) -> String {
    let mut fields = format!(
        "Action: {action}\r\nStatus: {}\r\n",
        status_of(status, kind)
    );
    if let Some(reply) = status.reply()
        && let Some(mta) = &reply.remote
    {
        // The delivery-status part is US-ASCII (RFC 3464 2.1): what a remote server wrote
        // beyond it becomes `?`.
        let ascii = |s: &str| one_line(s).replace(|c: char| !c.is_ascii(), "?");
        fields.push_str(&format!(
            "Remote-MTA: dns; {}\r\nDiagnostic-Code: smtp; {}\r\n",
            ascii(mta),
            ascii(&reply.to_string())
        ));
    }
    fields
}

/// The line the text part gives a recipient.
fn human_line(status: &RecipientStatus) -> String {
    match (status, status.reply()) {
        (RecipientStatus::Expired(r), _) => {
            format!("not delivered in time (delivery.max_age); the last attempt: {r}")
        }
        (_, Some(r)) => r.to_string(),
        (_, None) => "not tried yet".into(),
    }
}

/// Text from elsewhere (a next hop's reply, a stored parameter) as one header-safe line: every
/// CR, LF or other control becomes a space, so nothing can start a field of its own.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Queues a delivery status report to the sender, when one is due (see `bounce`).
pub(super) async fn report(
    d: &super::shared::Delivery,
    envelope: &Envelope,
    content: &Content,
    recipients: &[(usize, RecipientStatus)],
    kind: Kind,
) {
    if recipients.is_empty() || envelope.sender.is_none() {
        return;
    }
    let (hostname, limit) = {
        let config = d.config.borrow();
        (config.hostname.clone(), config.delivery.bounce_size_limit.0)
    };
    match send(
        &d.spool, &hostname, envelope, content, limit, recipients, kind,
    )
    .await
    {
        Ok(Some(report)) => {
            tracing::info!(id = %envelope.id, %report, ?kind, "delivery status report queued");
            d.queue.submit(report);
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(id = %envelope.id, error = %e, "cannot queue a delivery status report")
        }
    }
}

/// Builds and spools the report for `recipients` (index, status) of `envelope`;
/// returns its id, or `None` when nobody is to be told.
pub async fn send(
    spool: &Spool,
    hostname: &str,
    envelope: &Envelope,
    content: &Content,
    return_limit: u64,
    recipients: &[(usize, RecipientStatus)],
    kind: Kind,
) -> std::io::Result<Option<SpoolId>> {
    let Some(sender) = envelope.sender.clone() else {
        return Ok(None);
    };
    let chosen: Vec<&(usize, RecipientStatus)> = recipients
        .iter()
        .filter(|(i, _)| wanted(&envelope.recipients[*i], kind))
        .collect();
    if chosen.is_empty() {
        return Ok(None);
    }
    let id = SpoolId::generate();
    let now = chrono::Utc::now().to_rfc2822();
    let boundary = format!("{id}/{hostname}");
    let (subject, action, intro) = match kind {
        Kind::Failed => (
            "Undelivered Mail Returned to Sender",
            "failed",
            "Your message could not be delivered to one or more recipients.\r\nIt was refused for good, or could not be delivered in time.",
        ),
        Kind::Delayed => (
            "Delayed Mail (still being retried)",
            "delayed",
            "Your message has not been delivered yet to one or more recipients.\r\nIt is still being retried; no need to send it again.",
        ),
        Kind::Delivered => (
            "Successful Mail Delivery Report",
            "delivered",
            "Your message was delivered to the recipients below, as you asked to be told.",
        ),
        Kind::Relayed => (
            "Successful Mail Delivery Report",
            "relayed",
            "Your message was passed on to the recipients below, as you asked to be told.\r\nThe next mail server does not report delivery status, so this is the last word.",
        ),
    };
    let mut text = format!("This is the mail system at {hostname}.\r\n\r\n{intro}\r\n\r\n");
    let mut status = format!("Reporting-MTA: dns; {hostname}\r\n");
    if let Some(envid) = envelope.params.envid.as_deref().and_then(decode_xtext) {
        status.push_str(&format!("Original-Envelope-Id: {envid}\r\n"));
    }
    let arrival = chrono::DateTime::from_timestamp(envelope.received_at, 0)
        .map(|d| d.to_rfc2822())
        .unwrap_or_default();
    status.push_str(&format!("Arrival-Date: {arrival}\r\n"));
    for (i, recipient_status) in &chosen {
        let r = &envelope.recipients[*i];
        text.push_str(&format!(
            "<{}>: {}\r\n",
            r.address,
            one_line(&human_line(recipient_status))
        ));
        status.push_str(&format!("\r\nFinal-Recipient: rfc822; {}\r\n", r.address));
        if let Some(orcpt) = &r.params.orcpt
            && let Some((kind, addr)) = orcpt.split_once(';')
            && let Some(addr) = decode_xtext(addr)
        {
            status.push_str(&format!(
                "Original-Recipient: {}; {addr}\r\n",
                one_line(kind)
            ));
        }
        status.push_str(&recipient_fields(action, recipient_status, kind));
    }
    // RFC 3461 4.3: RET=HDRS returns the header only; FULL (and our default) the message,
    // in failure reports; a success report returns the header only (RFC 3461 4.3: the
    // message need not go back to a sender whose mail arrived). A message larger than
    // `return_limit` returns its header only too (Postfix's bounce_size_limit).
    let success = matches!(kind, Kind::Delivered | Kind::Relayed);
    let too_large = content.len() > return_limit;
    let headers_only = success || envelope.params.ret == Some(Ret::Hdrs) || too_large;
    if too_large && !success && envelope.params.ret != Some(Ret::Hdrs) {
        text.push_str(&format!(
            "\r\nThe message was larger than {return_limit} octets: only its header is returned.\r\n"
        ));
    }
    let original = read_original(content, headers_only).await?;
    let mut message = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\nTo: <{sender}>\r\nSubject: {subject}\r\n\
         Date: {now}\r\nMessage-ID: <{id}@{hostname}>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n\
         --{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n{status}\r\n\
         --{boundary}\r\nContent-Type: {}\r\n\r\n",
        // RFC 6522 4 / RFC 3462: the header alone is text/rfc822-headers.
        if headers_only { "text/rfc822-headers" } else { "message/rfc822" }
    )
    .into_bytes();
    message.extend_from_slice(&original);
    message.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let report = Envelope {
        id: id.clone(),
        received_at: chrono::Utc::now().timestamp(),
        sender: None,
        // What it returns of the original may be 8-bit (RFC 6152).
        params: MailParams {
            body: message
                .iter()
                .any(|&b| b >= 0x80)
                .then_some(crate::proto::params::Body::EightBitMime),
            // RFC 8689 5: a report on a REQUIRETLS message is protected as the message was.
            requiretls: envelope.params.requiretls,
            ..MailParams::default()
        },
        recipients: vec![Recipient {
            address: sender,
            params: Default::default(),
        }],
        client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        helo: hostname.to_string(),
        auth_user: None,
        tls_optional: false,
    };
    spool
        .store(&report, &Content::from(message), None, None)
        .await?;
    Ok(Some(id))
}

/// The most a report returns of a header section: the client's (at most `HEADER_MAX`, as the
/// session accepted it) with room for the fields we and plugins added in front.
const RETURNED_HEADER_MAX: usize = 2 * crate::proto::header::HEADER_MAX;

/// What a report returns of the message: all of it (the caller keeps that to
/// `bounce_size_limit`), or its header section, read from the spool block by block up to the
/// empty line (a header past `RETURNED_HEADER_MAX` is cut at a line's end).
async fn read_original(content: &Content, headers_only: bool) -> std::io::Result<Vec<u8>> {
    let content = content.clone();
    tokio::task::spawn_blocking(move || {
        if !headers_only {
            return content.to_vec();
        }
        let mut head = Vec::new();
        let mut blocks = content.blocks();
        while let Some(block) = blocks.next_blocking()? {
            let from = head.len().saturating_sub(3);
            head.extend_from_slice(&block);
            if let Some(p) = memchr::memmem::find(&head[from..], b"\r\n\r\n") {
                head.truncate(from + p + 2);
                return Ok(head);
            }
            if head.len() >= RETURNED_HEADER_MAX {
                head.truncate(RETURNED_HEADER_MAX);
                let end = memchr::memmem::rfind(&head, b"\r\n").map_or(0, |p| p + 2);
                head.truncate(end);
                return Ok(head);
            }
        }
        Ok(head)
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Reply;
    use crate::spool::StoredReply;

    #[test]
    fn header_safe() {
        assert_eq!(one_line("550 no\r\nX-Evil: 1"), "550 no  X-Evil: 1");
    }

    #[test]
    fn statuses() {
        let stored = |line: &str, remote: Option<&str>| {
            let (reply, _) = Reply::parse(format!("{line}\r\n").as_bytes())
                .unwrap()
                .unwrap();
            StoredReply::new(&reply, remote)
        };
        let theirs = RecipientStatus::Failed(stored("550 5.1.1 no such user", Some("mx.test")));
        assert_eq!(status_of(&theirs, Kind::Failed), EnhancedCode(5, 1, 1));
        assert_eq!(
            recipient_fields("failed", &theirs, Kind::Failed),
            "Action: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.test\r\n\
             Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"
        );
        let ours = RecipientStatus::Failed(stored("554 mail loops back", None));
        assert_eq!(status_of(&ours, Kind::Failed), EnhancedCode(5, 0, 0));
        assert_eq!(
            recipient_fields("failed", &ours, Kind::Failed),
            "Action: failed\r\nStatus: 5.0.0\r\n"
        );
        let expired = RecipientStatus::Expired(stored("451 timed out", Some("mx.test")));
        assert_eq!(status_of(&expired, Kind::Failed), EnhancedCode(4, 4, 7));
        let expired = RecipientStatus::Expired(stored("451 4.4.1 no answer", None));
        assert_eq!(status_of(&expired, Kind::Failed), EnhancedCode(4, 4, 1));
    }
}
