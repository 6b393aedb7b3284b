//! Access client configuration: `-L tcp://:2222/ssh.srv-2.local -F relay://server?tunnel.id=...`
//! or a TOML file, both validated into [`Config`].

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tunnel_proto::defaults;
use tunnel_proto::host;
use tunnel_proto::wire::Network;
use tunnel_runtime::admin::{AdminConfig, AdminFile};
use tunnel_runtime::cli::ClientFile;
use tunnel_runtime::client::{KeeperTimings, RelayFile, RelayOptions};
use tunnel_runtime::url::{self, NodeUrl, UrlError};

pub use tunnel_runtime::config::ConfigError;

mod gost;

/// The access client's file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[admin]`: the admin listener (off unless an address is set).
    #[serde(default)]
    pub admin: AdminFile,
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
    /// Where to listen: `:8000` is loopback only (127.0.0.1); other interfaces must be named
    /// (`0.0.0.0:8000`, `[::]:8000`, `192.0.2.1:8000`), and a warning says so.
    pub addr: String,
    /// Take the hostname from each connection (HTTP Host / TLS SNI).
    #[serde(default)]
    pub sniffing: bool,
    /// `udp`: keep a flow after its first response, until idle for `ttl`.
    #[serde(default)]
    pub keepalive: bool,
    /// `udp`: idle time after which a kept-alive flow ends (default 5s).
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// `udp`: bytes read per datagram; longer datagrams are truncated (default 4096, at most 65535).
    #[serde(default, rename = "readBufferSize")]
    pub read_buffer_size: Option<usize>,
    /// The fixed hostname, as the seed writes it: `forwarder.nodes[0].addr`.
    #[serde(default)]
    pub forwarder: Option<ForwarderFile>,
    /// Share the port with other processes (`SO_REUSEPORT`).
    #[serde(default)]
    pub reuse: bool,
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
    #[serde(default)]
    max_udp_flows: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    grace_period: Option<Duration>,
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
    /// UDP: keep a flow after its first response.
    pub keepalive: bool,
    /// UDP: idle time after which a flow ends.
    pub ttl: Duration,
    /// UDP: bytes read per datagram.
    pub read_buffer_size: usize,
    /// `SO_REUSEPORT` on the listening socket.
    pub reuse: bool,
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
    /// UDP flows at once per listener.
    pub max_udp_flows: usize,
    /// Reconnects, keepalive and the drain of each session.
    pub session: KeeperTimings,
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

    /// Builds the config from `-L` listener URLs and the `-F` relay URL. A port range
    /// (`tcp://:8000-8003/host`) becomes one listener per port.
    fn from_urls(services: &[String], relay: &str) -> Result<FileConfig, ConfigError> {
        let mut fc = FileConfig { relay: RelayFile::from_url(relay)?, ..FileConfig::default() };
        for raw in services {
            let mut u = NodeUrl::parse(raw)?;
            u.expect_scheme(&["tcp", "udp"], "tcp, udp")?;
            let sniffing = u.take_bool(&["sniffing"])?.unwrap_or(false);
            let reuse = u.take_bool(&["reuse"])?.unwrap_or(false);
            let (mut keepalive, mut ttl, mut read_buffer_size) = (false, None, None);
            if u.scheme == "udp" {
                keepalive = u.take_bool(&["keepalive", "keepAlive"])?.unwrap_or(false);
                ttl = u.take_duration(&["ttl"])?;
                read_buffer_size = u.take_with(&["readBufferSize"], str::parse::<usize>)?;
            }
            let addrs = url::expand_ports(&u.addr).map_err(|e| UrlError::BadAddr(u.raw.clone(), e))?;
            for addr in addrs {
                let forwarder =
                    u.target.clone().map(|t| ForwarderFile { nodes: vec![NodeFile { name: None, addr: t }] });
                fc.services.push(ServiceFile {
                    name: Some(raw.clone()),
                    kind: u.scheme.clone(),
                    addr,
                    sniffing,
                    keepalive,
                    ttl,
                    read_buffer_size,
                    forwarder,
                    reuse,
                });
            }
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
        if self.relay.sessions.is_some() {
            return Err(invalid("relay.sessions", "an agent option: an access client keeps one session".into()));
        }
        let relay = self.relay.validate().map_err(|(k, why)| invalid(&format!("relay.{k}"), why))?;
        let mut listeners = Vec::new();
        for (i, svc) in self.services.iter().enumerate() {
            let network = match svc.kind.as_str() {
                "tcp" => Network::Tcp,
                "udp" => Network::Udp,
                other => {
                    return Err(invalid(
                        &format!("services[{i}].type"),
                        format!("unknown type {other:?}, expected tcp or udp"),
                    ))
                }
            };
            let addr = url::local_bind_addr(&svc.addr).map_err(|e| invalid(&format!("services[{i}].addr"), e))?;
            let hostname = match svc.forwarder.as_ref().and_then(|f| f.nodes.first()) {
                Some(node) => Some(host::canonicalize(&node.addr).map_err(|e| {
                    invalid(&format!("services[{i}].forwarder.nodes[0].addr"), format!("{:?}: {e}", node.addr))
                })?),
                None => None,
            };
            if network == Network::Udp && svc.sniffing {
                return Err(invalid(
                    &format!("services[{i}].sniffing"),
                    "UDP carries no hostname to sniff; give a fixed hostname".into(),
                ));
            }
            let read_buffer_size = svc.read_buffer_size.unwrap_or(defaults::UDP_READ_BUFFER);
            if read_buffer_size == 0 || read_buffer_size > tunnel_proto::datagram::MAX_DATAGRAM {
                return Err(invalid(&format!("services[{i}].readBufferSize"), "must be between 1 and 65535".into()));
            }
            let ttl = svc.ttl.unwrap_or(defaults::UDP_TTL);
            if ttl.is_zero() {
                return Err(invalid(&format!("services[{i}].ttl"), "must be more than 0".into()));
            }
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
                keepalive: svc.keepalive,
                ttl,
                read_buffer_size,
                reuse: svc.reuse,
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
            session: KeeperTimings::or_defaults(
                l.backoff_base,
                l.backoff_max,
                l.keepalive_interval,
                l.keepalive_timeout,
                l.grace_period,
            ),
            handshake_timeout: l.handshake_timeout.unwrap_or(defaults::CONNECT_TIMEOUT),
            sniff_timeout: l.sniff_timeout.unwrap_or(defaults::SNIFF_TIMEOUT),
            sniff_max_bytes: l.sniff_max_bytes.unwrap_or(defaults::SNIFF_MAX_BYTES),
            reply_timeout: l.reply_timeout.unwrap_or(defaults::REPLY_TIMEOUT),
            max_visitors: l.max_visitors.unwrap_or(defaults::MAX_VISITORS),
            max_udp_flows: l.max_udp_flows.unwrap_or(defaults::MAX_UDP_FLOWS),
        };
        warn_exposed(&listeners);
        let admin = self.admin.validate(source_name, None)?;
        Ok(Config { relay, listeners, limits, admin })
    }
}

/// Warns once per configured listener (a port range is one) that binds something other than
/// loopback: every machine that can reach that address can then use the tunnel.
fn warn_exposed(listeners: &[ListenerConfig]) {
    let mut warned = std::collections::HashSet::new();
    for l in listeners.iter().filter(|l| !l.addr.ip().is_loopback()) {
        if warned.insert(&l.name) {
            tracing::warn!(
                listener = %l.name,
                ip = %l.addr.ip(),
                "listener reachable from other machines: anyone who can connect to it uses the tunnel as you; \
                 write :PORT or 127.0.0.1:PORT to listen on this machine only"
            );
        }
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
        let udp = "udp://:1053/dns.srv-2.local?keepalive=true&ttl=7s&readBufferSize=8192";
        let cfg = FileConfig::from_urls(&[udp.into()], relay).unwrap().validate("-L").unwrap();
        let l = &cfg.listeners[0];
        assert!(l.keepalive && l.ttl == Duration::from_secs(7) && l.read_buffer_size == 8192);
        assert!(
            FileConfig::from_urls(&["tcp://:1/a?keepalive=true".into()], relay).is_err(),
            "keepalive is a udp option"
        );
        let big = FileConfig::from_urls(&["udp://:1/a?readBufferSize=70000".into()], relay).unwrap().validate("-L");
        assert!(big.unwrap_err().to_string().contains("readBufferSize"));
    }

    #[test]
    fn listeners_without_a_host_are_loopback() {
        let relay = "relay://:8443?tunnel.id=aede1f6a-762b-45da-b937-b6632356555a";
        let urls = ["tcp://:8000-8001/a.local".into(), "udp://:1053/dns.local".into(), "tcp://0.0.0.0:2222/b".into()];
        let cfg = FileConfig::from_urls(&urls, relay).unwrap().validate("-L").unwrap();
        let addrs: Vec<String> = cfg.listeners.iter().map(|l| l.addr.to_string()).collect();
        assert_eq!(addrs, ["127.0.0.1:8000", "127.0.0.1:8001", "127.0.0.1:1053", "0.0.0.0:2222"]);
        let err = FileConfig::from_urls(&["tcp://:99999/a?token=s3cret".into()], relay).unwrap_err().to_string();
        assert!(err.contains("99999") && !err.contains("s3cret"), "{err}");
    }
}
