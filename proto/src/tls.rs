//! Certificates and rustls configuration for the `relay+tls://` and `relay+quic://` data
//! channels.
//!
//! One crypto provider, ring, is used everywhere and passed explicitly
//! (`builder_with_provider`), so no global provider state is involved. Servers use a
//! configured certificate or the self-signed one the server keeps on disk, so its
//! fingerprint survives restarts. Clients verify by default: a CA file, the system roots, or a
//! pinned SHA-256 fingerprint of the server certificate; `insecure` skips the certificate
//! check (handshake signatures are still verified).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// ALPN protocol name of the data channel.
pub const ALPN: &[u8] = b"tunnel/1";

/// Why TLS material could not be loaded or built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A PEM file without the expected contents.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// QUIC refused the TLS configuration.
    #[error("QUIC configuration: {0}")]
    Quic(String),
    /// A `pin=` value that is not `sha256:` and 64 hex digits.
    #[error("invalid pin {0:?}: expected sha256: followed by 64 hex digits")]
    BadPin(String),
    /// An invalid server name.
    #[error("invalid server name {0:?}")]
    BadName(String),
}

/// The crypto provider of every TLS and QUIC configuration in tunnel.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs [`provider`] as the process-wide default, once, at the top of each `main`: every
/// configuration here names its provider explicitly, and this makes any other rustls user in
/// the process agree with them instead of panicking over an ambiguous choice.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `sha256:<hex>` of a certificate's DER bytes.
pub fn fingerprint(cert: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(cert)))
}

/// A server's certificate chain and key.
#[derive(Debug)]
pub struct ServerIdentity {
    /// Chain, end-entity first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
}

impl ServerIdentity {
    /// The end-entity certificate's fingerprint.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.certs[0])
    }

    /// Loads a PEM certificate chain and key.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<ServerIdentity, TlsError> {
        let pem_err = |path: &Path, why: String| TlsError::Pem { path: path.to_owned(), why };
        let certs = CertificateDer::pem_file_iter(cert_file)
            .map_err(|e| pem_err(cert_file, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(cert_file, e.to_string()))?;
        if certs.is_empty() {
            return Err(pem_err(cert_file, "no CERTIFICATE block".into()));
        }
        let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| pem_err(key_file, e.to_string()))?;
        Ok(ServerIdentity { certs, key })
    }

    /// A rustls server configuration (TLS 1.3 only) presenting this identity.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// How a client checks the server's certificate.
#[derive(Clone, PartialEq, Eq)]
pub enum Verify {
    /// The operating system's trusted roots.
    SystemRoots,
    /// The CAs in a PEM file.
    CaFile(PathBuf),
    /// The SHA-256 of the server's end-entity certificate.
    Pin([u8; 32]),
    /// No certificate check (signatures are still verified). For tests only.
    Insecure,
}

impl fmt::Debug for Verify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verify::SystemRoots => f.write_str("system roots"),
            Verify::CaFile(p) => write!(f, "CA file {}", p.display()),
            Verify::Pin(p) => write!(f, "pin sha256:{}", hex::encode(p)),
            Verify::Insecure => f.write_str("insecure (no verification)"),
        }
    }
}

impl Verify {
    /// Parses `sha256:<64 hex digits>`.
    pub fn parse_pin(raw: &str) -> Result<Verify, TlsError> {
        let hex_part = raw.trim().strip_prefix("sha256:").ok_or_else(|| TlsError::BadPin(raw.to_owned()))?;
        let bytes = hex::decode(hex_part.replace(':', "")).map_err(|_| TlsError::BadPin(raw.to_owned()))?;
        let pin: [u8; 32] = bytes.try_into().map_err(|_| TlsError::BadPin(raw.to_owned()))?;
        Ok(Verify::Pin(pin))
    }
}

/// Client-side TLS settings, from `caFile=`, `pin=`, `serverName=`, `insecure=`.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// How to verify.
    pub verify: Verify,
    /// SNI and the name to verify; defaults to the host of the server address.
    pub server_name: Option<String>,
}

impl Default for ClientTls {
    fn default() -> Self {
        ClientTls { verify: Verify::SystemRoots, server_name: None }
    }
}

impl ClientTls {
    /// The rustls client configuration of a relay session (TLS 1.3 only, the relay's ALPN).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let mut cfg = self.config(&[&rustls::version::TLS13])?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(cfg))
    }

    /// The rustls client configuration toward an origin that speaks TLS (an agent's
    /// `https://` target): TLS 1.2 or 1.3, no ALPN (the bytes are the visitor's, whatever
    /// protocol they are).
    pub fn origin_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        Ok(Arc::new(self.config(rustls::DEFAULT_VERSIONS)?))
    }

    fn config(&self, versions: &[&'static rustls::SupportedProtocolVersion]) -> Result<rustls::ClientConfig, TlsError> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions)?;
        let cfg = match &self.verify {
            Verify::SystemRoots | Verify::CaFile(_) => {
                let mut roots = rustls::RootCertStore::empty();
                match &self.verify {
                    Verify::CaFile(path) => {
                        let certs = CertificateDer::pem_file_iter(path)
                            .map_err(|e| TlsError::Pem { path: path.clone(), why: e.to_string() })?;
                        for cert in certs {
                            let cert = cert.map_err(|e| TlsError::Pem { path: path.clone(), why: e.to_string() })?;
                            roots.add(cert)?;
                        }
                        if roots.is_empty() {
                            return Err(TlsError::Pem { path: path.clone(), why: "no CERTIFICATE block".into() });
                        }
                    }
                    _ => {
                        for cert in rustls_native_certs::load_native_certs().certs {
                            let _ = roots.add(cert);
                        }
                    }
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Verify::Pin(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinVerifier { pin: Some(*pin), provider }))
                .with_no_client_auth(),
            Verify::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinVerifier { pin: None, provider }))
                .with_no_client_auth(),
        };
        Ok(cfg)
    }

    /// The name to send as SNI and to verify, for a server at `addr` (`host:port`).
    pub fn server_name(&self, addr: &str) -> Result<ServerName<'static>, TlsError> {
        let host = match &self.server_name {
            Some(n) => n.clone(),
            None => {
                let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
                host.trim_start_matches('[').trim_end_matches(']').to_owned()
            }
        };
        ServerName::try_from(host.clone()).map_err(|_| TlsError::BadName(host))
    }
}

/// Checks the server certificate against a pin (or not at all, when `pin` is `None`), and
/// always checks the handshake signatures with the provider's algorithms.
#[derive(Debug)]
struct PinVerifier {
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

/// The pinned fingerprint did not match.
#[derive(Debug)]
pub struct PinMismatch {
    /// The fingerprint the server presented.
    pub presented: String,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pin mismatch: the server presented {}", self.presented)
    }
}

impl std::error::Error for PinMismatch {}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else { return Ok(ServerCertVerified::assertion()) };
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if subtle_eq(&digest, &pin) {
            Ok(ServerCertVerified::assertion())
        } else {
            let mismatch = PinMismatch { presented: fingerprint(end_entity) };
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(mismatch)))))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn subtle_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A one-line, human reason for a failed TLS handshake, naming what did not verify.
pub fn describe_error(err: &std::io::Error) -> Option<String> {
    let inner = err.get_ref()?;
    let tls = inner.downcast_ref::<rustls::Error>()?;
    Some(describe_rustls(tls))
}

/// As [`describe_error`], for a rustls error.
pub fn describe_rustls(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "certificate verification failed: unknown issuer (trust its CA with caFile= or pin its fingerprint with pin=sha256:...)".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
        | rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "certificate verification failed: name mismatch (the certificate is not valid for the server name; set serverName=)".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            format!("certificate verification failed: {}", other.0)
        }
        rustls::Error::InvalidCertificate(e) => format!("certificate verification failed: {e:?}"),
        other => format!("TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse() {
        let hexpin = "ab".repeat(32);
        assert!(matches!(Verify::parse_pin(&format!("sha256:{hexpin}")), Ok(Verify::Pin(p)) if p == [0xab; 32]));
        assert!(Verify::parse_pin(&hexpin).is_err());
        assert!(Verify::parse_pin("sha256:abcd").is_err());
    }

    #[test]
    fn server_name_defaults_to_the_address_host() {
        let tls = ClientTls::default();
        assert_eq!(tls.server_name("relay.example:8443").unwrap(), ServerName::try_from("relay.example").unwrap());
        assert!(matches!(tls.server_name("127.0.0.1:8443").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(tls.server_name("[::1]:8443").unwrap(), ServerName::IpAddress(_)));
    }
}
