//! Moving bytes between two connections, and the socket options every hop gets.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::defaults::COPY_BUFFER;

/// Copies both ways until both sides have finished; a side that shuts down its write half
/// has that half-close passed on while the other direction keeps flowing.
/// Returns the bytes moved `a -> b` and `b -> a`.
pub async fn pump<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional_with_sizes(a, b, COPY_BUFFER, COPY_BUFFER).await
}

/// `TCP_NODELAY` (no Nagle delay on small writes such as HTTP headers) and TCP keepalive
/// (a dead peer behind NAT is eventually noticed by the kernel too).
pub fn tune_tcp(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = TcpKeepalive::new().with_time(Duration::from_secs(30)).with_interval(Duration::from_secs(10));
    let _ = SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

/// Closes with a reset instead of a FIN, so the peer sees a failure rather than a clean end
/// when its upstream died mid-transfer.
pub fn reset(stream: TcpStream) {
    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}
