//! Plain-HTTP visitors on a sniffing entrypoint, served by hyper.
//!
//! Life of a request: hyper reads the head (the sniffed bytes replayed first, then the
//! socket) under the head timeout and size limit; [`tunnel_runtime::http::target::request_host`] names its host;
//! [`crate::routing::Routes::route_public`] its tunnel (private rules never); an idle origin
//! connection for (tunnel, host) is taken from the [`pool`] or a new stream opened (an
//! HTTP/1.1 client connection over it); the request goes out in origin form with `Host` set
//! to the routed host and the `X-Forwarded-*` headers; the response streams back, and the
//! origin connection returns to the pool once its body is read. Every request of a
//! connection is routed on its own. An `Upgrade` that the origin accepts with 101 becomes a
//! byte pump between the two upgraded connections.

pub mod auth;
pub mod pool;
mod serve;

pub(crate) use serve::serve;

use std::net::IpAddr;

use hyper::header::{HeaderMap, HeaderValue};
use ipnet::IpNet;

/// What an entrypoint's options say about its HTTP visitors.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// Visitors whose `X-Forwarded-For` is extended rather than replaced.
    pub trusted_proxies: Vec<IpNet>,
    /// One info line per request.
    pub access_log: bool,
    /// Keep origin connections for reuse (see [`pool`]).
    pub reuse_origins: bool,
    /// Trusted proxies send a PROXY protocol header first.
    pub proxy_protocol: bool,
}

impl HttpOptions {
    /// Whether `ip` is one of the trusted proxies (an IPv4-mapped IPv6 address as IPv4).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = if let IpAddr::V6(v6) = ip { v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip) } else { ip };
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// Sets `X-Forwarded-For`, `-Proto` and `-Host` on a request from `peer` for `host`: the
/// visitor's address is appended to an incoming `X-Forwarded-For` only when `peer` is a
/// trusted proxy; otherwise the header is replaced.
pub fn set_forwarded(headers: &mut HeaderMap, peer: IpAddr, host: &str, trusted: &[IpNet]) {
    let peer_ip = if let IpAddr::V6(v6) = peer { v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer) } else { peer };
    let trusted = trusted.iter().any(|net| net.contains(&peer_ip));
    let mut chain: Vec<String> = Vec::new();
    if trusted {
        for v in headers.get_all("x-forwarded-for") {
            if let Ok(v) = v.to_str() {
                chain.extend(v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()));
            }
        }
    }
    chain.push(peer_ip.to_string());
    let proto = match headers.get("x-forwarded-proto") {
        Some(v) if trusted && (v == "http" || v == "https") => v.clone(),
        _ => HeaderValue::from_static("http"),
    };
    headers.remove("x-forwarded-for");
    if let Ok(v) = HeaderValue::from_str(&chain.join(", ")) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", proto);
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert("x-forwarded-host", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_extended_only_from_a_trusted_proxy() {
        let trusted: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        set_forwarded(&mut h, "127.0.0.1".parse().unwrap(), "a.example", &trusted);
        assert_eq!(h["x-forwarded-for"], "2.2.2.2, 127.0.0.1");
        assert_eq!(h["x-forwarded-host"], "a.example");
        assert_eq!(h["x-forwarded-proto"], "http");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        set_forwarded(&mut h, "10.0.0.1".parse().unwrap(), "a.example", &trusted);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
    }
}
