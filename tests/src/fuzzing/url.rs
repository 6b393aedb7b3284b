//! Command-line URLs, the address helpers and hostnames.

use tunnel_proto::host::{canonicalize, HostPattern};
use tunnel_runtime::url::{bind_addr, dial_addr, expand_ports, pair_ports, parse_bool, split_host_port, NodeUrl};

/// Keys the components take, tried on every URL so the parameter paths run.
const KEYS: &[&str] = &["tunnel.id", "tunnelID", "entryPoint", "token", "sessions", "caFile", "pin", "serverName"];

/// A secret in `raw` that the URL shown in messages must hide: `value` as written (so it can
/// be looked for), long enough not to appear by chance, and present only once.
fn hidden_secret<'a>(raw: &str, value: &'a str) -> Option<&'a str> {
    let plain = value.len() >= 4 && !value.contains(['%', '*', '=', '&', '@', ':', '/', '?']);
    (plain && raw.matches(value).count() == 1).then_some(value)
}

/// The password of a `user:password@` as written, found the way `NodeUrl::parse` splits.
fn written_password(text: &str) -> Option<&str> {
    let rest = text.split_once("://")?.1;
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    Some(authority.rsplit_once('@')?.0.split_once(':')?.1)
}

/// The values of the query's `token=VALUE` pairs as written, found the way `NodeUrl::parse`
/// splits (scheme, then query, then pairs); a bare `token` means `true` and hides nothing.
fn written_tokens(text: &str) -> impl Iterator<Item = &str> {
    let query = text.split_once("://").and_then(|(_, rest)| rest.split_once('?')).map_or("", |(_, q)| q);
    query.split('&').filter_map(|pair| pair.split_once('=')).filter(|(k, _)| *k == "token").map(|(_, v)| v)
}

/// `NodeUrl::parse` and its accessors on arbitrary text, then the address helpers on its
/// address and target.
pub fn url(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_bool(text);
    address_helpers(text, text);
    let Ok(mut u) = NodeUrl::parse(text) else {
        assert!(!text.contains("://"), "{text:?} has a scheme but does not parse");
        return;
    };
    assert_eq!(u.scheme, u.scheme.to_ascii_lowercase());
    let shown = u.raw.clone();
    if let Some(secret) = written_password(text).and_then(|p| hidden_secret(text, p)) {
        assert!(!shown.contains(secret), "{shown:?} shows the password");
    }
    for secret in written_tokens(text).filter_map(|t| hidden_secret(text, t)) {
        assert!(!shown.contains(secret), "{shown:?} shows the token");
    }
    let _ = u.expect_scheme(&["relay", "relay+tls", "rtcp", "tcp", "udp"], "relay, rtcp, tcp, udp");
    let _ = u.take_bool(&["insecure", "sniffing"]);
    let _ = u.take_duration(&["ttl", "replyTimeout"]);
    let _ = u.take_with(&["weight"], str::parse::<u8>);
    for key in KEYS {
        let _ = u.take(&[key]);
    }
    let addr = u.addr.clone();
    let target = u.target.clone().unwrap_or_default();
    let _ = u.finish();
    address_helpers(&addr, &target);
}

/// The port helpers: never panic, and what they return parses back.
fn address_helpers(addr: &str, target: &str) {
    let _ = bind_addr(addr);
    let dial = dial_addr(addr);
    if let Ok((_, port)) = split_host_port(addr) {
        assert_eq!(split_host_port(&dial).map(|(_, p)| p), Ok(port), "dial address {dial:?} lost the port");
    }
    let Ok(expanded) = expand_ports(addr) else { return };
    assert!(!expanded.is_empty() && expanded.len() <= 1024, "{} ports from {addr:?}", expanded.len());
    for one in &expanded {
        split_host_port(one).unwrap_or_else(|e| panic!("expanded {one:?} from {addr:?} does not parse: {e}"));
    }
    if let Ok(pairs) = pair_ports(addr, target) {
        assert_eq!(pairs.len(), expanded.len());
        for ((listen, to), want) in pairs.iter().zip(&expanded) {
            assert_eq!(listen, want);
            split_host_port(to).unwrap_or_else(|e| panic!("paired target {to:?} does not parse: {e}"));
        }
    }
}

/// Hostname canonicalisation and patterns on arbitrary text: the canonical form is a fixed
/// point (lowercase, no port, no trailing dot, at most 253 bytes), and a pattern prints as
/// text that parses back to it and matches what it should.
pub fn host(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(name) = canonicalize(text) {
        assert!(!name.is_empty() && name.len() <= 253, "{name:?}");
        assert_eq!(name, name.to_ascii_lowercase());
        assert!(!name.ends_with('.'), "canonical {name:?} of {text:?} ends with a dot");
        assert_eq!(canonicalize(&name).as_ref(), Ok(&name), "canonical form of {text:?} is not canonical");
    }
    let Ok(pattern) = HostPattern::parse(text) else { return };
    let shown = pattern.to_string();
    assert_eq!(HostPattern::parse(&shown).as_ref(), Ok(&pattern), "{shown:?} parses to another pattern");
    match &pattern {
        HostPattern::Exact(h) => assert!(pattern.matches(h)),
        HostPattern::Domain(d) => assert!(pattern.matches(d) && pattern.matches(&format!("x.{d}"))),
        HostPattern::Subdomains(d) => assert!(!pattern.matches(d) && pattern.matches(&format!("x.{d}"))),
    }
}
