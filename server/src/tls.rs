//! TLS served by the relay itself: the certificate and key from PEM files, a resolver whose
//! certificate is swapped in place on reload (SIGHUP), and the SPKI pin devices may hold.
//!
//! Only the `ring` provider is built: aws-lc-rs needs CMake to cross-compile and is larger.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

/// The PEM files of the relay's certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, end-entity certificate first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why a certificate or key could not be loaded. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read or holds no usable PEM item.
    #[error("{path}: {reason}")]
    File {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate and key were read but do not make a usable pair.
    #[error("{cert} with {key}: {reason}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What is wrong with the pair.
        reason: String,
    },
}

fn file_error(path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The provider every TLS object of the relay uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the certificate chain of a PEM file, end-entity first.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|error| file_error(path, error))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(path, format!("not a PEM certificate: {error}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    // The key bytes are dropped here; rustls keeps its own parsed copy.
    let bytes =
        zeroize::Zeroizing::new(std::fs::read(path).map_err(|error| file_error(path, error))?);
    // The parse error never quotes the key.
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|error| file_error(path, format!("no usable PEM private key: {error}")))
}

/// The pin of an end-entity certificate: `sha256/` and the base64 (standard, padded) of the
/// SHA-256 of its DER SubjectPublicKeyInfo. It survives renewals that keep the key.
pub fn spki_pin(cert: &CertificateDer<'_>) -> Result<String, String> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|error| error.to_string())?;
    let spki = parsed.subject_public_key_info();
    let digest = Sha256::digest(spki.as_ref());
    Ok(format!("sha256/{}", STANDARD.encode(digest)))
}

/// The pin of the first certificate of a PEM file.
pub fn pin_of_file(path: &Path) -> Result<String, TlsError> {
    let certs = read_certs(path)?;
    let first = certs
        .first()
        .ok_or_else(|| file_error(path, "no certificate"))?;
    spki_pin(first)
        .map_err(|reason| file_error(path, format!("not a usable certificate: {reason}")))
}

/// A loaded certificate and key with the pin of the certificate.
struct Loaded {
    key: Arc<CertifiedKey>,
    pin: String,
}

fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let certs = read_certs(&files.cert)?;
    let pin = certs
        .first()
        .map(spki_pin)
        .transpose()
        .map_err(|reason| file_error(&files.cert, format!("not a usable certificate: {reason}")))?
        .unwrap_or_default();
    let key = read_key(&files.key)?;
    let certified =
        CertifiedKey::from_der(certs, key, &provider()).map_err(|error| TlsError::Pair {
            cert: files.cert.clone(),
            key: files.key.clone(),
            reason: error.to_string(),
        })?;
    Ok(Loaded {
        key: Arc::new(certified),
        pin,
    })
}

/// Hands every handshake the current certificate; [`Tls::reload`] swaps it. Connections
/// already established keep the session they negotiated.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// The relay's TLS: an acceptor for the accept loop and the files it reloads from.
#[derive(Clone)]
pub struct Tls {
    files: TlsFiles,
    resolver: Arc<Resolver>,
    acceptor: TlsAcceptor,
    pin: Arc<RwLock<String>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .field("pin", &self.pin())
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificate and key; an unreadable or invalid file is an error naming it.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let loaded = load(files)?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(loaded.key),
        });
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| file_error(&files.cert, error))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            files: files.clone(),
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            pin: Arc::new(RwLock::new(loaded.pin)),
        })
    }

    /// Re-reads the files. On success new handshakes get the new certificate and its pin is
    /// returned; on failure the current certificate stays.
    pub fn reload(&self) -> Result<String, TlsError> {
        let loaded = load(&self.files)?;
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = loaded.key;
        *self.pin.write().unwrap_or_else(PoisonError::into_inner) = loaded.pin.clone();
        Ok(loaded.pin)
    }

    /// The pin of the certificate being served.
    pub fn pin(&self) -> String {
        self.pin
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The acceptor for incoming connections.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}
