//! `tunnel-access`: reach private tunnels from your own machine.
//!
//! The access client keeps one session to the server for its tunnel and opens local
//! listeners. Life of a local connection: accepted; its hostname is the listener's fixed one
//! (`tcp://:2222/ssh.srv-2.local`) or sniffed from the connection (`sniffing=true`); a stream is
//! opened on the session with a header naming the hostname, followed at once by any sniffed
//! bytes; the server routes it through its ingress (private rules included) or, in direct
//! mode, by tunnel ID; after a 200 reply the bytes flow both ways. Errors come back as a
//! status, turned into an HTTP response for HTTP visitors.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel_proto::channel::{Session, Stream};
use tunnel_proto::client::{self, Backoff, ControlEnd, Dialer};
use tunnel_proto::pump::accept_until;
use tunnel_proto::sniff::{self, Guess};
use tunnel_proto::tls::TlsError;
use tunnel_proto::wire::{
    self, read_reply, Frame, Hello, Network, Networks, Reply, ReplyError, Role, Status, StreamHeader, Token,
};
use tunnel_proto::{defaults, http};

pub mod config;
mod udp;

pub use config::{Config, FileConfig, ListenerConfig};

/// A running access client.
pub struct Access {
    addrs: Vec<SocketAddr>,
    /// Stops the listeners.
    stop: CancellationToken,
    /// Ends the session (after the visitors drained).
    shutdown: CancellationToken,
    listeners: JoinSet<()>,
    session_task: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
}

enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

struct Shared {
    config: Config,
    session: watch::Receiver<Option<Arc<dyn Session>>>,
    visitors: Arc<Semaphore>,
    /// Every visitor connection and UDP flow in flight, for the drain.
    in_flight: TaskTracker,
}

impl Access {
    /// Binds every listener and starts the session loop.
    pub async fn spawn(config: Config) -> anyhow::Result<Access> {
        let dialer = dialer(&config)?;
        let mut bound = Vec::new();
        for l in &config.listeners {
            let socket = match l.network {
                Network::Tcp => Bound::Tcp(
                    tunnel_proto::pump::bind_listener(l.addr)
                        .await
                        .with_context(|| format!("cannot listen on tcp {}", l.addr))?,
                ),
                Network::Udp => Bound::Udp(
                    UdpSocket::bind(l.addr).await.with_context(|| format!("cannot listen on udp {}", l.addr))?,
                ),
            };
            bound.push((socket, l.clone()));
        }
        let (stop, shutdown) = (CancellationToken::new(), CancellationToken::new());
        let (tx, rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            visitors: Arc::new(Semaphore::new(config.limits.max_visitors)),
            config,
            session: rx,
            in_flight: TaskTracker::new(),
        });
        let session_task = tokio::spawn(keep_session(shared.clone(), dialer, tx, shutdown.clone()));
        let mut tasks = JoinSet::new();
        let mut addrs = Vec::new();
        for (socket, l) in bound {
            let hostname =
                l.hostname.clone().unwrap_or_else(|| if l.sniffing { "(sniffed)".into() } else { "(none)".into() });
            match socket {
                Bound::Tcp(tcp) => {
                    let addr = tcp.local_addr()?;
                    tracing::info!(addr = %addr, network = "tcp", hostname, "listening");
                    addrs.push(addr);
                    tasks.spawn(accept_visitors(shared.clone(), tcp, l, stop.clone()));
                }
                Bound::Udp(udp) => {
                    let addr = udp.local_addr()?;
                    tracing::info!(addr = %addr, network = "udp", hostname, "listening");
                    addrs.push(addr);
                    tasks.spawn(udp::run(shared.clone(), udp, Arc::new(l), stop.clone()));
                }
            }
        }
        Ok(Access { addrs, stop, shutdown, listeners: tasks, session_task, shared })
    }

    /// The listeners' bound addresses, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops listening, lets the connections in flight finish (at most the grace period),
    /// then says going-away and closes the session.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while self.listeners.join_next().await.is_some() {}
        self.shared.in_flight.close();
        let grace = self.shared.config.limits.grace_period;
        if tokio::time::timeout(grace, self.shared.in_flight.wait()).await.is_err() {
            tracing::warn!(?grace, "connections still open after the grace period are cut");
        }
        self.shutdown.cancel();
        let _ = self.session_task.await;
    }
}

fn dialer(config: &Config) -> Result<Dialer, TlsError> {
    let hello = Hello {
        version: wire::VERSION,
        role: Role::Access,
        tunnel: config.relay.tunnel,
        networks: Networks::NONE,
        weight: 0,
        token: Token(config.relay.token.clone().unwrap_or_default().into_bytes().into()),
    };
    config.relay.dialer(hello, config.limits.handshake_timeout)
}

/// Keeps one session to the server, publishing it for visitors; reconnects forever.
async fn keep_session(
    shared: Arc<Shared>,
    dialer: Dialer,
    publish: watch::Sender<Option<Arc<dyn Session>>>,
    shutdown: CancellationToken,
) {
    let limits = &shared.config.limits;
    let tunnel = shared.config.relay.tunnel;
    let mut backoff = Backoff::new(limits.backoff_base, limits.backoff_max, defaults::BACKOFF_RESET_AFTER);
    loop {
        let connected = tokio::select! {
            r = dialer.connect() => r,
            _ = shutdown.cancelled() => return,
        };
        match connected {
            Ok(c) => {
                let started = Instant::now();
                tracing::info!(%tunnel, server = %dialer.addr, "session established");
                publish.send_replace(Some(c.session.clone()));
                let end = client::run_control(
                    &c.session,
                    c.control,
                    limits.keepalive_interval,
                    limits.keepalive_timeout,
                    &shutdown,
                )
                .await;
                publish.send_replace(None);
                backoff.session_ended(started.elapsed());
                match end {
                    ControlEnd::ServerGoingAway => {
                        // New visitors wait for the replacement; streams in flight keep the old
                        // session until the server closes it.
                        tracing::info!(%tunnel, server = %dialer.addr, "server is going away: reconnecting");
                        let old = c.session.clone();
                        let grace = limits.grace_period;
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(grace, old.closed()).await;
                            old.close();
                        });
                        continue;
                    }
                    ControlEnd::ShutdownAcknowledged => {
                        c.session.close();
                        return;
                    }
                    ControlEnd::Lost(why) => {
                        c.session.close();
                        if shutdown.is_cancelled() {
                            return;
                        }
                        tracing::warn!(%tunnel, server = %dialer.addr, "session lost: {why}; reconnecting");
                    }
                }
            }
            Err(err) => tracing::warn!(%tunnel, server = %dialer.addr, "cannot reach tunnel: {err}"),
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn accept_visitors(
    shared: Arc<Shared>,
    listener: TcpListener,
    config: ListenerConfig,
    shutdown: CancellationToken,
) {
    let config = Arc::new(config);
    loop {
        let Some((tcp, peer)) = accept_until(&shutdown, "listener", || listener.accept()).await else { return };
        let Ok(permit) = shared.visitors.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "visitor refused: visitor limit reached");
            continue;
        };
        tunnel_proto::pump::tune_accepted(&tcp);
        let task_shared = shared.clone();
        let config = config.clone();
        shared.in_flight.spawn(async move {
            serve_visitor(&task_shared, tcp, peer, &config).await;
            drop(permit);
        });
    }
}

async fn serve_visitor(shared: &Shared, mut tcp: TcpStream, peer: SocketAddr, listener: &ListenerConfig) {
    let limits = &shared.config.limits;
    let (hostname, prefix, http_visitor) = if listener.sniffing {
        let s = sniff::read_hostname(&mut tcp, limits.sniff_timeout, limits.sniff_max_bytes).await;
        let http_visitor = s.guess() == Some(Guess::Http);
        match s.result.map(|found| found.hostname().map(str::to_owned)) {
            Ok(Some(h)) => (h, s.prefix, http_visitor),
            Ok(None) => {
                return refuse(tcp, peer, http_visitor, Reply::new(Status::BAD_REQUEST, "TLS ClientHello without SNI"))
                    .await
            }
            Err(err) => return refuse(tcp, peer, http_visitor, Reply::new(Status::BAD_REQUEST, err.to_string())).await,
        }
    } else {
        (listener.hostname.clone().unwrap_or_default(), Vec::new(), false)
    };
    let Some(session) = current_session(shared).await else {
        let reply =
            Reply::new(Status::UNAVAILABLE, format!("not connected to the server at {}", shared.config.relay.addr));
        return refuse(tcp, peer, http_visitor, reply).await;
    };
    let header = StreamHeader { network: listener.network, hostname: hostname.clone(), visitor: Some(peer) };
    let mut message = Frame::StreamHeader(header).to_vec();
    message.extend_from_slice(&prefix);
    drop(prefix);
    let opened = open_stream(shared, &session, &message).await;
    drop(message); // not kept for the life of the visitor
    let mut stream = match opened {
        Ok(stream) => stream,
        Err(reply) => return refuse(tcp, peer, http_visitor, reply).await,
    };
    tracing::debug!(%peer, host = %hostname, "visitor connected");
    if let Err(err) = tunnel_proto::pump::pump_tcp(&mut tcp, &mut stream).await {
        tracing::debug!(%peer, %err, "visitor stream failed");
        tunnel_proto::pump::reset(tcp);
    }
}

/// Opens a stream on `session`, sends `message` (header and pipelined bytes) and waits for the
/// tunnel's final reply; any failure comes back as the reply to give the visitor.
pub(crate) async fn open_stream(shared: &Shared, session: &Arc<dyn Session>, message: &[u8]) -> Result<Stream, Reply> {
    let t = shared.config.limits.reply_timeout;
    let failed = |why: String| Reply::new(Status::BAD_GATEWAY, why);
    let mut stream = session.open_stream().await.map_err(|e| failed(format!("stream failed: {e}")))?;
    stream.write_all(message).await.map_err(|e| failed(format!("stream failed: {e}")))?;
    match read_reply(&mut stream, t, t).await {
        Ok(reply) if reply.status.is_ok() => Ok(stream),
        Ok(reply) => Err(reply),
        Err(ReplyError::Silent(_) | ReplyError::Timeout(_)) => {
            Err(Reply::new(Status::GATEWAY_TIMEOUT, format!("no answer from the tunnel within {t:?}")))
        }
        Err(err) => Err(failed(format!("stream failed: {err}"))),
    }
}

/// The current session, waiting a little for one while (re)connecting.
pub(crate) async fn current_session(shared: &Shared) -> Option<Arc<dyn Session>> {
    let mut rx = shared.session.clone();
    let wait = rx.wait_for(|s| s.as_ref().is_some_and(|s| !s.is_closed()));
    let found = match tokio::time::timeout(defaults::SESSION_WAIT, wait).await {
        Ok(Ok(s)) => s.clone(),
        _ => None,
    };
    found
}

async fn refuse(mut tcp: TcpStream, peer: SocketAddr, http_visitor: bool, reply: Reply) {
    tracing::info!(%peer, status = reply.status.0, "visitor refused: {}", reply.message);
    if http_visitor {
        let _ = tcp.write_all(&http::error_response(reply.status, &reply.message)).await;
    }
    let _ = tcp.shutdown().await;
}
