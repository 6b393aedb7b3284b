//! The command-line URLs of the seed, `scheme://[user[:pass]@]addr[/target]?key=value&...`:
//! `relay://:8443?tunnel.id=...`, `rtcp://:0/192.168.1.1:80`, `tcp://:2222/ssh.srv-2.local`.
//!
//! Parameters are taken one by one by the component that understands them; [`NodeUrl::finish`]
//! then rejects whatever is left, naming the key, so a typo never goes unnoticed.

use std::time::Duration;

/// Why a URL was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// No `scheme://`.
    #[error("{0:?}: expected scheme://address (for example relay://:8443)")]
    NoScheme(String),
    /// The scheme is not one this command takes.
    #[error("{url:?}: unsupported scheme {scheme:?}, expected one of: {expected}")]
    Scheme {
        /// The whole URL.
        url: String,
        /// The scheme found.
        scheme: String,
        /// The schemes allowed.
        expected: &'static str,
    },
    /// A query key nobody takes.
    #[error("{url:?}: unknown option {key:?}")]
    UnknownKey {
        /// The whole URL.
        url: String,
        /// The key.
        key: String,
    },
    /// A value that does not parse.
    #[error("{url:?}: invalid value {value:?} for {key:?}: {why}")]
    BadValue {
        /// The whole URL.
        url: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Why it is invalid.
        why: String,
    },
    /// An address that does not parse.
    #[error("{0:?}: invalid address: {1}")]
    BadAddr(String, String),
}

/// A parsed command-line URL.
#[derive(Debug, Clone)]
pub struct NodeUrl {
    /// The URL as given, for messages.
    pub raw: String,
    /// Lowercased scheme (`relay`, `relay+tls`, `rtcp`, `tcp`, ...).
    pub scheme: String,
    /// `user[:password]` before `@`, if any.
    pub userinfo: Option<String>,
    /// The address part (`:8443`, `host:port`, `:8000-8003`).
    pub addr: String,
    /// The part after the first `/` (targets or hostname), if any.
    pub target: Option<String>,
    params: Vec<(String, String)>,
}

impl NodeUrl {
    /// Parses a URL without interpreting its parameters.
    pub fn parse(raw: &str) -> Result<NodeUrl, UrlError> {
        let (scheme, rest) = raw.split_once("://").ok_or_else(|| UrlError::NoScheme(redact(raw)))?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, target) = match rest.split_once('/') {
            Some((a, t)) => (a, (!t.is_empty()).then(|| t.to_owned())),
            None => (rest, None),
        };
        let (userinfo, addr) = match authority.rsplit_once('@') {
            Some((u, a)) => (Some(percent_decode(u)), a),
            None => (None, authority),
        };
        let mut params = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
            params.push((percent_decode(k), percent_decode(v)));
        }
        Ok(NodeUrl {
            raw: redact(raw),
            scheme: scheme.to_ascii_lowercase(),
            userinfo,
            addr: addr.to_owned(),
            target: target.map(|t| percent_decode(&t)),
            params,
        })
    }

    /// Checks the scheme is one of `allowed`.
    pub fn expect_scheme(&self, allowed: &[&str], expected: &'static str) -> Result<(), UrlError> {
        if allowed.contains(&self.scheme.as_str()) {
            Ok(())
        } else {
            Err(UrlError::Scheme { url: self.raw.clone(), scheme: self.scheme.clone(), expected })
        }
    }

    /// Takes the value of the first of `keys` present (aliases such as `tunnel.id`/`tunnelID`).
    pub fn take(&mut self, keys: &[&str]) -> Option<String> {
        let mut found = None;
        self.params.retain(|(k, v)| {
            if keys.iter().any(|want| k.eq_ignore_ascii_case(want)) {
                found.get_or_insert_with(|| v.clone());
                false
            } else {
                true
            }
        });
        found
    }

    /// Takes a value and parses it with `parse`, naming the key on failure.
    pub fn take_with<T, E: std::fmt::Display>(
        &mut self,
        keys: &[&str],
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, UrlError> {
        match self.take(keys) {
            None => Ok(None),
            Some(v) => parse(&v).map(Some).map_err(|e| self.bad(keys[0], &v, e)),
        }
    }

    /// Takes a boolean (`true`/`false`/`1`/`0`/`yes`/`no`).
    pub fn take_bool(&mut self, keys: &[&str]) -> Result<Option<bool>, UrlError> {
        self.take_with(keys, parse_bool)
    }

    /// Takes a humantime duration (`5s`, `1m30s`).
    pub fn take_duration(&mut self, keys: &[&str]) -> Result<Option<Duration>, UrlError> {
        self.take_with(keys, humantime::parse_duration)
    }

    /// Builds the error for a bad value.
    pub fn bad(&self, key: &str, value: &str, why: impl std::fmt::Display) -> UrlError {
        UrlError::BadValue { url: self.raw.clone(), key: key.to_owned(), value: value.to_owned(), why: why.to_string() }
    }

    /// Fails on the first parameter nobody took.
    pub fn finish(self) -> Result<(), UrlError> {
        match self.params.into_iter().next() {
            None => Ok(()),
            Some((key, _)) => Err(UrlError::UnknownKey { url: self.raw, key }),
        }
    }
}

/// The URL as shown in messages: the values of `token` and `secret` and a `user:password@`
/// password are replaced by `***`, since secrets are never printed.
pub fn redact(raw: &str) -> String {
    // Scheme first, then the query, as `NodeUrl::parse` splits: a `?` before the `://` must not
    // move the query (and its token) out of sight.
    let (scheme, after) = match raw.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, raw),
    };
    let (rest, query) = match after.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (after, None),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let rest = match rest[..authority_end].rsplit_once('@') {
        Some((user, addr)) if user.contains(':') => {
            let name = user.split_once(':').map_or(user, |(n, _)| n);
            format!("{name}:***@{addr}{}", &rest[authority_end..])
        }
        _ => rest.to_owned(),
    };
    let mut out = match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest,
    };
    if let Some(q) = query {
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if ["token", "secret"].iter().any(|s| percent_decode(k).eq_ignore_ascii_case(s)) => {
                    format!("{k}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// Parses `true`/`false` and their usual spellings.
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Turns `:8443`, `0.0.0.0:80` or `[::1]:80` into a bind address for a public listener
/// (the server's relay listener and entrypoints): `:port` binds every IPv4 interface, as in
/// the seed.
pub fn bind_addr(addr: &str) -> Result<std::net::SocketAddr, String> {
    bind_addr_or(addr, std::net::Ipv4Addr::UNSPECIFIED)
}

/// Turns `:2222`, `0.0.0.0:2222` or `[::]:2222` into a bind address for a listener meant for
/// this machine (an access client's): `:port` binds loopback only, as `ssh -L` does; other
/// interfaces must be named.
pub fn local_bind_addr(addr: &str) -> Result<std::net::SocketAddr, String> {
    bind_addr_or(addr, std::net::Ipv4Addr::LOCALHOST)
}

fn bind_addr_or(addr: &str, empty_host: std::net::Ipv4Addr) -> Result<std::net::SocketAddr, String> {
    let full = if addr.starts_with(':') { format!("{empty_host}{addr}") } else { addr.to_owned() };
    full.parse().map_err(|_| format!("{addr:?} is not host:port or :port with a numeric host"))
}

/// Turns `:8443` into a dialable `host:port` (`:port` means this machine).
pub fn dial_addr(addr: &str) -> String {
    if addr.starts_with(':') {
        format!("127.0.0.1{addr}")
    } else {
        addr.to_owned()
    }
}

/// Checks an address is `host:port` (or `:port`) with a valid port; returns the parts.
pub fn split_host_port(addr: &str) -> Result<(&str, u16), String> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("{addr:?} has no :port"))?;
    let port = port.parse::<u16>().map_err(|_| format!("{port:?} in {addr:?} is not a port number"))?;
    Ok((host, port))
}

/// Splits `host:port` at the last colon; the port may be a range `8000-8003`.
fn split_port(addr: &str) -> Result<(&str, u16, u16), String> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("{addr:?} has no :port"))?;
    let num = |p: &str| p.parse::<u16>().map_err(|_| format!("{p:?} is not a port number"));
    match port.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(format!("port range {port} is reversed"));
            }
            Ok((host, a, b))
        }
        None => {
            let p = num(port)?;
            Ok((host, p, p))
        }
    }
}

/// Expands a port range in an address: `:8000-8003` -> `:8000`, `:8001`, `:8002`, `:8003`.
pub fn expand_ports(addr: &str) -> Result<Vec<String>, String> {
    let (host, a, b) = split_port(addr)?;
    if b - a >= 1024 {
        return Err(format!("port range in {addr:?} is longer than 1024 ports"));
    }
    Ok((a..=b).map(|p| format!("{host}:{p}")).collect())
}

/// Pairs listen ports with target ports as the seed's port-forwarding manual does: one
/// target port for all, or ranges mapped in order (extra target ports are ignored).
pub fn pair_ports(listen: &str, target: &str) -> Result<Vec<(String, String)>, String> {
    let listens = expand_ports(listen)?;
    let (thost, ta, tb) = split_port(target)?;
    if ta == tb {
        // `host:port`, also when the target was written as a one-port range (`:9000-9000`).
        return Ok(listens.into_iter().map(|l| (l, format!("{thost}:{ta}"))).collect());
    }
    let span = (tb - ta) as usize + 1;
    if span < listens.len() {
        return Err(format!("target port range {target:?} is shorter than listen range {listen:?}"));
    }
    Ok(listens.into_iter().enumerate().map(|(i, l)| (l, format!("{thost}:{}", ta as usize + i))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_urls() {
        let mut u = NodeUrl::parse(
            "relay://:8443?entryPoint=:80&tunnel=.example.com:4d21094e-b74c-4916-86c1-d9fa36ea677b,example.org:ac74d9dd-3125-442a-a7c1-f9e49e05faca",
        )
        .unwrap();
        assert_eq!(u.scheme, "relay");
        assert_eq!(u.addr, ":8443");
        assert_eq!(u.take(&["entryPoint"]).as_deref(), Some(":80"));
        assert!(u.take(&["tunnel"]).unwrap().starts_with(".example.com:4d21"));
        u.finish().unwrap();

        let u = NodeUrl::parse("rtcp://:0/192.168.1.1:80").unwrap();
        assert_eq!((u.addr.as_str(), u.target.as_deref()), (":0", Some("192.168.1.1:80")));

        let mut u = NodeUrl::parse("udp://:15201/iperf.local?keepalive=true&ttl=5s").unwrap();
        assert_eq!(u.take_bool(&["keepalive"]).unwrap(), Some(true));
        assert_eq!(u.take_duration(&["ttl"]).unwrap(), Some(Duration::from_secs(5)));

        let mut u = NodeUrl::parse("relay://:8443?tunnelID=x&bogus=1").unwrap();
        assert_eq!(u.take(&["tunnel.id", "tunnelID"]).as_deref(), Some("x"));
        assert!(matches!(u.finish(), Err(UrlError::UnknownKey { key, .. }) if key == "bogus"));

        let u = NodeUrl::parse("relay://u:pw@:8443/t?token=s3cret&tunnel.id=x").unwrap();
        assert_eq!(u.raw, "relay://u:***@:8443/t?token=***&tunnel.id=x");
        let u = NodeUrl::parse("gateway://:9000?Secret=s3cret&retry=1").unwrap();
        assert_eq!(u.raw, "gateway://:9000?Secret=***&retry=1");

        let mut u = NodeUrl::parse("relay://:8443?tunnel=a:%24ID").unwrap();
        assert_eq!(u.take(&["tunnel"]).as_deref(), Some("a:$ID"));
    }

    #[test]
    fn port_ranges() {
        assert_eq!(expand_ports(":8000-8002").unwrap(), vec![":8000", ":8001", ":8002"]);
        let pairs = pair_ports(":8000-8001", "10.0.0.1:9000-9010").unwrap();
        assert_eq!(pairs[1], (":8001".to_owned(), "10.0.0.1:9001".to_owned()));
        assert!(expand_ports(":9-1").is_err());
        assert_eq!(bind_addr(":80").unwrap().port(), 80);
    }

    #[test]
    fn empty_hosts() {
        assert_eq!(bind_addr(":80").unwrap().to_string(), "0.0.0.0:80");
        assert_eq!(local_bind_addr(":2222").unwrap().to_string(), "127.0.0.1:2222");
        for explicit in ["0.0.0.0:2222", "[::]:2222", "192.0.2.1:2222", "[::1]:2222"] {
            assert_eq!(local_bind_addr(explicit).unwrap().to_string(), explicit);
        }
        assert!(local_bind_addr("localhost:2222").is_err());
    }
}
