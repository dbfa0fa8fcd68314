//! Certificates made at test time for Mend's TLS tests: a private CA, a relay certificate for
//! `localhost` and `127.0.0.1` (valid or expired), a self-signed one, and the SPKI pin a device
//! would hold. Nothing here is for production: keys are made fresh and kept in memory.

use std::{
    io,
    path::{Path, PathBuf},
};

use base64::{Engine, engine::general_purpose::STANDARD};
pub use rcgen::Error;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType, date_time_ymd,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// A private certificate authority.
#[derive(Debug)]
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    /// A new CA named `name` (two CAs may share a name, as an attacker's copy would).
    pub fn new(name: &str) -> Result<Ca, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Ca { issuer })
    }

    /// The CA's certificate, what a device adds to its roots.
    pub fn der(&self) -> &CertificateDer<'static> {
        self.issuer.der()
    }

    /// The CA's certificate in PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A relay certificate for `localhost` and `127.0.0.1`, valid now.
    pub fn leaf(&self) -> Result<Leaf, Error> {
        Leaf::make(Some(&self.issuer), false)
    }

    /// A relay certificate for `localhost` and `127.0.0.1` that expired in 2021.
    pub fn expired_leaf(&self) -> Result<Leaf, Error> {
        Leaf::make(Some(&self.issuer), true)
    }
}

/// A self-signed relay certificate for `localhost` and `127.0.0.1` (a small self-hosted relay,
/// trusted only through its pin).
pub fn self_signed() -> Result<Leaf, Error> {
    Leaf::make(None, false)
}

/// A certificate and its private key.
#[derive(Debug)]
pub struct Leaf {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Leaf {
    fn make(
        issuer: Option<&CertifiedIssuer<'static, KeyPair>>,
        expired: bool,
    ) -> Result<Leaf, Error> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate()?;
        let cert = match issuer {
            Some(issuer) => params.signed_by(&key, issuer)?,
            None => params.self_signed(&key)?,
        };
        Ok(Leaf { cert, key })
    }

    /// The certificate.
    pub fn der(&self) -> &CertificateDer<'static> {
        self.cert.der()
    }

    /// The private key, for a TLS server made in the test.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    /// The certificate in PEM, as `--tls-cert` reads it.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The private key in PEM, as `--tls-key` reads it.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The DER SubjectPublicKeyInfo of its key.
    pub fn spki(&self) -> Vec<u8> {
        self.key.subject_public_key_info()
    }

    /// The pin, `sha256/<base64>` of the SPKI, computed here from the key, independently of
    /// the relay's and the device's own readings of the certificate.
    pub fn pin(&self) -> String {
        format!("sha256/{}", STANDARD.encode(Sha256::digest(self.spki())))
    }

    /// Writes `relay.crt` and `relay.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> io::Result<(PathBuf, PathBuf)> {
        let cert = dir.join("relay.crt");
        let key = dir.join("relay.key");
        std::fs::write(&cert, self.cert_pem())?;
        std::fs::write(&key, self.key_pem())?;
        Ok((cert, key))
    }
}
