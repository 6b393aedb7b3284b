//! The certificates the HTTPS entrypoints show: from files and from the ACME CA, looked up by
//! the visitor's SNI (an exact name before a wildcard), and the TLS-ALPN-01 challenge
//! certificates shown to the CA alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// One certificate chain with its key, and what it says of itself.
pub struct Certificate {
    /// What rustls shows.
    pub key: Arc<CertifiedKey>,
    /// Its DNS names (subject alternative names; `*.example.com` for a wildcard), lowercase.
    pub names: Vec<String>,
    /// The start and end of its validity.
    pub not_before: SystemTime,
    /// The end of its validity.
    pub not_after: SystemTime,
    /// Where it came from: a file's path, or `acme`.
    pub origin: String,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate").field("names", &self.names).field("origin", &self.origin).finish()
    }
}

impl Certificate {
    /// A certificate from a PEM chain (leaf first) and a PEM private key; errors say what is
    /// wrong in words an operator can act on.
    pub fn from_pem(chain: &[u8], key: &[u8], origin: String) -> Result<Certificate, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the certificate chain is not PEM: {e}"))?;
        let leaf = chain.first().ok_or("no certificate in the chain file")?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("no private key in the key file: {e}"))?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| format!("the private key is of no supported type: {e}"))?;
        let (names, not_before, not_after) = describe(leaf)?;
        let certified = CertifiedKey::new(chain, signer);
        certified.keys_match().map_err(|e| format!("the private key does not belong to the certificate: {e}"))?;
        Ok(Certificate { key: Arc::new(certified), names, not_before, not_after, origin })
    }

    /// Whether the certificate covers canonical hostname `host` (a wildcard name covers one
    /// label).
    pub fn covers(&self, host: &str) -> bool {
        self.names.iter().any(|name| name_covers(name, host))
    }

    /// Seconds until it expires (negative once expired).
    pub fn expires_in(&self) -> i64 {
        match self.not_after.duration_since(SystemTime::now()) {
            Ok(left) => left.as_secs() as i64,
            Err(past) => -(past.duration().as_secs() as i64),
        }
    }

    /// The end of its validity, in seconds since the epoch.
    pub fn not_after_unix(&self) -> u64 {
        self.not_after.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }
}

/// Whether certificate name `name` (lowercase, maybe `*.`) covers canonical `host`.
pub fn name_covers(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(parent) => host.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => name == host,
    }
}

/// The DNS names and validity of a leaf certificate.
fn describe(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, SystemTime, SystemTime), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("the certificate cannot be read: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        return Err("the certificate names no DNS name (subjectAltName)".into());
    }
    let at = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    let validity = cert.validity();
    Ok((names, at(validity.not_before.timestamp()), at(validity.not_after.timestamp())))
}

/// Certificates by the names they cover.
#[derive(Default)]
struct Index {
    exact: HashMap<String, Arc<Certificate>>,
    /// By the parent of a wildcard name (`example.com` for `*.example.com`).
    wildcard: HashMap<String, Arc<Certificate>>,
}

impl Index {
    fn of(certs: impl IntoIterator<Item = Arc<Certificate>>) -> Index {
        let mut index = Index::default();
        for cert in certs {
            for name in &cert.names {
                let (map, key) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut index.wildcard, parent.to_owned()),
                    None => (&mut index.exact, name.clone()),
                };
                // Of two certificates for a name, the one valid longest serves.
                match map.get(&key) {
                    Some(old) if old.not_after >= cert.not_after => {}
                    _ => drop(map.insert(key, cert.clone())),
                }
            }
        }
        index
    }

    fn exact(&self, host: &str) -> Option<&Arc<Certificate>> {
        self.exact.get(host)
    }

    fn wildcard(&self, host: &str) -> Option<&Arc<Certificate>> {
        let (_, parent) = host.split_once('.')?;
        self.wildcard.get(parent)
    }
}

/// Where a certificate of the store comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// The operator's files (they win over ordered ones for the same name).
    Files,
    /// The ACME CA.
    Acme,
}

/// Every certificate the HTTPS entrypoints may show; swapped whole per layer, read per
/// handshake.
#[derive(Default)]
pub struct Store {
    files: RwLock<Arc<Index>>,
    acme: RwLock<Arc<Index>>,
    /// The ordered certificates by the name they were ordered for.
    ordered: Mutex<HashMap<String, Arc<Certificate>>>,
    /// TLS-ALPN-01 challenge certificates by host.
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl Store {
    /// The certificate shown for canonical `host`: an exact name (files, then ordered) before
    /// a wildcard (files, then ordered).
    pub fn find(&self, host: &str) -> Option<Arc<Certificate>> {
        let files = self.files.read().expect("certificate lock").clone();
        let acme = self.acme.read().expect("certificate lock").clone();
        files
            .exact(host)
            .or_else(|| acme.exact(host))
            .or_else(|| files.wildcard(host))
            .or_else(|| acme.wildcard(host))
            .cloned()
    }

    /// Puts `certs` in force as the files' certificates.
    pub fn set_files(&self, certs: Vec<Arc<Certificate>>) {
        *self.files.write().expect("certificate lock") = Arc::new(Index::of(certs));
    }

    /// Puts `cert` in force as the ordered certificate of `name`; the one it replaces serves
    /// the handshakes that started before.
    pub fn set_ordered(&self, name: &str, cert: Arc<Certificate>) {
        let mut ordered = self.ordered.lock().expect("certificate lock");
        ordered.insert(name.to_owned(), cert);
        *self.acme.write().expect("certificate lock") = Arc::new(Index::of(ordered.values().cloned()));
    }

    /// The ordered certificate of `name`, if any.
    pub fn ordered(&self, name: &str) -> Option<Arc<Certificate>> {
        self.ordered.lock().expect("certificate lock").get(name).cloned()
    }

    /// The names of the ordered certificates.
    pub fn ordered_names(&self) -> Vec<String> {
        self.ordered.lock().expect("certificate lock").keys().cloned().collect()
    }

    /// Every certificate in force, with its layer.
    pub fn all(&self) -> Vec<(Layer, Arc<Certificate>)> {
        let mut seen = Vec::new();
        let mut out: Vec<(Layer, Arc<Certificate>)> = Vec::new();
        for (layer, index) in [
            (Layer::Files, self.files.read().expect("certificate lock").clone()),
            (Layer::Acme, self.acme.read().expect("certificate lock").clone()),
        ] {
            for cert in index.exact.values().chain(index.wildcard.values()) {
                if !seen.iter().any(|c| Arc::ptr_eq(c, cert)) {
                    seen.push(cert.clone());
                    out.push((layer, cert.clone()));
                }
            }
        }
        out.sort_by(|a, b| a.1.names.cmp(&b.1.names));
        out
    }

    /// Whether a TLS-ALPN-01 answer for `host` is shown now.
    pub fn has_challenge(&self, host: &str) -> bool {
        self.challenges.lock().expect("challenge lock").contains_key(host)
    }

    /// Shows `key` to TLS-ALPN-01 validation of `host` (`None` takes it away).
    pub fn set_challenge(&self, host: &str, key: Option<Arc<CertifiedKey>>) {
        let mut challenges = self.challenges.lock().expect("challenge lock");
        match key {
            Some(key) => drop(challenges.insert(host.to_owned(), key)),
            None => drop(challenges.remove(host)),
        }
    }
}

/// The rustls side of the store.
#[derive(Debug)]
pub struct Resolver(pub Arc<Store>);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let host = hello.server_name()?.to_ascii_lowercase();
        let validating = hello.alpn().is_some_and(|mut alpn| alpn.all(|p| p == ACME_TLS_ALPN));
        if validating {
            return self.0.challenges.lock().ok()?.get(&host).cloned();
        }
        self.0.find(&host).map(|cert| cert.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_names_cover_one_label() {
        assert!(name_covers("*.example.com", "a.example.com"));
        assert!(!name_covers("*.example.com", "example.com"));
        assert!(!name_covers("*.example.com", "a.b.example.com"));
        assert!(!name_covers("*.example.com", ".example.com"));
        assert!(name_covers("example.com", "example.com"));
        assert!(!name_covers("example.com", "a.example.com"));
    }
}
