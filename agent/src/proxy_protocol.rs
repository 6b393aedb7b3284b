//! The PROXY protocol header (v1 text or v2 binary, haproxy's `proxy-protocol.txt`) an agent
//! writes to a target before any byte of the stream, so the target sees the visitor's address
//! instead of the agent's. Built by the `ppp` crate.

use std::net::{IpAddr, SocketAddr};

use ppp::{v1, v2};

/// Which version of the header a target wants (`proxyProtocol = 1 | 2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text header `PROXY TCP4 src dst sport dport\r\n`.
    V1,
    /// The binary header.
    V2,
}

impl ProxyVersion {
    /// `1` or `2`.
    pub fn from_number(n: u8) -> Result<ProxyVersion, String> {
        match n {
            1 => Ok(ProxyVersion::V1),
            2 => Ok(ProxyVersion::V2),
            other => Err(format!("PROXY protocol version {other} does not exist: write 1 or 2")),
        }
    }
}

/// The header for a stream from `visitor` (when the server knew it) to the target at
/// `target` (the address the agent connected to, which stands for the destination). Without
/// a visitor address the header says so (v1 `UNKNOWN`, v2 `LOCAL`) and the target uses the
/// connection's own addresses. Mixed address families are both written as IPv6.
pub fn header(version: ProxyVersion, visitor: Option<SocketAddr>, target: SocketAddr) -> std::io::Result<Vec<u8>> {
    let addrs = visitor.map(|v| same_family(v, target));
    match version {
        ProxyVersion::V1 => {
            let addresses = match addrs {
                Some(pair) => v1::Addresses::from(pair),
                None => v1::Addresses::Unknown,
            };
            Ok(addresses.to_string().into_bytes())
        }
        ProxyVersion::V2 => {
            let builder = match addrs {
                Some(pair) => {
                    v2::Builder::with_addresses(v2::Version::Two | v2::Command::Proxy, v2::Protocol::Stream, pair)
                }
                None => v2::Builder::with_addresses(
                    v2::Version::Two | v2::Command::Local,
                    v2::Protocol::Unspecified,
                    v2::Addresses::Unspecified,
                ),
            };
            builder.build()
        }
    }
}

/// Both addresses in one family: an IPv4 one beside an IPv6 one becomes IPv4-mapped IPv6.
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |s: SocketAddr| match s.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), s.port()),
        IpAddr::V6(_) => s,
    };
    if a.is_ipv4() == b.is_ipv4() {
        (a, b)
    } else {
        (v6(a), v6(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_carries_the_visitor() {
        let h = header(ProxyVersion::V1, Some(addr("192.0.2.7:40000")), addr("127.0.0.1:8080")).unwrap();
        assert_eq!(h, b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 8080\r\n");
        let h = header(ProxyVersion::V1, Some(addr("[2001:db8::1]:5")), addr("127.0.0.1:80")).unwrap();
        assert_eq!(h, b"PROXY TCP6 2001:db8::1 ::ffff:127.0.0.1 5 80\r\n");
        assert_eq!(header(ProxyVersion::V1, None, addr("127.0.0.1:80")).unwrap(), b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn v2_carries_the_visitor_and_parses_back() {
        let h = header(ProxyVersion::V2, Some(addr("192.0.2.7:40000")), addr("127.0.0.1:8080")).unwrap();
        assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n", "the v2 signature");
        assert_eq!(h[12], 0x21, "version 2, PROXY");
        assert_eq!(h[13], 0x11, "TCP over IPv4");
        let parsed = v2::Header::try_from(h.as_slice()).unwrap();
        assert_eq!(parsed.addresses, v2::Addresses::from((addr("192.0.2.7:40000"), addr("127.0.0.1:8080"))));
        let local = header(ProxyVersion::V2, None, addr("127.0.0.1:80")).unwrap();
        assert_eq!(local[12], 0x20, "version 2, LOCAL");
    }

    #[test]
    fn only_versions_1_and_2() {
        assert!(ProxyVersion::from_number(3).unwrap_err().contains("1 or 2"));
    }
}
