//! DATA content: `DataReceiver` against a plain reference model.
//!
//! Input: byte 0 picks the split point of the content (and a read size), byte 1 the size cap,
//! the rest is the content stream. Checks: `used <= len`; not done means all was used; done
//! exactly after the first `CRLF . CRLF` (counting the start of DATA as after a CRLF) and never
//! elsewhere; the result does not depend on how the stream is split into reads; the message is
//! the content with line-start dots removed, its bare CR/LF flag is right, and the size cap only
//! truncates (a prefix, `too_large` set).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmtp_fuzz::proto::data::{DataReceiver, Received};

const END: &[u8] = b"\r\n.\r\n";

/// Removes a `.` at the start of data or right after CRLF (RFC 5321 4.5.2).
fn unstuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    for (i, &b) in body.iter().enumerate() {
        let line_start = i == 0 || (i >= 2 && &body[i - 2..i] == b"\r\n");
        if !(b == b'.' && line_start) {
            out.push(b);
        }
    }
    out
}

/// A CR not followed by LF or an LF not preceded by CR (a trailing CR counts).
fn has_bare(body: &[u8]) -> bool {
    body.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => body.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || body[i - 1] != b'\r',
        _ => false,
    })
}

/// Feeds reads of `step` octets; returns octets used, done, and the result.
fn feed(content: &[u8], max: usize, cuts: &[usize]) -> (usize, bool, Vec<u8>, Received) {
    let mut r = DataReceiver::new(max);
    let mut message = Vec::new();
    let mut used = 0;
    let mut done = false;
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&content.len())) {
        let read = &content[from..to];
        let (n, d) = r.ingest(read, &mut message);
        assert!(n <= read.len(), "used {n} of {}", read.len());
        used += n;
        if d {
            assert!(n > 0);
            done = true;
            break;
        }
        assert_eq!(n, read.len(), "not done but did not use all");
        from = to;
    }
    (used, done, message, r.finish())
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (seed, cap, content) = (data[0] as usize, data[1], &data[2..]);
    let max = if cap & 0x80 == 0 {
        cap as usize
    } else {
        usize::MAX
    };

    let (used, done, message, got) = feed(content, max, &[]);
    // Split in two at a point from byte 0, and in reads of 1..=8 octets.
    let split = seed * content.len() / 255;
    let two = feed(content, max, &[split]);
    let step = seed % 8 + 1;
    let small: Vec<usize> = (step..content.len()).step_by(step).collect();
    let many = feed(content, max, &small);
    for (what, other) in [("split", &two), ("small reads", &many)] {
        assert_eq!((other.0, other.1), (used, done), "{what}");
        assert_eq!(other.2, message, "{what}");
        assert_eq!(other.3.too_large, got.too_large, "{what}");
        assert_eq!(other.3.bare_newline, got.bare_newline, "{what}");
    }

    // The end is the first CRLF.CRLF, with DATA itself counting as a line start.
    let mut hay = b"\r\n".to_vec();
    hay.extend_from_slice(content);
    let end = hay
        .windows(END.len())
        .position(|w| w == END)
        .map(|p| p + END.len() - 2);
    assert_eq!(done.then_some(used), end);
    if !done {
        assert_eq!(used, content.len());
    }

    // What the message must be: the content before the end line (or, while not done, the
    // content less a trailing CR still waiting for its LF), unstuffed.
    let body = if done {
        &content[..used - 3]
    } else {
        content.strip_suffix(b"\r").unwrap_or(content)
    };
    let want = unstuff(body);
    assert_eq!(got.bare_newline, has_bare(body));
    assert_eq!(got.too_large, want.len() > max);
    if got.too_large {
        assert!(message.len() <= max);
        assert!(want.starts_with(&message));
    } else {
        assert_eq!(message, want);
    }
    if done && !got.too_large {
        assert!(message.is_empty() || message.ends_with(b"\r\n"));
    }
});
