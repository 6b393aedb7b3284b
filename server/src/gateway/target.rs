//! What a sealed address names, and the allow list of addresses the server dials itself.
//!
//! A target is `host:port` (`127.0.0.1:6379`, `[::1]:22`, `db.internal:5432`) or a bare
//! hostname (`app.example.com`). One the allow list admits is dialed by the server; anything
//! else is routed as an ingress hostname (its port, if any, ignored as ingress does).
//!
//! Allow-list entries are `HOST:PORTS` where HOST is an IP address, a CIDR block
//! (`10.0.0.0/8`, `[fd00::/8]`) or a hostname pattern (`db.internal`, `.internal`,
//! `*.internal`), and PORTS a port, a range `8000-8100` or `*`. An IP literal in a target
//! matches only address and CIDR entries, a hostname only hostname entries.

use std::net::IpAddr;

use ipnet::IpNet;
use tunnel_proto::host::{self, HostPattern};

/// A decrypted target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Canonical host: lowercase, IPv6 in brackets.
    pub host: String,
    /// The port, when one was given.
    pub port: Option<u16>,
}

impl Target {
    /// Parses `host:port`, `[v6]:port`, `[v6]`, a bare IPv6 address or a hostname.
    pub fn parse(text: &str) -> Result<Target, String> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or("unclosed [")?;
            inside.parse::<std::net::Ipv6Addr>().map_err(|_| format!("{inside:?} is not an IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or("expected :port after ]")?),
            };
            (&text[..inside.len() + 2], port)
        } else if text.parse::<std::net::Ipv6Addr>().is_ok() {
            return Ok(Target { host: format!("[{text}]"), port: None });
        } else {
            match text.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (text, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(format!("{p:?} is not a port")),
            },
        };
        let host = host::canonicalize(host).map_err(|e| e.to_string())?;
        if host.contains('*') {
            return Err("a target cannot be a wildcard".into());
        }
        Ok(Target { host, port })
    }

    /// The host as an IP address, if it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.trim_start_matches('[').trim_end_matches(']').parse().ok()
    }

    /// `host:port` for dialing.
    pub fn dial_addr(&self) -> Option<String> {
        self.port.map(|p| format!("{}:{p}", self.host))
    }
}

/// Which targets the server dials itself; empty (the default) means none.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    host: HostMatch,
    ports: (u16, u16),
}

#[derive(Debug, Clone)]
enum HostMatch {
    Net(IpNet),
    Name(HostPattern),
}

impl AllowList {
    /// Parses the entries; an error gives the index of the bad entry and why.
    pub fn parse(items: &[String]) -> Result<AllowList, (usize, String)> {
        let entries = items.iter().enumerate().map(|(i, s)| parse_entry(s).map_err(|e| (i, e)));
        Ok(AllowList { entries: entries.collect::<Result<_, _>>()? })
    }

    /// Whether the list admits `target` (which must have a port).
    pub fn admits(&self, target: &Target) -> bool {
        let Some(port) = target.port else { return false };
        let ip = target.ip();
        self.entries.iter().any(|e| {
            let host_ok = match (&e.host, ip) {
                (HostMatch::Net(net), Some(ip)) => net.contains(&ip),
                (HostMatch::Name(pattern), None) => pattern.matches(&target.host),
                _ => false,
            };
            host_ok && (e.ports.0..=e.ports.1).contains(&port)
        })
    }

    /// Whether the list is empty (direct dialing off).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn parse_entry(raw: &str) -> Result<Entry, String> {
    let raw = raw.trim();
    let (host, ports) = raw.rsplit_once(':').ok_or_else(|| format!("{raw:?} has no :port (use :* for any port)"))?;
    let ports = parse_ports(ports).map_err(|e| format!("{raw:?}: {e}"))?;
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let host = if bare.contains('/') {
        HostMatch::Net(bare.parse::<IpNet>().map_err(|e| format!("{raw:?}: {bare:?} is not a CIDR block: {e}"))?)
    } else if let Ok(ip) = bare.parse::<IpAddr>() {
        HostMatch::Net(IpNet::from(ip))
    } else if host.starts_with('[') {
        return Err(format!("{raw:?}: {bare:?} is not an IPv6 address"));
    } else {
        HostMatch::Name(HostPattern::parse(host).map_err(|e| format!("{raw:?}: {e}"))?)
    };
    Ok(Entry { host, ports })
}

fn parse_ports(p: &str) -> Result<(u16, u16), String> {
    let port = |s: &str| match s.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a port")),
    };
    match p {
        "*" => Ok((1, u16::MAX)),
        _ => match p.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (port(a)?, port(b)?);
                if a > b {
                    return Err(format!("port range {p} is reversed"));
                }
                Ok((a, b))
            }
            None => port(p).map(|n| (n, n)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn targets() {
        assert_eq!(t("127.0.0.1:62863"), Target { host: "127.0.0.1".into(), port: Some(62863) });
        assert_eq!(t("App.Example.COM."), Target { host: "app.example.com".into(), port: None });
        assert_eq!(t("app.example.com:443").port, Some(443));
        assert_eq!(t("[::1]:22"), Target { host: "[::1]".into(), port: Some(22) });
        assert_eq!(t("[::1]"), Target { host: "[::1]".into(), port: None });
        assert_eq!(t("::1"), Target { host: "[::1]".into(), port: None });
        assert_eq!(t("[::1]:22").ip(), Some("::1".parse().unwrap()));
        assert_eq!(t("db.internal:5432").dial_addr().as_deref(), Some("db.internal:5432"));
        for bad in ["", ":80", "host:0", "host:99999", "host:", "a b:1", "[::1", "[zz]:1", "*.example.com", "h:1:2"] {
            assert!(Target::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn allow_list() {
        let items: Vec<String> =
            ["127.0.0.1:6379", "10.0.0.0/8:*", "[fd00::/8]:22", "[::1]:8000-8100", ".internal:5432"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let list = AllowList::parse(&items).unwrap();
        for ok in ["127.0.0.1:6379", "10.1.2.3:1", "[fd12::1]:22", "[::1]:8050", "db.internal:5432", "internal:5432"] {
            assert!(list.admits(&t(ok)), "{ok} should be admitted");
        }
        for no in [
            "127.0.0.1:6380",
            "127.0.0.2:6379",
            "11.0.0.1:80",
            "[fd12::1]:23",
            "[::1]:8101",
            "db.internal:5433",
            "dbinternal:5432",
            "127.0.0.1",
            "localhost:6379",
        ] {
            assert!(!list.admits(&t(no)), "{no} should not be admitted");
        }
        assert!(AllowList::default().is_empty());
        assert!(!AllowList::default().admits(&t("127.0.0.1:6379")));
    }

    #[test]
    fn bad_entries_are_named() {
        for (bad, why) in [
            ("127.0.0.1", "no :port"),
            ("10.0.0.0/33:*", "CIDR"),
            ("1.2.3.4:0", "not a port"),
            ("1.2.3.4:9-8", "reversed"),
            ("[zz]:1", "IPv6"),
            ("a b:1", "invalid character"),
        ] {
            let items = vec!["127.0.0.1:1".to_owned(), bad.to_owned()];
            let (i, e) = AllowList::parse(&items).unwrap_err();
            assert_eq!(i, 1);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
