//! Where an agent or access client connects: `-F relay://host:port?tunnel.id=...` or the
//! `[relay]` table of its TOML file, validated into [`RelayOptions`].
//!
//! The server may be several servers (replicas of a cluster): `addr` is one `host:port`, a
//! TOML array of them, or a comma-separated list (`relay://s1:8443,s2:8443?...`). They share
//! every other setting; with TLS each is verified under its own host unless `serverName`
//! names one for all. [`super::keeper`] spreads sessions over them and fails over.

use std::time::Duration;

use tunnel_proto::channel::{ChannelConfig, Connector, Inbound, Transport};
use tunnel_proto::tls::{ClientTls, Verify};
use tunnel_proto::wire::{self, Hello, Networks, Role, Token};

use super::Dialer;
use crate::secret::Secret;
use crate::url;

/// Where an agent or access client connects, from `-F relay://host:port?tunnel.id=...` or the
/// `[relay]` table of its TOML file.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Transport (by scheme).
    pub transport: Transport,
    /// The servers' `host:port`s, in configured order (at least one).
    pub servers: Vec<String>,
    /// Tunnel joined or reached.
    pub tunnel: uuid::Uuid,
    /// Token, if any.
    pub token: Option<Secret>,
    /// Agent weight in the pool.
    pub weight: u8,
    /// Certificate verification for `relay+tls` / `relay+quic`.
    pub tls: ClientTls,
    /// Sessions an agent keeps to the server (its share of the tunnel's pool).
    pub sessions: usize,
    /// An HTTP CONNECT or SOCKS5 proxy on the way to the server, if any.
    pub proxy: Option<std::sync::Arc<super::Proxy>>,
    /// The hostname an agent asks for under its tunnel's allowed suffix (empty: none).
    pub hostname: String,
}

impl RelayOptions {
    /// The hello this client says: its role, the tunnel, what an agent serves, its weight and
    /// token.
    pub fn hello(&self, role: Role, networks: Networks) -> Hello {
        let token = self.token.as_ref().map(|t| t.expose().as_bytes().to_vec()).unwrap_or_default();
        Hello {
            version: wire::VERSION,
            role,
            tunnel: self.tunnel,
            networks,
            weight: if role == Role::Agent { self.weight } else { 0 },
            token: Token(token.into()),
            hostname: if role == Role::Agent { self.hostname.clone() } else { String::new() },
        }
    }

    /// The servers for messages: `host:port`, or several separated by commas.
    pub fn describe_servers(&self) -> String {
        self.servers.join(", ")
    }

    /// A dialer for these servers saying `hello`: a connector per server, so that each is
    /// verified under its own name.
    pub fn dialer(&self, hello: Hello, handshake_timeout: Duration) -> Result<Dialer, tunnel_proto::tls::TlsError> {
        // An agent serves the streams the server opens; an access client opens its own and
        // takes none.
        let inbound = if hello.role == Role::Access { Inbound::Refuse } else { Inbound::Any };
        let channel = ChannelConfig { connect_timeout: handshake_timeout, inbound, ..ChannelConfig::default() };
        let mut servers = Vec::with_capacity(self.servers.len());
        for addr in &self.servers {
            let mut connector = Connector::new(self.transport, addr, &self.tls, channel.clone())?;
            if let Some(proxy) = &self.proxy {
                tracing::info!(proxy = %proxy.describe(), server = %addr, "reaching the server through a proxy");
                connector = connector.via(proxy.clone());
            }
            servers.push(super::dial::Server { addr: addr.clone(), connector });
        }
        if self.transport.is_encrypted() && self.tls.verify == Verify::Insecure {
            let servers = self.describe_servers();
            tracing::warn!(%servers, "insecure=true: the server's certificate is not verified");
        }
        Ok(Dialer { servers, hello, handshake_timeout, refusals: Default::default(), resolve: self.proxy.is_none() })
    }
}

/// The `[relay]` table of an agent or access client config file.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFile {
    /// Server address, `host:port` or `:port`; several servers (replicas) comma-separated, as
    /// in the `-F` URL, or in TOML an array of strings, kept here comma-separated.
    #[serde(deserialize_with = "server_list")]
    pub addr: String,
    /// Transport: `tcp` (default).
    #[serde(default)]
    pub dialer: Option<String>,
    /// `tunnel.id = "..."`.
    #[serde(default)]
    pub tunnel: Option<TunnelIdTable>,
    /// `tunnelID = "..."`, the seed's other spelling.
    #[serde(default, rename = "tunnelID")]
    pub tunnel_id: Option<String>,
    /// Token (the `TUNNEL_TOKEN` environment variable or `--token` override it).
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the token instead (`token` and `tokenFile` exclude each other), read at
    /// validation; it must be private to its owner (mode 0600 or 0400).
    #[serde(default, rename = "tokenFile")]
    pub token_file: Option<String>,
    /// Weight of this agent in its tunnel's pool (1-255).
    #[serde(default)]
    pub weight: Option<u8>,
    /// PEM file of CAs to trust for the server's certificate (TLS and QUIC).
    #[serde(default, rename = "caFile")]
    pub ca_file: Option<String>,
    /// `sha256:<hex>` of the server's certificate, instead of CA verification.
    #[serde(default)]
    pub pin: Option<String>,
    /// Name to send as SNI and to verify (default: the host of `addr`).
    #[serde(default, rename = "serverName")]
    pub server_name: Option<String>,
    /// Skip certificate verification (a warning is logged).
    #[serde(default)]
    pub insecure: bool,
    /// Sessions an agent keeps (default 2): a spare for fail-over and restarts, spread over
    /// the servers' addresses; for a cluster of N replicas, N gives one session per replica.
    #[serde(default)]
    pub sessions: Option<usize>,
    /// An upstream proxy to reach the server through: `http://[user[:pass]@]host:port`
    /// (HTTP CONNECT) or `socks5://[user[:pass]@]host:port`; it resolves the server's name.
    #[serde(default)]
    pub proxy: Option<Secret>,
    /// A file holding the proxy's password instead of the URL (private to its owner, as
    /// `tokenFile`).
    #[serde(default, rename = "proxyPasswordFile")]
    pub proxy_password_file: Option<String>,
    /// Agents: a hostname to be routed to this tunnel while the agent is connected (`myapp`,
    /// under the tunnel's allowed suffix), first come first served.
    #[serde(default)]
    pub hostname: Option<String>,
}

/// `tunnel.id`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelIdTable {
    /// The tunnel UUID.
    pub id: String,
}

/// Parses a tunnel ID with a message showing the expected form.
pub fn parse_tunnel_id(raw: &str) -> Result<uuid::Uuid, String> {
    uuid::Uuid::parse_str(raw.trim()).map_err(|e| {
        let hint = if shell_ate_a_dollar(raw.trim()) {
            "; it looks like a shell replaced \"$...\" inside double quotes (\"$4d21...\" is $4, the 4th argument, \
             then d21...): put the URL in single quotes, or write \\$"
        } else {
            ""
        };
        format!("invalid tunnel ID {raw:?} ({e}); expected a UUID like 4d21094e-b74c-4916-86c1-d9fa36ea677b{hint}")
    })
}

/// Whether `id` is a UUID whose start a shell expanded away: `$4d21094e-...` in double quotes
/// loses `$4` (a positional parameter), `$ac74d9dd-...` its whole first group (a variable).
fn shell_ate_a_dollar(id: &str) -> bool {
    let first_group = id.split('-').next().unwrap_or_default();
    let lost_a_digit = first_group.len() == 7 && uuid::Uuid::parse_str(&format!("0{id}")).is_ok();
    let lost_the_group = id.starts_with('-') && uuid::Uuid::parse_str(&format!("00000000{id}")).is_ok();
    lost_a_digit || lost_the_group
}

impl RelayFile {
    /// Reads a `-F` URL into the same shape as the file's table.
    pub fn from_url(raw: &str) -> Result<RelayFile, url::UrlError> {
        let mut u = url::NodeUrl::parse(raw)?;
        u.expect_scheme(&["relay", "relay+tcp", "relay+tls", "relay+quic"], Transport::SCHEMES)?;
        let tunnel_id = u.take(&["tunnel.id", "tunnelID"]);
        let token = u.take(&["token"]).map(Secret::from);
        let token_file = u.take(&["tokenFile"]);
        let weight = u.take_with(&["weight"], str::parse::<u8>)?;
        let (ca_file, pin, server_name) = (u.take(&["caFile"]), u.take(&["pin"]), u.take(&["serverName"]));
        let insecure = u.take_bool(&["insecure"])?.unwrap_or(false);
        let sessions = u.take_with(&["sessions", "connections"], str::parse::<usize>)?;
        let hostname = u.take(&["hostname"]);
        let file = RelayFile {
            addr: u.addr.clone(),
            dialer: Some(u.scheme.clone()),
            tunnel: None,
            tunnel_id,
            token,
            token_file,
            weight,
            ca_file,
            pin,
            server_name,
            insecure,
            sessions,
            proxy: None,
            proxy_password_file: None,
            hostname,
        };
        u.finish()?;
        Ok(file)
    }

    /// Sets the token from `--token` or `TUNNEL_TOKEN`, in place of the file's or URL's
    /// `token` or `tokenFile`.
    pub fn set_token(&mut self, token: Secret) {
        self.token = Some(token);
        self.token_file = None;
    }

    /// Validates into [`RelayOptions`], reading `tokenFile`; errors name the key.
    pub fn validate(self) -> Result<RelayOptions, (String, String)> {
        let dialer = self.dialer.as_deref().unwrap_or("tcp");
        let transport = Transport::from_scheme(dialer)
            .ok_or_else(|| ("dialer".to_owned(), format!("unknown transport {dialer:?}, expected tcp, tls or quic")))?;
        let verify = match (&self.ca_file, &self.pin, self.insecure) {
            (None, None, false) => Verify::SystemRoots,
            (Some(ca), None, false) => Verify::CaFile(ca.into()),
            (None, Some(pin), false) => Verify::parse_pin(pin).map_err(|e| ("pin".to_owned(), e.to_string()))?,
            (None, None, true) => Verify::Insecure,
            _ => return Err(("caFile".into(), "give at most one of caFile, pin and insecure".into())),
        };
        let tls = ClientTls { verify, server_name: self.server_name.clone() };
        let servers = parse_servers(&self.addr)?;
        for addr in &servers {
            // Each server's host is its TLS name unless serverName names one for all.
            let key = if self.server_name.is_some() { "serverName" } else { "addr" };
            tls.server_name(addr).map_err(|e| (key.to_owned(), e.to_string()))?;
        }
        let raw_id = match (self.tunnel.map(|t| t.id), self.tunnel_id) {
            (Some(id), _) | (None, Some(id)) => id,
            (None, None) => {
                return Err((
                    "tunnel.id".into(),
                    "missing: the tunnel to join (a UUID assigned by the server's ingress)".into(),
                ))
            }
        };
        let tunnel = parse_tunnel_id(&raw_id).map_err(|e| ("tunnel.id".to_owned(), e))?;
        let token = crate::secret::token_or_file(self.token, self.token_file.as_deref(), "token", "tokenFile")?;
        let weight = self.weight.unwrap_or(1);
        if weight == 0 {
            return Err(("weight".into(), "must be between 1 and 255".into()));
        }
        let proxy = match &self.proxy {
            None if self.proxy_password_file.is_some() => {
                return Err(("proxyPasswordFile".into(), "given without a proxy".into()));
            }
            None => None,
            Some(_) if transport == Transport::Quic => {
                return Err((
                    "proxy".into(),
                    "QUIC runs over UDP and cannot go through an HTTP CONNECT or SOCKS5 proxy: use relay:// or \
                     relay+tls:// with a proxy, or no proxy with relay+quic://"
                        .into(),
                ));
            }
            Some(raw) => Some(std::sync::Arc::new(
                super::Proxy::parse(raw.expose(), self.proxy_password_file.as_deref())
                    .map_err(|e| ("proxy".to_owned(), e))?,
            )),
        };
        let sessions = self.sessions.unwrap_or(tunnel_proto::defaults::AGENT_SESSIONS);
        if !(1..=16).contains(&sessions) {
            return Err(("sessions".into(), "must be between 1 and 16".into()));
        }
        let hostname = self.hostname.clone().unwrap_or_default().trim().to_ascii_lowercase();
        if hostname.len() > tunnel_proto::wire::MAX_HELLO_HOSTNAME
            || !hostname.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(("hostname".into(), format!("{hostname:?}: a hostname (letters, digits, - and .)")));
        }
        Ok(RelayOptions { transport, servers, tunnel, token, weight, tls, sessions, proxy, hostname })
    }
}

/// Splits `addr` (one server or several, comma-separated) into dial addresses, checking each;
/// errors name the bad entry.
fn parse_servers(addr: &str) -> Result<Vec<String>, (String, String)> {
    let bad = |why: String| Err(("addr".to_owned(), why));
    if addr.trim().is_empty() {
        return bad("missing: the server's host:port, or a list of them".into());
    }
    let entries: Vec<&str> = addr.split(',').map(str::trim).collect();
    let mut servers = Vec::with_capacity(entries.len());
    for (n, entry) in entries.iter().enumerate() {
        let which = if entries.len() == 1 { String::new() } else { format!("server {} of {}: ", n + 1, entries.len()) };
        if entry.is_empty() {
            return bad(format!("{which}empty; expected host:port in {addr:?}"));
        }
        if let Err(why) = url::split_host_port(entry) {
            return bad(format!("{which}{why}"));
        }
        servers.push(url::dial_addr(entry));
    }
    Ok(servers)
}

/// `addr` in TOML: a string, or an array of `host:port` strings (joined with commas, the
/// form the `-F` URL gives).
fn server_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct List;
    impl<'de> serde::de::Visitor<'de> for List {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a server \"host:port\" or an array of them")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
            let mut all = Vec::new();
            while let Some(entry) = seq.next_element::<String>()? {
                if entry.contains(',') {
                    return Err(serde::de::Error::custom(format!(
                        "server {} {entry:?}: one host:port per array entry, without commas",
                        all.len() + 1
                    )));
                }
                all.push(entry);
            }
            if all.is_empty() {
                return Err(serde::de::Error::custom("an empty list of servers: give at least one host:port"));
            }
            Ok(all.join(","))
        }
    }
    d.deserialize_any(List)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tunnel_id_eaten_by_a_shell_gets_the_single_quotes_hint() {
        for eaten in ["d21094e-b74c-4916-86c1-d9fa36ea677b", "-3125-442a-a7c1-f9e49e05faca"] {
            let err = parse_tunnel_id(eaten).unwrap_err();
            assert!(err.contains(eaten) && err.contains("single quotes"), "{err}");
        }
        for wrong in ["not-a-uuid", "4d21094e-b74c-4916-86c1-d9fa36ea677", "xd21094e-b74c-4916-86c1-d9fa36ea677b"] {
            let err = parse_tunnel_id(wrong).unwrap_err();
            assert!(!err.contains("single quotes"), "{err}");
        }
        assert!(parse_tunnel_id("4d21094e-b74c-4916-86c1-d9fa36ea677b").is_ok());
    }

    const ID: &str = "4d21094e-b74c-4916-86c1-d9fa36ea677b";

    fn from_toml(addr: &str) -> Result<RelayOptions, (String, String)> {
        let text = format!("addr = {addr}\ntunnel.id = \"{ID}\"\n");
        toml::from_str::<RelayFile>(&text).map_err(|e| ("toml".to_owned(), e.to_string()))?.validate()
    }

    #[test]
    fn servers_from_a_toml_string_or_array() {
        assert_eq!(from_toml("\"server.example:8443\"").unwrap().servers, ["server.example:8443"]);
        let many = from_toml("[\"s1.example:8443\", \":7002\", \"[::1]:7003\"]").unwrap();
        assert_eq!(many.servers, ["s1.example:8443", "127.0.0.1:7002", "[::1]:7003"]);
        assert_eq!(many.describe_servers(), "s1.example:8443, 127.0.0.1:7002, [::1]:7003");
        let (key, why) = from_toml("[]").unwrap_err();
        assert!(key == "toml" && why.contains("empty list of servers"), "{why}");
        let (key, why) = from_toml("[\"s1:1,s2:2\"]").unwrap_err();
        assert!(key == "toml" && why.contains("one host:port per array entry"), "{why}");
        let (_, why) = from_toml("[\"s1:1\", 7]").unwrap_err();
        assert!(why.contains("addr"), "the TOML error names the key: {why}");
    }

    #[test]
    fn servers_from_a_url_with_commas() {
        for scheme in ["relay", "relay+tls", "relay+quic"] {
            let url = format!("{scheme}://127.0.0.1:7001,s2.example:7002 , :7003?tunnel.id={ID}&insecure=true");
            let relay = RelayFile::from_url(&url).unwrap().validate().unwrap();
            assert_eq!(relay.servers, ["127.0.0.1:7001", "s2.example:7002", "127.0.0.1:7003"], "{scheme}");
            let dialer = relay.dialer(relay.hello(Role::Agent, Networks::NONE), Duration::from_secs(1)).unwrap();
            let dialed: Vec<&str> = dialer.servers.iter().map(|s| s.addr.as_str()).collect();
            assert_eq!(dialed, relay.servers, "a connector per server, each under its own name");
        }
    }

    #[test]
    fn every_server_is_checked_and_the_bad_one_named() {
        let bad = |addr: &str| from_toml(&format!("\"{addr}\"")).unwrap_err();
        let (key, why) = bad("s1.example:8443,s2.example");
        assert!(key == "addr" && why.contains("server 2 of 2") && why.contains("s2.example"), "{why}");
        let (key, why) = bad("s1.example:8443,,s3.example:1");
        assert!(key == "addr" && why.contains("server 2 of 3: empty"), "{why}");
        let (key, why) = bad("s1.example:8443,s2.example:http");
        assert!(key == "addr" && why.contains("\"http\" in \"s2.example:http\""), "{why}");
        let (key, why) = bad("");
        assert!(key == "addr" && why.contains("missing"), "{why}");
        let (key, why) = from_toml("[\"s1.example:1\", \"bad name:2\"]").unwrap_err();
        assert!(key == "addr" && why.contains("bad name"), "{why}");
        let one = bad("nope");
        assert!(!one.1.contains("server 1"), "a single server keeps the plain message: {}", one.1);
    }

    #[test]
    fn candidates_are_the_union_in_order_without_repeats() {
        let relay =
            from_toml("[\"127.0.0.2:7002\", \"127.0.0.1:7001\", \"127.0.0.2:7002\", \"localhost:7001\"]").unwrap();
        let dialer = relay.dialer(relay.hello(Role::Agent, Networks::NONE), Duration::from_secs(1)).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let found = rt.block_on(dialer.candidates());
        let addrs: Vec<&str> = found.iter().map(|c| c.addr.as_str()).collect();
        // localhost resolves to 127.0.0.1 (already listed) and perhaps [::1].
        assert_eq!(&addrs[..2], ["127.0.0.2:7002", "127.0.0.1:7001"], "{addrs:?}");
        assert!(addrs[2..].iter().all(|a| *a == "[::1]:7001"), "{addrs:?}");
        assert_eq!((found[0].server, found[1].server), (0, 1));
        assert!(found[2..].iter().all(|c| c.server == 3));
    }

    #[test]
    fn a_proxy_is_for_tcp_transports_only() {
        let file = |url: &str, proxy: &str| RelayFile {
            proxy: Some(Secret::from(proxy)),
            ..RelayFile::from_url(&format!("{url}?tunnel.id=4d21094e-b74c-4916-86c1-d9fa36ea677b&insecure=true"))
                .unwrap()
        };
        let (key, why) = file("relay+quic://server.example:8443", "socks5://127.0.0.1:1080").validate().unwrap_err();
        assert_eq!(key, "proxy");
        assert!(why.contains("QUIC") && why.contains("relay+tls://"), "{why}");
        let ok = file("relay+tls://server.example:8443", "http://u:pw@127.0.0.1:3128").validate().unwrap();
        assert_eq!(ok.proxy.as_ref().map(|p| p.addr.as_str()), Some("127.0.0.1:3128"));
        let dialer = ok.dialer(ok.hello(Role::Agent, Networks::NONE), Duration::from_secs(1)).unwrap();
        assert!(!dialer.resolve, "through a proxy the name is not resolved here");
        let (key, why) = file("relay://server.example:8443", "ftp://x:1").validate().unwrap_err();
        assert!(key == "proxy" && why.contains("http or socks5"), "{why}");
        let mut lone = file("relay://server.example:8443", "http://x:1");
        lone.proxy = None;
        lone.proxy_password_file = Some("/run/pw".into());
        assert_eq!(lone.validate().unwrap_err().0, "proxyPasswordFile");
    }
}
