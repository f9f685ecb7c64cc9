//! Delivery status notifications (RFC 3464) to the sender: a failure report when
//! recipients fail permanently (or expire at `delivery.max_age`), one delay report when
//! NOTIFY=DELAY asked for it and the message is older than `delivery.delay_warning`
//! (RFC 3461 4.1), and for NOTIFY=SUCCESS a "delivered" report on final delivery or a
//! "relayed" one when the next hop does not support DSN (RFC 3461 6.2.1; a hop that does
//! was given the NOTIFY and reports itself). Never for the null sender, so reports cannot
//! loop; never for NOTIFY=NEVER.

use crate::proto::params::{MailParams, Ret, decode_xtext};
use crate::spool::{Content, Envelope, Recipient, Spool, SpoolId};

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

/// The enhanced status of a stored reply such as "550 5.1.1 no such user".
fn status_of(reply: &str, kind: Kind) -> String {
    reply
        .split_whitespace()
        .nth(1)
        .filter(|s| {
            s.split('.').count() == 3
                && s.split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
        .unwrap_or_else(|| {
            match kind {
                Kind::Failed => "5.0.0",
                Kind::Delayed => "4.0.0",
                Kind::Delivered | Kind::Relayed => "2.0.0",
            }
            .into()
        })
}

/// Text from elsewhere (a next hop's reply, a stored parameter) as one header-safe line: every
/// CR, LF or other control becomes a space, so nothing can start a field of its own.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Builds and spools the report for `failed` (index, last reply) recipients of `envelope`;
/// returns its id, or `None` when nobody is to be told.
pub async fn send(
    spool: &Spool,
    hostname: &str,
    envelope: &Envelope,
    content: &Content,
    return_limit: u64,
    recipients: &[(usize, String)],
    kind: Kind,
) -> std::io::Result<Option<SpoolId>> {
    let Some(sender) = envelope.sender.clone() else {
        return Ok(None);
    };
    let chosen: Vec<&(usize, String)> = recipients
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
    for (i, reply) in &chosen {
        let r = &envelope.recipients[*i];
        text.push_str(&format!("<{}>: {}\r\n", r.address, one_line(reply)));
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
        status.push_str(&format!(
            "Action: {action}\r\nStatus: {}\r\nDiagnostic-Code: smtp; {}\r\n",
            status_of(reply, kind),
            one_line(reply)
        ));
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
            ..MailParams::default()
        },
        recipients: vec![Recipient {
            address: sender,
            params: Default::default(),
        }],
        client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        helo: hostname.to_string(),
        auth_user: None,
    };
    spool
        .store(&report, &Content::from(message), None, None)
        .await?;
    Ok(Some(id))
}

/// What a report returns of the message: all of it, or its header section (at most
/// `HEADER_MAX`, as the session accepted it), read from the spool.
async fn read_original(content: &Content, headers_only: bool) -> std::io::Result<Vec<u8>> {
    let content = content.clone();
    tokio::task::spawn_blocking(move || {
        if !headers_only {
            return content.to_vec();
        }
        let head = content.read_at(0, crate::proto::header::HEADER_MAX + 4)?;
        let end = memchr::memmem::find(&head, b"\r\n\r\n").map_or(head.len(), |p| p + 2);
        Ok(head[..end].to_vec())
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_safe() {
        assert_eq!(one_line("550 no\r\nX-Evil: 1"), "550 no  X-Evil: 1");
    }

    #[test]
    fn statuses() {
        assert_eq!(status_of("550 5.1.1 no such user", Kind::Failed), "5.1.1");
        assert_eq!(status_of("connection refused", Kind::Failed), "5.0.0");
        assert_eq!(status_of("451 4.4.4 later", Kind::Delayed), "4.4.4");
    }
}
