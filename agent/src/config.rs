//! Agent configuration: `-L rtcp://:0/target -F relay://server?tunnel.id=...` or a TOML file,
//! both validated into [`Config`].

use std::time::Duration;

use serde::Deserialize;
use tunnel_proto::host::HostPattern;
use tunnel_proto::wire::Network;
use tunnel_proto::{datagram, defaults};
use tunnel_runtime::admin::{AdminConfig, AdminFile};
use tunnel_runtime::cli::ClientFile;
use tunnel_runtime::client::{KeeperTimings, RelayFile, RelayOptions};
use tunnel_runtime::url::{self, NodeUrl};

pub use tunnel_runtime::config::ConfigError;

mod gost;

use crate::proxy_protocol::ProxyVersion;
use crate::target::{self, HealthCheck, Probe, Selector, Strategy, Target};

/// The agent's file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[admin]`: the admin listener (off unless an address is set).
    #[serde(default)]
    pub admin: AdminFile,
    /// The server to join.
    pub relay: RelayFile,
    /// `rtcp` / `rudp` services.
    #[serde(default)]
    pub services: Vec<ServiceFile>,
    /// Timeouts and retry settings.
    #[serde(default)]
    pub limits: LimitsFile,
}

/// One service as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    /// A name for logs.
    #[serde(default)]
    pub name: Option<String>,
    /// `rtcp` or `rudp`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Route by hostname (the stream's hostname is always used when present; accepted for
    /// compatibility with the seed's files).
    #[serde(default)]
    pub sniffing: bool,
    /// `rudp`: a flow with no traffic for this long ends (default 60s).
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// `rudp`: bytes read per datagram from the target (default and maximum 65535).
    #[serde(default, rename = "readBufferSize")]
    pub read_buffer_size: Option<usize>,
    /// The targets.
    pub forwarder: ForwarderFile,
}

/// `forwarder`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwarderFile {
    /// The targets.
    pub nodes: Vec<NodeFile>,
    /// How targets for the same host are balanced and skipped when they fail.
    #[serde(default)]
    pub selector: Option<SelectorFile>,
}

/// `forwarder.selector`, as in seed `003_*`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SelectorFile {
    /// `round` (default), `random`, `fifo` or `hash`.
    #[serde(default)]
    pub strategy: Option<String>,
    /// Failed dials in a row after which a target is skipped (default 1).
    #[serde(default)]
    pub max_fails: Option<u32>,
    /// How long it is skipped (default 10s; 0s never skips).
    #[serde(default, with = "humantime_serde")]
    pub fail_timeout: Option<Duration>,
}

/// One target as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// A name for logs.
    #[serde(default)]
    pub name: Option<String>,
    /// `host:port` (`:port` is this machine); `https://host[:port]` or `tls://host:port`
    /// for a target that only speaks TLS.
    pub addr: String,
    /// TLS targets: the PEM CAs that verify the target's certificate (default: the system's).
    #[serde(default, rename = "caFile")]
    pub ca_file: Option<String>,
    /// TLS targets: the name sent as SNI and verified (default: the address's host).
    #[serde(default, rename = "serverName")]
    pub server_name: Option<String>,
    /// TLS targets: no certificate check (a warning at start).
    #[serde(default)]
    pub insecure: bool,
    /// Hostname pattern this target serves; none makes it a fallback.
    #[serde(default)]
    pub host: Option<String>,
    /// `1` or `2`: write a PROXY protocol header of that version, carrying the visitor's
    /// address, before any byte (TCP targets only).
    #[serde(default, rename = "proxyProtocol")]
    pub proxy_protocol: Option<u8>,
    /// Active check: `"tcp"` (a connect) or an HTTP path such as `"/healthz"` (2xx or 3xx).
    #[serde(default, rename = "healthCheck")]
    pub health_check: Option<String>,
    /// How often the check runs (default 10s).
    #[serde(default, rename = "healthCheckInterval", with = "humantime_serde")]
    pub health_check_interval: Option<Duration>,
    /// Time limit of one check (default 2s).
    #[serde(default, rename = "healthCheckTimeout", with = "humantime_serde")]
    pub health_check_timeout: Option<Duration>,
}

/// A target's address without its `https://` or `tls://` scheme, and its TLS settings;
/// errors are `(key, why)`.
fn target_tls(
    node: &NodeFile,
    network: Network,
) -> Result<(String, Option<crate::target::TargetTls>), (String, String)> {
    let (addr, tls) = match (node.addr.strip_prefix("https://"), node.addr.strip_prefix("tls://")) {
        (Some(rest), _) => {
            let rest = rest.trim_end_matches('/');
            let has_port = rest.rsplit_once(':').is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok());
            (if has_port { rest.to_owned() } else { format!("{rest}:443") }, true)
        }
        (None, Some(rest)) => (rest.to_owned(), true),
        (None, None) => (node.addr.clone(), false),
    };
    if !tls {
        if node.ca_file.is_some() || node.server_name.is_some() || node.insecure {
            return Err((
                "addr".into(),
                "caFile, serverName and insecure are for TLS targets: write https://HOST:PORT or tls://HOST:PORT"
                    .into(),
            ));
        }
        return Ok((addr, None));
    }
    if network == Network::Udp {
        return Err(("addr".into(), "a UDP (rudp) target cannot speak TLS".into()));
    }
    if matches!(node.health_check.as_deref(), Some(p) if p.starts_with('/')) {
        return Err(("healthCheck".into(), "an HTTP check speaks plain HTTP; use \"tcp\" for a TLS target".into()));
    }
    let verify = match (&node.ca_file, node.insecure) {
        (Some(_), true) => return Err(("insecure".into(), "give caFile or insecure, not both".into())),
        (Some(ca), false) => tunnel_proto::tls::Verify::CaFile(ca.into()),
        (None, true) => tunnel_proto::tls::Verify::Insecure,
        (None, false) => tunnel_proto::tls::Verify::SystemRoots,
    };
    let client = tunnel_proto::tls::ClientTls { verify: verify.clone(), server_name: node.server_name.clone() };
    let config = client.origin_config().map_err(|e| ("caFile".into(), e.to_string()))?;
    let server_name = client.server_name(&addr).map_err(|e| ("serverName".into(), e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    Ok((addr, Some(crate::target::TargetTls { connector, server_name, verify })))
}

/// `[limits]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitsFile {
    #[serde(default, with = "humantime_serde")]
    dial_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    handshake_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    backoff_base: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    backoff_max: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    keepalive_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    keepalive_timeout: Option<Duration>,
    #[serde(default)]
    max_udp_flows: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    grace_period: Option<Duration>,
}

/// Timeouts and backoff.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connecting to a target.
    pub dial_timeout: Duration,
    /// Connecting to the server plus hello.
    pub handshake_timeout: Duration,
    /// UDP flows at once.
    pub max_udp_flows: usize,
    /// Reconnects, keepalive and the drain of each session.
    pub session: KeeperTimings,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server and tunnel.
    pub relay: RelayOptions,
    /// Every target of every service.
    pub targets: Vec<Target>,
    /// Limits.
    pub limits: Limits,
    /// The admin listener, if any.
    pub admin: Option<AdminConfig>,
}

impl ClientFile for FileConfig {
    type Config = Config;

    fn relay_mut(&mut self) -> &mut RelayFile {
        &mut self.relay
    }

    fn admin_mut(&mut self) -> &mut AdminFile {
        &mut self.admin
    }

    /// Translates a GOST YAML document (see `config/gost.rs`).
    fn from_gost(
        doc: &tunnel_runtime::gost::Document,
    ) -> Result<(Self, tunnel_runtime::gost::KeyMap), (String, String)> {
        gost::translate(doc)
    }

    /// Builds the config from `-L` service URLs and the `-F` relay URL.
    fn from_urls(services: &[String], relay: &str) -> Result<FileConfig, ConfigError> {
        let mut fc = FileConfig { relay: RelayFile::from_url(relay)?, ..FileConfig::default() };
        for raw in services {
            let mut u = NodeUrl::parse(raw)?;
            u.expect_scheme(&["rtcp", "rudp"], "rtcp, rudp")?;
            let sniffing = u.take_bool(&["sniffing"])?.unwrap_or(false);
            let (mut ttl, mut read_buffer_size, mut proxy_protocol) = (None, None, None);
            if u.scheme == "rudp" {
                ttl = u.take_duration(&["ttl"])?;
                read_buffer_size = u.take_with(&["readBufferSize"], str::parse::<usize>)?;
            } else {
                proxy_protocol = u.take_with(&["proxyProtocol"], str::parse::<u8>)?;
            }
            let selector = SelectorFile {
                strategy: u.take(&["strategy"]),
                max_fails: u.take_with(&["maxFails"], str::parse::<u32>)?,
                fail_timeout: u.take_duration(&["failTimeout"])?,
            };
            let health_check = u.take(&["healthCheck"]);
            let health_check_interval = u.take_duration(&["healthCheckInterval"])?;
            let health_check_timeout = u.take_duration(&["healthCheckTimeout"])?;
            let has_selector =
                selector.strategy.is_some() || selector.max_fails.is_some() || selector.fail_timeout.is_some();
            let target = u.target.clone().ok_or_else(|| u.bad("target", "", "missing: write rtcp://:0/host:port"))?;
            let nodes = target
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .enumerate()
                .map(|(i, addr)| NodeFile {
                    name: Some(format!("target-{i}")),
                    addr: addr.to_owned(),
                    host: None,
                    proxy_protocol,
                    health_check: health_check.clone(),
                    health_check_interval,
                    health_check_timeout,
                    ..NodeFile::default()
                })
                .collect();
            fc.services.push(ServiceFile {
                name: Some(raw.clone()),
                kind: u.scheme.clone(),
                sniffing,
                ttl,
                read_buffer_size,
                forwarder: ForwarderFile { nodes, selector: has_selector.then_some(selector) },
            });
            u.finish()?;
        }
        Ok(fc)
    }

    /// Validates every value.
    fn validate(self, source_name: &str) -> Result<Config, ConfigError> {
        let invalid = |key: &str, why: String| ConfigError::Invalid {
            source_name: source_name.to_owned(),
            key: key.to_owned(),
            why,
        };
        let relay = self.relay.validate().map_err(|(k, why)| invalid(&format!("relay.{k}"), why))?;
        let mut targets = Vec::new();
        for (i, svc) in self.services.iter().enumerate() {
            let network = match svc.kind.as_str() {
                "rtcp" => Network::Tcp,
                "rudp" => Network::Udp,
                other => {
                    return Err(invalid(
                        &format!("services[{i}].type"),
                        format!("unknown service type {other:?}, expected rtcp or rudp"),
                    ))
                }
            };
            let read_buffer_size = svc.read_buffer_size.unwrap_or(datagram::MAX_DATAGRAM);
            if read_buffer_size == 0 || read_buffer_size > datagram::MAX_DATAGRAM {
                return Err(invalid(&format!("services[{i}].readBufferSize"), "must be between 1 and 65535".into()));
            }
            let udp_ttl = svc.ttl.unwrap_or(defaults::AGENT_UDP_TTL);
            if udp_ttl.is_zero() {
                return Err(invalid(&format!("services[{i}].ttl"), "must be more than 0".into()));
            }
            let selector = validate_selector(svc.forwarder.selector.as_ref())
                .map_err(|(k, why)| invalid(&format!("services[{i}].forwarder.selector.{k}"), why))?;
            if svc.forwarder.nodes.is_empty() {
                return Err(invalid(&format!("services[{i}].forwarder.nodes"), "no targets".into()));
            }
            for (j, node) in svc.forwarder.nodes.iter().enumerate() {
                let key = format!("services[{i}].forwarder.nodes[{j}]");
                let (addr, tls) = target_tls(node, network).map_err(|(k, why)| invalid(&format!("{key}.{k}"), why))?;
                url::split_host_port(&addr).map_err(|e| invalid(&format!("{key}.addr"), e))?;
                let host = node
                    .host
                    .as_deref()
                    .map(HostPattern::parse)
                    .transpose()
                    .map_err(|e| invalid(&format!("{key}.host"), e.to_string()))?;
                let proxy_protocol = match (node.proxy_protocol, network) {
                    (None, _) => None,
                    (Some(_), Network::Udp) => {
                        return Err(invalid(&format!("{key}.proxyProtocol"), "only TCP (rtcp) targets take it".into()))
                    }
                    (Some(v), Network::Tcp) => {
                        Some(ProxyVersion::from_number(v).map_err(|e| invalid(&format!("{key}.proxyProtocol"), e))?)
                    }
                };
                let health_check =
                    validate_check(node, network).map_err(|(k, why)| invalid(&format!("{key}.{k}"), why))?;
                if let Some(other) = targets.iter().find(|t: &&Target| {
                    t.network == network && t.host == host && t.selector.strategy != selector.strategy
                }) {
                    let group =
                        host.as_ref().map_or("the fallback targets".to_owned(), |h| format!("targets for host {h}"));
                    return Err(invalid(
                        &format!("services[{i}].forwarder.selector.strategy"),
                        format!(
                            "{group} form one group, but this service says {} and target {} says {}: give them one strategy",
                            selector.strategy, other.name, other.selector.strategy
                        ),
                    ));
                }
                targets.push(Target {
                    name: node.name.clone().unwrap_or_else(|| node.addr.clone()),
                    network,
                    addr: url::dial_addr(&addr),
                    host,
                    udp_ttl,
                    read_buffer_size,
                    selector,
                    proxy_protocol,
                    health_check,
                    tls,
                });
            }
        }
        if targets.is_empty() {
            return Err(invalid("services", "no rtcp or rudp service: give -L rtcp://:0/host:port".into()));
        }
        let l = self.limits;
        let limits = Limits {
            session: KeeperTimings::or_defaults(
                l.backoff_base,
                l.backoff_max,
                l.keepalive_interval,
                l.keepalive_timeout,
                l.grace_period,
            ),
            dial_timeout: l.dial_timeout.unwrap_or(defaults::DIAL_TIMEOUT),
            handshake_timeout: l.handshake_timeout.unwrap_or(defaults::CONNECT_TIMEOUT),
            max_udp_flows: l.max_udp_flows.unwrap_or(defaults::MAX_UDP_FLOWS),
        };
        let admin = self.admin.validate(source_name, None)?;
        Ok(Config { relay, targets, limits, admin })
    }
}

/// A node's active check; errors name the key.
fn validate_check(node: &NodeFile, network: Network) -> Result<Option<HealthCheck>, (&'static str, String)> {
    let Some(raw) = node.health_check.as_deref() else {
        if node.health_check_interval.is_some() || node.health_check_timeout.is_some() {
            return Err((
                "healthCheck",
                "missing: healthCheckInterval and healthCheckTimeout need a healthCheck".into(),
            ));
        }
        return Ok(None);
    };
    if network == Network::Udp {
        return Err(("healthCheck", "only TCP (rtcp) targets have active checks".into()));
    }
    let probe = Probe::parse(raw).map_err(|e| ("healthCheck", e))?;
    let interval = node.health_check_interval.unwrap_or(target::DEFAULT_INTERVAL);
    let timeout = node.health_check_timeout.unwrap_or(target::DEFAULT_TIMEOUT);
    if interval.is_zero() {
        return Err(("healthCheckInterval", "must be more than 0".into()));
    }
    if timeout.is_zero() {
        return Err(("healthCheckTimeout", "must be more than 0".into()));
    }
    Ok(Some(HealthCheck { probe, interval, timeout }))
}

/// The selector of a service, with GOST's defaults; errors name the key under `selector`.
fn validate_selector(file: Option<&SelectorFile>) -> Result<Selector, (&'static str, String)> {
    let Some(file) = file else { return Ok(Selector::default()) };
    let strategy = file.strategy.as_deref().map(Strategy::parse).transpose().map_err(|e| ("strategy", e))?;
    let max_fails = file.max_fails.unwrap_or(crate::target::DEFAULT_MAX_FAILS);
    if max_fails == 0 {
        return Err(("maxFails", "must be at least 1 (failTimeout = \"0s\" never skips a target)".into()));
    }
    Ok(Selector {
        strategy: strategy.unwrap_or_default(),
        max_fails,
        fail_timeout: file.fail_timeout.unwrap_or(crate::target::DEFAULT_FAIL_TIMEOUT),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_command_lines() {
        let cfg = FileConfig::from_urls(
            &["rtcp://:0/192.168.1.1:80".into()],
            "relay://:8443?tunnel.id=4d21094e-b74c-4916-86c1-d9fa36ea677b",
        )
        .unwrap()
        .validate("-L")
        .unwrap();
        assert_eq!(cfg.targets[0].addr, "192.168.1.1:80");
        assert_eq!(cfg.relay.servers, ["127.0.0.1:8443"]);
        let err = FileConfig::from_urls(&["rtcp://:0/:80".into()], "relay://:8443?tunnel.id=nope")
            .unwrap()
            .validate("-F")
            .unwrap_err();
        assert!(err.to_string().contains("relay.tunnel.id") && err.to_string().contains("nope"), "{err}");
    }
}

#[cfg(test)]
mod selector_tests;
