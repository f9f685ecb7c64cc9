//! Private keys from PEM files, as DKIM signing (`[[dkim]]`) and ARC sealing (`[arc]`) use
//! them: RSA (PKCS#1 or PKCS#8; ring signs with 2048-4096 bits) or Ed25519 (PKCS#8).

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256, SigningKey};
use rustls::pki_types::PrivateKeyDer;
use std::path::Path;

/// Why a key file cannot sign.
#[derive(Debug, thiserror::Error)]
pub enum KeyProblem {
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("no private key in the PEM file")]
    NoKey,
    #[error("not a usable RSA key (2048-4096 bits): {0}")]
    Rsa(mail_auth::Error),
    #[error("an EC key: DKIM signs with RSA or Ed25519 (RFC 8463)")]
    Ec,
}

/// A private key as it signs: RSA (2048-4096 bits: ring's) or Ed25519.
pub(super) enum PrivateKey {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

impl PrivateKey {
    pub(super) fn sign(&self, data: &[u8]) -> mail_auth::Result<Vec<u8>> {
        match self {
            PrivateKey::Rsa(k) => k.sign(data),
            PrivateKey::Ed25519(k) => k.sign(data),
        }
    }

    pub(super) fn algorithm(&self) -> mail_auth::common::crypto::Algorithm {
        match self {
            PrivateKey::Rsa(k) => k.algorithm(),
            PrivateKey::Ed25519(k) => k.algorithm(),
        }
    }
}

/// The key in a PEM file: RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8).
pub(super) fn private_key(path: &Path) -> Result<PrivateKey, KeyProblem> {
    let pem = std::fs::read(path)?;
    let der = rustls_pemfile::private_key(&mut pem.as_slice())?.ok_or(KeyProblem::NoKey)?;
    // ring signs with RSA keys of 2048-4096 bits (RFC 8301 asks for at least 1024).
    let rsa = |der: PrivateKeyDer<'_>| {
        RsaKey::<Sha256>::from_key_der(der)
            .map(PrivateKey::Rsa)
            .map_err(KeyProblem::Rsa)
    };
    match der {
        PrivateKeyDer::Pkcs1(_) => rsa(der),
        PrivateKeyDer::Pkcs8(k) => {
            match Ed25519Key::from_pkcs8_maybe_unchecked_der(k.secret_pkcs8_der()) {
                Ok(key) => Ok(PrivateKey::Ed25519(key)),
                Err(_) => rsa(PrivateKeyDer::Pkcs8(k)),
            }
        }
        _ => Err(KeyProblem::Ec),
    }
}
