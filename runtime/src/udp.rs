//! UDP over streams, shared by the agent and the access client: the relay between one stream
//! and one UDP flow ([`relay`]), and the flow table of a UDP listener, one flow per visitor
//! address ([`serve_flows`]).
//!
//! Life of a flow on a listener: the first datagram from a new visitor address creates it
//! (under the flow cap); the flow's task opens a stream through its [`FlowOpener`], which sends
//! that datagram right behind the stream header; datagrams go up as they arrive and answers go
//! back to the visitor's address. Without `keepalive` the flow ends after its first answer;
//! with it, after `ttl` without traffic. Each flow has a bounded queue: when it is full, new
//! datagrams for that flow are dropped and counted, and other flows are not held up.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel_proto::channel::Stream;
use tunnel_proto::datagram::{self, MAX_DATAGRAM};
use tunnel_proto::defaults;

/// A flow's stream with the places it holds (in budgets, say), given back when the flow ends;
/// optionally ended early by a token (its reads fail once it is cancelled).
pub struct Holding<P> {
    stream: Stream,
    _places: P,
    cut: Option<std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>>,
}

impl<P> Holding<P> {
    /// `stream`, holding `places` for as long as it lives.
    pub fn new(stream: Stream, places: P) -> Holding<P> {
        Holding { stream, _places: places, cut: None }
    }

    /// As [`Holding::new`], ended when `cut` is cancelled.
    pub fn cut_by(stream: Stream, places: P, cut: Option<tokio_util::sync::CancellationToken>) -> Holding<P> {
        Holding { stream, _places: places, cut: cut.map(|t| Box::pin(t.cancelled_owned())) }
    }
}

impl<P: Unpin> tokio::io::AsyncRead for Holding<P> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(cut) = self.cut.as_mut() {
            if cut.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(Err(std::io::Error::other("the flow was cut")));
            }
        }
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<P: Unpin> tokio::io::AsyncWrite for Holding<P> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Why a UDP flow ended (a flow always ends; these are its reasons, not failures of the
/// program).
#[derive(Debug, thiserror::Error)]
pub enum FlowEnd {
    /// The visitor's side: the listener stopped.
    #[error("listener closed")]
    ListenerClosed,
    /// The one answer of a flow without keepalive was delivered.
    #[error("answered (no keepalive)")]
    Answered,
    /// Nothing moved for the flow's time to live.
    #[error("idle for {0:?}")]
    Idle(Duration),
    /// The other end of the stream (named) ended it.
    #[error("{0} ended the flow")]
    Ended(&'static str),
    /// The stream failed.
    #[error("stream failed: {0}")]
    Stream(std::io::Error),
    /// The socket to the target failed.
    #[error("target socket failed: {0}")]
    Socket(std::io::Error),
    /// No stream could be opened for the flow: the opener's reason.
    #[error("{0}")]
    NotOpened(Box<dyn std::error::Error + Send + Sync>),
}

/// Where the datagrams that go into the stream come from.
pub trait DatagramSource: Send {
    /// The next datagram, written into `buf`; `Err` ends the flow with that reason.
    fn recv(&mut self, buf: &mut [u8]) -> impl Future<Output = Result<usize, FlowEnd>> + Send;
}

/// Where the datagrams that come out of the stream go.
pub trait DatagramSink: Send {
    /// Delivers one datagram; `Err` ends the flow with that reason (after delivering it).
    fn send(&mut self, datagram: &[u8]) -> impl Future<Output = Result<(), FlowEnd>> + Send;
}

/// Relays datagrams between `stream` and a UDP flow until either side ends, the stream fails,
/// or nothing moved for `ttl`. `far_side` names the other end of the stream in the reason.
/// Returns why the flow ended.
pub async fn relay(
    stream: Stream,
    mut source: impl DatagramSource,
    mut sink: impl DatagramSink,
    source_buffer: usize,
    ttl: Duration,
    far_side: &'static str,
) -> FlowEnd {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let activity = datagram::Activity::default();
    let up = async {
        let mut buf = vec![0u8; source_buffer.min(MAX_DATAGRAM)];
        let mut scratch = Vec::with_capacity(buf.len() + 2);
        loop {
            let n = match source.recv(&mut buf).await {
                Ok(n) => n,
                Err(why) => return why,
            };
            activity.touch();
            if let Err(err) = datagram::write(&mut wr, &buf[..n], &mut scratch).await {
                return FlowEnd::Stream(err);
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            match datagram::read(&mut rd, &mut buf).await {
                Ok(Some(n)) => {
                    activity.touch();
                    if let Err(why) = sink.send(&buf[..n]).await {
                        return why;
                    }
                }
                Ok(None) => return FlowEnd::Ended(far_side),
                Err(err) => return FlowEnd::Stream(err),
            }
        }
    };
    let idle = activity.idle(ttl);
    let why = tokio::select! {
        why = up => why,
        why = down => why,
        () = idle => FlowEnd::Idle(ttl),
    };
    let mut stream = rd.unsplit(wr);
    let _ = stream.shutdown().await;
    why
}

/// How a listener's flows behave.
#[derive(Debug, Clone)]
pub struct FlowOptions {
    /// Keep a flow after its first answer, until idle for `ttl`.
    pub keepalive: bool,
    /// Idle time that ends a keepalive flow.
    pub ttl: Duration,
    /// Bytes read per datagram from visitors.
    pub read_buffer_size: usize,
    /// Flows at once on this listener.
    pub max_flows: usize,
}

/// Opens the stream that carries a new flow.
pub trait FlowOpener: Send + Sync + 'static {
    /// Why a stream could not be opened.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens a stream for the flow of visitor `peer`, sending `first` right behind its header.
    fn open(&self, peer: SocketAddr, first: &[u8]) -> impl Future<Output = Result<Stream, Self::Error>> + Send;

    /// Reports a flow whose stream could not be opened (default: one info line each).
    fn failed(&self, peer: SocketAddr, why: &Self::Error) {
        tracing::info!(%peer, reason = %why, "UDP flow failed");
    }

    /// Counts a datagram dropped on arrival: `reason` is `queue full` or `flow limit` (default:
    /// nothing beyond the listener's own count and debug line).
    fn dropped(&self, _reason: &'static str) {}
}

type Flows = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

/// Receives datagrams on `socket` until `shutdown` and hands them to their flows, whose tasks
/// go in `tasks`.
pub async fn serve_flows<O: FlowOpener>(
    socket: UdpSocket,
    options: Arc<FlowOptions>,
    opener: Arc<O>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let socket = Arc::new(socket);
    let flows: Flows = Arc::default();
    let dropped = AtomicU64::new(0);
    let mut buf = vec![0u8; options.read_buffer_size];
    loop {
        let (n, peer) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(got) => got,
                // ICMP errors from earlier sends surface here; they concern one visitor only.
                Err(err) => {
                    tracing::debug!(%err, "UDP receive error");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let mut map = flows.lock().expect("flows lock");
        let data = match map.get(&peer).map(|tx| tx.try_send(buf[..n].to_vec())) {
            None => buf[..n].to_vec(),
            Some(Ok(())) => continue,
            Some(Err(mpsc::error::TrySendError::Full(_))) => {
                let total = dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::debug!(%peer, dropped = total, "UDP flow queue full, datagram dropped");
                opener.dropped("queue full");
                continue;
            }
            Some(Err(mpsc::error::TrySendError::Closed(d))) => d,
        };
        map.remove(&peer);
        if map.len() >= options.max_flows {
            let total = dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::debug!(%peer, dropped = total, "UDP flow limit reached, datagram dropped");
            opener.dropped("flow limit");
            continue;
        }
        let (tx, rx) = mpsc::channel(defaults::UDP_FLOW_QUEUE);
        let _ = tx.try_send(data);
        map.insert(peer, tx.clone());
        drop(map);
        let flow = Flow { socket: socket.clone(), peer, options: options.clone(), flows: flows.clone(), tx };
        tasks.spawn(flow.run(opener.clone(), rx));
    }
}

struct Flow {
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    options: Arc<FlowOptions>,
    flows: Flows,
    /// Our own entry in `flows`, to remove only ourselves.
    tx: mpsc::Sender<Vec<u8>>,
}

impl Flow {
    async fn run<O: FlowOpener>(self, opener: Arc<O>, mut rx: mpsc::Receiver<Vec<u8>>) {
        let peer = self.peer;
        let forget = Forget { flows: self.flows.clone(), peer, tx: self.tx.clone() };
        let Some(first) = rx.recv().await else { return forget.now() };
        let why = match opener.open(peer, &first).await {
            Ok(stream) => {
                let (buffer, ttl) = (self.options.read_buffer_size, self.options.ttl);
                relay(stream, Queue(rx), self, buffer, ttl, "tunnel").await
            }
            Err(why) => {
                opener.failed(peer, &why);
                FlowEnd::NotOpened(Box::new(why))
            }
        };
        forget.now();
        tracing::debug!(%peer, reason = %why, "UDP flow ended");
    }
}

/// Removes a flow from its listener's table so the next datagram starts a new one.
struct Forget {
    flows: Flows,
    peer: SocketAddr,
    tx: mpsc::Sender<Vec<u8>>,
}

impl Forget {
    fn now(&self) {
        let mut map = self.flows.lock().expect("flows lock");
        if map.get(&self.peer).is_some_and(|tx| tx.same_channel(&self.tx)) {
            map.remove(&self.peer);
        }
    }
}

/// A flow's queue of datagrams from its visitor.
struct Queue(mpsc::Receiver<Vec<u8>>);

impl DatagramSource for Queue {
    async fn recv(&mut self, buf: &mut [u8]) -> Result<usize, FlowEnd> {
        let d = self.0.recv().await.ok_or(FlowEnd::ListenerClosed)?;
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }
}

impl DatagramSink for Flow {
    async fn send(&mut self, datagram: &[u8]) -> Result<(), FlowEnd> {
        if !self.options.keepalive {
            // Forget first: the visitor's next datagram must start a new flow.
            Forget { flows: self.flows.clone(), peer: self.peer, tx: self.tx.clone() }.now();
        }
        let _ = self.socket.send_to(datagram, self.peer).await;
        if self.options.keepalive {
            Ok(())
        } else {
            Err(FlowEnd::Answered)
        }
    }
}
