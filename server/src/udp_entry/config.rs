//! `udp://` entrypoints as written: an `entryPoint` item or an `[[entrypoints]]` table whose
//! `addr` has the `udp://` scheme, validated into a [`UdpEntrypoint`].

use std::net::SocketAddr;
use std::time::Duration;

use tunnel_proto::datagram::MAX_DATAGRAM;
use tunnel_proto::defaults;
use tunnel_proto::host;
use tunnel_runtime::url;

use crate::config::EntrypointFile;

/// A public UDP entrypoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpEntrypoint {
    /// Where to listen.
    pub addr: SocketAddr,
    /// The hostname every flow is routed as (UDP carries none to sniff).
    pub hostname: String,
    /// Keep a flow after its first answer, until idle for `ttl`.
    pub keepalive: bool,
    /// Idle time that ends a kept-alive flow.
    pub ttl: Duration,
    /// Bytes read per datagram; longer datagrams are truncated.
    pub read_buffer_size: usize,
}

/// What an entrypoint item is.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A TCP entrypoint, as the TCP parser takes it (without a `tcp://` scheme).
    Tcp(String),
    /// A UDP entrypoint.
    Udp(UdpEntrypoint),
}

/// A bad entrypoint: the key to name and why.
pub type Invalid = (&'static str, String);

/// Sorts `item` (with its `[[entrypoints]]` table, if it came from one) into a TCP or a UDP
/// entrypoint; a UDP one is validated whole, a TCP one only for options it cannot have.
pub fn parse(item: &str, table: Option<&EntrypointFile>) -> Result<Parsed, Invalid> {
    let rest = match item.split_once("://") {
        None => return tcp(item, item, table),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("tcp") => return tcp(item, rest, table),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("udp") => rest,
        Some((scheme, _)) => {
            return Err(("entryPoint", format!("{item:?}: unknown scheme {scheme:?}, expected tcp:// or udp://")))
        }
    };
    if rest.contains('?') {
        return Err((
            "entryPoint",
            format!(
                "{item:?}: options of a UDP entrypoint go in an [[entrypoints]] table (keepalive, ttl, readBufferSize)"
            ),
        ));
    }
    let Some((addr, hostname)) = rest.split_once('/').filter(|(_, h)| !h.trim().is_empty()) else {
        return Err((
            "entryPoint",
            format!("{item:?}: a UDP entrypoint needs a hostname to route by (udp://:5353/dns.example): datagrams carry none to sniff"),
        ));
    };
    let hostname = host::canonicalize(hostname).map_err(|e| ("entryPoint", format!("{item:?}: {e}")))?;
    let addr = url::bind_addr(addr).map_err(|e| ("entryPoint", format!("{item:?}: {e}")))?;
    let (mut keepalive, mut ttl, mut read_buffer_size) = (false, defaults::UDP_TTL, defaults::UDP_READ_BUFFER);
    if let Some(t) = table {
        not_for_udp(item, t)?;
        keepalive = t.keepalive.unwrap_or(keepalive);
        ttl = t.ttl.unwrap_or(ttl);
        read_buffer_size = t.read_buffer_size.unwrap_or(read_buffer_size);
    }
    if ttl.is_zero() {
        return Err(("entrypoints.ttl", format!("{item:?}: must be more than 0s")));
    }
    if read_buffer_size == 0 || read_buffer_size > MAX_DATAGRAM {
        return Err(("entrypoints.readBufferSize", format!("{item:?}: must be between 1 and {MAX_DATAGRAM}")));
    }
    Ok(Parsed::Udp(UdpEntrypoint { addr, hostname, keepalive, ttl, read_buffer_size }))
}

/// A TCP entrypoint must not carry the UDP options.
fn tcp(item: &str, rest: &str, table: Option<&EntrypointFile>) -> Result<Parsed, Invalid> {
    if let Some(t) = table {
        for (key, set) in [
            ("entrypoints.keepalive", t.keepalive.is_some()),
            ("entrypoints.ttl", t.ttl.is_some()),
            ("entrypoints.readBufferSize", t.read_buffer_size.is_some()),
        ] {
            if set {
                return Err((key, format!("{item:?}: only for udp:// entrypoints")));
            }
        }
    }
    Ok(Parsed::Tcp(rest.to_owned()))
}

/// A UDP entrypoint must not carry the TCP and HTTP options.
fn not_for_udp(item: &str, t: &EntrypointFile) -> Result<(), Invalid> {
    for (key, set) in [
        ("entrypoints.trustedProxies", !t.trusted_proxies.is_empty()),
        ("entrypoints.proxyProtocol", t.proxy_protocol),
        ("entrypoints.accessLog", t.access_log.is_some()),
        ("entrypoints.reuseOrigins", t.reuse_origins.is_some()),
    ] {
        if set {
            return Err((key, format!("{item:?}: not for a UDP entrypoint (it applies to TCP and HTTP visitors)")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(toml_text: &str) -> EntrypointFile {
        toml::from_str(toml_text).unwrap()
    }

    fn udp(item: &str, table: Option<&EntrypointFile>) -> UdpEntrypoint {
        match parse(item, table).unwrap() {
            Parsed::Udp(ep) => ep,
            other => panic!("{item}: {other:?}"),
        }
    }

    #[test]
    fn the_scheme_sorts_items() {
        assert_eq!(parse(":80", None).unwrap(), Parsed::Tcp(":80".into()));
        assert_eq!(parse("tcp://:5201/iperf.local", None).unwrap(), Parsed::Tcp(":5201/iperf.local".into()));
        let ep = udp("udp://127.0.0.1:5353/DNS.Example.", None);
        assert_eq!(ep.addr, "127.0.0.1:5353".parse().unwrap());
        assert_eq!(ep.hostname, "dns.example");
        assert!(!ep.keepalive);
        assert_eq!((ep.ttl, ep.read_buffer_size), (defaults::UDP_TTL, defaults::UDP_READ_BUFFER));
        assert_eq!(udp("UDP://:53/a.example", None).addr.port(), 53);
    }

    #[test]
    fn bad_items_name_what_is_wrong() {
        for (item, key, says) in [
            ("udp://:5353", "entryPoint", "needs a hostname"),
            ("udp://:5353/", "entryPoint", "needs a hostname"),
            ("udp://:5353/a.example?keepalive=true", "entryPoint", "[[entrypoints]] table"),
            ("udp://:99999/a.example", "entryPoint", "99999"),
            ("udp://:53/bad host", "entryPoint", "bad host"),
            ("sctp://:53/a.example", "entryPoint", "unknown scheme \"sctp\""),
        ] {
            let (k, why) = parse(item, None).unwrap_err();
            assert_eq!(k, key, "{item}: {why}");
            assert!(why.contains(says) && why.contains(item.split('?').next().unwrap()), "{item}: {why}");
        }
    }

    #[test]
    fn tables_give_udp_options_to_udp_entrypoints_only() {
        let t = table("addr = \"udp://:53/a.example\"\nkeepalive = true\nttl = \"30s\"\nreadBufferSize = 9000\n");
        let ep = udp(&t.addr, Some(&t));
        assert!(ep.keepalive);
        assert_eq!((ep.ttl, ep.read_buffer_size), (Duration::from_secs(30), 9000));
        let t = table("addr = \":53/a.example\"\nkeepalive = true\n");
        assert_eq!(parse(&t.addr, Some(&t)).unwrap_err().0, "entrypoints.keepalive");
        for (extra, key) in [
            ("trustedProxies = [\"10.0.0.0/8\"]", "entrypoints.trustedProxies"),
            ("proxyProtocol = true", "entrypoints.proxyProtocol"),
            ("accessLog = false", "entrypoints.accessLog"),
            ("readBufferSize = 70000", "entrypoints.readBufferSize"),
            ("readBufferSize = 0", "entrypoints.readBufferSize"),
            ("ttl = \"0s\"", "entrypoints.ttl"),
        ] {
            let t = table(&format!("addr = \"udp://:53/a.example\"\n{extra}\n"));
            assert_eq!(parse(&t.addr, Some(&t)).unwrap_err().0, key, "{extra}");
        }
    }
}
