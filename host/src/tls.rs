//! rustls configuration: the server side from the `[tls]` PEM files, and the client sides
//! used for delivery:
//! - `tls = "opportunistic"`: encryption without authentication (RFC 7435, Postfix's "may"
//!   level): MX hosts rarely have certificates for the names we reach them by, and a failed
//!   check would only make us send in the clear instead.
//! - `tls = "required"`: the certificate chain must lead to a trust anchor (Mozilla's roots
//!   from `webpki-roots`, or the route's `ca` file) and name the host we connect to
//!   (Postfix's "secure" level). DANE and MTA-STS are not implemented.

use crate::config::Tls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why the `[tls]` files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key} {}: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key} {}: no PEM {what} found", path.display())]
    Missing {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("certificate and private_key do not form a usable pair: {0}")]
    Pair(rustls::Error),
    #[error("{key} {}: not a usable trust anchor: {source}", path.display())]
    Anchor {
        key: &'static str,
        path: PathBuf,
        source: rustls::Error,
    },
}

fn read_failed<'a>(
    key: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> TlsError + 'a {
    move |source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    }
}

/// Loads the certificate chain and key named by `[tls]`.
pub fn load_server_config(tls: &Tls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_pem =
        std::fs::read(&tls.certificate).map_err(read_failed("certificate", &tls.certificate))?;
    let key_pem =
        std::fs::read(&tls.private_key).map_err(read_failed("private_key", &tls.private_key))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(read_failed("certificate", &tls.certificate))?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            key: "certificate",
            path: tls.certificate.clone(),
            what: "certificate",
        });
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(read_failed("private_key", &tls.private_key))?
        .ok_or_else(|| TlsError::Missing {
            key: "private_key",
            path: tls.private_key.clone(),
            what: "private key",
        })?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Pair)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Pair)?;
    Ok(Arc::new(config))
}

/// Client config for opportunistic delivery: encryption without authentication (see
/// module docs). Built once.
pub fn delivery_client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = provider();
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Trust anchors as a client config (for handshakes that must verify) and as a verifier
/// (for a chain checked after a handshake that did not, MTA-STS `testing`).
#[derive(Clone)]
pub struct Anchors {
    pub config: Arc<rustls::ClientConfig>,
    pub verifier: Arc<dyn ServerCertVerifier>,
}

/// The trust anchors of the routes that verify certificates, by their `ca` (`None`:
/// Mozilla's roots): `tls = "required"` routes, and MX routes while `delivery.mta_sts` is
/// on. Built once per config load, so a delivery attempt reads no file.
#[derive(Default)]
pub struct RouteTls(std::collections::HashMap<Option<PathBuf>, Anchors>);

impl RouteTls {
    /// Every verifying route's anchors; each one that cannot be made, named by its route's
    /// index.
    pub fn load(
        routes: &[crate::config::Route],
        mta_sts: bool,
    ) -> Result<RouteTls, Vec<(usize, TlsError)>> {
        let mut built = RouteTls::default();
        let mut errors = Vec::new();
        let verifying = routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.verifies(mta_sts));
        for (i, route) in verifying {
            if built.0.contains_key(&route.ca) {
                continue;
            }
            match anchors(route.ca.as_deref()) {
                Ok(anchors) => drop(built.0.insert(route.ca.clone(), anchors)),
                Err(e) => errors.push((i, e)),
            }
        }
        if errors.is_empty() {
            Ok(built)
        } else {
            Err(errors)
        }
    }

    /// The anchors `ca` (loaded with every verifying route's).
    pub fn get(&self, ca: &Option<PathBuf>) -> Option<Anchors> {
        self.0.get(ca).cloned()
    }
}

/// Trust anchors for verifying routes: the certificates in `ca` (PEM), or Mozilla's roots
/// without one.
pub fn verifying_client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    Ok(anchors(ca)?.config)
}

fn anchors(ca: Option<&Path>) -> Result<Anchors, TlsError> {
    static SYSTEM: OnceLock<Anchors> = OnceLock::new();
    let Some(ca) = ca else {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        return Ok(SYSTEM.get_or_init(|| verifying(roots)).clone());
    };
    let pem = std::fs::read(ca).map_err(read_failed("ca", ca))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        let cert = cert.map_err(read_failed("ca", ca))?;
        roots.add(cert).map_err(|source| TlsError::Anchor {
            key: "ca",
            path: ca.to_path_buf(),
            source,
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::Missing {
            key: "ca",
            path: ca.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(verifying(roots))
}

fn verifying(roots: rustls::RootCertStore) -> Anchors {
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .expect("a root store with certificates");
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    Anchors {
        config: Arc::new(config),
        verifier,
    }
}

#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    // Signatures are still checked: the peer must hold the key of the certificate it shows.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
