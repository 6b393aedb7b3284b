//! Hostname sniffing: pure parsers for the HTTP/1.x `Host` header and the TLS ClientHello SNI,
//! and [`read_hostname`], which applies them to a visitor connection under a timeout and a
//! byte cap and hands back every byte it read so the caller can replay them.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::host;

/// What a sniffer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// An HTTP/1.x request naming this (canonical) host.
    Http(String),
    /// A TLS ClientHello; the SNI if it carried one (canonical).
    Tls(Option<String>),
}

impl Sniffed {
    /// The hostname, if any.
    pub fn hostname(&self) -> Option<&str> {
        match self {
            Sniffed::Http(h) => Some(h),
            Sniffed::Tls(h) => h.as_deref(),
        }
    }
}

/// Why no hostname could be sniffed.
#[derive(Debug, thiserror::Error)]
pub enum SniffError {
    /// The first bytes are neither HTTP/1.x nor TLS.
    #[error("not an HTTP/1.x request or a TLS ClientHello")]
    Unknown,
    /// An HTTP request without a `Host` header.
    #[error("HTTP request without a Host header")]
    MissingHost,
    /// An HTTP request with two `Host` headers.
    #[error("HTTP request with more than one Host header")]
    DuplicateHost,
    /// The host is not a valid hostname.
    #[error("invalid hostname: {0}")]
    BadHost(#[from] host::HostError),
    /// HTTP head or ClientHello that cannot be parsed.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The byte cap was reached before the hostname was found.
    #[error("no hostname within the first {0} bytes")]
    TooLarge(usize),
    /// The timeout passed before the hostname was found.
    #[error("no hostname within {0:?}")]
    Timeout(Duration),
    /// The visitor closed or the socket failed.
    #[error("visitor connection: {0}")]
    Io(#[from] std::io::Error),
}

/// The kind of protocol the first bytes look like, decided from the first byte alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guess {
    /// A TLS handshake record.
    Tls,
    /// Starts like an HTTP method token.
    Http,
    /// Anything else.
    Other,
}

/// Guesses the protocol from the first byte.
pub fn guess(buf: &[u8]) -> Option<Guess> {
    let first = *buf.first()?;
    Some(match first {
        0x16 => Guess::Tls,
        b'A'..=b'Z' => Guess::Http,
        _ => Guess::Other,
    })
}

/// Maximum headers in a sniffed HTTP request head.
pub const MAX_HTTP_HEADERS: usize = 100;

/// The connection preface of HTTP/2 with prior knowledge.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Finds the host of an HTTP/1.x request head. `Ok(None)`: the head is not complete yet.
/// The HTTP/2 preface names no host: `Ok(Some(""))` (each HTTP/2 request names its own).
pub fn http_host(buf: &[u8]) -> Result<Option<String>, SniffError> {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return Ok((n == H2_PREFACE.len()).then(String::new));
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HTTP_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return Err(SniffError::Malformed("HTTP head: too many headers")),
        Err(_) => return Err(SniffError::Malformed("HTTP request head")),
    }
    let mut host: Option<&[u8]> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err(SniffError::DuplicateHost);
            }
            host = Some(h.value);
        }
    }
    // An absolute-form target (`GET http://a.example/ HTTP/1.1`) names the host itself.
    let from_target = req.path.and_then(|p| {
        let rest = p.strip_prefix("http://").or_else(|| p.strip_prefix("https://"))?;
        Some(rest.split(['/', '?']).next().unwrap_or(rest).to_owned())
    });
    let raw = match (from_target, host) {
        (Some(t), _) => t,
        (None, Some(h)) => std::str::from_utf8(h).map_err(|_| SniffError::Malformed("Host header"))?.to_owned(),
        (None, None) => return Err(SniffError::MissingHost),
    };
    let raw = raw.rsplit('@').next().unwrap_or(&raw).to_owned();
    Ok(Some(host::canonicalize(&raw)?))
}

/// Finds the SNI of a TLS ClientHello, however it is split into records.
/// `Ok(None)`: more bytes are needed; `Ok(Some(None))`: a ClientHello without SNI.
pub fn tls_sni(buf: &[u8]) -> Result<Option<Option<String>>, SniffError> {
    match client_hello(buf)? {
        None => Ok(None),
        Some(accepted) => Ok(Some(accepted.client_hello().server_name().map(host::canonicalize).transpose()?)),
    }
}

/// The ClientHello in `buf`, however it is split into records. `Ok(None)`: more bytes are
/// needed.
fn client_hello(buf: &[u8]) -> Result<Option<rustls::server::Accepted>, SniffError> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = buf;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Err(SniffError::Malformed("TLS record")),
        }
    }
    acceptor.accept().map_err(|_| SniffError::Malformed("TLS ClientHello"))
}

/// Whether a TLS ClientHello offers ALPN protocol `alpn` (the relay's, on a port it shares
/// with an entrypoint). `Ok(None)`: more bytes are needed; an error: not a ClientHello.
pub fn tls_offers_alpn(buf: &[u8], alpn: &[u8]) -> Result<Option<bool>, SniffError> {
    Ok(client_hello(buf)?
        .map(|accepted| accepted.client_hello().alpn().is_some_and(|mut ids| ids.any(|id| id == alpn))))
}

/// Whether a complete TLS ClientHello offers ALPN protocol `alpn` and no other (an ACME
/// CA's TLS-ALPN-01 validation offers `acme-tls/1` alone).
pub fn tls_offers_only_alpn(buf: &[u8], alpn: &[u8]) -> bool {
    matches!(client_hello(buf), Ok(Some(accepted)) if accepted.client_hello().alpn().is_some_and(|mut ids| ids.all(|id| id == alpn)))
}

/// Runs the sniffer that fits the first byte. `Ok(None)`: more bytes are needed.
pub fn sniff(buf: &[u8]) -> Result<Option<Sniffed>, SniffError> {
    match guess(buf) {
        None => Ok(None),
        Some(Guess::Tls) => Ok(tls_sni(buf)?.map(Sniffed::Tls)),
        Some(Guess::Http) => Ok(http_host(buf)?.map(Sniffed::Http)),
        Some(Guess::Other) => Err(SniffError::Unknown),
    }
}

/// What [`read_hostname`] produced: the verdict and every byte read, to be replayed.
#[derive(Debug)]
pub struct Sniff {
    /// The sniffer's verdict.
    pub result: Result<Sniffed, SniffError>,
    /// The bytes read from the visitor, in order.
    pub prefix: Vec<u8>,
}

impl Sniff {
    /// The protocol the bytes read so far look like.
    pub fn guess(&self) -> Option<Guess> {
        guess(&self.prefix)
    }
}

/// Reads from `io` until a sniffer decides, at most `max` bytes and for at most `timeout`.
pub async fn read_hostname<R: AsyncRead + Unpin>(io: &mut R, timeout: Duration, max: usize) -> Sniff {
    read_hostname_after(io, Vec::with_capacity(1024.min(max)), timeout, max).await
}

/// As [`read_hostname`], for a visitor whose first bytes (`prefix`) were read already.
pub async fn read_hostname_after<R: AsyncRead + Unpin>(
    io: &mut R,
    mut prefix: Vec<u8>,
    timeout: Duration,
    max: usize,
) -> Sniff {
    if !prefix.is_empty() {
        match sniff(&prefix) {
            Ok(Some(found)) => return Sniff { result: Ok(found), prefix },
            Ok(None) => {}
            Err(err) => return Sniff { result: Err(err), prefix },
        }
    }
    let result = match tokio::time::timeout(timeout, read_loop(io, &mut prefix, max)).await {
        Ok(r) => r,
        Err(_) => Err(SniffError::Timeout(timeout)),
    };
    Sniff { result, prefix }
}

async fn read_loop<R: AsyncRead + Unpin>(io: &mut R, buf: &mut Vec<u8>, max: usize) -> Result<Sniffed, SniffError> {
    loop {
        let room = max - buf.len();
        if room == 0 {
            return Err(SniffError::TooLarge(max));
        }
        // Read straight into the prefix (no second buffer), at most up to the cap.
        buf.reserve(room.min(4096));
        let n = (&mut *io).take(room as u64).read_buf(buf).await?;
        if n == 0 {
            return Err(SniffError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        if let Some(found) = sniff(buf)? {
            return Ok(found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: &[u8] =
        b"GET /index.html HTTP/1.1\r\nUser-Agent: curl/8\r\nHost: Abc.Example.com:8080\r\nAccept: */*\r\n\r\n";

    #[test]
    fn http_every_prefix() {
        for i in 0..GET.len() {
            assert!(matches!(http_host(&GET[..i]), Ok(None)), "prefix {i}");
        }
        assert_eq!(http_host(GET).unwrap().unwrap(), "abc.example.com");
    }

    #[test]
    fn http_errors() {
        assert!(matches!(http_host(b"GET / HTTP/1.1\r\n\r\n"), Err(SniffError::MissingHost)));
        assert!(matches!(http_host(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), Err(SniffError::DuplicateHost)));
        assert!(matches!(http_host(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), Err(SniffError::BadHost(_))));
        assert_eq!(
            http_host(b"GET http://Target.example/x HTTP/1.1\r\nHost: other\r\n\r\n").unwrap().unwrap(),
            "target.example"
        );
        assert!(matches!(sniff(b"\x00\x01"), Err(SniffError::Unknown)));
    }

    #[test]
    fn tls_every_prefix() {
        let hello = include_bytes!("../testdata/client_hello_example_com.bin");
        for i in 0..hello.len() {
            assert!(matches!(tls_sni(&hello[..i]), Ok(None)), "prefix {i}");
        }
        assert_eq!(tls_sni(hello).unwrap().unwrap().as_deref(), Some("www.example.com"));
    }

    #[test]
    fn tls_garbage_is_an_error() {
        let mut junk = vec![0x16, 0x03, 0x01, 0x00, 0x05];
        junk.extend_from_slice(&[0xff; 5]);
        assert!(tls_sni(&junk).is_err());
    }

    #[tokio::test]
    async fn read_hostname_caps_and_times_out() {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        tokio::io::AsyncWriteExt::write_all(&mut b, b"GET / HTTP/1.1\r\nX: ").await.unwrap();
        let s = read_hostname(&mut a, Duration::from_millis(50), 1024).await;
        assert!(matches!(s.result, Err(SniffError::Timeout(_))));
        assert_eq!(s.guess(), Some(Guess::Http));
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        tokio::io::AsyncWriteExt::write_all(&mut b, b"GET / HTTP/1.1\r\nX: ").await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut b, &[b'a'; 2000]).await.unwrap();
        let s = read_hostname(&mut a, Duration::from_secs(5), 1024).await;
        assert!(matches!(s.result, Err(SniffError::TooLarge(1024))));
    }
}
