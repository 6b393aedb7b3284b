//! Moving bytes between two connections, the socket options every hop gets, and the accept
//! loop of every listener.
//!
//! The pump copies both ways at once. Each direction reads into a small buffer and moves to a
//! large one only while data keeps filling the small one, going back once the flow slows: a
//! busy stream gets multi-Gbit/s copies, and an idle visitor costs a few KiB instead of two
//! large buffers per hop.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::ReadHalf;
use tokio::net::{TcpListener, TcpStream};

use tokio_util::sync::CancellationToken;

use crate::defaults::COPY_BUFFER;

/// Buffer a direction waits with for the next read, and uses while reads stay small.
const SMALL_BUFFER: usize = 1024;
/// Each time a read fills the buffer, it grows this many times, up to `COPY_BUFFER`.
const GROWTH: usize = 16;
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

/// As [`pump`], between a TCP connection and any stream. The TCP side waits for data without
/// holding a buffer at all, so an idle visitor costs almost nothing on that side.
pub async fn pump_tcp<B>(tcp: &mut TcpStream, b: &mut B) -> io::Result<(u64, u64)>
where
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (tr, mut tw) = tcp.split();
    let (mut br, mut bw) = tokio::io::split(b);
    tokio::try_join!(copy_from_tcp(tr, &mut bw), copy_half(&mut br, &mut tw))
}

/// The buffer policy of one direction: small while reads are small, larger while they fill
/// the buffer, back to small after a run of small reads. Buffers are zero-filled once, when
/// allocated (readers behind a compatibility layer would otherwise zero the spare capacity on
/// every read).
struct Buffer {
    buf: Vec<u8>,
    quiet: u32,
}

impl Buffer {
    fn new() -> Buffer {
        Buffer { buf: Vec::new(), quiet: 0 }
    }

    /// The buffer for the next read (allocated now if needed).
    fn ready(&mut self) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = vec![0u8; SMALL_BUFFER];
        }
        &mut self.buf
    }

    /// Adapts the size after a read of `n` bytes.
    fn adapt(&mut self, n: usize) {
        let len = self.buf.len();
        if n == len && len < COPY_BUFFER {
            self.buf = vec![0u8; (len * GROWTH).min(COPY_BUFFER)];
            self.quiet = 0;
        } else if len > SMALL_BUFFER && n < SMALL_BUFFER {
            self.quiet += 1;
            if self.quiet >= QUIET_READS {
                self.buf = Vec::new();
                self.quiet = 0;
            }
        } else {
            self.quiet = 0;
        }
    }

    /// Gives the memory back when it is the small buffer (the direction looks idle).
    fn release_if_small(&mut self) {
        if self.buf.len() <= SMALL_BUFFER {
            self.buf = Vec::new();
        }
    }
}

/// Copies `r` to `w` until EOF, then shuts `w` down.
async fn copy_half<R, W>(r: &mut R, w: &mut W) -> io::Result<u64>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buffer = Buffer::new();
    let mut total = 0u64;
    loop {
        let n = r.read(buffer.ready()).await?;
        if !forward(w, &mut buffer, n, &mut total).await? {
            return Ok(total);
        }
    }
}

/// Writes the `n` bytes just read into `buffer` to `w` and adapts the buffer; at EOF (`n` is
/// 0) shuts `w` down instead and returns false.
async fn forward<W>(w: &mut W, buffer: &mut Buffer, n: usize, total: &mut u64) -> io::Result<bool>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    if n == 0 {
        w.shutdown().await?;
        return Ok(false);
    }
    w.write_all(&buffer.buf[..n]).await?;
    *total += n as u64;
    buffer.adapt(n);
    Ok(true)
}

/// Copies a TCP connection's bytes to `w` until EOF, then shuts `w` down. Between bursts it
/// waits for readability with no buffer allocated.
async fn copy_from_tcp<W>(mut tcp: ReadHalf<'_>, w: &mut W) -> io::Result<u64>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buffer = Buffer::new();
    let mut total = 0u64;
    loop {
        tcp.readable().await?;
        let n = match read_now(&mut tcp, buffer.ready()).await {
            Some(n) => n?,
            None => {
                buffer.release_if_small();
                // Either the readiness was stale (now cleared: the next wait is real) or the
                // task has used up its scheduling budget, when `readable` would still answer
                // at once and this loop would spin: yield to the scheduler in both cases.
                tokio::task::yield_now().await;
                continue;
            }
        };
        if !forward(w, &mut buffer, n, &mut total).await? {
            return Ok(total);
        }
        if n < SMALL_BUFFER {
            buffer.release_if_small();
        }
    }
}

/// Reads what `r` has without waiting; `None` when it had nothing or the task's budget is
/// spent. Unlike `try_read`, a read that does not fill the buffer marks the socket drained,
/// so waiting for the next burst costs no extra read that fails with `WouldBlock`.
async fn read_now<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Option<io::Result<usize>> {
    poll_fn(|cx| {
        let mut rb = ReadBuf::new(buf);
        Poll::Ready(match Pin::new(&mut *r).poll_read(cx, &mut rb) {
            Poll::Pending => None,
            Poll::Ready(Ok(())) => Some(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Some(Err(e)),
        })
    })
    .await
}

/// `TCP_NODELAY` (no Nagle delay on small writes such as HTTP headers) and TCP keepalive
/// (a dead peer behind NAT is eventually noticed by the kernel too).
pub fn tune_tcp(stream: &TcpStream) {
    tune(SockRef::from(stream));
}

/// Binds a listener for visitors. Linux gives an accepted connection the listening socket's
/// options, so the listener gets [`tune_tcp`]'s options once instead of four system calls
/// per visitor; [`tune_accepted`] finishes the job where that is not so.
pub async fn bind_listener(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    bind_listener_reuse(addr, false).await
}

/// As [`bind_listener`]; with `reuse`, the port is shared with other processes
/// (`SO_REUSEPORT`, see [`crate::socket`]).
pub async fn bind_listener_reuse(addr: std::net::SocketAddr, reuse: bool) -> io::Result<TcpListener> {
    let listener = crate::socket::tcp_listener(addr, reuse)?;
    tune(SockRef::from(&listener));
    Ok(listener)
}

/// As [`bind_listener_reuse`], one listener for each of `n` threads (see
/// [`crate::socket::tcp_listener_group`]).
pub fn bind_listener_group(
    addr: std::net::SocketAddr,
    reuse: bool,
    n: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    let group = crate::socket::tcp_listener_group(addr, reuse, n)?;
    for listener in &group {
        tune(SockRef::from(listener));
    }
    Ok(group)
}

/// Pause after a failed accept (out of file descriptors and the like) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The next connection from `accept`, or `None` once `shutdown` is cancelled; shutdown wins
/// over a connection waiting in the backlog. A failed accept is logged (naming `what`) and
/// retried after a short pause.
pub async fn accept_until<T, F>(shutdown: &CancellationToken, what: &str, mut accept: impl FnMut() -> F) -> Option<T>
where
    F: Future<Output = io::Result<T>>,
{
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            r = accept() => match r {
                Ok(conn) => return Some(conn),
                Err(err) => {
                    tracing::warn!(%err, "{what} accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
}

/// Gives a connection accepted from a [`bind_listener`] listener what it did not inherit.
pub fn tune_accepted(stream: &TcpStream) {
    if !cfg!(target_os = "linux") {
        tune_tcp(stream);
    }
}

fn tune(socket: SockRef<'_>) {
    let _ = socket.set_tcp_nodelay(true);
    let keepalive = TcpKeepalive::new().with_time(Duration::from_secs(30)).with_interval(Duration::from_secs(10));
    let _ = socket.set_tcp_keepalive(&keepalive);
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

    /// A writer that spends the task's whole scheduling budget on every write, so the
    /// pump's next read finds it spent.
    struct SpendsBudget<W>(W);

    impl<W: AsyncWrite + Unpin> AsyncWrite for SpendsBudget<W> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let written = Pin::new(&mut self.0).poll_write(cx, buf);
            if written.is_ready() {
                while std::future::Future::poll(std::pin::pin!(tokio::task::coop::consume_budget()), cx).is_ready() {}
            }
            written
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    impl<W: AsyncRead + Unpin> AsyncRead for SpendsBudget<W> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    /// A connection with data waiting, read by a task whose budget is spent, must make the
    /// pump yield rather than spin: spinning stalls a single-threaded runtime for good.
    #[test]
    fn a_spent_task_budget_does_not_stall_a_single_threaded_runtime() {
        const LEN: usize = 8 << 20;
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let moved = rt.block_on(async {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let mut sender = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
                let (mut tcp, _) = listener.accept().await.unwrap();
                // Data waits before the pump starts, so its first read fills its buffer and
                // the socket stays readable.
                let data = vec![7u8; LEN];
                let send = tokio::spawn(async move {
                    sender.write_all(&data).await.unwrap();
                    sender.shutdown().await.unwrap();
                    sender
                });
                tcp.readable().await.unwrap();
                let (near, mut far) = tokio::io::duplex(LEN + 1);
                let mut near = SpendsBudget(near);
                let reader = tokio::spawn(async move {
                    let mut got = Vec::new();
                    far.read_to_end(&mut got).await.unwrap();
                    got.len()
                });
                let (up, _) = pump_tcp(&mut tcp, &mut near).await.unwrap();
                drop(near);
                drop(send.await.unwrap());
                assert_eq!(reader.await.unwrap() as u64, up);
                up
            });
            let _ = done_tx.send(moved);
        });
        let moved = done_rx.recv_timeout(Duration::from_secs(60)).expect("the pump stalled its runtime");
        assert_eq!(moved, LEN as u64);
    }

    #[tokio::test]
    async fn accepted_connections_have_nodelay_and_keepalive() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        tune_accepted(&accepted);
        let sock = SockRef::from(&accepted);
        assert!(sock.tcp_nodelay().unwrap(), "TCP_NODELAY not set on an accepted connection");
        assert!(sock.keepalive().unwrap(), "SO_KEEPALIVE not set on an accepted connection");
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), Duration::from_secs(10));
    }

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
