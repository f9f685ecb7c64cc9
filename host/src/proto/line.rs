//! Command line framing, free of I/O: takes complete lines out of the bytes read so far,
//! checking CRLF (RFC 5321 2.3.8) and length (RFC 5321 4.5.3.1.4).

use super::command::{MAX_AUTH_LINE, line_limit};
use super::replies;
use super::reply::Reply;

/// What the buffered bytes held.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Text(String),
    /// A line that must be refused with this reply (bare CR or LF, too long, not UTF-8).
    Bad(Reply),
    /// No complete line yet: read more.
    Incomplete,
}

/// Frames command lines. A line over the longest limit is skipped to its end and answered
/// `500 5.5.2` once, without holding its bytes.
#[derive(Debug, Default)]
pub struct LineReader {
    discarding: bool,
    sasl: bool,
}

impl LineReader {
    /// While a SASL exchange waits for the client's response, lines may be as long as an
    /// AUTH command (RFC 4954 4: 12288 octets).
    pub fn expect_sasl(&mut self, on: bool) {
        self.sasl = on;
    }

    /// Takes the next line from `input`; returns it and how many octets were consumed.
    pub fn take(&mut self, input: &[u8]) -> (Line, usize) {
        let Some(pos) = input.iter().position(|&b| b == b'\n') else {
            if input.len() > MAX_AUTH_LINE {
                self.discarding = true;
                return (Line::Incomplete, input.len());
            }
            return (Line::Incomplete, 0);
        };
        let line = &input[..pos + 1];
        let used = pos + 1;
        if std::mem::take(&mut self.discarding) {
            return (Line::Bad(replies::LINE_TOO_LONG), used);
        }
        let body = &line[..line.len() - 1];
        let Some(body) = body.strip_suffix(b"\r") else {
            return (Line::Bad(replies::BARE_NEWLINE), used);
        };
        if body.contains(&b'\r') {
            return (Line::Bad(replies::BARE_NEWLINE), used);
        }
        let limit = if self.sasl {
            MAX_AUTH_LINE
        } else {
            line_limit(body)
        };
        if line.len() > limit {
            return (Line::Bad(replies::LINE_TOO_LONG), used);
        }
        let line = match std::str::from_utf8(body) {
            Ok(s) => Line::Text(s.to_string()),
            Err(_) => Line::Bad(replies::UNKNOWN_COMMAND.with_text("Invalid UTF-8 in command")),
        };
        (line, used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_table() {
        let long = format!("NOOP {}\r\n", "x".repeat(600));
        let long_mail = format!("MAIL FROM:<{}@x.test>\r\n", "a".repeat(1500));
        for (input, line, used) in [
            (&b"NOOP\r\nQUIT\r\n"[..], Line::Text("NOOP".into()), 6),
            (b"NOOP", Line::Incomplete, 0),
            (b"NOOP\n", Line::Bad(replies::BARE_NEWLINE), 5),
            (b"NO\rOP\r\n", Line::Bad(replies::BARE_NEWLINE), 7),
            (
                long.as_bytes(),
                Line::Bad(replies::LINE_TOO_LONG),
                long.len(),
            ),
            (
                long_mail.as_bytes(),
                Line::Text(long_mail.trim_end().into()),
                long_mail.len(),
            ),
            (
                b"\xff\r\n",
                Line::Bad(replies::UNKNOWN_COMMAND.with_text("Invalid UTF-8 in command")),
                3,
            ),
        ] {
            assert_eq!(LineReader::default().take(input), (line, used), "{input:?}");
        }
    }

    #[test]
    fn sasl_responses_may_be_long() {
        let response = format!("{}\r\n", "QUFB".repeat(2000));
        let mut r = LineReader::default();
        assert_eq!(
            r.take(response.as_bytes()).0,
            Line::Bad(replies::LINE_TOO_LONG)
        );
        r.expect_sasl(true);
        assert_eq!(
            r.take(response.as_bytes()).0,
            Line::Text(response.trim_end().into())
        );
    }

    #[test]
    fn endless_line_is_dropped_then_refused_once() {
        let mut r = LineReader::default();
        let junk = vec![b'x'; MAX_AUTH_LINE + 1];
        assert_eq!(r.take(&junk), (Line::Incomplete, junk.len()));
        assert_eq!(
            r.take(b"tail\r\nNOOP\r\n"),
            (Line::Bad(replies::LINE_TOO_LONG), 6)
        );
        assert_eq!(r.take(b"NOOP\r\n"), (Line::Text("NOOP".into()), 6));
    }
}
