//! Server configuration: the TOML file (`-C`) and the `-L relay://...` URL both produce a
//! [`FileConfig`], which [`FileConfig::validate`] turns into the runtime [`Config`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tunnel_proto::channel::Transport;
use tunnel_proto::defaults;
use tunnel_proto::host::{self, HostPattern};
use tunnel_runtime::client::parse_tunnel_id;
use tunnel_runtime::url::{self, NodeUrl};
use tunnel_runtime::Secret;
use uuid::Uuid;

use crate::auth::Auth;
use crate::ingress::{Ingress, Rule, TlsMode};
use crate::routing::Routes;

pub use tunnel_runtime::config::ConfigError;

mod gost;

/// One value or a list (`entryPoint = ":80"` or `entryPoint = [":80", ":443"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single string, possibly comma-separated.
    One(String),
    /// A list.
    Many(Vec<String>),
}

impl OneOrMany {
    pub(crate) fn items(&self) -> Vec<String> {
        let split =
            |s: &str| s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect::<Vec<_>>();
        match self {
            OneOrMany::One(s) => split(s),
            OneOrMany::Many(v) => v.iter().flat_map(|s| split(s)).collect(),
        }
    }
}

/// The server's configuration as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileConfig {
    /// Relay listener address (`:8443`).
    pub addr: String,
    /// `[admin]`: the admin listener (off unless an address is set).
    #[serde(default)]
    pub admin: tunnel_runtime::admin::AdminFile,
    /// Data-channel transport: `tcp` (default).
    #[serde(default)]
    pub listener: Option<String>,
    /// Public entrypoints: `:80`, or `:5201/iperf.local` for a raw entrypoint bound to a host,
    /// or `udp://:5353/dns.example` for a UDP one.
    #[serde(default)]
    pub entry_point: Option<OneOrMany>,
    /// `[[entrypoints]]`: entrypoints with options, after those of `entryPoint`.
    #[serde(default)]
    pub entrypoints: Vec<EntrypointFile>,
    /// One token accepted for every tunnel.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the global token instead of `token`; it must be private to its owner.
    #[serde(default)]
    pub token_file: Option<String>,
    /// PEM certificate chain for `tls` / `quic` (with `keyFile`).
    #[serde(default)]
    pub cert_file: Option<String>,
    /// PEM private key for `certFile`.
    #[serde(default)]
    pub key_file: Option<String>,
    /// Where a generated self-signed certificate is kept (default: `$TUNNEL_STATE_DIR`, else
    /// `$XDG_STATE_HOME/tunnel-server`, else `~/.local/state/tunnel-server`).
    #[serde(default)]
    pub state_dir: Option<String>,
    /// Extra names for a generated certificate (besides localhost and the loopback addresses).
    #[serde(default)]
    pub cert_names: Vec<String>,
    /// `[tunnel] direct = true`.
    #[serde(default)]
    pub tunnel: TunnelTable,
    /// `[[ingress.rules]]`.
    #[serde(default)]
    pub ingress: IngressTable,
    /// `[[tokens]]`: per-tunnel tokens (several per tunnel allowed, for rotation).
    #[serde(default)]
    pub tokens: Vec<TunnelToken>,
    /// `[limits]`.
    #[serde(default)]
    pub limits: LimitsFile,
    /// Share the relay and entrypoint ports with other processes (`SO_REUSEPORT`).
    #[serde(default)]
    pub reuse: bool,
    /// The TLS relay port is also a sniffing entrypoint: sessions are told from visitors by
    /// their ClientHello's ALPN (for networks where only 443 leaves).
    #[serde(default)]
    pub share_port: bool,
    /// Where to write the process ID once listening.
    #[serde(default)]
    pub pid_file: Option<String>,
    /// `[[gateway]]`: sealed-address gateways.
    #[serde(default)]
    pub gateway: Vec<crate::gateway::GatewayFile>,
    /// `[cluster]`: several replicas sharing tunnels through Redis.
    #[serde(default)]
    pub cluster: Option<crate::cluster::ClusterFile>,
    /// `[tls]`: certificates from files for HTTPS entrypoints.
    #[serde(default)]
    pub tls: crate::https::config::TlsFile,
    /// `[acme]`: certificates ordered from an ACME CA for HTTPS entrypoints.
    #[serde(default)]
    pub acme: Option<crate::https::config::AcmeFile>,
    /// The relay addresses agents dial (`tunnel.example.com:8443`), written into connection
    /// tokens (default: the relay's address).
    #[serde(default)]
    pub advertise: Vec<String>,
}

/// `[tunnel]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelTable {
    /// Direct routing: access clients reach any tunnel by ID when no rule matches.
    #[serde(default)]
    pub direct: bool,
}

/// `[ingress]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressTable {
    /// The rules.
    #[serde(default)]
    pub rules: Vec<RuleFile>,
}

/// One ingress rule as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleFile {
    /// `example.org`, `.example.com` or `*.example.com`.
    pub hostname: String,
    /// Tunnel UUID; `$UUID` makes the rule private.
    pub endpoint: String,
    /// A path prefix (`/api`): the rule takes the host's HTTP requests under it.
    #[serde(default)]
    pub path: Option<String>,
    /// `user:$argon2id$...` entries (hashes from `tunnel-server --hash-password`): HTTP
    /// requests need basic authentication as one of them.
    #[serde(default)]
    pub basic_auth: Vec<String>,
    /// On HTTPS entrypoints: `terminate` (default where a certificate is had) or
    /// `passthrough` (the origin holds the certificate).
    #[serde(default)]
    pub tls: Option<String>,
    /// Redirect plain HTTP requests to HTTPS (default: on where the host is terminated).
    #[serde(default)]
    pub redirect: Option<bool>,
    /// `Strict-Transport-Security` with this max-age on HTTPS responses (`365d`).
    #[serde(default, with = "humantime_serde")]
    pub hsts: Option<Duration>,
    /// The ACME challenge for the host's certificate: `http-01`, `tls-alpn-01` or `dns-01`.
    #[serde(default)]
    pub challenge: Option<String>,
}

/// A rule's HTTPS settings as written; errors are `(key, why)`.
fn rule_edge(r: &RuleFile) -> Result<crate::ingress::Edge, (String, String)> {
    let tls = match r.tls.as_deref() {
        None => TlsMode::Auto,
        Some("terminate") => TlsMode::Terminate,
        Some("passthrough") => TlsMode::Passthrough,
        Some(other) => return Err(("tls".into(), format!("{other:?}: expected terminate or passthrough"))),
    };
    let challenge =
        r.challenge.as_deref().map(crate::https::Challenge::parse).transpose().map_err(|e| ("challenge".into(), e))?;
    if tls == TlsMode::Passthrough && (r.hsts.is_some() || challenge.is_some()) {
        return Err((
            "tls".into(),
            "a passed-through host's HTTPS is its origin's: hsts and challenge need tls = \"terminate\"".into(),
        ));
    }
    Ok(crate::ingress::Edge { tls, redirect: r.redirect, hsts: r.hsts.map(|d| d.as_secs()), challenge })
}

/// A rule's `path`: absolute, without query, fragment, dot segments, repeated slashes or
/// percent-escapes, so that it means the same to the server and to the origin.
fn validate_rule_path(raw: &str) -> Result<String, String> {
    if !raw.starts_with('/') {
        return Err(format!("{raw:?}: a path starts with /"));
    }
    if let Some(c) = raw.chars().find(|c| matches!(c, '?' | '#' | '%' | '\\') || c.is_whitespace() || c.is_control()) {
        return Err(format!("{raw:?}: {c:?} is not allowed in a rule's path"));
    }
    if raw.contains("//") || raw.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(format!("{raw:?}: no empty, . or .. segments in a rule's path"));
    }
    let path = raw.trim_end_matches('/');
    Ok(if path.is_empty() { "/".to_owned() } else { path.to_owned() })
}

/// A per-tunnel token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelToken {
    /// The tunnel.
    pub tunnel: String,
    /// The token.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the token instead; it must be private to its owner.
    #[serde(default, rename = "tokenFile")]
    pub token_file: Option<String>,
}

/// `[limits]` as written; every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitsFile {
    #[serde(default, with = "humantime_serde")]
    handshake_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    sniff_timeout: Option<Duration>,
    #[serde(default)]
    sniff_max_bytes: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    request_body_grace: Option<Duration>,
    #[serde(default)]
    request_body_min_rate: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    reply_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    ack_timeout: Option<Duration>,
    #[serde(default)]
    max_streams_per_session: Option<usize>,
    #[serde(default)]
    max_visitors: Option<usize>,
    #[serde(default)]
    max_sessions_per_tunnel: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    keepalive_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    grace_period: Option<Duration>,
    #[serde(default)]
    max_handshakes_per_source: Option<usize>,
    #[serde(default)]
    max_handshakes_per_prefix: Option<usize>,
    #[serde(default)]
    handshake_prefix_v4: Option<u8>,
    #[serde(default)]
    handshake_prefix_v6: Option<u8>,
    #[serde(default)]
    max_sessions_per_source: Option<usize>,
    #[serde(default)]
    max_access_sessions_per_tunnel: Option<usize>,
    #[serde(default)]
    max_access_streams: Option<usize>,
    #[serde(default)]
    max_streams_per_tunnel: Option<usize>,
    #[serde(default)]
    max_visitors_per_source: Option<usize>,
    #[serde(default)]
    max_udp_flows: Option<usize>,
    #[serde(default)]
    max_udp_flows_per_source: Option<usize>,
}

/// Limits in force; see [`tunnel_proto::defaults`] for why each default is what it is.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time for a new session to complete its hello.
    pub handshake_timeout: Duration,
    /// Time for a visitor to reveal its hostname.
    pub sniff_timeout: Duration,
    /// Bytes read while sniffing.
    pub sniff_max_bytes: usize,
    /// Time a request body may take before its rate counts.
    pub request_body_grace: Duration,
    /// Slowest average rate of a request body after its grace, in bytes a second (0: none).
    pub request_body_min_rate: u64,
    /// Time for an agent to answer a stream header.
    pub reply_timeout: Duration,
    /// Time for an agent to acknowledge a new stream; a silent session is closed and the
    /// stream retried on another.
    pub ack_timeout: Duration,
    /// Streams at once on one session.
    pub max_streams_per_session: usize,
    /// Visitors at once across all entrypoints and access streams.
    pub max_visitors: usize,
    /// Agent sessions per tunnel.
    pub max_sessions_per_tunnel: usize,
    /// A session silent for this long (no ping) is closed.
    pub keepalive_timeout: Duration,
    /// On SIGTERM/SIGINT, time given to streams in flight before sessions are closed.
    pub grace_period: Duration,
    /// Connections of one source address in their handshake at once.
    pub max_handshakes_per_source: usize,
    /// Connections in their handshake from one network prefix at once.
    pub max_handshakes_per_prefix: usize,
    /// The prefix lengths handshakes are counted by: IPv4, IPv6.
    pub handshake_prefix: (u8, u8),
    /// Established sessions of one source address.
    pub max_sessions_per_source: usize,
    /// Access-client sessions per tunnel.
    pub max_access_sessions_per_tunnel: usize,
    /// Access-client streams in flight on the whole server (apart from `max_visitors`).
    pub max_access_streams: usize,
    /// Streams in flight per tunnel: its public visitors plus its access clients' streams.
    pub max_streams_per_tunnel: usize,
    /// Public visitors in flight per source address.
    pub max_visitors_per_source: usize,
    /// UDP flows at once on one UDP entrypoint.
    pub max_udp_flows: usize,
    /// UDP flows at once of one source address, over every UDP entrypoint.
    pub max_udp_flows_per_source: usize,
}

/// An `[[entrypoints]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EntrypointFile {
    /// Where to listen, as in `entryPoint` (`:80`, or `:5201/iperf.local` for a raw one, or
    /// `udp://:5353/dns.example`).
    pub addr: String,
    /// CIDRs (or addresses) of proxies whose `X-Forwarded-For` is extended, not replaced.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// One info line per HTTP request (default on).
    #[serde(default)]
    pub access_log: Option<bool>,
    /// Keep HTTP origin connections for reuse across requests (default on).
    #[serde(default)]
    pub reuse_origins: Option<bool>,
    /// Connections from `trustedProxies` start with a PROXY protocol header (v1 or v2) naming
    /// the visitor (default off).
    #[serde(default)]
    pub proxy_protocol: bool,
    /// UDP: keep a flow after its first answer, until idle for `ttl` (default off).
    #[serde(default)]
    pub keepalive: Option<bool>,
    /// UDP: idle time that ends a kept-alive flow (default 5s).
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// UDP: bytes read per datagram; longer ones are truncated (default 4096, at most 65535).
    #[serde(default)]
    pub read_buffer_size: Option<usize>,
    /// HTTPS: TLS is terminated here for the hosts that have (or can get) a certificate, and
    /// passed through for the others.
    #[serde(default)]
    pub tls: bool,
}

/// A public entrypoint.
#[derive(Debug, Clone)]
pub struct Entrypoint {
    /// Where to listen.
    pub addr: SocketAddr,
    /// For a raw entrypoint, the hostname every connection is routed as.
    pub hostname: Option<String>,
    /// Visitors whose `X-Forwarded-For` is extended rather than replaced.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// One info line per HTTP request.
    pub access_log: bool,
    /// Keep HTTP origin connections for reuse.
    pub reuse_origins: bool,
    /// Connections from `trusted_proxies` start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// An HTTPS entrypoint.
    pub tls: bool,
}

impl Entrypoint {
    /// What the HTTP path needs to know of this entrypoint.
    pub fn http_options(&self) -> crate::http::HttpOptions {
        crate::http::HttpOptions {
            trusted_proxies: self.trusted_proxies.clone(),
            access_log: self.access_log,
            reuse_origins: self.reuse_origins,
            proxy_protocol: self.proxy_protocol,
            tls: self.tls,
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Relay listener.
    pub relay_addr: SocketAddr,
    /// Data-channel transport.
    pub transport: Transport,
    /// Where the server's certificate comes from (encrypted transports).
    pub identity: IdentitySource,
    /// Public entrypoints.
    pub entrypoints: Vec<Entrypoint>,
    /// Public UDP entrypoints.
    pub udp_entrypoints: Vec<crate::udp_entry::UdpEntrypoint>,
    /// The routing table.
    pub ingress: Ingress,
    /// Direct routing for access clients.
    pub direct: bool,
    /// Tokens accepted for every tunnel.
    pub global_tokens: Vec<Secret>,
    /// Tokens per tunnel.
    pub tunnel_tokens: HashMap<Uuid, Vec<Secret>>,
    /// Limits.
    pub limits: Limits,
    /// `SO_REUSEPORT` on the relay and entrypoint listeners.
    pub reuse: bool,
    /// The TLS relay port is also a sniffing entrypoint.
    pub share_port: bool,
    /// Where to write the process ID.
    pub pid_file: Option<std::path::PathBuf>,
    /// Sealed-address gateways.
    pub gateways: Vec<crate::gateway::GatewayConfig>,
    /// The admin listener, if any.
    pub admin: Option<tunnel_runtime::admin::AdminConfig>,
    /// The cluster, if this server is one replica of several.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Certificates for HTTPS entrypoints: files and the ACME CA.
    pub edge: crate::https::EdgeConfig,
    /// Where state is kept: the generated certificate, the ACME account, the tunnel store.
    pub state_dir: std::path::PathBuf,
    /// Relay addresses for connection tokens.
    pub advertise: Vec<String>,
    /// Where the configuration came from, for a reload.
    pub origin: Origin,
}

impl FileConfig {
    /// Reads and parses a TOML file, or a GOST YAML one (`.yaml`, `.yml`; see `config/gost.rs`).
    pub fn load(path: &str) -> Result<FileConfig, ConfigError> {
        if tunnel_runtime::gost::is_yaml(path) {
            return gost::load(path);
        }
        tunnel_runtime::config::load_toml(path)
    }

    /// Builds a config from a `relay://addr?key=value` URL.
    pub fn from_url(raw: &str) -> Result<FileConfig, ConfigError> {
        let mut u = NodeUrl::parse(raw)?;
        u.expect_scheme(&["relay", "relay+tcp", "relay+tls", "relay+quic"], Transport::SCHEMES)?;
        let mut fc = FileConfig {
            addr: u.addr.clone(),
            listener: Some(u.scheme.clone()),
            cert_file: u.take(&["certFile"]),
            key_file: u.take(&["keyFile"]),
            state_dir: u.take(&["stateDir"]),
            entry_point: u.take(&["entryPoint"]).map(OneOrMany::One),
            token: u.take(&["token"]).map(Secret::from),
            token_file: u.take(&["tokenFile"]),
            ..FileConfig::default()
        };
        fc.tunnel.direct = u.take_bool(&["tunnel.direct", "direct"])?.unwrap_or(false);
        fc.share_port = u.take_bool(&["sharePort"])?.unwrap_or(false);
        if let Some(rules) = u.take(&["tunnel", "ingress"]) {
            for rule in rules.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                let (hostname, endpoint) =
                    rule.rsplit_once(':').ok_or_else(|| u.bad("tunnel", rule, "expected hostname:tunnel-id"))?;
                fc.ingress.rules.push(RuleFile {
                    hostname: hostname.into(),
                    endpoint: endpoint.into(),
                    ..RuleFile::default()
                });
            }
        }
        let l = &mut fc.limits;
        l.handshake_timeout = u.take_duration(&["handshakeTimeout"])?;
        l.sniff_timeout = u.take_duration(&["sniffTimeout", "sniffing.timeout"])?;
        l.sniff_max_bytes = u.take_with(&["sniffMaxBytes"], str::parse::<usize>)?;
        l.request_body_grace = u.take_duration(&["requestBodyGrace"])?;
        l.request_body_min_rate = u.take_with(&["requestBodyMinRate"], str::parse::<u64>)?;
        l.reply_timeout = u.take_duration(&["replyTimeout"])?;
        l.ack_timeout = u.take_duration(&["ackTimeout"])?;
        l.max_streams_per_session = u.take_with(&["maxStreams", "maxStreamsPerSession"], str::parse::<usize>)?;
        l.max_visitors = u.take_with(&["maxVisitors"], str::parse::<usize>)?;
        l.max_sessions_per_tunnel = u.take_with(&["maxSessionsPerTunnel"], str::parse::<usize>)?;
        l.keepalive_timeout = u.take_duration(&["keepaliveTimeout"])?;
        l.grace_period = u.take_duration(&["gracePeriod"])?;
        l.max_handshakes_per_source = u.take_with(&["maxHandshakesPerSource"], str::parse::<usize>)?;
        l.max_handshakes_per_prefix = u.take_with(&["maxHandshakesPerPrefix"], str::parse::<usize>)?;
        l.handshake_prefix_v4 = u.take_with(&["handshakePrefixV4"], str::parse::<u8>)?;
        l.handshake_prefix_v6 = u.take_with(&["handshakePrefixV6"], str::parse::<u8>)?;
        l.max_sessions_per_source = u.take_with(&["maxSessionsPerSource"], str::parse::<usize>)?;
        l.max_access_sessions_per_tunnel = u.take_with(&["maxAccessSessionsPerTunnel"], str::parse::<usize>)?;
        l.max_access_streams = u.take_with(&["maxAccessStreams"], str::parse::<usize>)?;
        l.max_streams_per_tunnel = u.take_with(&["maxStreamsPerTunnel"], str::parse::<usize>)?;
        l.max_visitors_per_source = u.take_with(&["maxVisitorsPerSource"], str::parse::<usize>)?;
        l.max_udp_flows = u.take_with(&["maxUdpFlows"], str::parse::<usize>)?;
        l.max_udp_flows_per_source = u.take_with(&["maxUdpFlowsPerSource"], str::parse::<usize>)?;
        fc.reuse = u.take_bool(&["reuse"])?.unwrap_or(false);
        fc.pid_file = u.take(&["pidFile"]);
        u.finish()?;
        Ok(fc)
    }

    /// Sets the global token from `--token` or `TUNNEL_TOKEN`, in place of `token` or
    /// `tokenFile`.
    pub fn set_token(&mut self, token: Secret) {
        self.token = Some(token);
        self.token_file = None;
    }

    /// Checks every value and builds the runtime config. `source_name` (file path or URL)
    /// prefixes every error.
    pub fn validate(self, source_name: &str) -> Result<Config, ConfigError> {
        let invalid = |key: &str, why: String| ConfigError::Invalid {
            source_name: source_name.to_owned(),
            key: key.to_owned(),
            why,
        };
        let relay_addr = url::bind_addr(&self.addr).map_err(|e| invalid("addr", e))?;
        let listener = self.listener.as_deref().unwrap_or("tcp");
        let transport = Transport::from_scheme(listener)
            .ok_or_else(|| invalid("listener", format!("unknown listener {listener:?}, expected tcp, tls or quic")))?;
        if self.share_port && transport != Transport::Tls {
            return Err(invalid(
                "sharePort",
                format!("the relay shares its port by telling its own TLS ClientHellos from visitors', so it needs listener = \"tls\" (relay+tls://), not {transport}"),
            ));
        }
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                tunnel_runtime::secret::check_private_file(key.as_ref()).map_err(|e| invalid("keyFile", e))?;
                IdentitySource::Files { cert: cert.into(), key: key.into() }
            }
            (None, None) => {
                IdentitySource::SelfSigned { dir: state_dir(self.state_dir.as_deref()), names: self.cert_names.clone() }
            }
            (Some(_), None) => return Err(invalid("keyFile", "certFile needs keyFile".into())),
            (None, Some(_)) => return Err(invalid("certFile", "keyFile needs certFile".into())),
        };
        let (mut entrypoints, mut udp_entrypoints) = (Vec::new(), Vec::new());
        let plain = self.entry_point.as_ref().map(OneOrMany::items).unwrap_or_default();
        let tables = self.entrypoints.iter().map(|t| (t.addr.clone(), Some(t)));
        for (item, table) in plain.into_iter().map(|i| (i, None)).chain(tables) {
            let item = match crate::udp_entry::parse(&item, table).map_err(|(key, why)| invalid(key, why))? {
                crate::udp_entry::Parsed::Udp(ep) => {
                    udp_entrypoints.push(ep);
                    continue;
                }
                crate::udp_entry::Parsed::Tcp(item) => item,
            };
            let (addr, hostname) = match item.split_once('/') {
                Some((a, h)) => {
                    (a, Some(host::canonicalize(h).map_err(|e| invalid("entryPoint", format!("{item:?}: {e}")))?))
                }
                None => (item.as_str(), None),
            };
            let addr = url::bind_addr(addr).map_err(|e| invalid("entryPoint", e))?;
            let mut trusted_proxies = Vec::new();
            for raw in table.map(|t| t.trusted_proxies.as_slice()).unwrap_or_default() {
                let net = raw
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| invalid("entrypoints.trustedProxies", format!("{raw:?}: not a CIDR or an address")))?;
                trusted_proxies.push(net);
            }
            // The plain `entryPoint` form keeps its log volume: no access log.
            let access_log = table.is_some_and(|t| t.access_log.unwrap_or(true));
            let reuse_origins = table.is_none_or(|t| t.reuse_origins.unwrap_or(true));
            let proxy_protocol = table.is_some_and(|t| t.proxy_protocol);
            let tls = table.is_some_and(|t| t.tls);
            if tls && hostname.is_some() {
                return Err(invalid(
                    "entrypoints.tls",
                    format!("{item:?}: an HTTPS entrypoint reads each visitor's SNI; a raw entrypoint (ADDR/HOST) has none to read"),
                ));
            }
            if proxy_protocol && trusted_proxies.is_empty() {
                return Err(invalid(
                    "entrypoints.proxyProtocol",
                    format!(
                        "{}: the PROXY protocol is read from trustedProxies only; list the balancers' addresses there",
                        addr
                    ),
                ));
            }
            entrypoints.push(Entrypoint {
                addr,
                hostname,
                trusted_proxies,
                access_log,
                reuse_origins,
                proxy_protocol,
                tls,
            });
        }
        let mut rules = Vec::new();
        for (i, r) in self.ingress.rules.iter().enumerate() {
            let key = format!("ingress.rules[{i}]");
            let pattern = HostPattern::parse(&r.hostname)
                .map_err(|e| invalid(&format!("{key}.hostname"), format!("{:?}: {e}", r.hostname)))?;
            let (private, id) = match r.endpoint.trim().strip_prefix('$') {
                Some(id) => (true, id),
                None => (false, r.endpoint.trim()),
            };
            let tunnel = parse_tunnel_id(id).map_err(|e| invalid(&format!("{key}.endpoint"), e))?;
            let path = match &r.path {
                None => None,
                Some(raw) => Some(validate_rule_path(raw).map_err(|e| invalid(&format!("{key}.path"), e))?),
            };
            let mut basic_auth = Vec::new();
            for (j, entry) in r.basic_auth.iter().enumerate() {
                let cred = crate::http::auth::parse_credential(entry)
                    .map_err(|e| invalid(&format!("{key}.basicAuth[{j}]"), e))?;
                basic_auth.push(cred);
            }
            if private && !basic_auth.is_empty() {
                return Err(invalid(
                    &format!("{key}.basicAuth"),
                    "a private rule is reached by access clients, not HTTP visitors; basic authentication applies to public rules only".into(),
                ));
            }
            let edge = rule_edge(r).map_err(|(k, why)| invalid(&format!("{key}.{k}"), why))?;
            if let Some(j) = rules.iter().position(|earlier: &Rule| {
                earlier.pattern == pattern
                    && ((earlier.edge.tls != edge.tls
                        && earlier.edge.tls != TlsMode::Auto
                        && edge.tls != TlsMode::Auto)
                        || (earlier.edge.challenge != edge.challenge
                            && earlier.edge.challenge.is_some()
                            && edge.challenge.is_some()))
            }) {
                return Err(invalid(
                    &format!("{key}.tls"),
                    format!("{:?}: ingress.rules[{j}] says otherwise for the same hostname; TLS is terminated or passed through per host (its SNI carries no path), so the rules of one hostname agree on tls and challenge", r.hostname),
                ));
            }
            if let Some(j) = rules.iter().position(|earlier: &Rule| {
                earlier.pattern == pattern && earlier.path == path && earlier.tunnel != tunnel
            }) {
                let what = match &path {
                    Some(p) => format!("{:?} with path {p:?}", r.hostname),
                    None => format!("{:?}", r.hostname),
                };
                return Err(invalid(
                    &format!("{key}.hostname"),
                    format!(
                        "{what} is already ruled to tunnel {} by ingress.rules[{j}]; a hostname goes to one tunnel (the first rule would win and this one never be used): remove one of the two rules",
                        rules[j].tunnel
                    ),
                ));
            }
            rules.push(Rule { pattern, path, tunnel, private, basic_auth, edge });
        }
        let mut tunnel_tokens: HashMap<Uuid, Vec<Secret>> = HashMap::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let id = parse_tunnel_id(&t.tunnel).map_err(|e| invalid(&format!("tokens[{i}].tunnel"), e))?;
            let token = token_or_file(t.token.clone(), t.token_file.as_deref(), &format!("tokens[{i}]"), &invalid)?
                .ok_or_else(|| invalid(&format!("tokens[{i}]"), "missing: give token or tokenFile".into()))?;
            tunnel_tokens.entry(id).or_default().push(token);
        }
        let global_tokens: Vec<Secret> =
            token_or_file(self.token.clone(), self.token_file.as_deref(), "", &invalid)?.into_iter().collect();
        let gateways = crate::gateway::config::validate_all(&self.gateway, source_name)?;
        let l = self.limits;
        let limits = Limits {
            handshake_timeout: l.handshake_timeout.unwrap_or(defaults::HANDSHAKE_TIMEOUT),
            sniff_timeout: l.sniff_timeout.unwrap_or(defaults::SNIFF_TIMEOUT),
            sniff_max_bytes: l.sniff_max_bytes.unwrap_or(defaults::SNIFF_MAX_BYTES),
            request_body_grace: l.request_body_grace.unwrap_or(defaults::REQUEST_BODY_GRACE),
            request_body_min_rate: l.request_body_min_rate.unwrap_or(defaults::REQUEST_BODY_MIN_RATE),
            reply_timeout: l.reply_timeout.unwrap_or(defaults::REPLY_TIMEOUT),
            ack_timeout: l.ack_timeout.unwrap_or(defaults::ACK_TIMEOUT),
            max_streams_per_session: l.max_streams_per_session.unwrap_or(defaults::MAX_STREAMS_PER_SESSION),
            max_visitors: l.max_visitors.unwrap_or(defaults::MAX_VISITORS),
            max_sessions_per_tunnel: l.max_sessions_per_tunnel.unwrap_or(defaults::MAX_SESSIONS_PER_TUNNEL),
            keepalive_timeout: l
                .keepalive_timeout
                .unwrap_or(defaults::KEEPALIVE_INTERVAL + defaults::KEEPALIVE_TIMEOUT),
            grace_period: l.grace_period.unwrap_or(defaults::GRACE_PERIOD),
            max_handshakes_per_source: l.max_handshakes_per_source.unwrap_or(defaults::MAX_HANDSHAKES_PER_SOURCE),
            max_handshakes_per_prefix: l.max_handshakes_per_prefix.unwrap_or(defaults::MAX_HANDSHAKES_PER_PREFIX),
            handshake_prefix: (
                l.handshake_prefix_v4.unwrap_or(defaults::HANDSHAKE_PREFIX_V4),
                l.handshake_prefix_v6.unwrap_or(defaults::HANDSHAKE_PREFIX_V6),
            ),
            max_sessions_per_source: l.max_sessions_per_source.unwrap_or(defaults::MAX_SESSIONS_PER_SOURCE),
            max_access_sessions_per_tunnel: l
                .max_access_sessions_per_tunnel
                .unwrap_or(defaults::MAX_ACCESS_SESSIONS_PER_TUNNEL),
            max_access_streams: l.max_access_streams.unwrap_or(defaults::MAX_ACCESS_STREAMS),
            max_streams_per_tunnel: l.max_streams_per_tunnel.unwrap_or(defaults::MAX_STREAMS_PER_TUNNEL),
            max_visitors_per_source: l.max_visitors_per_source.unwrap_or(defaults::MAX_VISITORS_PER_SOURCE),
            max_udp_flows: l.max_udp_flows.unwrap_or(defaults::MAX_UDP_FLOWS),
            max_udp_flows_per_source: l.max_udp_flows_per_source.unwrap_or(defaults::MAX_UDP_FLOWS_PER_SOURCE),
        };
        if limits.max_streams_per_session == 0 || limits.max_streams_per_session >= defaults::MUX_MAX_STREAMS {
            return Err(invalid(
                "limits.maxStreamsPerSession",
                format!("must be between 1 and {}", defaults::MUX_MAX_STREAMS - 1),
            ));
        }
        if limits.sniff_max_bytes < 64 {
            return Err(invalid("limits.sniffMaxBytes", "must be at least 64".into()));
        }
        for (key, v) in [
            ("maxVisitors", limits.max_visitors),
            ("maxSessionsPerTunnel", limits.max_sessions_per_tunnel),
            ("maxHandshakesPerSource", limits.max_handshakes_per_source),
            ("maxHandshakesPerPrefix", limits.max_handshakes_per_prefix),
            ("maxSessionsPerSource", limits.max_sessions_per_source),
            ("maxAccessSessionsPerTunnel", limits.max_access_sessions_per_tunnel),
            ("maxAccessStreams", limits.max_access_streams),
            ("maxStreamsPerTunnel", limits.max_streams_per_tunnel),
            ("maxVisitorsPerSource", limits.max_visitors_per_source),
            ("maxUdpFlows", limits.max_udp_flows),
            ("maxUdpFlowsPerSource", limits.max_udp_flows_per_source),
        ] {
            if v == 0 {
                return Err(invalid(&format!("limits.{key}"), "must be at least 1".into()));
            }
        }
        Ok(Config {
            relay_addr,
            transport,
            identity,
            entrypoints,
            udp_entrypoints,
            ingress: Ingress::new(rules),
            direct: self.tunnel.direct,
            global_tokens,
            tunnel_tokens,
            limits,
            reuse: self.reuse,
            share_port: self.share_port,
            pid_file: self.pid_file.map(Into::into),
            gateways,
            admin: self.admin.validate(source_name, None)?,
            cluster: match &self.cluster {
                None => None,
                Some(c) => Some(c.validate(|k| std::env::var(k).ok()).map_err(|(key, why)| invalid(&key, why))?),
            },
            edge: crate::https::config::validate(&self.tls, self.acme.as_ref(), state_dir(self.state_dir.as_deref()))
                .map_err(|(key, why)| invalid(&key, why))?,
            state_dir: state_dir(self.state_dir.as_deref()),
            advertise: self.advertise.clone(),
            origin: Origin::default(),
        })
    }
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gateways: Vec<String> = self.gateways.iter().map(|url| tunnel_runtime::url::redact(url)).collect();
        f.debug_struct("Origin")
            .field("file", &self.file)
            .field("token", &self.token)
            .field("admin", &self.admin)
            .field("gateways", &gateways)
            .field("pid_file", &self.pid_file)
            .finish()
    }
}

/// Where a server's configuration came from: a reload reads the same file again and applies
/// the same command-line overrides. Its `Debug` shows no secret (the token, a gateway URL's
/// `secret`).
#[derive(Clone, Default)]
pub struct Origin {
    /// The TOML file (`-C`); `None` for `-L`, which a reload cannot re-read.
    pub file: Option<String>,
    /// `--token` / `TUNNEL_TOKEN`.
    pub token: Option<Secret>,
    /// `--admin`.
    pub admin: Option<String>,
    /// `--gateway` URLs.
    pub gateways: Vec<String>,
    /// `--pid-file`.
    pub pid_file: Option<String>,
}

impl Origin {
    /// Reads and validates the configuration again, with the same overrides.
    pub fn reload(&self) -> Result<Config, ConfigError> {
        // A configuration from -L has no file to re-read.
        let Some(path) = &self.file else {
            return Err(ConfigError::File {
                path: "-L".into(),
                why: "a configuration given with -L cannot be re-read; start the server with -C FILE to reload".into(),
            });
        };
        let mut file = FileConfig::load(path)?;
        self.apply(&mut file)?;
        let mut config = file.validate(path)?;
        config.origin = self.clone();
        Ok(config)
    }

    /// Puts the command-line overrides into a file's configuration.
    pub fn apply(&self, file: &mut FileConfig) -> Result<(), ConfigError> {
        if let Some(token) = &self.token {
            file.set_token(token.clone());
        }
        if let Some(admin) = &self.admin {
            file.admin.addr = Some(admin.clone());
        }
        for url in &self.gateways {
            file.gateway.push(crate::gateway::config::GatewayFile::from_url(url)?);
        }
        if let Some(pid_file) = &self.pid_file {
            file.pid_file = Some(pid_file.clone());
        }
        Ok(())
    }
}

impl Config {
    /// What this configuration leaves unusable without being wrong, for `--check` and the log
    /// at start: a raw entrypoint whose hostname no public rule routes refuses every
    /// connection; cluster replicas that each make their own certificate refuse each other. (The token table's warnings are [`Routes::token_warnings`].)
    pub fn warnings(&self) -> Vec<String> {
        let tcp =
            self.entrypoints.iter().filter_map(|ep| Some((ep.addr.to_string(), ep.hostname.as_deref()?, "connection")));
        let udp = self.udp_entrypoints.iter().map(|ep| (format!("udp://{}", ep.addr), ep.hostname.as_str(), "flow"));
        let cluster = match (&self.cluster, &self.identity) {
            (Some(_), IdentitySource::SelfSigned { .. }) if self.transport.is_encrypted() => Some(format!(
                "[cluster] with listener = \"{}\" and a self-signed certificate: replicas pin their own relay certificate on each other, so each making its own refuses every other; give every replica the same certFile and keyFile",
                self.transport.scheme().trim_start_matches("relay+")
            )),
            _ => None,
        };
        tcp.chain(udp)
            .filter_map(|(addr, host, what)| {
                let why = match self.ingress.lookup(host) {
                    None => "no ingress rule routes it",
                    Some(rule) if rule.private => "its only rule is private (access clients only)",
                    Some(_) => return None,
                };
                Some(format!(
                    "entryPoint {addr}/{host}: {why}, so every {what} to {addr} is refused; add a public rule ([[ingress.rules]] hostname = \"{host}\", endpoint = \"TUNNEL-ID\", or tunnel={host}:TUNNEL-ID in -L)"
                ))
            })
            .chain(cluster)
            .chain(self.cleartext_password_warnings())
            .collect()
    }

    /// basicAuth rules whose passwords plain-HTTP visitors would send in clear: a sniffing
    /// plain entrypoint serves them and no redirect to HTTPS sends the visitors away first.
    fn cleartext_password_warnings(&self) -> Vec<String> {
        let plain = self.entrypoints.iter().find(|ep| !ep.tls && ep.hostname.is_none());
        let https = self.entrypoints.iter().any(|ep| ep.tls);
        let certificates = self.edge.acme.is_some() || !self.edge.files.is_empty() || self.edge.cert_dir.is_some();
        let Some(plain) = plain else { return Vec::new() };
        self.ingress
            .rules()
            .iter()
            .filter(|rule| !rule.basic_auth.is_empty())
            .filter(|rule| {
                let terminated = match rule.edge.tls {
                    TlsMode::Terminate => true,
                    TlsMode::Passthrough => false,
                    TlsMode::Auto => certificates,
                };
                !(https && terminated && rule.edge.redirect != Some(false))
            })
            .map(|rule| {
                format!(
                    "rule {} asks for passwords (basicAuth) and plain-HTTP visitors of entrypoint {} send them in clear: add an HTTPS entrypoint (tls = true) with a certificate for the host, which redirects them (redirect = true)",
                    rule.label(),
                    plain.addr
                )
            })
            .collect()
    }

    /// The routing decisions this configuration makes.
    pub fn routes(&self) -> Routes {
        Routes {
            ingress: self.ingress.clone(),
            direct: self.direct,
            auth: Auth::new(&self.global_tokens, &self.tunnel_tokens),
        }
    }
}

impl Limits {
    /// The budgets these limits size.
    pub fn budgets(&self) -> crate::budget::Budgets {
        use crate::budget::KeyedBudget;
        use std::sync::Arc;
        use tokio::sync::Semaphore;
        crate::budget::Budgets {
            visitors: Arc::new(Semaphore::new(self.max_visitors)),
            access_streams: Arc::new(Semaphore::new(self.max_access_streams)),
            handshakes: crate::budget::Handshakes::new(
                tunnel_proto::defaults::MAX_PENDING_HANDSHAKES,
                self.max_handshakes_per_source,
                self.max_handshakes_per_prefix,
                self.handshake_prefix,
            ),
            sessions_per_source: KeyedBudget::new(self.max_sessions_per_source),
            access_sessions_per_tunnel: KeyedBudget::new(self.max_access_sessions_per_tunnel),
            streams_per_tunnel: KeyedBudget::new(self.max_streams_per_tunnel),
            visitors_per_source: KeyedBudget::new(self.max_visitors_per_source),
            udp_flows_per_source: KeyedBudget::new(self.max_udp_flows_per_source),
        }
    }

    /// How slowly a request body may arrive.
    pub fn body_pace(&self) -> tunnel_runtime::http::io::BodyPace {
        tunnel_runtime::http::io::BodyPace { grace: self.request_body_grace, min_rate: self.request_body_min_rate }
    }

    /// The timeouts for a new stream's replies.
    pub fn reply_timeouts(&self) -> tunnel_proto::framed::ReplyTimeouts {
        tunnel_proto::framed::ReplyTimeouts { ack: self.ack_timeout, reply: self.reply_timeout }
    }
}

/// Where the server certificate of the encrypted transports comes from.
#[derive(Debug, Clone)]
pub enum IdentitySource {
    /// Configured PEM files.
    Files {
        /// Certificate chain.
        cert: std::path::PathBuf,
        /// Private key.
        key: std::path::PathBuf,
    },
    /// A self-signed certificate generated once and kept in `dir`.
    SelfSigned {
        /// Where it is kept.
        dir: std::path::PathBuf,
        /// Extra names.
        names: Vec<String>,
    },
}

/// The token of a `token` / `tokenFile` pair under `prefix` (`""` or `tokens[i]`); errors name
/// the key.
fn token_or_file(
    token: Option<Secret>,
    file: Option<&str>,
    prefix: &str,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<Option<Secret>, ConfigError> {
    let key = |name: &str| if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") };
    tunnel_runtime::secret::token_or_file(token, file, &key("token"), &key("tokenFile"))
        .map_err(|(k, why)| invalid(&k, why))
}

fn state_dir(configured: Option<&str>) -> std::path::PathBuf {
    if let Some(dir) = configured {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("TUNNEL_STATE_DIR") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".local/state")))
        .unwrap_or_else(|| "/var/lib".into());
    base.join("tunnel-server")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_command_line() {
        let cfg = FileConfig::from_url(
            "relay://:8443?entryPoint=:80&tunnel=.example.com:4d21094e-b74c-4916-86c1-d9fa36ea677b,example.org:$ac74d9dd-3125-442a-a7c1-f9e49e05faca",
        )
        .unwrap()
        .validate("-L")
        .unwrap();
        assert_eq!(cfg.relay_addr.port(), 8443);
        assert_eq!(cfg.entrypoints[0].addr.port(), 80);
        let rule = cfg.ingress.lookup("abc.example.com").unwrap();
        assert!(!rule.private);
        assert!(cfg.ingress.lookup("example.org").unwrap().private);
    }

    #[test]
    fn errors_name_the_key() {
        let err = FileConfig::from_url("relay://:8443?tunnel=a.com:not-a-uuid").unwrap().validate("-L").unwrap_err();
        assert!(
            err.to_string().contains("ingress.rules[0].endpoint") && err.to_string().contains("not-a-uuid"),
            "{err}"
        );
        let err = FileConfig::from_url("relay://:8443?entrypoint=:80&colour=red").unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let err = FileConfig::from_url("http://:8443").unwrap_err();
        assert!(err.to_string().contains("unsupported scheme"), "{err}");
        let err: Result<FileConfig, _> = toml::from_str("addr = \":1\"\nbogus = 1\n");
        assert!(err.unwrap_err().to_string().contains("bogus"));
    }

    #[test]
    fn token_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-a-file\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = path.to_str().unwrap();
        let id = "4d21094e-b74c-4916-86c1-d9fa36ea677b";
        let text =
            format!("addr = \":1\"\ntokenFile = \"{path}\"\n[[tokens]]\ntunnel = \"{id}\"\ntokenFile = \"{path}\"\n");
        let cfg = toml::from_str::<FileConfig>(&text).unwrap().validate("f").unwrap();
        assert_eq!(cfg.global_tokens[0].expose(), "from-a-file");
        assert_eq!(cfg.tunnel_tokens[&id.parse().unwrap()][0].expose(), "from-a-file");
        let mut file = FileConfig::from_url(&format!("relay://:1?tokenFile={path}")).unwrap();
        file.set_token(Secret::from("flag"));
        assert_eq!(file.validate("-L").unwrap().global_tokens[0].expose(), "flag", "--token wins over tokenFile");
        let err = FileConfig::from_url(&format!("relay://:1?tokenFile={path}&token=x")).unwrap().validate("-L");
        assert!(err.unwrap_err().to_string().contains("either token or tokenFile"));
    }

    #[test]
    fn raw_entrypoints() {
        let cfg = FileConfig::from_url(
            "relay://:0?entryPoint=:80,:5201/Iperf.Local&tunnel=iperf.local:22f43305-42f7-4232-bbbc-aa6c042e3bc3",
        )
        .unwrap()
        .validate("-L")
        .unwrap();
        assert_eq!(cfg.entrypoints.len(), 2);
        assert_eq!(cfg.entrypoints[1].hostname.as_deref(), Some("iperf.local"));
        assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
    }

    #[test]
    fn a_hostname_ruled_to_two_tunnels_is_an_error_naming_both_rules() {
        let (a, b) = ("4d21094e-b74c-4916-86c1-d9fa36ea677b", "ac74d9dd-3125-442a-a7c1-f9e49e05faca");
        let err = FileConfig::from_url(&format!("relay://:0?tunnel=x.example:{a},y.example:{a},X.Example:${b}"))
            .unwrap()
            .validate("-L")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ingress.rules[2].hostname") && err.contains("ingress.rules[0]"), "{err}");
        assert!(err.contains(a) && err.contains("X.Example"), "{err}");
        // The same hostname twice for one tunnel, or as overlapping patterns, is not a conflict.
        let ok = format!("relay://:0?tunnel=x.example:{a},x.example:${a},.x.example:{b},*.x.example:{a}");
        FileConfig::from_url(&ok).unwrap().validate("-L").unwrap();
    }

    #[test]
    fn a_raw_entrypoint_without_a_public_rule_is_a_warning_naming_the_missing_rule() {
        let id = "22f43305-42f7-4232-bbbc-aa6c042e3bc3";
        let cfg = FileConfig::from_url(&format!(
            "relay://:0?entryPoint=127.0.0.1:5201/iperf.local,127.0.0.1:5202/private.local,127.0.0.1:80&tunnel=private.local:${id}"
        ))
        .unwrap()
        .validate("-L")
        .unwrap();
        let warnings = cfg.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("127.0.0.1:5201/iperf.local") && warnings[0].contains("no ingress rule"));
        assert!(warnings[0].contains("hostname = \"iperf.local\""), "{}", warnings[0]);
        assert!(warnings[1].contains("private.local") && warnings[1].contains("private"), "{}", warnings[1]);
    }

    #[test]
    fn udp_entrypoints_sit_beside_tcp_ones_and_warn_like_raw_ones() {
        let id = "22f43305-42f7-4232-bbbc-aa6c042e3bc3";
        let cfg = FileConfig::from_url(&format!(
            "relay://:0?entryPoint=:80,udp://127.0.0.1:5353/dns.example,:5201/iperf.local,udp://:5354/nowhere.example&tunnel=dns.example:{id},iperf.local:{id}&maxUdpFlowsPerSource=3"
        ))
        .unwrap()
        .validate("-L")
        .unwrap();
        assert_eq!(cfg.entrypoints.iter().map(|e| e.addr.port()).collect::<Vec<_>>(), [80, 5201]);
        let udp: Vec<_> = cfg.udp_entrypoints.iter().map(|e| (e.addr.port(), e.hostname.as_str())).collect();
        assert_eq!(udp, [(5353, "dns.example"), (5354, "nowhere.example")]);
        assert_eq!(cfg.limits.max_udp_flows_per_source, 3);
        let warnings = cfg.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("udp://0.0.0.0:5354/nowhere.example"), "{}", warnings[0]);
        assert!(warnings[0].contains("every flow") && warnings[0].contains("hostname = \"nowhere.example\""));
        let text = "addr = \":0\"\nentryPoint = [\"udp://:53/a.example\"]\n[[entrypoints]]\naddr = \"udp://:54/b.example\"\nkeepalive = true\nttl = \"1m\"\n";
        let cfg = toml::from_str::<FileConfig>(text).unwrap().validate("f").unwrap();
        assert!(cfg.entrypoints.is_empty());
        assert!(!cfg.udp_entrypoints[0].keepalive && cfg.udp_entrypoints[1].keepalive);
        assert_eq!(cfg.udp_entrypoints[1].ttl, Duration::from_secs(60));
        let err = FileConfig::from_url("relay://:0?entryPoint=udp://:53").unwrap().validate("-L").unwrap_err();
        assert!(err.to_string().contains("entryPoint") && err.to_string().contains("needs a hostname"), "{err}");
        let err = FileConfig::from_url("relay://:0?maxUdpFlows=0").unwrap().validate("-L").unwrap_err();
        assert!(err.to_string().contains("limits.maxUdpFlows"), "{err}");
    }

    #[test]
    fn entrypoint_tables_add_options_after_the_plain_list() {
        let text = "addr = \":0\"\nentryPoint = [\":80\"]\n\n[[entrypoints]]\naddr = \":81\"\ntrustedProxies = [\"10.0.0.0/8\", \"192.0.2.7\"]\n\n[[entrypoints]]\naddr = \":82/raw.local\"\naccessLog = false\n";
        let cfg = toml::from_str::<FileConfig>(text).unwrap().validate("f").unwrap();
        let ports: Vec<u16> = cfg.entrypoints.iter().map(|e| e.addr.port()).collect();
        assert_eq!(ports, [80, 81, 82]);
        assert!(cfg.entrypoints[0].trusted_proxies.is_empty() && !cfg.entrypoints[0].access_log);
        assert_eq!(cfg.entrypoints[1].trusted_proxies.len(), 2);
        assert!(cfg.entrypoints[1].access_log, "on by default in a table");
        assert_eq!(cfg.entrypoints[2].hostname.as_deref(), Some("raw.local"));
        assert!(!cfg.entrypoints[2].access_log);
        let bad = "addr = \":0\"\n[[entrypoints]]\naddr = \":81\"\ntrustedProxies = [\"nope\"]\n";
        let err = toml::from_str::<FileConfig>(bad).unwrap().validate("f").unwrap_err();
        assert!(err.to_string().contains("trustedProxies"), "{err}");
    }

    #[test]
    fn the_origins_debug_shows_no_secret() {
        let origin = Origin {
            token: Some(Secret::new("tok-hunter2")),
            gateways: vec!["gateway://:9000?secret=gw-hunter2&retry=1".into()],
            ..Origin::default()
        };
        let shown = format!("{origin:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("gateway://:9000"), "{shown}");
    }
}
