//! `tunnel-access`: reach private tunnels from your own machine.
//!
//! The access client keeps one session to the server for its tunnel (kept by the shared
//! keeper, [`tunnel_runtime::client::keeper`], which fails over to the next configured server
//! when it is lost) and opens local listeners. Life of a local
//! connection: accepted; its hostname is the listener's fixed one
//! (`tcp://:2222/ssh.srv-2.local`) or sniffed from the connection (`sniffing=true`) by the
//! shared visitor path ([`tunnel_runtime::visitor`]); a stream is opened on the session with a
//! header naming the hostname, followed at once by any sniffed bytes; the server routes it
//! through its ingress (private rules included) or, in direct mode, by tunnel ID; after a 200
//! reply the bytes flow both ways. A plain-HTTP visitor of a sniffing listener is served
//! request by request instead ([`http`]): each request on a stream of its own, naming its own
//! host. Errors come back as a status, turned into an HTTP response for HTTP visitors. UDP listeners ([`udp`]) carry one flow per visitor address.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tunnel_proto::channel::{Session, Stream};
use tunnel_proto::defaults;
use tunnel_proto::framed::{exchange, ReplyError, ReplyTimeouts};
use tunnel_proto::pump::accept_until;
use tunnel_proto::wire::{Frame, Network, Networks, Reply, Role, Status, StreamHeader};
use tunnel_runtime::client::{keep, Established, SessionUser};
use tunnel_runtime::visitor::{self, Named, Speaks, Unnamed};
use tunnel_runtime::Lifecycle;

pub mod admin;
pub mod config;
mod http;
mod udp;

pub use config::{Config, FileConfig, ListenerConfig};

/// A running access client.
pub struct Access {
    addrs: Vec<SocketAddr>,
    /// The root stops the session; its child `listening` stops the listeners first.
    life: Lifecycle,
    listening: CancellationToken,
    listeners: JoinSet<()>,
    keeper: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
    admin: Option<tunnel_runtime::admin::Admin>,
}

enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

struct Shared {
    config: Config,
    session: watch::Receiver<Option<Arc<dyn Session>>>,
    visitors: Arc<Semaphore>,
    /// Streams in flight on the session, TCP visitors and UDP flows together: kept below the
    /// mux's stream limit, so that one visitor too many is refused alone instead of the
    /// server closing the whole session.
    streams: Arc<Semaphore>,
    metrics: admin::Metrics,
    /// The tasks the shutdown waits for (visitors, and what an HTTP request leaves running).
    tasks: tokio_util::task::TaskTracker,
}

/// Publishes the current session for visitors.
struct Publish(watch::Sender<Option<Arc<dyn Session>>>);

impl SessionUser for Publish {
    fn up(&self, here: &Established) {
        self.0.send_replace(Some(here.session.clone()));
    }

    fn down(&self, here: &Established) {
        // New visitors wait for the replacement; streams in flight keep the old session.
        self.0.send_if_modified(|current| {
            let ours = current.as_ref().is_some_and(|s| Arc::ptr_eq(s, &here.session));
            if ours {
                *current = None;
            }
            ours
        });
    }
}

impl Access {
    /// Binds every listener and starts the session keeper.
    pub async fn spawn(config: Config) -> anyhow::Result<Access> {
        let hello = config.relay.hello(Role::Access, Networks::NONE);
        let dialer = Arc::new(config.relay.dialer(hello, config.limits.handshake_timeout)?);
        let mut bound = Vec::new();
        for l in &config.listeners {
            let socket = match l.network {
                Network::Tcp => Bound::Tcp(
                    tunnel_proto::pump::bind_listener_reuse(l.addr, l.reuse)
                        .await
                        .with_context(|| format!("cannot listen on tcp {}", l.addr))?,
                ),
                Network::Udp => Bound::Udp(
                    tunnel_proto::socket::udp_socket(l.addr, l.reuse)
                        .and_then(UdpSocket::from_std)
                        .with_context(|| format!("cannot listen on udp {}", l.addr))?,
                ),
            };
            bound.push((socket, l.clone()));
        }
        let life = Lifecycle::new();
        let listening = life.child();
        let (tx, rx) = watch::channel(None);
        let timings = config.limits.session;
        let shared = Arc::new(Shared {
            visitors: Arc::new(Semaphore::new(config.limits.max_visitors)),
            streams: Arc::new(Semaphore::new(defaults::MAX_STREAMS_PER_SESSION)),
            metrics: admin::Metrics::default(),
            config,
            session: rx,
            tasks: life.tasks().clone(),
        });
        let keeper = tokio::spawn(keep(dialer, 0, timings, Arc::new(Publish(tx)), life.stopping().clone()));
        let mut listeners = JoinSet::new();
        let mut addrs = Vec::new();
        for (socket, l) in bound {
            let hostname =
                l.hostname.clone().unwrap_or_else(|| if l.sniffing { "(sniffed)".into() } else { "(none)".into() });
            match socket {
                Bound::Tcp(tcp) => {
                    let addr = tcp.local_addr()?;
                    tracing::info!(addr = %addr, network = "tcp", hostname, "listening");
                    addrs.push(addr);
                    listeners.spawn(accept_visitors(shared.clone(), tcp, l, life.clone(), listening.clone()));
                }
                Bound::Udp(udp) => {
                    let addr = udp.local_addr()?;
                    tracing::info!(addr = %addr, network = "udp", hostname, "listening");
                    addrs.push(addr);
                    listeners.spawn(udp::run(shared.clone(), udp, l, life.tasks().clone(), listening.clone()));
                }
            }
        }
        shared.metrics.listeners.set(addrs.len() as i64);
        let admin = tunnel_runtime::admin::Admin::start(shared.config.admin.as_ref(), |mut registry| {
            shared.metrics.register(&mut registry);
            Arc::new(admin::AccessAdmin { shared: shared.clone(), registry })
        })
        .await?;
        listeners.spawn(tunnel_runtime::telemetry::on_sighup(listening.clone(), || {
            tracing::info!("SIGHUP: the access client reloads nothing; restart it to apply a changed configuration");
        }));
        Ok(Access { addrs, life, listening, listeners, keeper, shared, admin })
    }

    /// The listeners' bound addresses, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops listening, lets the connections in flight finish (at most the grace period),
    /// then says going-away and closes the session.
    pub async fn shutdown(mut self) {
        self.listening.cancel();
        while self.listeners.join_next().await.is_some() {}
        let grace = self.shared.config.limits.session.grace_period;
        // What is still open then is cut with the session, which closes once stopping begins.
        if !self.life.settle(grace).await {
            tracing::warn!(?grace, "connections still open after the grace period are cut");
        }
        self.life.begin_stop();
        let _ = self.keeper.await;
        if let Some(admin) = self.admin {
            admin.stop().await;
        }
    }
}

impl tunnel_runtime::cli::Stop for Access {
    async fn stop(self) {
        self.shutdown().await
    }
}

async fn accept_visitors(
    shared: Arc<Shared>,
    listener: TcpListener,
    config: ListenerConfig,
    life: Lifecycle,
    listening: CancellationToken,
) {
    let config = Arc::new(config);
    let spread = tunnel_runtime::threads::Spread::new();
    loop {
        let Some((tcp, peer)) = accept_until(&listening, "listener", || listener.accept()).await else { return };
        let peer = tunnel_proto::socket::canonical_peer(peer);

        let Ok(permit) = shared.visitors.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "visitor refused: visitor limit reached");
            continue;
        };
        tunnel_proto::pump::tune_accepted(&tcp);
        let task_shared = shared.clone();
        let config = config.clone();
        spread.spawn_moved(life.tasks(), tcp, move |tcp| async move {
            serve_visitor(&task_shared, tcp, peer, &config).await;
            drop(permit);
        });
    }
}

async fn serve_visitor(shared: &Arc<Shared>, mut tcp: TcpStream, peer: SocketAddr, listener: &ListenerConfig) {
    let limits = &shared.config.limits;
    let Named { host, prefix, speaks } = if listener.sniffing {
        match visitor::sniff_host(&mut tcp, limits.sniff_timeout, limits.sniff_max_bytes).await {
            Ok(named) => named,
            Err(Unnamed::Left(err)) => return tracing::debug!(%peer, %err, "visitor left before naming a host"),
            Err(Unnamed::Refuse(speaks, reply)) => return visitor::refuse(tcp, peer, speaks, "", reply, "").await,
        }
    } else {
        Named { host: listener.hostname.clone().unwrap_or_default(), prefix: Vec::new(), speaks: Speaks::Other }
    };
    if speaks == Speaks::Http {
        // Every request on its own stream, routed by its own host.
        return http::serve(shared.clone(), tcp, prefix, peer).await;
    }
    let Ok(_stream_permit) = shared.streams.clone().try_acquire_owned() else {
        let why = "too many connections through this access client at once";
        return visitor::refuse(tcp, peer, speaks, &host, Reply::new(Status::UNAVAILABLE, why), "").await;
    };
    let Some(session) = current_session(shared).await else {
        let why = format!("not connected to the server at {}", shared.config.relay.describe_servers());
        return visitor::refuse(tcp, peer, speaks, &host, Reply::new(Status::UNAVAILABLE, why), "").await;
    };
    let header = StreamHeader { network: listener.network, hostname: host.clone(), visitor: Some(peer) };
    let mut message = Frame::StreamHeader(header).to_vec();
    message.extend_from_slice(&prefix);
    drop(prefix);
    let opened = open_stream(shared, session.as_ref(), &message).await;
    drop(message); // not kept for the life of the visitor
    let mut stream = match opened {
        Ok(stream) => stream,
        Err(reply) => {
            shared.metrics.failures.get_or_create(&admin::StatusLabel { status: reply.status.0 }).inc();
            return visitor::refuse(tcp, peer, speaks, &host, reply, "").await;
        }
    };
    shared.metrics.streams.inc();
    tracing::debug!(%peer, %host, "visitor connected");
    if let Err(err) = tunnel_proto::pump::pump_tcp(&mut tcp, &mut stream).await {
        tracing::debug!(%peer, %err, "visitor stream failed");
        tunnel_proto::pump::reset(tcp);
    }
}

/// Opens a stream on `session`, sends `message` (header and pipelined bytes) and waits for the
/// tunnel's final reply; any failure comes back as the reply to give the visitor.
pub(crate) async fn open_stream(shared: &Shared, session: &dyn Session, message: &[u8]) -> Result<Stream, Reply> {
    let t = shared.config.limits.reply_timeout;
    match exchange(session, message, ReplyTimeouts { ack: t, reply: t }).await {
        Ok((stream, reply)) if reply.status.is_ok() => Ok(stream),
        Ok((_, reply)) => Err(reply),
        Err(ReplyError::Silent(_) | ReplyError::Timeout(_)) => {
            Err(Reply::new(Status::GATEWAY_TIMEOUT, format!("no answer from the tunnel within {t:?}")))
        }
        Err(err) => Err(Reply::new(Status::BAD_GATEWAY, format!("stream failed: {err}"))),
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
