//! TCP + yamux sessions.
//!
//! yamux has no background task: whoever owns the `Connection` must keep polling it, for both
//! directions. [`MuxSession::spawn`] starts one driver task that owns it; handles ask the
//! driver for outbound streams through a bounded channel answered by oneshots, and receive
//! inbound streams through another bounded channel.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_util::compat::TokioAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;

use super::{BoxFuture, ChannelConfig, Session, Stream};

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy)]
pub enum Side {
    /// The dialing side (agent, access client).
    Client,
    /// The accepting side (server).
    Server,
}

/// Largest frame sent: 1 MiB is the most a yamux receiver accepts.
const SPLIT_SEND_SIZE: usize = 1 << 20;
/// Per-stream window yamux starts at; the connection window must cover all streams.
const STREAM_WINDOW: usize = 256 * 1024;
/// Read and write buffers of the connection under yamux.
const IO_BUFFER: usize = 64 * 1024;
/// How long a closing session may take to say goodbye.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

type OpenReply = oneshot::Sender<io::Result<yamux::Stream>>;

/// A yamux session over any byte stream.
pub struct MuxSession {
    open_tx: mpsc::Sender<OpenReply>,
    inbound_policy: Arc<AtomicU8>,
    inbound: Mutex<mpsc::Receiver<yamux::Stream>>,
    cancel: CancellationToken,
    done: CancellationToken,
    peer: SocketAddr,
    /// Streams handed out and not yet dropped.
    live: Arc<AtomicUsize>,
}

fn yamux_config(config: &ChannelConfig) -> yamux::Config {
    let mut cfg = yamux::Config::default();
    cfg.set_max_num_streams(config.max_streams);
    cfg.set_split_send_size(SPLIT_SEND_SIZE);
    // Capped so one connection cannot buffer without bound, yet large enough that every
    // stream can have its full window in flight (the setter panics below that).
    cfg.set_max_connection_receive_window(Some(config.max_streams * STREAM_WINDOW + 2 * 1024 * 1024));
    cfg
}

impl MuxSession {
    /// Starts a session over `io` and its driver task.
    pub fn spawn<T>(io: T, peer: SocketAddr, side: Side, config: &ChannelConfig) -> Arc<dyn Session>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let mode = match side {
            Side::Client => yamux::Mode::Client,
            Side::Server => yamux::Mode::Server,
        };
        let flush = Arc::new(AtomicU8::new(FLUSH));
        let io = Batched { io: BufReader::with_capacity(IO_BUFFER, io), out: Vec::new(), flush: flush.clone() };
        let conn = yamux::Connection::new(io.compat(), yamux_config(config), mode);
        let (open_tx, open_rx) = mpsc::channel(64);
        let (inbound_tx, inbound_rx) = mpsc::channel(config.max_streams);
        let cancel = CancellationToken::new();
        let done = CancellationToken::new();
        let inbound_policy = Arc::new(AtomicU8::new(policy_code(config.inbound)));
        let inbound = Inbound { tx: inbound_tx, policy: inbound_policy.clone(), refused: 0 };
        let live = Arc::new(AtomicUsize::new(0));
        tokio::spawn(drive(conn, flush, open_rx, inbound, cancel.clone(), done.clone(), live.clone()));
        Arc::new(MuxSession { open_tx, inbound_policy, inbound: Mutex::new(inbound_rx), cancel, done, peer, live })
    }
}

fn wrap(stream: yamux::Stream, live: &Arc<AtomicUsize>) -> Stream {
    live.fetch_add(1, Ordering::Relaxed);
    Box::new(Counted { inner: stream, live: live.clone(), hint: FIRST_READ })
}

/// What a stream's first read may fill, then the least a read is offered.
const FIRST_READ: usize = 4096;
/// The most a read is offered beyond the memory its reader has already initialised.
const LARGEST_READ: usize = 256 * 1024;

/// A stream of the session, counted in the session's `live` while it exists: a session
/// closed with streams in flight must wake them (see [`drive`]).
///
/// It also adapts yamux's futures-io stream to tokio's traits. yamux copies into initialised
/// memory only, so a reader handing over uninitialised space (hyper does, every read) has it
/// zeroed first; a read is offered no more of that than recent reads filled (`hint`), not
/// the whole space, which for small messages is most of the zeroing.
struct Counted {
    inner: yamux::Stream,
    live: Arc<AtomicUsize>,
    hint: usize,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            // yamux would wait for data it could not hand over.
            return Poll::Ready(Ok(()));
        }
        let ready = buf.initialized().len() - buf.filled().len();
        let offered = buf.remaining().min(self.hint.max(ready));
        let dst = buf.initialize_unfilled_to(offered);
        let n = std::task::ready!(futures::AsyncRead::poll_read(Pin::new(&mut self.inner), cx, dst))?;
        buf.advance(n);
        self.hint = if n == offered { (offered * 4).min(LARGEST_READ) } else { (n * 2).max(FIRST_READ) };
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        futures::AsyncWrite::poll_write(Pin::new(&mut self.inner), cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        futures::AsyncWrite::poll_write_vectored(Pin::new(&mut self.inner), cx, bufs)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures::AsyncWrite::poll_flush(Pin::new(&mut self.inner), cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures::AsyncWrite::poll_close(Pin::new(&mut self.inner), cx)
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "session closed")
}

impl Session for MuxSession {
    fn open_stream(&self) -> BoxFuture<'_, io::Result<Stream>> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            self.open_tx.send(tx).await.map_err(|_| gone())?;
            let stream = rx.await.map_err(|_| gone())??;
            Ok(wrap(stream, &self.live))
        })
    }

    fn accept_stream(&self) -> BoxFuture<'_, io::Result<Option<Stream>>> {
        Box::pin(async move { Ok(self.inbound.lock().await.recv().await.map(|s| wrap(s, &self.live))) })
    }

    fn close(&self) {
        self.cancel.cancel();
    }

    fn closed(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.done.cancelled())
    }

    fn is_closed(&self) -> bool {
        self.done.is_cancelled()
    }

    fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    fn set_inbound(&self, inbound: super::Inbound) {
        self.inbound_policy.store(policy_code(inbound), Ordering::Relaxed);
    }
}

const ANY: u8 = 0;
const CONTROL_ONLY: u8 = 1;
const REFUSE: u8 = 2;

fn policy_code(inbound: super::Inbound) -> u8 {
    match inbound {
        super::Inbound::Any => ANY,
        super::Inbound::ControlOnly => CONTROL_ONLY,
        super::Inbound::Refuse => REFUSE,
    }
}

/// Where the driver hands inbound streams, under the session's [`super::Inbound`] policy.
struct Inbound {
    tx: mpsc::Sender<yamux::Stream>,
    policy: Arc<AtomicU8>,
    refused: u64,
}

impl Inbound {
    /// Takes a new inbound stream or drops it; a dropped stream is reset and its buffered data
    /// freed at once.
    fn offer(&mut self, stream: yamux::Stream) {
        let take = match self.policy.load(Ordering::Relaxed) {
            ANY => true,
            CONTROL_ONLY => {
                self.policy.store(REFUSE, Ordering::Relaxed);
                true
            }
            _ => false,
        };
        // A full queue means the owner is not accepting: drop (reset) the stream rather than
        // stall every other stream of the session.
        if !take || self.tx.try_send(stream).is_err() {
            self.refused += 1;
            tracing::trace!(refused = self.refused, "inbound stream refused");
        }
    }
}

/// The connection under yamux, buffered both ways. yamux reads each frame's 12-byte header
/// and its body separately, and writes them separately too; here reads come from a buffer
/// that one large read fills, and writes gather in `out`:
/// - a write that fits is copied there;
/// - one that does not (a bulk frame's body after its header) leaves together with what is
///   gathered, in one vectored write, so a frame never goes out as a lone header segment
///   followed by its body (on a connection without vectored writes, `out` is topped up and
///   written instead).
///
/// Flushes follow the driver's `flush` mode, so the frames of one poll of the driver leave
/// in one write:
/// - `FLUSH_FIRST` (set as each poll starts): the first flush is real, which sends what an
///   earlier poll left buffered (its last flush may have been refused by the task budget),
///   and the mode becomes `HOLD`;
/// - `HOLD`: a flush is a no-op (a full buffer is still written);
/// - `FLUSH` (the poll's last pass, before the driver waits): every flush is real.
struct Batched<T> {
    io: BufReader<T>,
    /// Written bytes not yet sent, at most `IO_BUFFER`.
    out: Vec<u8>,
    flush: Arc<AtomicU8>,
}

const FLUSH: u8 = 0;
const HOLD: u8 = 1;
const FLUSH_FIRST: u8 = 2;

impl<T: AsyncRead + AsyncWrite + Unpin> Batched<T> {
    /// Sends what `out` holds.
    fn poll_send_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = std::task::ready!(Pin::new(self.io.get_mut()).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Batched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Batched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            if this.out.len() + buf.len() <= IO_BUFFER {
                if this.out.capacity() == 0 {
                    this.out.reserve_exact(IO_BUFFER);
                }
                this.out.extend_from_slice(buf);
                return Poll::Ready(Ok(buf.len()));
            }
            if this.out.is_empty() {
                return Pin::new(this.io.get_mut()).poll_write(cx, buf);
            }
            let io = this.io.get_mut();
            if !io.is_write_vectored() {
                let room = IO_BUFFER - this.out.len();
                if room > 0 {
                    this.out.extend_from_slice(&buf[..room]);
                    return Poll::Ready(Ok(room));
                }
                std::task::ready!(this.poll_send_out(cx))?;
                continue;
            }
            let slices = [io::IoSlice::new(&this.out), io::IoSlice::new(buf)];
            let n = std::task::ready!(Pin::new(io).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n < this.out.len() {
                this.out.drain(..n);
                continue;
            }
            let taken = n - this.out.len();
            this.out.clear();
            if taken > 0 {
                return Poll::Ready(Ok(taken));
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.flush.load(Ordering::Relaxed) {
            HOLD => return Poll::Ready(Ok(())),
            FLUSH_FIRST => self.flush.store(HOLD, Ordering::Relaxed),
            _ => {}
        }
        std::task::ready!(self.poll_send_out(cx))?;
        Pin::new(self.io.get_mut()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_send_out(cx))?;
        Pin::new(self.io.get_mut()).poll_shutdown(cx)
    }
}

/// Why the driver loop stopped.
enum Stop {
    /// Asked to close (or every handle dropped): say goodbye to the peer.
    Close,
    /// The peer closed or the connection failed.
    Ended,
}

async fn drive<T>(
    mut conn: yamux::Connection<T>,
    flush: Arc<AtomicU8>,
    mut open_rx: mpsc::Receiver<OpenReply>,
    mut inbound: Inbound,
    cancel: CancellationToken,
    done: CancellationToken,
    live: Arc<AtomicUsize>,
) where
    T: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    let mut pending: Option<OpenReply> = None;
    let mut cancelled = std::pin::pin!(cancel.cancelled());
    let stop = poll_fn(|cx| {
        if cancelled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Stop::Close);
        }
        flush.store(FLUSH_FIRST, Ordering::Relaxed);
        loop {
            let mut progress = false;
            if pending.is_none() {
                match open_rx.poll_recv(cx) {
                    Poll::Ready(Some(reply)) => pending = Some(reply),
                    Poll::Ready(None) => return Poll::Ready(Stop::Close),
                    Poll::Pending => {}
                }
            }
            if pending.is_some() {
                if let Poll::Ready(result) = conn.poll_new_outbound(cx) {
                    let failed = result.is_err();
                    let reply = pending.take().expect("checked above");
                    let _ = reply.send(result.map_err(|e| io::Error::new(io::ErrorKind::ConnectionAborted, e)));
                    if failed {
                        return Poll::Ready(Stop::Ended);
                    }
                    progress = true;
                }
            }
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    inbound.offer(stream);
                    progress = true;
                }
                Poll::Ready(Some(Err(err))) => {
                    tracing::debug!(%err, "session connection failed");
                    return Poll::Ready(Stop::Ended);
                }
                Poll::Ready(None) => return Poll::Ready(Stop::Ended),
                Poll::Pending => {}
            }
            if !progress {
                if flush.swap(FLUSH, Ordering::Relaxed) != FLUSH {
                    // One more pass that really flushes what this poll gathered.
                    continue;
                }
                return Poll::Pending;
            }
        }
    })
    .await;
    flush.store(FLUSH, Ordering::Relaxed);
    if let Some(reply) = pending.take() {
        let _ = reply.send(Err(gone()));
    }
    // yamux's graceful close leaves a stream waiting for data asleep for good: only dropping
    // the connection while it is active wakes every stream (with end of stream). So the
    // goodbye is said only when no stream is in flight; a session closed under live streams
    // (a dead peer, an eviction, a drain past its grace) is dropped, which also closes the
    // socket.
    if matches!(stop, Stop::Close) && live.load(Ordering::Relaxed) == 0 {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, poll_fn(|cx| conn.poll_close(cx))).await;
    }
    drop(conn);
    done.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A connection that records its writes, takes at most `most` bytes per call, and writes
    /// vectored or not.
    struct Recorder {
        writes: Vec<Vec<u8>>,
        most: usize,
        vectored: bool,
    }

    impl AsyncRead for Recorder {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.most);
            self.writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len().min(self.most);
            self.writes.push(all[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            self.vectored
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn batched(most: usize, vectored: bool) -> Batched<Recorder> {
        let io = Recorder { writes: Vec::new(), most, vectored };
        Batched { io: BufReader::new(io), out: Vec::new(), flush: Arc::new(AtomicU8::new(FLUSH)) }
    }

    /// What yamux writes for a bulk frame: the 12-byte header, then a body too large to copy.
    async fn write_frame(b: &mut Batched<Recorder>, body: &[u8]) {
        b.write_all(&[7u8; 12]).await.unwrap();
        b.write_all(body).await.unwrap();
        b.flush().await.unwrap();
    }

    fn sent(b: &Batched<Recorder>) -> Vec<u8> {
        b.io.get_ref().writes.concat()
    }

    #[tokio::test]
    async fn a_bulk_frame_leaves_with_its_header_in_one_write() {
        let body: Vec<u8> = (0..256 * 1024).map(|i| i as u8).collect();
        let mut b = batched(usize::MAX, true);
        write_frame(&mut b, &body).await;
        let writes = &b.io.get_ref().writes;
        assert_eq!(writes.len(), 1, "header and body in one write");
        assert_eq!(writes[0].len(), 12 + body.len());
        assert_eq!(&writes[0][12..], &body[..]);
    }

    #[tokio::test]
    async fn partial_and_unvectored_writes_keep_every_byte_in_order() {
        let body: Vec<u8> = (0..200 * 1024 + 5).map(|i| (i * 7) as u8).collect();
        let mut expected = Vec::new();
        for _ in 0..3 {
            expected.extend_from_slice(&[7u8; 12]);
            expected.extend_from_slice(&body);
        }
        for (most, vectored) in [(5, true), (7000, true), (usize::MAX, false), (3, false), (65 * 1024, true)] {
            let mut b = batched(most, vectored);
            for _ in 0..3 {
                write_frame(&mut b, &body).await;
            }
            assert!(b.out.is_empty());
            assert_eq!(sent(&b), expected, "most {most}, vectored {vectored}");
        }
    }

    #[tokio::test]
    async fn small_frames_gather_until_the_driver_flushes() {
        let mut b = batched(usize::MAX, true);
        b.flush.store(HOLD, Ordering::Relaxed);
        for _ in 0..10 {
            b.write_all(&[1u8; 12]).await.unwrap();
            b.write_all(b"PING\r\n").await.unwrap();
            b.flush().await.unwrap();
        }
        assert!(b.io.get_ref().writes.is_empty(), "held while the driver gathers");
        b.flush.store(FLUSH, Ordering::Relaxed);
        b.flush().await.unwrap();
        assert_eq!(b.io.get_ref().writes.len(), 1);
        assert_eq!(sent(&b).len(), 10 * 18);
    }
}
