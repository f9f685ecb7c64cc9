//! Command lines: `LineReader` framing and `parse_command`.
//!
//! Checks: framing never panics, consumes at most what it was given, returns only CRLF-free
//! lines within the length limit (the AUTH limit for the line after an `AUTH` command
//! without initial response, read as a SASL response as the session does), and frames the same lines whatever the read sizes (only
//! which 500 reply a line longer than the AUTH limit gets may differ); every framed line and
//! the whole input (if UTF-8) go through `parse_command`, whose MAIL/RCPT results rendered
//! back to the wire parse to the same command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmtp_fuzz::proto::command::{Command, MAX_AUTH_LINE, RcptPath, line_limit, parse_command};
use wasmtp_fuzz::proto::line::{Line, LineReader};

#[derive(Debug, PartialEq)]
enum Event {
    Text(String),
    Bad,
}

fn wire(params: Vec<wasmtp_fuzz::proto::params::Param>) -> String {
    params.iter().map(|p| format!(" {p}")).collect()
}

fn check_command(line: &str) {
    match parse_command(line) {
        Ok(Command::Mail(from, params)) => {
            let path = from.as_ref().map(ToString::to_string).unwrap_or_default();
            let again = format!("MAIL FROM:<{path}>{}", wire(params.to_wire()));
            assert_eq!(
                parse_command(&again),
                Ok(Command::Mail(from, params)),
                "{again:?}"
            );
        }
        Ok(Command::Rcpt(to, params)) => {
            let path = match &to {
                RcptPath::Mailbox(m) => m.to_string(),
                RcptPath::Postmaster => "Postmaster".into(),
            };
            let again = format!("RCPT TO:<{path}>{}", wire(params.to_wire()));
            assert_eq!(
                parse_command(&again),
                Ok(Command::Rcpt(to, params)),
                "{again:?}"
            );
        }
        Ok(Command::Bdat { size, last }) => {
            let again = format!("BDAT {size}{}", if last { " LAST" } else { "" });
            assert_eq!(parse_command(&again), Ok(Command::Bdat { size, last }));
        }
        Ok(_) => {}
        Err(e) => {
            let reply = e.reply();
            assert!((500..600).contains(&reply.code), "{e:?} -> {reply:?}");
        }
    }
}

/// Frames `data` as a session would, appending reads of `step` octets to a buffer.
fn frame(data: &[u8], step: usize) -> Vec<Event> {
    let mut reader = LineReader::default();
    let mut events = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut sasl = false;
    for read in data.chunks(step) {
        buf.extend_from_slice(read);
        loop {
            let (line, used) = reader.take(&buf);
            assert!(used <= buf.len(), "used {used} of {}", buf.len());
            match line {
                Line::Text(text) => {
                    assert!(!text.contains(['\r', '\n']), "{text:?}");
                    assert_eq!(used, text.len() + 2);
                    assert_eq!(&buf[used - 2..used], b"\r\n");
                    let limit = if sasl {
                        MAX_AUTH_LINE
                    } else {
                        line_limit(text.as_bytes())
                    };
                    assert!(used <= limit, "{used} octets");
                    // The session expects a SASL response after `AUTH mech` alone.
                    sasl = !sasl
                        && matches!(
                            parse_command(&text),
                            Ok(Command::Auth { initial: None, .. })
                        );
                    reader.expect_sasl(sasl);
                    events.push(Event::Text(text));
                }
                Line::Bad(reply) => {
                    assert!(used > 0);
                    assert_eq!(buf[used - 1], b'\n');
                    assert_eq!(reply.code, 500);
                    sasl = false;
                    reader.expect_sasl(false);
                    events.push(Event::Bad);
                }
                Line::Incomplete if used == 0 => {
                    assert!(!buf.contains(&b'\n'));
                    break;
                }
                // An over-long line without its end yet: dropped whole.
                Line::Incomplete => assert_eq!(used, buf.len()),
            }
            buf.drain(..used);
        }
    }
    events
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        check_command(s);
    }
    let whole = frame(data, data.len().max(1));
    for e in &whole {
        if let Event::Text(t) = e {
            check_command(t);
        }
    }
    // Small reads only on small inputs: each take scans the whole buffer.
    let steps: &[usize] = &[1, 2, 3, 7, 64, 513, 4096];
    let pick = data.first().map_or(0, |b| *b as usize) % steps.len();
    let step = if data.len() > 2048 {
        steps[pick].max(513)
    } else {
        steps[pick]
    };
    assert_eq!(frame(data, step), whole, "read size {step}");
});
