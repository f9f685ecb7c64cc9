//! Fixed replies, named once. Codes follow RFC 5321 4.2.2/4.2.3; enhanced codes RFC 3463.

use super::reply::{EnhancedCode as E, Reply};

pub const OK: Reply = Reply::new(250, E(2, 0, 0), "OK");
pub const SENDER_OK: Reply = Reply::new(250, E(2, 1, 0), "Sender OK");
pub const RECIPIENT_OK: Reply = Reply::new(250, E(2, 1, 5), "Recipient OK");
pub const RESET_OK: Reply = Reply::new(250, E(2, 0, 0), "Reset OK");
pub const NOOP_OK: Reply = Reply::new(250, E(2, 0, 0), "OK");
pub const BYE: Reply = Reply::new(221, E(2, 0, 0), "Bye");
pub const START_DATA: Reply = Reply::new(354, E(2, 0, 0), "End data with <CR><LF>.<CR><LF>");
pub const START_TLS: Reply = Reply::new(220, E(2, 0, 0), "Ready to start TLS");
pub const AUTH_OK: Reply = Reply::new(235, E(2, 7, 0), "Authentication succeeded");
pub const CANNOT_VRFY: Reply = Reply::new(
    252,
    E(2, 5, 0),
    "Cannot VRFY user, but will accept message and attempt delivery",
);
pub const ETRN_OK: Reply = Reply::new(250, E(2, 0, 0), "Queuing started");
pub const HELP: Reply = Reply::new(
    214,
    E(2, 0, 0),
    "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY EXPN STARTTLS AUTH ETRN\nSee RFC 5321",
);

pub const SHUTTING_DOWN: Reply =
    Reply::new(421, E(4, 3, 2), "Service shutting down, try again later");
pub const TIMEOUT: Reply = Reply::new(421, E(4, 4, 2), "Timeout exceeded, closing connection");
pub const TOO_MANY_ERRORS: Reply =
    Reply::new(421, E(4, 7, 0), "Too many errors, closing connection");
pub const TOO_MANY_CONNECTIONS: Reply =
    Reply::new(421, E(4, 7, 0), "Too many connections, try again later");
pub const TOO_MANY_FROM_CLIENT: Reply = Reply::new(
    421,
    E(4, 7, 0),
    "Too many connections from your address, try again later",
);
pub const TOO_MANY_AUTH_FAILURES: Reply = Reply::new(
    421,
    E(4, 7, 0),
    "Too many failed authentications, closing connection",
);
/// RFC 4954 6: 454 for a temporary authentication failure.
pub const AUTH_THROTTLED: Reply = Reply::new(
    454,
    E(4, 7, 0),
    "Too many failed authentications from your address, try again later",
);
/// RFC 5321 4.2.3 (452), RFC 3463 X.3.1 (mail system full).
pub const SPOOL_FULL: Reply = Reply::new(
    452,
    E(4, 3, 1),
    "Insufficient system storage, try again later",
);
pub const TOO_MANY_RECIPIENTS: Reply = Reply::new(452, E(4, 5, 3), "Too many recipients");
pub const SPOOL_FAILED: Reply = Reply::new(
    451,
    E(4, 3, 0),
    "Local error: message could not be queued, try again later",
);
pub const TLS_UNAVAILABLE: Reply = Reply::new(454, E(4, 7, 0), "TLS not available");

pub const LINE_TOO_LONG: Reply = Reply::new(500, E(5, 5, 2), "Line too long");
pub const BARE_NEWLINE: Reply = Reply::new(
    500,
    E(5, 5, 2),
    "Bare CR or LF in command refused (RFC 5321 2.3.8)",
);
pub const UNKNOWN_COMMAND: Reply = Reply::new(500, E(5, 5, 2), "Command unrecognized");
pub const NOT_IMPLEMENTED: Reply = Reply::new(502, E(5, 5, 1), "Command not implemented");
pub const BAD_SEQUENCE: Reply = Reply::new(503, E(5, 5, 1), "Bad sequence of commands");
pub const HELO_FIRST: Reply = Reply::new(503, E(5, 5, 1), "Send HELO/EHLO first");
pub const NESTED_MAIL: Reply = Reply::new(503, E(5, 5, 1), "Sender already specified");
pub const NEED_MAIL: Reply = Reply::new(503, E(5, 5, 1), "Need MAIL command first");
pub const NEED_RCPT: Reply = Reply::new(503, E(5, 5, 1), "Need RCPT command first");
pub const DATA_IN_BDAT: Reply = Reply::new(
    503,
    E(5, 5, 1),
    "DATA not allowed inside a BDAT transaction",
);
pub const ALREADY_TLS: Reply = Reply::new(503, E(5, 5, 1), "TLS already active");
pub const ALREADY_AUTH: Reply = Reply::new(503, E(5, 5, 1), "Already authenticated");
pub const AUTH_IN_TX: Reply = Reply::new(
    503,
    E(5, 5, 1),
    "AUTH not allowed during a mail transaction",
);
pub const NO_VALID_RECIPIENTS: Reply = Reply::new(554, E(5, 5, 1), "No valid recipients");
pub const PARAM_NOT_IMPLEMENTED: Reply =
    Reply::new(504, E(5, 5, 4), "Command parameter not implemented");
pub const AUTH_MECH_UNSUPPORTED: Reply =
    Reply::new(504, E(5, 5, 4), "Unrecognized authentication mechanism");
pub const AUTH_CANCELLED: Reply = Reply::new(501, E(5, 0, 0), "Authentication cancelled");
pub const AUTH_BAD_BASE64: Reply = Reply::new(501, E(5, 5, 2), "Invalid base64 data");
pub const AUTH_FAILED: Reply = Reply::new(535, E(5, 7, 8), "Authentication credentials invalid");
pub const AUTH_NEEDS_TLS: Reply = Reply::new(
    538,
    E(5, 7, 11),
    "Encryption required for requested authentication mechanism",
);
/// RFC 2645 4.2.2.
pub const ATRN_OK: Reply = Reply::new(250, E(2, 0, 0), "OK, now reversing the connection");
pub const ODMR_TAKES_NO_MAIL: Reply = Reply::new(
    502,
    E(5, 5, 1),
    "This is an ODMR port (RFC 2645): AUTH, then ATRN; mail goes to the MX",
);
pub const AUTH_REQUIRED: Reply = Reply::new(530, E(5, 7, 0), "Authentication required");
/// RFC 4954 / Postfix's reject_sender_login_mismatch: authenticated users send as
/// themselves.
pub const SENDER_NOT_OWNED: Reply = Reply::new(
    553,
    E(5, 7, 1),
    "Sender address not owned by the authenticated user",
);
/// A local part the Maildir route could not deliver to (it would name another path).
pub const MAILBOX_NAME_REFUSED: Reply = Reply::new(553, E(5, 1, 3), "Mailbox name not allowed");
pub const RELAY_DENIED: Reply = Reply::new(550, E(5, 7, 1), "Relaying denied");
pub const ROUTING_DENIED: Reply = Reply::new(
    550,
    E(5, 7, 1),
    "Source routing via % or ! in the local part is not allowed",
);
pub const SIZE_EXCEEDED: Reply = Reply::new(
    552,
    E(5, 3, 4),
    "Message size exceeds fixed maximum message size",
);
/// RFC 3463 X.3.4: a header section past `header::HEADER_MAX` (Exim's header_maxsize).
pub const HEADER_TOO_LARGE: Reply =
    Reply::new(552, E(5, 3, 4), "Message header section exceeds 1 MiB");
pub const UTF8_NEEDS_SMTPUTF8: Reply = Reply::new(
    553,
    E(5, 6, 7),
    "Non-ASCII address requires the SMTPUTF8 parameter",
);
/// RFC 5321 6.3: a message with too many trace fields is looping; RFC 3463 X.4.6.
pub const TOO_MANY_HOPS: Reply = Reply::new(
    554,
    E(5, 4, 6),
    "Too many hops (Received: fields): mail loop suspected",
);
pub const BARE_NEWLINE_DATA: Reply = Reply::new(
    554,
    E(5, 5, 2),
    "Message refused: bare CR or LF in message data (RFC 5321 2.3.8)",
);

/// A plugin failed and its `on_error` is `tempfail` (SPEC.md: 451 4.3.0).
pub const PLUGIN_TEMPFAIL: Reply = Reply::new(
    451,
    E(4, 3, 0),
    "Temporary local problem, please try again later",
);
/// A plugin failed and its `on_error` is `reject`.
pub const PLUGIN_REJECT: Reply = Reply::new(554, E(5, 3, 0), "Local policy error");

/// The 250 after the end of data, naming the queue id (also for discarded messages, which
/// the client must not be able to tell apart).
pub fn queued_as(id: impl std::fmt::Display) -> Reply {
    Reply::dynamic(250, 0, 0, format!("Ok: queued as {id}"))
}

/// The 250 with a plugin's lines (RFC 5321 4.2.1 multi-line), the queue id on the last.
pub fn queued_as_with(id: impl std::fmt::Display, lines: &[String]) -> Reply {
    Reply::dynamic(250, 0, 0, format!("{} (queued as {id})", lines.join("\n")))
}
