//! The PROXY protocol (v1 and v2), as a load balancer sends it in front of an entrypoint:
//! parsed by the `ppp` crate, read byte-exactly so that nothing after the header is consumed.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ppp::{HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest header accepted (a v2 header with TLVs of a cloud load balancer fits).
pub const MAX_HEADER: usize = 4096;

/// Why no PROXY header could be read.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The connection does not start with a PROXY protocol header.
    #[error("no PROXY protocol header: {0}")]
    Invalid(String),
    /// The header did not arrive in time.
    #[error("no PROXY protocol header within {0:?}")]
    Timeout(Duration),
    /// The header is longer than [`MAX_HEADER`].
    #[error("PROXY protocol header longer than {MAX_HEADER} bytes")]
    TooLong,
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Io(#[from] io::Error),
}

/// Reads the PROXY protocol header at the start of `tcp` within `timeout`, and returns the
/// source address it carries: `None` for a header that carries none (v2 `LOCAL`, v1
/// `UNKNOWN`, a health check of the balancer itself). Exactly the header's bytes are read.
pub async fn read_header(tcp: &mut TcpStream, timeout: Duration) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    match tokio::time::timeout(timeout, read_exact_header(tcp)).await {
        Ok(result) => result,
        Err(_) => Err(ProxyHeaderError::Timeout(timeout)),
    }
}

async fn read_exact_header(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut header: Vec<u8> = Vec::new();
    let mut peeked = vec![0u8; 1024];
    loop {
        let n = tcp.peek(&mut peeked).await?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        let mut candidate = header.clone();
        candidate.extend_from_slice(&peeked[..n]);
        let parsed = HeaderResult::parse(&candidate);
        if parsed.is_incomplete() {
            // Every byte seen belongs to the header: take them and wait for more.
            if candidate.len() >= MAX_HEADER {
                return Err(ProxyHeaderError::TooLong);
            }
            tcp.read_exact(&mut peeked[..n]).await?;
            header.extend_from_slice(&peeked[..n]);
            continue;
        }
        let (len, source) = match parsed {
            HeaderResult::V1(Ok(h)) => (h.header.len(), v1_source(&h.addresses)),
            HeaderResult::V2(Ok(h)) => (h.len(), v2_source(&h)),
            HeaderResult::V1(Err(e)) => return Err(ProxyHeaderError::Invalid(e.to_string())),
            HeaderResult::V2(Err(e)) => return Err(ProxyHeaderError::Invalid(e.to_string())),
        };
        if len > MAX_HEADER {
            return Err(ProxyHeaderError::TooLong);
        }
        let rest = len - header.len();
        let mut tail = vec![0u8; rest];
        tcp.read_exact(&mut tail).await?;
        return Ok(source);
    }
}

fn v1_source(addresses: &ppp::v1::Addresses) -> Option<SocketAddr> {
    match addresses {
        ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port)),
        ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port)),
        ppp::v1::Addresses::Unknown => None,
    }
}

fn v2_source(h: &ppp::v2::Header<'_>) -> Option<SocketAddr> {
    if h.command == ppp::v2::Command::Local {
        return None;
    }
    match h.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port)),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn a_v1_header_split_in_pieces_gives_its_source_and_leaves_the_data() {
        let (mut client, mut server) = pair().await;
        client.set_nodelay(true).unwrap();
        client.write_all(b"PROXY TCP4 192.0.2.7 10.0.0.1 5").await.unwrap();
        client.write_all(b"6324 80\r\nGET / HTTP/1.1\r\n").await.unwrap();
        let source = read_header(&mut server, Duration::from_secs(5)).await.unwrap();
        assert_eq!(source, Some("192.0.2.7:56324".parse().unwrap()));
        let mut rest = [0u8; 16];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_v2_header_gives_its_source_and_leaves_the_data() {
        let (mut client, mut server) = pair().await;
        let addresses: ppp::v2::Addresses =
            ("[2001:db8::7]:4000".parse::<SocketAddr>().unwrap(), "[2001:db8::1]:443".parse::<SocketAddr>().unwrap())
                .into();
        let header = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            addresses,
        )
        .build()
        .unwrap();
        client.write_all(&header).await.unwrap();
        client.write_all(b"\x16\x03\x01").await.unwrap();
        let source = read_header(&mut server, Duration::from_secs(5)).await.unwrap();
        assert_eq!(source, Some("[2001:db8::7]:4000".parse().unwrap()));
        let mut rest = [0u8; 3];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"\x16\x03\x01");
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        let (mut client, mut server) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(matches!(read_header(&mut server, Duration::from_secs(5)).await, Err(ProxyHeaderError::Invalid(_))));
        let (_client, mut server) = pair().await;
        assert!(matches!(read_header(&mut server, Duration::from_millis(50)).await, Err(ProxyHeaderError::Timeout(_))));
    }
}
