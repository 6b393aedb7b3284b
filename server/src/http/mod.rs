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

/// What the HTTP visitors of a server share.
#[derive(Default)]
pub(crate) struct State {
    /// Idle HTTP/1.1 connections to origins over tunnel streams.
    pub(crate) origins: std::sync::Arc<pool::OriginPool>,
    /// Checks the basic authentication of ingress rules that ask for it.
    pub(crate) auth: auth::Verifier,
    /// HTTP visitors keeping an origin connection of their own now.
    pub(crate) sticky: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

use std::net::IpAddr;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
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
    /// An HTTPS entrypoint: TLS is terminated for the hosts that have a certificate.
    pub tls: bool,
}

impl HttpOptions {
    /// Whether `ip` is one of the trusted proxies (an IPv4-mapped IPv6 address as IPv4).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = if let IpAddr::V6(v6) = ip { v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip) } else { ip };
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Sets `X-Forwarded-For`, `-Proto` and `-Host` on a request from `peer` (whose address is
/// also given as a header value, made once per connection) for `host`, that came over
/// HTTPS when `https`: the visitor's address is appended to an incoming `X-Forwarded-For`
/// only when `peer` is a trusted proxy; otherwise the header is replaced.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    peer_value: &HeaderValue,
    host: &HeaderValue,
    trusted: &[IpNet],
    https: bool,
) {
    let peer_ip = if let IpAddr::V6(v6) = peer { v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer) } else { peer };
    let trusted = !trusted.is_empty() && trusted.iter().any(|net| net.contains(&peer_ip));
    let mut chain = String::new();
    if trusted {
        for v in headers.get_all(&X_FORWARDED_FOR) {
            for hop in v.to_str().unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()) {
                chain.push_str(hop);
                chain.push_str(", ");
            }
        }
    }
    let value = match chain.is_empty() {
        true => peer_value.clone(),
        false => HeaderValue::from_str(&format!("{chain}{peer_ip}")).unwrap_or_else(|_| peer_value.clone()),
    };
    headers.insert(X_FORWARDED_FOR, value);
    let proto = match headers.get(&X_FORWARDED_PROTO) {
        // A trusted proxy in front of a plain entrypoint says what its visitor used.
        Some(v) if trusted && !https && (v == "http" || v == "https") => v.clone(),
        _ if https => HeaderValue::from_static("https"),
        _ => HeaderValue::from_static("http"),
    };
    headers.insert(X_FORWARDED_PROTO, proto);
    headers.insert(X_FORWARDED_HOST, host.clone());
}

/// The header value of a visitor's address, as `X-Forwarded-For` names it.
pub fn peer_value(peer: IpAddr) -> HeaderValue {
    let peer = if let IpAddr::V6(v6) = peer { v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer) } else { peer };
    HeaderValue::from_str(&peer.to_string()).expect("an address is a header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_extended_only_from_a_trusted_proxy() {
        let trusted: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        let host = HeaderValue::from_static("a.example");
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        set_forwarded(&mut h, local, &peer_value(local), &host, &trusted, false);
        assert_eq!(h["x-forwarded-for"], "2.2.2.2, 127.0.0.1");
        assert_eq!(h["x-forwarded-host"], "a.example");
        assert_eq!(h["x-forwarded-proto"], "http");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let other: IpAddr = "10.0.0.1".parse().unwrap();
        set_forwarded(&mut h, other, &peer_value(other), &host, &trusted, false);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
    }
}
