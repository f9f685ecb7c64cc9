//! BDAT: `BdatChunk` counting octets off the input and `BdatReceiver` collecting them.
//!
//! Input: byte 0 the size cap, byte 1 the read size, byte 2 the number of chunks n, then n
//! size octets (255 = u64::MAX, else the value), then the octet stream. Checks: each chunk
//! takes exactly min(size, what is left) octets, a prefix of each read, and is complete
//! exactly when it got its size; the total taken is min(sum of sizes, stream length); the
//! message is the octets taken (CRLF added if missing), past the cap a prefix of them;
//! `too_large` is right, and the bare CR/LF flag matches a scan of all octets at once,
//! whatever the chunk and read boundaries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmtp_fuzz::proto::data::{BdatChunk, BdatReceiver};

fn has_bare(body: &[u8]) -> bool {
    body.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => body.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || body[i - 1] != b'\r',
        _ => false,
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let max = if data[0] & 0x80 == 0 {
        data[0] as u64
    } else {
        u64::MAX
    };
    let step = data[1] as usize % 16 + 1;
    let n = (data[2] % 8) as usize;
    let Some(sizes) = data.get(3..3 + n) else {
        return;
    };
    let sizes: Vec<u64> = sizes
        .iter()
        .map(|&s| if s == 255 { u64::MAX } else { s as u64 })
        .collect();
    let stream = &data[3 + n..];

    let mut receiver = BdatReceiver::new(max);
    let mut message = Vec::new();
    let mut taken = Vec::new();
    let mut left = stream;
    for &size in &sizes {
        let mut chunk = BdatChunk::new(size);
        assert_eq!(chunk.is_complete(), size == 0);
        let want = size.min(left.len() as u64) as usize;
        let mut got = 0usize;
        while !left.is_empty() && !chunk.is_complete() {
            let read = &left[..step.min(left.len())];
            let part = chunk.take(read);
            assert!(part.len() <= read.len());
            assert_eq!(part, &read[..part.len()], "not a prefix");
            if part.len() < read.len() {
                assert!(chunk.is_complete(), "stopped short of the read");
            }
            receiver.ingest(part, &mut message);
            taken.extend_from_slice(part);
            got += part.len();
            left = &left[part.len()..];
        }
        assert_eq!(got, want, "chunk of {size} with {} left", left.len() + got);
        assert_eq!(chunk.is_complete(), got as u64 == size);
        if chunk.is_complete() {
            assert!(chunk.take(left).is_empty());
        }
    }
    let total: u64 = sizes.iter().fold(0u64, |a, &s| a.saturating_add(s));
    assert_eq!(taken.len() as u64, total.min(stream.len() as u64));

    let too_large = taken.len() as u64 > max;
    assert_eq!(receiver.too_large(), too_large);
    let done = receiver.finish(&mut message);
    assert_eq!(done.too_large, too_large);
    assert_eq!(done.bare_newline, has_bare(&taken));
    if too_large {
        // Octets up to the cap are kept: a prefix of those taken.
        let m = &message;
        assert!(
            taken.starts_with(m) && m.len() as u64 <= max,
            "kept {m:?} of {taken:?}, cap {max}"
        );
    } else {
        let mut want = taken.clone();
        if !want.is_empty() && !want.ends_with(b"\r\n") {
            want.extend_from_slice(b"\r\n");
        }
        assert_eq!(message, want);
    }
});
