//! The header section scanner (`proto::header`): fields, body start, field removal, used on
//! every received message (trace-field count, forged Authentication-Results, the DKIM
//! signature cap, plugin header removals).
//!
//! Checks: nothing panics; fields are in order, do not overlap, cover the header section
//! from its first field without gaps, and each starts with its name; removing every other
//! field gives exactly the rest, in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmtp_fuzz::proto::header;

fuzz_target!(|data: &[u8]| {
    let fields: Vec<header::Field<'_>> = header::fields(data).collect();
    for pair in fields.windows(2) {
        assert_eq!(pair[0].range.end, pair[1].range.start, "a gap or an overlap");
    }
    for f in &fields {
        assert!(f.range.start < f.range.end && f.range.end <= data.len());
        assert!(data[f.range.clone()].trim_ascii_start().starts_with(f.name) || f.name.is_empty());
    }
    let mut n = 0;
    let cut = header::without(data, |_| {
        n += 1;
        n % 2 == 0
    });
    let kept: Vec<u8> = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .flat_map(|(_, f)| data[f.range.clone()].to_vec())
        .collect();
    match cut {
        None => assert!(fields.len() < 2),
        Some(out) => {
            let start = fields.first().map_or(0, |f| f.range.start);
            let end = fields.last().map_or(0, |f| f.range.end);
            assert_eq!(&out[..start], &data[..start]);
            assert_eq!(&out[start..start + kept.len()], &kept[..]);
            assert_eq!(&out[start + kept.len()..], &data[end..]);
        }
    }
});
