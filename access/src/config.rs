//! Access client configuration: `-L tcp://:2222/ssh.srv-2.local -F relay://server?tunnel.id=...`
//! or a TOML file, both validated into [`Config`].

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tunnel_proto::client::{RelayFile, RelayOptions};
use tunnel_proto::defaults;
use tunnel_proto::host;
use tunnel_proto::url::{self, NodeUrl, UrlError};
use tunnel_proto::wire::Network;

/// Why a configuration was rejected; the message names the source and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A bad URL.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// A file that cannot be read or parsed.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// A value that is not acceptable.
    #[error("{source_name}: {key}: {why}")]
    Invalid {
        /// File or URL.
        source_name: String,
        /// The key.
        key: String,
        /// Why.
        why: String,
    },
}

/// The access client's file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The server and tunnel.
    pub relay: RelayFile,
    /// Local listeners.
    #[serde(default)]
    pub services: Vec<ServiceFile>,
    /// Timeouts.
    #[serde(default)]
    pub limits: LimitsFile,
}

/// One local listener as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    /// A name for logs.
    #[serde(default)]
    pub name: Option<String>,
    /// `tcp` (or `udp`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Where to listen (`:8000`, `127.0.0.1:2222`).
    pub addr: String,
    /// Take the hostname from each connection (HTTP Host / TLS SNI).
    #[serde(default)]
    pub sniffing: bool,
    /// The fixed hostname, as the seed writes it: `forwarder.nodes[0].addr`.
    #[serde(default)]
    pub forwarder: Option<ForwarderFile>,
}

/// `forwarder`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwarderFile {
    /// The hostname node(s); the first is used.
    pub nodes: Vec<NodeFile>,
}

/// A hostname node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// A name for logs.
    #[serde(default)]
    pub name: Option<String>,
    /// The ingress hostname to reach (e.g. `ssh.srv-2.local`).
    pub addr: String,
}

/// `[limits]` as written.
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
    reply_timeout: Option<Duration>,
    #[serde(default)]
    max_visitors: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    backoff_base: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    backoff_max: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    keepalive_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    keepalive_timeout: Option<Duration>,
}

/// A validated local listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Name for logs.
    pub name: String,
    /// TCP (UDP later).
    pub network: Network,
    /// Bind address.
    pub addr: SocketAddr,
    /// Fixed hostname sent with every stream.
    pub hostname: Option<String>,
    /// Sniff the hostname from each connection.
    pub sniffing: bool,
}

/// Timeouts, limits and backoff.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connecting to the server plus hello.
    pub handshake_timeout: Duration,
    /// Time for a local visitor to reveal its hostname.
    pub sniff_timeout: Duration,
    /// Bytes read while sniffing.
    pub sniff_max_bytes: usize,
    /// Time for the tunnel's answer to a new stream.
    pub reply_timeout: Duration,
    /// Local visitors at once.
    pub max_visitors: usize,
    /// First reconnect delay.
    pub backoff_base: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Ping interval.
    pub keepalive_interval: Duration,
    /// Pong deadline.
    pub keepalive_timeout: Duration,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server and tunnel.
    pub relay: RelayOptions,
    /// Local listeners.
    pub listeners: Vec<ListenerConfig>,
    /// Limits.
    pub limits: Limits,
}

impl FileConfig {
    /// Reads a TOML file.
    pub fn load(path: &str) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::File { path: path.to_owned(), why: e.to_string() })?;
        toml::from_str(&text)
            .map_err(|e| ConfigError::File { path: path.to_owned(), why: e.to_string().trim_end().to_owned() })
    }

    /// Builds the config from `-L` listener URLs and the `-F` relay URL. A port range
    /// (`tcp://:8000-8003/host`) becomes one listener per port.
    pub fn from_urls(services: &[String], relay: &str) -> Result<FileConfig, ConfigError> {
        let mut fc = FileConfig { relay: RelayFile::from_url(relay)?, ..FileConfig::default() };
        for raw in services {
            let mut u = NodeUrl::parse(raw)?;
            u.expect_scheme(&["tcp", "udp"], "tcp, udp")?;
            let sniffing = u.take_bool(&["sniffing"])?.unwrap_or(false);
            let addrs = url::expand_ports(&u.addr).map_err(|e| UrlError::BadAddr(raw.clone(), e))?;
            for addr in addrs {
                let forwarder =
                    u.target.clone().map(|t| ForwarderFile { nodes: vec![NodeFile { name: None, addr: t }] });
                fc.services.push(ServiceFile {
                    name: Some(raw.clone()),
                    kind: u.scheme.clone(),
                    addr,
                    sniffing,
                    forwarder,
                });
            }
            u.finish()?;
        }
        Ok(fc)
    }

    /// Validates every value.
    pub fn validate(self, source_name: &str) -> Result<Config, ConfigError> {
        let invalid = |key: &str, why: String| ConfigError::Invalid {
            source_name: source_name.to_owned(),
            key: key.to_owned(),
            why,
        };
        let relay = self.relay.validate().map_err(|(k, why)| invalid(&format!("relay.{k}"), why))?;
        let mut listeners = Vec::new();
        for (i, svc) in self.services.iter().enumerate() {
            let network = match svc.kind.as_str() {
                "tcp" => Network::Tcp,
                "udp" => {
                    return Err(invalid(
                        &format!("services[{i}].type"),
                        "udp listeners are not supported by this build yet".into(),
                    ))
                }
                other => {
                    return Err(invalid(
                        &format!("services[{i}].type"),
                        format!("unknown type {other:?}, expected tcp or udp"),
                    ))
                }
            };
            let addr = url::bind_addr(&svc.addr).map_err(|e| invalid(&format!("services[{i}].addr"), e))?;
            let hostname = match svc.forwarder.as_ref().and_then(|f| f.nodes.first()) {
                Some(node) => Some(host::canonicalize(&node.addr).map_err(|e| {
                    invalid(&format!("services[{i}].forwarder.nodes[0].addr"), format!("{:?}: {e}", node.addr))
                })?),
                None => None,
            };
            if svc.sniffing && hostname.is_some() {
                return Err(invalid(
                    &format!("services[{i}]"),
                    "give either sniffing or a fixed hostname, not both".into(),
                ));
            }
            listeners.push(ListenerConfig {
                name: svc.name.clone().unwrap_or_else(|| svc.addr.clone()),
                network,
                addr,
                hostname,
                sniffing: svc.sniffing,
            });
        }
        if listeners.is_empty() {
            return Err(invalid(
                "services",
                "no listener: give -L tcp://:PORT/HOSTNAME or -L \"tcp://:PORT?sniffing=true\"".into(),
            ));
        }
        let l = self.limits;
        let limits = Limits {
            handshake_timeout: l.handshake_timeout.unwrap_or(defaults::CONNECT_TIMEOUT),
            sniff_timeout: l.sniff_timeout.unwrap_or(defaults::SNIFF_TIMEOUT),
            sniff_max_bytes: l.sniff_max_bytes.unwrap_or(defaults::SNIFF_MAX_BYTES),
            reply_timeout: l.reply_timeout.unwrap_or(defaults::REPLY_TIMEOUT),
            max_visitors: l.max_visitors.unwrap_or(defaults::MAX_VISITORS),
            backoff_base: l.backoff_base.unwrap_or(defaults::BACKOFF_BASE),
            backoff_max: l.backoff_max.unwrap_or(defaults::BACKOFF_MAX),
            keepalive_interval: l.keepalive_interval.unwrap_or(defaults::KEEPALIVE_INTERVAL),
            keepalive_timeout: l.keepalive_timeout.unwrap_or(defaults::KEEPALIVE_TIMEOUT),
        };
        Ok(Config { relay, listeners, limits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_command_lines() {
        let relay = "relay://:8443?tunnel.id=aede1f6a-762b-45da-b937-b6632356555a";
        let cfg =
            FileConfig::from_urls(&["tcp://:2222/ssh.srv-2.local".into()], relay).unwrap().validate("-L").unwrap();
        assert_eq!(cfg.listeners[0].hostname.as_deref(), Some("ssh.srv-2.local"));
        let cfg = FileConfig::from_urls(&["tcp://:8000?sniffing=true".into()], relay).unwrap().validate("-L").unwrap();
        assert!(cfg.listeners[0].sniffing);
        let cfg = FileConfig::from_urls(&["tcp://:8000-8003/a.local".into()], relay).unwrap().validate("-L").unwrap();
        assert_eq!(cfg.listeners.len(), 4);
        assert!(FileConfig::from_urls(&["tcp://:8000?sniff=true".into()], relay).is_err());
    }
}
