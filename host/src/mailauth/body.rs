//! DKIM and ARC body hashes (RFC 6376 3.4.3, 3.4.4 and 3.7) computed as the body is read
//! from the spool, with mail-auth's own incremental `BodyHasher`: mail-auth is given the
//! header section alone, and these in place of the hashes it would compute over a body in
//! one buffer. A large message is never held whole to be verified.

use crate::spool::Content;
use mail_auth::common::crypto::{HashAlgorithm, HashContext, HashImpl, Sha1, Sha256};
use mail_auth::dkim::Canonicalization;
use mail_auth::dkim::canonicalize::BodyHasher;
use std::io;

/// The body hashes a parsed message asks for: canonicalization, algorithm, `l=` (always 0:
/// mail-auth's strict parse refuses the others), and the hash to fill in.
pub type Wanted = (Canonicalization, HashAlgorithm, u64, Vec<u8>);

enum Hasher {
    Sha1(BodyHasher<<Sha1 as HashImpl>::Context>),
    Sha256(BodyHasher<<Sha256 as HashImpl>::Context>),
}

impl Hasher {
    fn new(canonicalization: Canonicalization, algorithm: HashAlgorithm, l: u64) -> Hasher {
        match algorithm {
            HashAlgorithm::Sha1 => {
                Hasher::Sha1(BodyHasher::new(Sha1::hasher(), canonicalization, l))
            }
            HashAlgorithm::Sha256 => {
                Hasher::Sha256(BodyHasher::new(Sha256::hasher(), canonicalization, l))
            }
        }
    }

    fn write(&mut self, block: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.write(block),
            Hasher::Sha256(h) => h.write(block),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finish().0.complete().as_ref().to_vec(),
            Hasher::Sha256(h) => h.finish().0.complete().as_ref().to_vec(),
        }
    }
}

/// Fills in every wanted hash of `body`, reading it once, block by block (blocking when
/// it is on disk).
pub fn fill(wanted: &mut [Wanted], body: &Content) -> io::Result<()> {
    if wanted.is_empty() {
        return Ok(());
    }
    let mut hashers: Vec<Hasher> = wanted
        .iter()
        .map(|(c, a, l, _)| Hasher::new(*c, *a, *l))
        .collect();
    let mut blocks = body.blocks();
    while let Some(block) = blocks.next_blocking()? {
        for h in &mut hashers {
            h.write(&block);
        }
    }
    for (w, h) in wanted.iter_mut().zip(hashers) {
        w.3 = h.finish();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::AuthenticatedMessage;

    /// The hashes mail-auth computes over the whole message, and ours over the body given
    /// in blocks, agree for both canonicalizations and algorithms.
    #[test]
    fn streamed_hashes_are_mail_auths() {
        let sig = |c: &str, a: &str| {
            format!("DKIM-Signature: v=1; a={a}; c={c}; d=x.test; s=s; h=from; bh=AAAA; b=AAAA\r\n")
        };
        let head = format!(
            "{}{}{}From: a@x.test\r\n\r\n",
            sig("relaxed/relaxed", "rsa-sha256"),
            sig("simple/simple", "rsa-sha256"),
            sig("relaxed/simple", "rsa-sha1"),
        );
        let bodies = [
            "".to_string(),
            "\r\n\r\n".to_string(),
            "a  b \t\r\n\r\n c\t\r\n\r\n\r\n".to_string(),
            "no end".to_string(),
            "x \r\n".repeat(70_000),
        ];
        for body in bodies {
            let whole = format!("{head}{body}");
            let parsed = AuthenticatedMessage::parse(whole.as_bytes()).unwrap();
            let want = parsed.body_hashes.clone();
            assert_eq!(want.len(), 3);
            let alone = AuthenticatedMessage::parse(head.as_bytes()).unwrap();
            for block in [1, 7, 4096, 1 << 20] {
                if body.len() / block > 1000 {
                    continue;
                }
                let mut got = alone.body_hashes.clone();
                let pieces: Vec<Content> = body
                    .as_bytes()
                    .chunks(block)
                    .map(|c| Content::from(c.to_vec()))
                    .collect();
                // The body in blocks of `block` octets, as pieces of one content.
                let content = pieces
                    .into_iter()
                    .rev()
                    .fold(Content::from(Vec::new()), |rest, piece| {
                        rest.after(piece.to_vec().unwrap())
                    });
                fill(&mut got, &content).unwrap();
                assert_eq!(
                    got,
                    want,
                    "body {:?}.., blocks of {block}",
                    &body[..body.len().min(20)]
                );
            }
        }
    }
}
