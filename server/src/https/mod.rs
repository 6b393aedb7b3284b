//! HTTPS at the edge: TLS terminated on `tls = true` entrypoints for the hosts whose rule
//! says so (or that the server has or can get a certificate for), and passed through to the
//! origin for the others, on the same port.
//!
//! Life of an HTTPS visitor: the entrypoint sniffs the ClientHello's SNI as for any TLS
//! visitor ([`crate::entrypoint`]); [`Edge::terminates`] decides by the host's rule; a
//! terminated visitor's handshake is completed here with the certificate the [`certs::Store`]
//! holds for the SNI (ordered at that moment for a host under a wildcard rule), ALPN `h2` or
//! `http/1.1`; then its requests are served by [`crate::http::serve`] exactly as plain HTTP
//! requests are, with `X-Forwarded-Proto: https`, and `421` for a request whose host the
//! connection's certificate does not cover. The CA's TLS-ALPN-01 validation is answered
//! from the store and closed.

pub mod acme;
pub mod certs;
pub mod config;
pub mod files;
pub mod shared;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;
use tunnel_proto::host::HostPattern;
use tunnel_runtime::http::io::Prefixed;

use crate::http::HttpOptions;
use crate::ingress::TlsMode;
use crate::routing::Routes;
use crate::Shared;
pub use config::{Challenge, EdgeConfig};

/// The HTTPS edge of a server: its certificates, the CA, the TLS configuration.
pub(crate) struct Edge {
    pub(crate) store: Arc<certs::Store>,
    pub(crate) files: Arc<files::Files>,
    pub(crate) acme: Option<Arc<acme::Acme>>,
    tls: Arc<rustls::ServerConfig>,
    /// The port of the first HTTPS entrypoint (redirects go there).
    pub(crate) https_port: Option<u16>,
    /// `tunnel_certificate_expiry_timestamp_seconds`, set from the store when scraped.
    pub(crate) expiry: Family<CertLabel, Gauge>,
}

/// A certificate in the metrics: its first name and where it came from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabel {
    /// Its first DNS name.
    pub name: String,
    /// `file` or `acme`.
    pub source: &'static str,
}

impl Edge {
    /// Loads the certificates of `config` (an unreadable one is the error) and those kept by
    /// the ACME side.
    pub(crate) fn new(
        config: &EdgeConfig,
        https_port: Option<u16>,
        cluster: Option<&crate::cluster::ClusterConfig>,
    ) -> Result<Edge, String> {
        let store = Arc::new(certs::Store::default());
        let files = Arc::new(files::Files::load(config, &store)?);
        let acme = match &config.acme {
            Some(acme) => {
                // Replicas of a cluster share the account, the certificates and the challenges.
                let shared = match cluster {
                    Some(c) => Some(shared::SharedStore::new(c.redis.expose(), c.secret.expose().as_bytes(), &c.name)?),
                    None => None,
                };
                Some(Arc::new(acme::Acme::new(acme.clone(), store.clone(), https_port.is_some(), shared)?))
            }
            None => None,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(certs::Resolver(store.clone())));
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), certs::ACME_TLS_ALPN.to_vec()];
        // Returning visitors resume without a full handshake: stateless tickets, rotated.
        tls.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| e.to_string())?;
        tls.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
        Ok(Edge { store, files, acme, tls: Arc::new(tls), https_port, expiry: Family::default() })
    }

    /// Registers the edge's metrics.
    pub(crate) fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "tunnel_certificate_expiry_timestamp_seconds",
            "When each certificate of the HTTPS entrypoints expires (Unix time)",
            self.expiry.clone(),
        );
        if let Some(acme) = &self.acme {
            registry.register("tunnel_acme_orders", "Certificate orders by result", acme.orders.clone());
        }
    }

    /// Sets the expiry gauges from the certificates in force.
    pub(crate) fn refresh_expiry(&self) {
        self.expiry.clear();
        for (layer, cert) in self.store.all() {
            let source = match layer {
                certs::Layer::Files => "file",
                certs::Layer::Acme => "acme",
            };
            let label = CertLabel { name: cert.names[0].clone(), source };
            self.expiry.get_or_create(&label).set(cert.not_after_unix() as i64);
        }
    }

    /// Whether an HTTPS entrypoint terminates TLS for canonical `host`: its rule says
    /// `terminate`, or says nothing and a certificate is (or can be) had for it.
    pub(crate) fn terminates(&self, routes: &Routes, host: &str) -> bool {
        let Some(rule) = routes.ingress.tls_of(host) else { return false };
        match rule.edge.tls {
            TlsMode::Terminate => true,
            TlsMode::Passthrough => false,
            TlsMode::Auto => self.store.find(host).is_some() || self.orders_for(&rule.pattern),
        }
    }

    /// Whether plain HTTP requests for canonical `host` are redirected to HTTPS when its rule
    /// does not say: where it is terminated and a certificate for it is in force (a host whose
    /// certificate is still being ordered stays reachable over HTTP).
    pub(crate) fn redirects(&self, routes: &Routes, host: &str) -> bool {
        self.https_port.is_some() && self.terminates(routes, host) && self.store.find(host).is_some()
    }

    /// Whether an HTTPS entrypoint serves the TLS visitor of canonical `host` whose
    /// ClientHello is `hello` itself: a host it terminates, or a CA's TLS-ALPN-01 validation
    /// (for this replica's order or, in a cluster, another's) of a host that is not passed
    /// through (a passed-through origin answers its own CA).
    pub(crate) fn takes(&self, routes: &Routes, host: &str, hello: &[u8]) -> bool {
        if self.terminates(routes, host) {
            return true;
        }
        let passed_through = routes.ingress.tls_of(host).is_some_and(|r| r.edge.tls == TlsMode::Passthrough);
        self.acme.is_some() && !passed_through && tunnel_proto::sniff::tls_offers_only_alpn(hello, certs::ACME_TLS_ALPN)
    }

    /// Whether the CA is asked for certificates of `pattern`'s hosts.
    fn orders_for(&self, pattern: &HostPattern) -> bool {
        self.acme.is_some() && !matches!(pattern, HostPattern::Exact(h) if h.parse::<std::net::IpAddr>().is_ok())
    }

    /// The names to keep certificates for: every public rule's host that is terminated
    /// (wildcard rules when DNS-01 can prove them).
    pub(crate) fn wanted(&self, routes: &Routes) -> Vec<acme::Wanted> {
        let Some(acme) = &self.acme else { return Vec::new() };
        let mut wanted: Vec<acme::Wanted> = Vec::new();
        for rule in routes.ingress.rules() {
            if rule.private || rule.edge.tls == TlsMode::Passthrough {
                continue;
            }
            let (name, identifiers, wildcard) = match &rule.pattern {
                HostPattern::Exact(h) if h.parse::<std::net::IpAddr>().is_ok() => continue,
                HostPattern::Exact(h) => (h.clone(), vec![h.clone()], false),
                // Without a DNS hook, or with another challenge named, hosts under a wildcard
                // rule get certificates of their own, ordered at their first handshake.
                _ if !acme.wildcards() || rule.edge.challenge.is_some_and(|c| c != Challenge::Dns01) => continue,
                HostPattern::Subdomains(d) => (format!("*.{d}"), vec![format!("*.{d}")], true),
                HostPattern::Domain(d) => (format!("*.{d}"), vec![d.clone(), format!("*.{d}")], true),
            };
            if wanted.iter().any(|w| w.name == name) {
                continue;
            }
            // A file's certificate for the name is the operator's choice: nothing is ordered.
            if self.store.find(&name.replace("*.", "x.")).is_some_and(|c| c.origin != "acme") && !wildcard {
                continue;
            }
            let challenge = acme.challenge_for(rule.edge.challenge, wildcard);
            wanted.push(acme::Wanted { name, identifiers, challenge });
        }
        // Hosts ordered on demand are renewed while a wildcard rule still covers them.
        for name in self.store.ordered_names() {
            if name.starts_with("*.") || wanted.iter().any(|w| w.name == name) {
                continue;
            }
            let Some(rule) = routes.ingress.tls_of(&name) else { continue };
            if rule.edge.tls == TlsMode::Passthrough || matches!(rule.pattern, HostPattern::Exact(_)) {
                continue;
            }
            let challenge = acme.challenge_for(rule.edge.challenge.filter(|c| *c != Challenge::Dns01), false);
            wanted.push(acme::Wanted { identifiers: vec![name.clone()], name, challenge });
        }
        wanted
    }

    /// The certificates in force, for the API and the status page.
    pub(crate) fn describe(&self) -> serde_json::Value {
        let certs: Vec<serde_json::Value> = self
            .store
            .all()
            .into_iter()
            .map(|(layer, cert)| {
                let mut v = serde_json::json!({
                    "names": cert.names,
                    "source": match layer { certs::Layer::Files => "file", certs::Layer::Acme => "acme" },
                    "origin": cert.origin,
                    "notBefore": unix(cert.not_before),
                    "notAfter": unix(cert.not_after),
                    "expiresInSeconds": cert.expires_in(),
                });
                if let (Some(acme), certs::Layer::Acme) = (&self.acme, layer) {
                    v["acme"] = acme.describe(&cert.names[0]);
                }
                v
            })
            .collect();
        serde_json::json!({ "certificates": certs })
    }
}

/// Seconds since the epoch.
pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What a terminated connection tells its requests.
pub(crate) struct Terminated {
    /// The certificate the visitor was shown: requests for hosts it does not cover get 421.
    pub(crate) cert: Arc<certs::Certificate>,
}

/// Serves an HTTPS visitor of canonical SNI `host` whose ClientHello (`hello`) was read by
/// the sniffer: completes the handshake and serves its requests. Returns the outcome for
/// the metrics.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    hello: Vec<u8>,
    host: String,
    peer: SocketAddr,
    options: Arc<HttpOptions>,
) -> &'static str {
    let edge = &shared.edge;
    let validating = tunnel_proto::sniff::tls_offers_only_alpn(&hello, certs::ACME_TLS_ALPN);
    let mut fetched = false;
    if validating && !edge.store.has_challenge(&host) {
        // In a cluster the CA may ask this replica about another one's order.
        if let Some(acme) = &edge.acme {
            fetched = acme.fetch_alpn_challenge(&host).await;
        }
    }
    let cert = match edge.store.find(&host) {
        Some(cert) => Some(cert),
        None if validating => None,
        None => match on_demand(&shared, &host).await {
            true => edge.store.find(&host),
            false => None,
        },
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(edge.tls.clone());
    let timeout = shared.limits().handshake_timeout;
    let accepted = tokio::time::timeout(timeout, acceptor.accept(Prefixed::new(hello, tcp))).await;
    if fetched {
        // Another replica's answer was shown once; its order owns it.
        edge.store.set_challenge(&host, None);
    }
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            tracing::debug!(%peer, %host, %err, "TLS handshake failed");
            return "refused";
        }
        Err(_) => {
            tracing::debug!(%peer, %host, "TLS handshake timed out");
            return "left";
        }
    };
    if tls.get_ref().1.alpn_protocol() == Some(certs::ACME_TLS_ALPN) {
        tracing::debug!(%peer, %host, "TLS-ALPN-01 validation answered");
        return "served";
    }
    let Some(cert) = cert.or_else(|| edge.store.find(&host)) else { return "refused" };
    let terminated = Terminated { cert };
    crate::http::serve(shared.clone(), tls, Vec::new(), peer, options, Some(terminated)).await
}

/// Orders a certificate for `host` if a wildcard rule covers it and the CA is asked for its
/// hosts one by one.
async fn on_demand(shared: &Shared, host: &str) -> bool {
    let Some(acme) = &shared.edge.acme else { return false };
    let (domain, challenge) = {
        let routes = shared.routes();
        let Some(rule) = routes.ingress.tls_of(host) else { return false };
        if rule.edge.tls == TlsMode::Passthrough || matches!(rule.pattern, HostPattern::Exact(_)) {
            return false;
        }
        if acme.wildcards() && rule.edge.challenge.is_none_or(|c| c == Challenge::Dns01) {
            // The rule's wildcard certificate is ordered (or being ordered) by DNS-01.
            return false;
        }
        (rule.pattern.to_string(), acme.challenge_for(rule.edge.challenge, false))
    };
    acme.on_demand(host, &domain, challenge).await
}

/// Keeps the edge's certificates: the files watched, the CA's orders made and renewed.
pub(crate) fn start(shared: &Arc<Shared>, tasks: &mut tokio::task::JoinSet<()>) {
    let edge = &shared.edge;
    tasks.spawn(edge.files.clone().watch(edge.store.clone(), shared.life.stopping().clone()));
    if let Some(acme) = edge.acme.clone() {
        let for_names = shared.clone();
        let wanted = move || for_names.edge.wanted(&for_names.routes());
        tasks.spawn(acme.run(wanted, shared.life.stopping().clone()));
    }
}
