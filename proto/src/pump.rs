//! Moving bytes between two connections, the socket options every hop gets, and the accept
//! loop of every listener.
//!
//! The pump copies both ways at once. Each direction reads into a small buffer and moves to a
//! large one only while data keeps filling the small one, going back once the flow slows: a
//! busy stream gets multi-Gbit/s copies, and an idle visitor costs a few KiB instead of two
//! large buffers per hop. A large buffer is also given back once its direction has moved
//! nothing for [`IDLE_RELEASE`]: a keep-alive connection that sits idle after a download holds
//! a small buffer, not the large one the download grew.

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
/// A direction that has moved nothing for this long gives its large buffer back (after one
/// to two such periods: the timer is re-armed once a period while data flows, never per read).
pub const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// Copies both ways until both sides have finished; a side that shuts down its write half
/// has that half-close passed on while the other direction keeps flowing. An error in either
/// direction ends both. Returns the bytes moved `a -> b` and `b -> a`. Needs a runtime with
/// its timer enabled (see [`IDLE_RELEASE`]).
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

    /// Replaces the buffer (zero-filled, `len` bytes; none for 0).
    fn set(&mut self, len: usize) {
        #[cfg(test)]
        tests::on_set(self.buf.len(), len);
        self.buf = if len == 0 { Vec::new() } else { vec![0u8; len] };
    }

    /// The buffer for the next read (allocated now if needed).
    fn ready(&mut self) -> &mut [u8] {
        if self.buf.is_empty() {
            self.set(SMALL_BUFFER);
        }
        &mut self.buf
    }

    /// Whether it has grown past the small buffer.
    fn is_large(&self) -> bool {
        self.buf.len() > SMALL_BUFFER
    }

    /// Adapts the size after a read of `n` bytes.
    fn adapt(&mut self, n: usize) {
        let len = self.buf.len();
        if n == len && len < COPY_BUFFER {
            self.set((len * GROWTH).min(COPY_BUFFER));
            self.quiet = 0;
        } else if len > SMALL_BUFFER && n < SMALL_BUFFER {
            self.quiet += 1;
            if self.quiet >= QUIET_READS {
                self.release();
            }
        } else {
            self.quiet = 0;
        }
    }

    /// Gives the memory back.
    fn release(&mut self) {
        self.set(0);
        self.quiet = 0;
    }

    /// Gives the large buffer of an idle direction back (see [`on_buffer_given_back`]).
    fn release_idle(&mut self) {
        self.release();
        if let Some(hook) = GIVEN_BACK.get() {
            hook();
        }
    }

    /// Gives the memory back when it is the small buffer (the direction looks idle).
    fn release_if_small(&mut self) {
        if !self.is_large() {
            self.set(0);
        }
    }
}

#[cfg(test)]
impl Drop for Buffer {
    fn drop(&mut self) {
        tests::on_set(self.buf.len(), 0);
    }
}

/// What runs each time an idle direction has given its large buffer back.
static GIVEN_BACK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what runs each time an idle direction gives its large buffer back (once per process;
/// later calls change nothing). The binaries have the allocator return the freed memory to
/// the system (`tunnel_runtime::telemetry::trim_soon`).
pub fn on_buffer_given_back(hook: fn()) {
    let _ = GIVEN_BACK.set(hook);
}

/// What a wait for the next read ended with.
enum Waited<T> {
    Ready(T),
    /// The direction moved nothing for a whole [`IDLE_RELEASE`]: give the large buffer back.
    Idle,
}

/// A direction's idle timer, armed only while its buffer is large.
struct IdleTimer {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The direction's byte count when the timer was armed.
    seen: u64,
}

impl IdleTimer {
    fn new() -> IdleTimer {
        IdleTimer { sleep: None, seen: 0 }
    }

    /// Waits for `ready`. While the buffer is `large`, the wait also ends with
    /// [`Waited::Idle`] once a period passes with `total` (the bytes moved so far) where it was
    /// when the timer was armed; a period in which bytes moved re-arms it.
    async fn wait<F: Future>(&mut self, large: bool, total: u64, ready: F) -> Waited<F::Output> {
        if !large {
            self.sleep = None;
            return Waited::Ready(ready.await);
        }
        let mut sleep = match self.sleep.take() {
            Some(sleep) => sleep,
            None => {
                self.seen = total;
                Box::pin(tokio::time::sleep(IDLE_RELEASE))
            }
        };
        let mut ready = std::pin::pin!(ready);
        loop {
            tokio::select! {
                biased;
                out = &mut ready => {
                    self.sleep = Some(sleep);
                    return Waited::Ready(out);
                }
                () = sleep.as_mut() => {
                    if total == self.seen {
                        return Waited::Idle;
                    }
                    self.seen = total;
                    sleep.as_mut().reset(tokio::time::Instant::now() + IDLE_RELEASE);
                }
            }
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
    let mut idle = IdleTimer::new();
    let mut total = 0u64;
    loop {
        let large = buffer.is_large();
        // A read is cancel-safe: one ended by the idle timer has taken nothing.
        let n = match idle.wait(large, total, r.read(buffer.ready())).await {
            Waited::Ready(n) => n?,
            Waited::Idle => {
                buffer.release_idle();
                continue;
            }
        };
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
    let mut idle = IdleTimer::new();
    let mut total = 0u64;
    loop {
        match idle.wait(buffer.is_large(), total, tcp.readable()).await {
            Waited::Ready(ready) => ready?,
            Waited::Idle => {
                buffer.release_idle();
                continue;
            }
        }
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
                    tracing::warn!(%err, listener = what, "accept failed");
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
    use std::cell::Cell;

    thread_local! {
        /// Bytes the copy buffers of this thread hold.
        static HELD: Cell<isize> = const { Cell::new(0) };
        /// How many times one of them became the large buffer.
        static LARGE: Cell<usize> = const { Cell::new(0) };
    }

    /// A buffer of `old` bytes was replaced by one of `new`.
    pub(super) fn on_set(old: usize, new: usize) {
        HELD.with(|h| h.set(h.get() + new as isize - old as isize));
        if new == COPY_BUFFER {
            LARGE.with(|l| l.set(l.get() + 1));
        }
    }

    fn held() -> isize {
        HELD.with(|h| h.get())
    }

    fn large() -> usize {
        LARGE.with(|l| l.get())
    }

    /// Reads exactly `len` bytes of `r` and checks they are `byte`.
    async fn expect<R: AsyncRead + Unpin>(r: &mut R, len: usize, byte: u8) {
        let mut got = vec![0u8; len];
        r.read_exact(&mut got).await.unwrap();
        assert!(got.iter().all(|b| *b == byte), "bytes differ");
    }

    /// A download grows its direction's buffer to the large one; the connection then sits
    /// idle, and the buffer is given back (without it, 256 KiB per direction stay held for
    /// the life of an idle keep-alive connection). Bursts less than a period apart keep it,
    /// and the read the timer cut short lost nothing.
    #[tokio::test(start_paused = true)]
    async fn an_idle_direction_gives_its_large_buffer_back() {
        const BURST: usize = 512 * 1024;
        let (mut client, mut a) = tokio::io::duplex(2 * BURST);
        let (mut b, mut origin) = tokio::io::duplex(2 * BURST);
        let pump = tokio::spawn(async move { pump(&mut a, &mut b).await });
        for round in 0..4u8 {
            origin.write_all(&vec![round; BURST]).await.unwrap();
            expect(&mut client, BURST, round).await;
            assert!(held() > 200 * 1024, "round {round}: the busy direction lost its large buffer: {}", held());
            tokio::time::sleep(IDLE_RELEASE / 2).await;
        }
        assert_eq!(large(), 1, "bursts half a period apart made the buffer anew");
        tokio::time::sleep(IDLE_RELEASE * 3).await;
        assert!(held() <= 2 * SMALL_BUFFER as isize, "an idle pump holds {} bytes", held());
        origin.write_all(&vec![9u8; BURST]).await.unwrap();
        expect(&mut client, BURST, 9).await;
        drop((client, origin));
        pump.await.unwrap().unwrap();
        assert_eq!(held(), 0);
    }

    /// The same for the direction that reads a TCP connection (a visitor's upload).
    #[tokio::test(start_paused = true)]
    async fn an_idle_tcp_direction_gives_its_large_buffer_back() {
        const BURST: usize = 512 * 1024;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut visitor = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut tcp, _) = listener.accept().await.unwrap();
        let (mut near, mut far) = tokio::io::duplex(2 * BURST);
        let pump = tokio::spawn(async move { pump_tcp(&mut tcp, &mut near).await });
        visitor.write_all(&vec![1u8; BURST]).await.unwrap();
        expect(&mut far, BURST, 1).await;
        assert!(held() > 200 * 1024, "the upload did not grow its buffer: {}", held());
        tokio::time::sleep(IDLE_RELEASE * 3).await;
        assert!(held() <= SMALL_BUFFER as isize, "an idle TCP pump holds {} bytes", held());
        visitor.write_all(&vec![2u8; BURST]).await.unwrap();
        expect(&mut far, BURST, 2).await;
        drop((visitor, far));
        let _ = pump.await.unwrap();
        assert_eq!(held(), 0);
    }

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
