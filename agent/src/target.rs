//! Which target serves a stream: the best `host` match among the targets of the stream's
//! network, else a fallback target (one without `host`; several are used in turn).

use std::sync::atomic::{AtomicUsize, Ordering};

use tunnel_proto::host::{self, best_match};
use tunnel_proto::wire::StreamHeader;

use crate::config::Target;

/// The agent's targets and the turn counter of its fallbacks.
#[derive(Debug)]
pub struct Targets {
    targets: Vec<Target>,
    fallback_next: AtomicUsize,
}

impl Targets {
    /// The targets of the configuration.
    pub fn new(targets: Vec<Target>) -> Targets {
        Targets { targets, fallback_next: AtomicUsize::new(0) }
    }

    /// Every target.
    pub fn all(&self) -> &[Target] {
        &self.targets
    }

    /// The target for a stream, if any serves it.
    pub fn select(&self, header: &StreamHeader) -> Option<&Target> {
        let targets = self.targets.iter().filter(|t| t.network == header.network);
        if let Ok(host) = host::canonicalize(&header.hostname) {
            let with_host = targets.clone().filter_map(|t| t.host.as_ref().map(|p| (p, t)));
            if let Some(t) = best_match(with_host, &host) {
                return Some(t);
            }
        }
        let fallbacks: Vec<&Target> = targets.filter(|t| t.host.is_none()).collect();
        if fallbacks.is_empty() {
            return None;
        }
        let i = self.fallback_next.fetch_add(1, Ordering::Relaxed) % fallbacks.len();
        Some(fallbacks[i])
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tunnel_proto::host::HostPattern;
    use tunnel_proto::wire::Network;

    use super::*;

    fn target(name: &str, network: Network, host: Option<&str>) -> Target {
        Target {
            name: name.into(),
            network,
            addr: "127.0.0.1:1".into(),
            host: host.map(|h| HostPattern::parse(h).unwrap()),
            udp_ttl: Duration::from_secs(1),
            read_buffer_size: 1500,
        }
    }

    fn header(network: Network, hostname: &str) -> StreamHeader {
        StreamHeader { network, hostname: hostname.into(), visitor: None }
    }

    fn pick<'a>(t: &'a Targets, network: Network, host: &str) -> Option<&'a str> {
        t.select(&header(network, host)).map(|t| t.name.as_str())
    }

    #[test]
    fn host_matches_beat_fallbacks_and_fallbacks_take_turns() {
        let t = Targets::new(vec![
            target("wild", Network::Tcp, Some("*.example.com")),
            target("exact", Network::Tcp, Some("www.example.com")),
            target("fb1", Network::Tcp, None),
            target("fb2", Network::Tcp, None),
            target("dns", Network::Udp, Some("dns.example.com")),
        ]);
        assert_eq!(pick(&t, Network::Tcp, "www.example.com"), Some("exact"));
        assert_eq!(pick(&t, Network::Tcp, "API.example.com."), Some("wild"));
        let turns: Vec<_> = (0..4).map(|_| pick(&t, Network::Tcp, "other.test").unwrap()).collect();
        assert_eq!(turns, ["fb1", "fb2", "fb1", "fb2"]);
        assert_eq!(pick(&t, Network::Tcp, ""), Some("fb1"), "no hostname: a fallback");
        assert_eq!(pick(&t, Network::Udp, "dns.example.com"), Some("dns"));
        assert_eq!(pick(&t, Network::Udp, "www.example.com"), None, "a TCP target never serves UDP");
    }
}
