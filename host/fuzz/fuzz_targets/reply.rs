//! Replies from a next hop: `Reply::parse` and `write_to`.
//!
//! Checks: nothing panics; a parsed reply used at least one octet and at most the input,
//! ending at a LF, and parses the same from just those octets; written with `write_to` it
//! parses again, whole, to the same code, indeed to an equal reply (as the unit test
//! `parses_what_it_writes` has it), and writing that gives the same bytes again.
//!
//! regressions/ keeps the two inputs that once broke the round trip (a code below 100;
//! invalid UTF-8 that grew past the line limit once replaced).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmtp_fuzz::proto::reply::Reply;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((reply, used))) = Reply::parse(data) else {
        return;
    };
    assert!(
        used > 0 && used <= data.len(),
        "used {used} of {}",
        data.len()
    );
    assert_eq!(data[used - 1], b'\n');
    assert_eq!(
        Reply::parse(&data[..used]),
        Ok(Some((reply.clone(), used))),
        "depends on what follows"
    );
    let _ = (reply.to_string(), reply.is_positive(), reply.is_transient());

    let mut out = Vec::new();
    reply.write_to(&mut out);
    let again = Reply::parse(&out);
    let Ok(Some((again, again_used))) = again else {
        panic!(
            "{reply:?} wrote {:?}, parsed as {again:?}",
            String::from_utf8_lossy(&out)
        );
    };
    assert_eq!(again_used, out.len());
    assert_eq!(again.code, reply.code);
    assert_eq!(again, reply, "wrote {:?}", String::from_utf8_lossy(&out));
    let mut out2 = Vec::new();
    again.write_to(&mut out2);
    assert_eq!(
        String::from_utf8_lossy(&out2),
        String::from_utf8_lossy(&out),
        "second write differs"
    );
});
