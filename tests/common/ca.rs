//! A certificate authority made in the test (rcgen), and server certificates it signs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct TestCa {
    /// Its certificate, PEM: a route's `ca`.
    pub pem: PathBuf,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    dir: PathBuf,
}

impl TestCa {
    /// A CA whose files live in `dir`.
    pub fn new(dir: &Path) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.join("ca.pem");
        std::fs::write(&pem, cert.pem()).unwrap();
        TestCa {
            pem,
            cert,
            key,
            dir: dir.to_path_buf(),
        }
    }

    /// A server config with a certificate for `names` signed by this CA.
    pub fn server(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = rcgen::CertificateParams::new(names.clone())
            .unwrap()
            .signed_by(&key, &self.cert, &self.key)
            .unwrap();
        let stem = names.join("+");
        let certificate = self.dir.join(format!("{stem}.pem"));
        let private_key = self.dir.join(format!("{stem}.key"));
        std::fs::write(&certificate, leaf.pem()).unwrap();
        std::fs::write(&private_key, key.serialize_pem()).unwrap();
        wasmtp::tls::load_server_config(&wasmtp::config::Tls {
            certificate,
            private_key,
        })
        .unwrap()
    }
}
