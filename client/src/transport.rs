//! Where the device's connections to the relay go and how they are secured: `https://` and
//! `wss://` through rustls (ring, TLS 1.3 only, the Mozilla roots compiled in, or a pin), and
//! clear text only to this machine or with a loudly named opt-in.
//!
//! The HTTP client and the live WebSocket both run over [`Stream`], so both get the same
//! verification and the same refusals.

use std::{
    io,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use mend_core::{crypto::RelayPin, error::Error, sync::Failure};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

/// How long connecting may take, the TLS handshake included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How this device may reach its relay, beside the URL.
#[derive(Clone, Default)]
pub struct RelayOptions {
    /// The relay's pin: with one, the relay is trusted when its certificate's public key
    /// hashes to it, whoever signed the certificate (a self-hosted relay); without one, the
    /// certificate must chain to a public root (or to `extra_roots`) and name the host.
    pub pin: Option<RelayPin>,
    /// Allows `http://` and `ws://` to a relay off this machine. Anyone on the network path
    /// can then read the relay token and erase, prune or fill the journal's spaces: for
    /// development only. Loopback relays (127.0.0.0/8, ::1, `localhost`) never need it.
    pub allow_insecure_cleartext: bool,
    /// More trust anchors (DER certificates) beside the public roots, for a relay signed by a
    /// private CA the device is told to trust.
    pub extra_roots: Vec<Vec<u8>>,
}

impl std::fmt::Debug for RelayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayOptions")
            .field("pin", &self.pin)
            .field("allow_insecure_cleartext", &self.allow_insecure_cleartext)
            .field("extra_roots", &self.extra_roots.len())
            .finish()
    }
}

/// A connection to the relay, in clear text (loopback or opted in) or TLS.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Where requests go: `host` and `port` to connect to, `authority` for the `Host` header,
/// `prefix` (the base URL's path) before every route, and TLS unless the URL is `http://`.
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) authority: String,
    pub(crate) prefix: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Why this device refuses to connect, when it does (clear text off this machine).
    refusal: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("authority", &self.authority)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// The scheme of a relay URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// The scheme of `base` and what follows it.
    pub(crate) fn split(base: &str) -> Option<(Self, &str)> {
        if let Some(rest) = base.strip_prefix("https://") {
            Some((Self::Https, rest))
        } else {
            base.strip_prefix("http://").map(|rest| (Self::Http, rest))
        }
    }

    /// The WebSocket scheme on the same footing.
    pub(crate) fn ws(self) -> &'static str {
        match self {
            Self::Http => "ws://",
            Self::Https => "wss://",
        }
    }
}

impl Target {
    /// `rest` is the base URL after its scheme; `Ok(None)` if it has no usable host and port.
    pub(crate) fn parse(
        scheme: Scheme,
        rest: &str,
        options: &RelayOptions,
    ) -> Result<Option<Self>, Error> {
        let (authority, prefix) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains(['@', '?', '#']) || prefix.contains(['?', '#']) {
            return Ok(None);
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((host, after)) = v6.split_once(']') else {
                return Ok(None);
            };
            (host, after)
        } else {
            match authority.rsplit_once(':') {
                Some((host, _)) => (host, &authority[host.len()..]),
                None => (authority, ""),
            }
        };
        let port = match (port, scheme) {
            ("", Scheme::Http) => 80,
            ("", Scheme::Https) => 443,
            (p, _) => match p.strip_prefix(':').and_then(|p| p.parse().ok()) {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        if host.is_empty() {
            return Ok(None);
        }
        let (tls, refusal) = match scheme {
            Scheme::Https => {
                let Ok(name) = ServerName::try_from(host.to_owned()) else {
                    return Ok(None);
                };
                let connector = TlsConnector::from(client_config(options)?);
                (Some((connector, name)), None)
            }
            Scheme::Http if is_loopback(host) || options.allow_insecure_cleartext => (None, None),
            Scheme::Http => (None, Some(cleartext_refusal(host))),
        };
        Ok(Some(Self {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            prefix: prefix.to_owned(),
            tls,
            refusal,
        }))
    }

    /// Why the device refuses this relay before connecting, if it does.
    pub(crate) fn refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }

    /// Connects, with TLS unless the URL is `http://`. A certificate or handshake the device
    /// refuses is written to `problem` (something the user must act on) and fails as
    /// [`Failure::Untrusted`], which live status shows as such, not as offline.
    pub(crate) async fn connect(&self, problem: &Mutex<Option<String>>) -> Result<Stream, Failure> {
        if let Some(refusal) = &self.refusal {
            note(problem, refusal.clone());
            return Err(Failure::Untrusted {
                reason: refusal.clone(),
            });
        }
        let connect = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|_| Failure::Unreachable)?;
            let _ = tcp.set_nodelay(true);
            let Some((connector, name)) = &self.tls else {
                return Ok(Stream::Plain(tcp));
            };
            match connector.connect(name.clone(), tcp).await {
                Ok(tls) => Ok(Stream::Tls(Box::new(tls))),
                Err(e) => match trust_problem(&e) {
                    Some(why) => {
                        tracing::warn!(problem = %why, "refused the relay's TLS handshake");
                        note(problem, why.clone());
                        Err(Failure::Untrusted { reason: why })
                    }
                    None => Err(Failure::Unreachable),
                },
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| Failure::Unreachable)?
    }
}

fn note(problem: &Mutex<Option<String>>, why: String) {
    if let Ok(mut slot) = problem.lock() {
        *slot = Some(why);
    }
}

/// Whether `host` is this machine: 127.0.0.0/8, ::1 or `localhost`.
pub(crate) fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn cleartext_refusal(host: &str) -> String {
    format!(
        "refusing clear-text http:// to the relay at {}: anyone on the network could take its \
         token and erase or forge the journal's sync; use https://, or for development only \
         allow insecure clear text (mend: --insecure-cleartext-relay; apps: allow_insecure_cleartext)",
        mend_core::ids::truncate(host)
    )
}

/// The message for a TLS failure the user must act on; `None` for network failures (reset,
/// timeout), which are worth retrying.
fn trust_problem(e: &io::Error) -> Option<String> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    let what = match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::ApplicationVerificationFailure => {
                "the relay's certificate does not match the pinned key; if its operator changed \
                 the key, get a new invite or set the new pin"
                    .to_owned()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the relay's certificate has expired (or this device's clock is wrong)".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the relay's certificate is not valid yet (or this device's clock is wrong)"
                    .to_owned()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the relay's certificate is for another host name (on a public Wi-Fi, sign in \
                 to its portal first)"
                    .to_owned()
            }
            // A signature that does not verify is a certificate no trusted authority signed
            // (an attacker's CA may copy a trusted one's name).
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "the relay's certificate is not signed by a trusted authority (a self-hosted \
                 relay needs its pin, sha256/…; on a public Wi-Fi, sign in to its portal first)"
                    .to_owned()
            }
            other => format!("the relay's certificate was refused ({other:?})"),
        },
        other => format!("the TLS handshake with the relay failed ({other})"),
    };
    Some(what)
}

/// The TLS client configuration: ring, TLS 1.3 only, and either the pin or the roots.
fn client_config(options: &RelayOptions) -> Result<Arc<ClientConfig>, Error> {
    let provider = Arc::new(provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Crypto(format!("TLS setup failed: {e}")))?;
    let mut config = match options.pin {
        Some(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier { pin, algorithms }))
            .with_no_client_auth(),
        None => {
            let mut roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            for der in &options.extra_roots {
                roots.add(CertificateDer::from(der.clone())).map_err(|e| {
                    Error::Invalid(format!("an extra trust anchor is unusable: {e}"))
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// rustls's ring provider, cut to what a TLS 1.3 client that never authenticates itself uses.
///
/// Hand-built rather than `ring::default_provider()`: that one links every suite, group and
/// private-key loader it names (TLS 1.2, AES-256, P-384 key exchange, RSA/ECDSA/Ed25519
/// signing), which the app's library then carries unused (docs/benchmarks.md, "Mobile
/// bindings").
fn provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::{cipher_suite, kx_group};
    rustls::crypto::CryptoProvider {
        // ChaCha20 first: fast on phones without AES instructions; AES-128-GCM is the suite
        // every TLS 1.3 server must offer.
        cipher_suites: vec![
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS13_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1],
        signature_verification_algorithms: SIGNATURES,
        secure_random: &OsRandom,
        key_provider: &NoClientKeys,
    }
}

/// What a relay's certificate chain and handshake may be signed with: rustls's own list for
/// ring (what public CAs use).
static SIGNATURES: WebPkiSupportedAlgorithms = {
    use webpki::ring as alg;
    WebPkiSupportedAlgorithms {
        all: &[
            alg::ECDSA_P256_SHA256,
            alg::ECDSA_P256_SHA384,
            alg::ECDSA_P384_SHA256,
            alg::ECDSA_P384_SHA384,
            alg::ED25519,
            alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
            alg::RSA_PKCS1_2048_8192_SHA256,
            alg::RSA_PKCS1_2048_8192_SHA384,
            alg::RSA_PKCS1_2048_8192_SHA512,
            alg::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
            alg::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
            alg::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
        ],
        mapping: &[
            (
                SignatureScheme::ECDSA_NISTP384_SHA384,
                &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384],
            ),
            (
                SignatureScheme::ECDSA_NISTP256_SHA256,
                &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
            ),
            (SignatureScheme::ED25519, &[alg::ED25519]),
            (
                SignatureScheme::RSA_PSS_SHA512,
                &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
            ),
            (
                SignatureScheme::RSA_PSS_SHA384,
                &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
            ),
            (
                SignatureScheme::RSA_PSS_SHA256,
                &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
            ),
            (
                SignatureScheme::RSA_PKCS1_SHA512,
                &[alg::RSA_PKCS1_2048_8192_SHA512],
            ),
            (
                SignatureScheme::RSA_PKCS1_SHA384,
                &[alg::RSA_PKCS1_2048_8192_SHA384],
            ),
            (
                SignatureScheme::RSA_PKCS1_SHA256,
                &[alg::RSA_PKCS1_2048_8192_SHA256],
            ),
        ],
    }
};

/// Randomness for handshakes, from the operating system.
#[derive(Debug)]
struct OsRandom;

impl rustls::crypto::SecureRandom for OsRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        getrandom::fill(buf).map_err(|_| rustls::crypto::GetRandomFailed)
    }
}

/// The device never presents a client certificate, so it loads no private key.
#[derive(Debug)]
struct NoClientKeys;

impl rustls::crypto::KeyProvider for NoClientKeys {
    fn load_private_key(
        &self,
        _key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        Err(rustls::Error::General(
            "the device does not authenticate with a certificate".into(),
        ))
    }
}

/// Trusts the relay whose end-entity certificate carries the pinned public key. rustls still
/// checks the handshake signature with that key, so the relay must hold the private key; the
/// certificate's issuer, name and dates are not checked (the pin replaces them, as for a
/// self-signed certificate).
#[derive(Debug)]
struct PinVerifier {
    pin: RelayPin,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if RelayPin::of_spki(cert.subject_public_key_info().as_ref()) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
