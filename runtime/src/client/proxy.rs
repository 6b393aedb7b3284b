//! Reaching the server through an upstream proxy: `http://[user:pass@]host:port` (HTTP
//! CONNECT) or `socks5://[user:pass@]host:port` (SOCKS5, RFC 1928/1929), written as the first
//! `-F` hop before the relay, as in GOST, or as `proxy` in the `[relay]` table.
//!
//! The proxy is handed the server's `host:port` as written (CONNECT `host:port`, SOCKS5 with
//! a domain address), so it resolves the name, not the client. The session then runs over the
//! tunnelled TCP connection as it would over a direct one (plain or TLS + yamux; QUIC cannot,
//! and its configuration refuses a proxy).

use std::io;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_proto::channel::{BoxFuture, TcpDial};

use crate::secret::Secret;
use crate::url::{self, NodeUrl};

/// The largest HTTP CONNECT response head read from a proxy: real ones are a few hundred
/// bytes, and a peer that never ends its head must not grow memory.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;
/// Headers parsed in a CONNECT response.
const MAX_RESPONSE_HEADERS: usize = 64;

/// The kind of proxy, by URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// `http://`: HTTP/1.1 CONNECT.
    Http,
    /// `socks5://` (or `socks5h://`): SOCKS5 CONNECT with a domain address.
    Socks5,
}

/// An upstream proxy with its optional credentials.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// HTTP or SOCKS5.
    pub kind: ProxyKind,
    /// The proxy's `host:port`.
    pub addr: String,
    /// User name and password (HTTP Basic, SOCKS5 username/password).
    pub auth: Option<(String, Secret)>,
}

impl Proxy {
    /// Parses `http://user:pass@host:port` or `socks5://...`; `password_file` (read as a
    /// secret file) gives the password instead of the URL. Errors say what is wrong, never the
    /// password.
    pub fn parse(raw: &str, password_file: Option<&str>) -> Result<Proxy, String> {
        let u = NodeUrl::parse(raw).map_err(|e| e.to_string())?;
        let kind = match u.scheme.as_str() {
            "http" => ProxyKind::Http,
            "socks5" | "socks5h" => ProxyKind::Socks5,
            other => {
                return Err(format!("{}: unsupported proxy scheme {other:?}, expected http or socks5", u.raw));
            }
        };
        if u.target.is_some() {
            return Err(format!("{}: a proxy URL has no path", u.raw));
        }
        if u.addr.is_empty() {
            return Err(format!("{}: missing the proxy's host:port", u.raw));
        }
        url::split_host_port(&u.addr).map_err(|e| format!("{}: {e}", u.raw))?;
        let (user, password) = match u.userinfo.as_deref().map(|i| i.split_once(':').unwrap_or((i, ""))) {
            Some((user, pass)) => (Some(user.to_owned()), (!pass.is_empty()).then(|| Secret::from(pass.to_owned()))),
            None => (None, None),
        };
        let password = match (password, password_file) {
            (Some(_), Some(_)) => {
                return Err("give the proxy password in the URL or in proxyPasswordFile, not both".into());
            }
            (None, Some(path)) => Some(Secret::from_file(path)?),
            (p, None) => p,
        };
        let auth = match (user, password) {
            (Some(user), password) if !user.is_empty() => {
                Some((user, password.unwrap_or_else(|| Secret::from(String::new()))))
            }
            (_, Some(_)) => return Err(format!("{}: a proxy password needs a user name (user:pass@)", u.raw)),
            _ => None,
        };
        if let (ProxyKind::Socks5, Some((user, pass))) = (kind, &auth) {
            if user.len() > 255 || pass.len() > 255 {
                return Err("SOCKS5 user names and passwords are at most 255 bytes".into());
            }
        }
        let addr = url::dial_addr(&u.addr);
        u.finish().map_err(|e| e.to_string())?;
        Ok(Proxy { kind, addr, auth })
    }

    /// What logs say: the scheme and address, never the credentials.
    pub fn describe(&self) -> String {
        let scheme = if self.kind == ProxyKind::Http { "http" } else { "socks5" };
        format!("{scheme}://{}", self.addr)
    }

    /// A connection to `target` through the proxy.
    pub async fn connect(&self, target: &str) -> io::Result<TcpStream> {
        match self.kind {
            ProxyKind::Http => self.http_connect(target).await,
            ProxyKind::Socks5 => self.socks5_connect(target).await,
        }
    }

    async fn http_connect(&self, target: &str) -> io::Result<TcpStream> {
        let mut tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to proxy {}: {e}", self.describe())))?;
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some((user, pass)) = &self.auth {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", pass.expose()));
            request.push_str(&format!("Proxy-Authorization: Basic {basic}\r\n"));
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes()).await?;
        let head = read_head(&mut tcp).await.map_err(|e| {
            io::Error::new(e.kind(), format!("proxy {} gave no answer to CONNECT {target}: {e}", self.describe()))
        })?;
        let (code, reason) = parse_status(&head).map_err(|why| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("proxy {} answered CONNECT {target} with {why}", self.describe()),
            )
        })?;
        if !(200..300).contains(&code) {
            // 407 is the standard answer; some proxies (tinyproxy) say 401.
            let hint = if code == 407 || code == 401 { " (wrong or missing proxy credentials)" } else { "" };
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("proxy {} refused CONNECT {target}: {code} {reason}{hint}", self.describe()),
            ));
        }
        Ok(tcp)
    }

    async fn socks5_connect(&self, target: &str) -> io::Result<TcpStream> {
        use tokio_socks::tcp::Socks5Stream;
        // `host:port` as written: a name travels as a SOCKS5 domain address.
        let host_port = target.trim();
        let (host, port) =
            url::split_host_port(host_port).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let result = match &self.auth {
            Some((user, pass)) => {
                Socks5Stream::connect_with_password(self.addr.as_str(), (host, port), user, pass.expose()).await
            }
            None => Socks5Stream::connect(self.addr.as_str(), (host, port)).await,
        };
        result.map(Socks5Stream::into_inner).map_err(|e| {
            let kind = match &e {
                tokio_socks::Error::Io(io) => io.kind(),
                _ => io::ErrorKind::ConnectionRefused,
            };
            io::Error::new(kind, format!("SOCKS5 proxy {} could not connect to {target}: {e}", self.describe()))
        })
    }
}

impl TcpDial for Proxy {
    fn dial<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<TcpStream>> {
        Box::pin(self.connect(addr))
    }
}

/// Reads a response head up to its blank line, byte by byte so nothing after it (the
/// server's first bytes) is taken from the stream; at most [`MAX_RESPONSE_HEAD`] bytes.
async fn read_head(tcp: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_RESPONSE_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a response head over {MAX_RESPONSE_HEAD} bytes"),
            ));
        }
        if tcp.read(&mut byte).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the proxy closed the connection"));
        }
        head.push(byte[0]);
    }
    Ok(head)
}

/// The status code and reason of a complete response head.
fn parse_status(head: &[u8]) -> Result<(u16, String), String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {
            Ok((response.code.unwrap_or(0), response.reason.unwrap_or_default().to_owned()))
        }
        Ok(httparse::Status::Partial) => Err("an incomplete HTTP response".into()),
        Err(e) => Err(format!("something that is not HTTP ({e})")),
    }
}

#[cfg(test)]
mod tests;
