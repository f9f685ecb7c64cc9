//! rustls configuration: the server side from the `[tls]` PEM files, and the client side used
//! for delivery. Delivery TLS is opportunistic or mandatory encryption without certificate
//! authentication (RFC 7435; Postfix's "may" and "encrypt" levels): MX hosts rarely have
//! certificates for the names we reach them by, and DANE/MTA-STS are not implemented.

use crate::config::Tls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads the certificate chain and key named by `[tls]`.
pub fn load_server_config(tls: &Tls) -> Result<Arc<rustls::ServerConfig>, String> {
    let cert_pem = std::fs::read(&tls.certificate)
        .map_err(|e| format!("certificate {}: {e}", tls.certificate.display()))?;
    let key_pem = std::fs::read(&tls.private_key)
        .map_err(|e| format!("private_key {}: {e}", tls.private_key.display()))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate {}: {e}", tls.certificate.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "certificate {}: no PEM certificate found",
            tls.certificate.display()
        ));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| format!("private_key {}: {e}", tls.private_key.display()))?
        .ok_or_else(|| {
            format!(
                "private_key {}: no PEM private key found",
                tls.private_key.display()
            )
        })?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and private_key do not form a usable pair: {e}"))?;
    Ok(Arc::new(config))
}

/// Client config for delivery: encryption without authentication (see module docs).
pub fn delivery_client_config() -> Arc<rustls::ClientConfig> {
    let provider = provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    Arc::new(config)
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
