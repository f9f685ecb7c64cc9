//! DKIM signing (RFC 6376, RFC 8463) of mail from our own users, with the `[[dkim]]` keys;
//! and `wasmtp dkim-keygen`.

use super::key::{KeyProblem, PrivateKey, private_key};
use crate::config::Dkim;
use crate::spool::Content;
use base64::Engine;
use mail_auth::common::crypto::{Ed25519Key, HashContext, HashImpl, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, DkimSigningStream, Done, Signature};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::EncodePublicKey;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{what}.private_key: {path}: {reason}")]
    Load {
        what: String,
        path: String,
        reason: KeyProblem,
    },
    #[error("key generation failed: {0}")]
    Generate(String),
}

/// Why a signature could not be made: the body could not be read, or mail-auth refused.
#[derive(Debug, thiserror::Error)]
enum SignError {
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("{0}")]
    Sign(#[from] mail_auth::Error),
}

/// A loaded key, ready to sign.
enum Key {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

pub struct Signer {
    config: Dkim,
    key: Key,
}

/// The `[[dkim]]` keys, in config order, and the `[arc]` one.
#[derive(Default)]
pub struct Signers {
    dkim: Vec<Signer>,
    arc: Option<super::seal::Sealer>,
}

impl Signers {
    /// Reads every key; each one that cannot be used is a problem of its own.
    pub fn load(
        config: &[Dkim],
        arc: Option<&crate::config::ArcSeal>,
    ) -> Result<Signers, Vec<KeyError>> {
        let mut signers = Signers::default();
        let mut errors = Vec::new();
        for (index, d) in config.iter().enumerate() {
            match read_key(&d.private_key, d) {
                Ok(key) => signers.dkim.push(Signer {
                    config: d.clone(),
                    key,
                }),
                Err(reason) => errors.push(KeyError::Load {
                    what: format!("dkim[{index}]"),
                    path: d.private_key.display().to_string(),
                    reason,
                }),
            }
        }
        if let Some(arc) = arc {
            match private_key(&arc.private_key) {
                Ok(key) => signers.arc = Some(super::seal::Sealer::new(arc, key)),
                Err(reason) => errors.push(KeyError::Load {
                    what: "arc".into(),
                    path: arc.private_key.display().to_string(),
                    reason,
                }),
            }
        }
        if errors.is_empty() {
            Ok(signers)
        } else {
            Err(errors)
        }
    }

    /// No `[[dkim]]` key: our users' mail goes unsigned.
    pub fn is_empty(&self) -> bool {
        self.dkim.is_empty()
    }

    /// Does `[arc]` have us seal the mail we verify?
    pub fn seals(&self) -> bool {
        self.arc.is_some()
    }

    /// Our ARC set for the message of `head` (our fields), `header` and `body`, as it
    /// leaves, with `auth`, what we found of it as `authserv_id` (its chain's validation
    /// among them). Hashed on a blocking thread when the body is on disk.
    pub async fn seal(
        self: &Arc<Self>,
        authserv_id: &str,
        auth: &super::AuthResults,
        head: &[u8],
        header: &[u8],
        body: &Content,
    ) -> Option<String> {
        self.arc.as_ref()?;
        let field = super::authentication_results(authserv_id, auth);
        let results = field
            .strip_prefix("Authentication-Results: ")
            .unwrap_or(&field)
            .trim_end()
            .to_string();
        let chain = auth.arc.status;
        let signers = self.clone();
        let mut whole = head.to_vec();
        whole.extend_from_slice(header);
        let body = body.clone();
        let on_disk = body.on_disk();
        let seal = move || signers.arc.as_ref()?.seal(&results, chain, &whole, &body);
        if on_disk {
            tokio::task::spawn_blocking(seal).await.ok().flatten()
        } else {
            seal()
        }
    }

    /// `sign` for our users' mail: an authenticated `user` only as a From address of
    /// theirs (as for MAIL FROM), so that one user cannot have mail signed for another's
    /// domain; a relay client (no user) as any. Hashed on a blocking thread when the body
    /// is on disk.
    pub async fn sign_for(
        self: &Arc<Self>,
        config: &Arc<crate::config::Config>,
        user: Option<String>,
        head: &[u8],
        header: &[u8],
        body: &Content,
    ) -> Option<String> {
        let (signers, config) = (self.clone(), config.clone());
        let on_disk = body.on_disk();
        let (head, header, body) = (head.to_vec(), header.to_vec(), body.clone());
        let sign = move || {
            let owns = |from: &crate::proto::Mailbox| match &user {
                Some(user) => config.user_owns(user, from),
                None => true,
            };
            signers.sign(&head, &header, &body, owns)
        };
        if on_disk {
            tokio::task::spawn_blocking(sign).await.ok().flatten()
        } else {
            sign()
        }
    }

    /// A DKIM-Signature field (with its line ending) for the message made of `head` (our
    /// fields), its `header` section and its `body` (hashed as it is read: blocking when on
    /// disk), by the first key whose domain is the From domain or a parent of it; `None`
    /// when no key fits, when the From addresses are not of one domain, or when `may_use`
    /// refuses one of them.
    pub fn sign(
        &self,
        head: &[u8],
        header: &[u8],
        body: &Content,
        may_use: impl Fn(&crate::proto::Mailbox) -> bool,
    ) -> Option<String> {
        let addresses = super::from_addresses(&[head, header]);
        let from = super::domain_of(addresses.first()?);
        if addresses.iter().any(|a| super::domain_of(a) != from) {
            return None;
        }
        for a in &addresses {
            let owned = crate::proto::address::parse_mailbox(a).is_ok_and(|m| may_use(&m));
            if !owned {
                tracing::info!(from = %a, "not signed: the sender may not use this From address");
                return None;
            }
        }
        let signer = self.dkim.iter().find(|s| s.config.signs_for(&from))?;
        let signed = match &signer.key {
            Key::Rsa(k) => streamed(k.sign_streaming(), &[head, header], body),
            Key::Ed25519(k) => streamed(k.sign_streaming(), &[head, header], body),
        };
        match signed {
            Ok(signature) => Some(unfold_end(signature.to_header())),
            Err(e) => {
                tracing::warn!(domain = %signer.config.domain, error = %e, "DKIM signing failed; sent unsigned");
                None
            }
        }
    }
}

/// A signature over `parts`, then `body` a block at a time (mail-auth hashes the body as it
/// comes: the message is never joined in memory).
fn streamed<T: SigningKey>(
    mut stream: DkimSigningStream<'_, T>,
    parts: &[&[u8]],
    body: &Content,
) -> Result<Signature, SignError>
where
    <<T as SigningKey>::Hasher as HashImpl>::Context: HashContext,
{
    for part in parts {
        stream.write(part);
    }
    let mut blocks = body.blocks();
    while let Some(block) = blocks.next_blocking()? {
        stream.write(&block);
    }
    Ok(stream.finish()?)
}

/// mail-auth may fold the field just before its closing `;`, after the `b=` value. The
/// signature was computed with nothing there, and RFC 6376 3.7 deletes only the value of
/// `b=`: a verifier that keeps the folding white space (dkimpy, OpenDKIM) then fails it.
fn unfold_end(header: String) -> String {
    match header.strip_suffix("\r\n\t;\r\n") {
        Some(head) => format!("{head};\r\n"),
        None => header,
    }
}

fn read_key(path: &Path, config: &Dkim) -> Result<Key, KeyProblem> {
    let headers = config.signed_headers();
    macro_rules! signer {
        ($key:expr) => {
            DkimSigner::from_key($key)
                .domain(&config.domain)
                .selector(&config.selector)
                .headers(headers.clone())
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed)
        };
    }
    Ok(match private_key(path)? {
        PrivateKey::Rsa(k) => Key::Rsa(signer!(k)),
        PrivateKey::Ed25519(k) => Key::Ed25519(signer!(k)),
    })
}

/// `wasmtp dkim-keygen`: a new key, as PEM, and the TXT record that publishes it.
pub struct GeneratedKey {
    pub private_pem: String,
    /// `SELECTOR._domainkey.DOMAIN.`
    pub name: String,
    /// The record's text, split in strings of at most 255 octets (RFC 1035 3.3.14).
    pub txt: Vec<String>,
}

/// A key pair: RSA of `bits` (PKCS#1 PEM; ring, which signs, takes 2048-4096 bits), or
/// Ed25519 (PKCS#8 PEM) when `bits` is `None`.
pub fn keygen(
    domain: &str,
    selector: &str,
    rsa_bits: Option<usize>,
) -> Result<GeneratedKey, KeyError> {
    let generate = |e: &dyn std::fmt::Display| KeyError::Generate(e.to_string());
    let base64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let (private_pem, k, public) = match rsa_bits {
        Some(bits) => {
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
                .map_err(|e| generate(&e))?;
            let pem = key
                .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
                .map_err(|e| generate(&e))?;
            let spki = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| generate(&e))?;
            (pem.to_string(), "rsa", spki.as_bytes().to_vec())
        }
        None => {
            let pkcs8 = Ed25519Key::generate_pkcs8().map_err(|e| generate(&e))?;
            let key = Ed25519Key::from_pkcs8_der(&pkcs8).map_err(|e| generate(&e))?;
            let lines: Vec<String> = base64(&pkcs8)
                .as_bytes()
                .chunks(64)
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect();
            let pem = format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                lines.join("\n")
            );
            // RFC 8463 4.2: the bare 32-octet public key.
            (pem, "ed25519", key.public_key())
        }
    };
    let p = base64(&public);
    let record = format!("v=DKIM1; k={k}; p={p}");
    let txt = record
        .as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    Ok(GeneratedKey {
        private_pem,
        name: format!("{selector}._domainkey.{domain}."),
        txt,
    })
}
