//! Moving bytes between two connections, and the socket options every hop gets.
//!
//! The pump copies both ways at once. Each direction starts with a small buffer inside its
//! own future and moves to a large heap buffer only while data keeps filling the small one,
//! going back once the flow slows: a busy stream gets multi-Gbit/s copies, and an idle
//! visitor costs a few KiB instead of two large buffers per hop.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::defaults::COPY_BUFFER;

/// Buffer every direction starts with (kept inside the task, not on the heap).
const SMALL_BUFFER: usize = 8 * 1024;
/// Small reads in a row after which a direction gives its large buffer back.
const QUIET_READS: u32 = 64;

/// Copies both ways until both sides have finished; a side that shuts down its write half
/// has that half-close passed on while the other direction keeps flowing. An error in either
/// direction ends both. Returns the bytes moved `a -> b` and `b -> a`.
pub async fn pump<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    tokio::try_join!(copy_half(&mut ar, &mut bw), copy_half(&mut br, &mut aw))
}

/// Copies `r` to `w` until EOF, then shuts `w` down.
async fn copy_half<R, W>(r: &mut R, w: &mut W) -> io::Result<u64>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut small = [0u8; SMALL_BUFFER];
    let mut big: Option<Box<[u8]>> = None;
    let mut total = 0u64;
    // Consecutive small reads while holding the big buffer.
    let mut quiet = 0u32;
    loop {
        let buf: &mut [u8] = match big.as_deref_mut() {
            Some(b) => b,
            None => &mut small,
        };
        let n = r.read(buf).await?;
        if n == 0 {
            w.shutdown().await?;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        total += n as u64;
        match &big {
            // The small buffer filled up: the stream is busy.
            None if n == SMALL_BUFFER => big = Some(vec![0u8; COPY_BUFFER].into_boxed_slice()),
            // Reads have stayed small for a while: give the memory back.
            Some(_) if n < SMALL_BUFFER / 2 => {
                quiet += 1;
                if quiet >= QUIET_READS {
                    big = None;
                    quiet = 0;
                }
            }
            Some(_) => quiet = 0,
            None => {}
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn half_close_travels_and_bytes_are_exact() {
        // client <-> (a | pump | b) <-> echo
        let (mut client, mut a) = tokio::io::duplex(64 * 1024);
        let (mut b, mut echo) = tokio::io::duplex(64 * 1024);
        let pump = tokio::spawn(async move { pump(&mut a, &mut b).await });
        let echo = tokio::spawn(async move {
            let mut all = Vec::new();
            echo.read_to_end(&mut all).await.unwrap();
            echo.write_all(&all).await.unwrap();
            echo.shutdown().await.unwrap();
        });
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (mut rd, mut wr) = tokio::io::split(&mut client);
        let send = async {
            wr.write_all(&data).await.unwrap();
            wr.shutdown().await.unwrap();
        };
        let mut back = Vec::new();
        let recv = rd.read_to_end(&mut back);
        let (_, got) = tokio::join!(send, recv);
        got.unwrap();
        assert!(back == data, "echoed bytes differ");
        let (up, down) = pump.await.unwrap().unwrap();
        assert_eq!((up, down), (data.len() as u64, data.len() as u64));
        echo.await.unwrap();
    }
}
