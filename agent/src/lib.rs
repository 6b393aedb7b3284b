//! `tunnel-agent`: the private side of tunnel.
//!
//! The agent dials the server, joins one tunnel, and serves the streams the server opens.
//! Life of a stream: the server opens it and writes a stream header naming the network and the
//! visitor's hostname; the agent picks the target whose `host` pattern matches (a target
//! without `host` is the fallback), dials it under the dial timeout, answers with a status,
//! and then copies bytes both ways. A stream names a hostname, never an address: the agent
//! only ever connects to targets in its own configuration.
//!
//! The agent never exits because the server is down: it reconnects with exponential backoff
//! and jitter, logging one line per failed attempt.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel_proto::channel::{Session, Stream};
use tunnel_proto::client::{self, Backoff, ControlEnd, Dialer};
use tunnel_proto::host::{self, best_match};
use tunnel_proto::tls::TlsError;
use tunnel_proto::wire::{
    self, read_frame, write_frame, Frame, Hello, Network, Networks, Reply, Role, Status, StreamHeader, Token,
};

pub mod config;
mod udp;

pub use config::{Config, FileConfig, Target};

/// A stream whose target is not connected within this time is acknowledged with a provisional
/// reply; the server presumes a session that stays silent much longer dead (its `ackTimeout`).
const ACK_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// A running agent.
pub struct Agent {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    config: Config,
    fallback_next: AtomicUsize,
    udp_flows: tokio::sync::Semaphore,
}

impl Agent {
    /// Starts the agent's connect loop. Fails only on unusable TLS settings (e.g. an
    /// unreadable `caFile`); an unreachable server is retried forever.
    pub fn spawn(config: Config) -> Result<Agent, TlsError> {
        let dialer = dialer(&config)?;
        let shutdown = CancellationToken::new();
        let udp_flows = tokio::sync::Semaphore::new(config.limits.max_udp_flows);
        let shared = Arc::new(Shared { config, fallback_next: AtomicUsize::new(0), udp_flows });
        let task = tokio::spawn(run(shared, dialer, shutdown.clone()));
        Ok(Agent { shutdown, task })
    }

    /// Stops the agent and closes its session.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

fn dialer(config: &Config) -> Result<Dialer, TlsError> {
    let mut networks = Networks::NONE;
    for t in &config.targets {
        networks = networks.with(t.network);
    }
    let hello = Hello {
        version: wire::VERSION,
        role: Role::Agent,
        tunnel: config.relay.tunnel,
        networks,
        weight: config.relay.weight,
        token: Token(config.relay.token.clone().unwrap_or_default().into_bytes().into()),
    };
    config.relay.dialer(hello, config.limits.handshake_timeout)
}

async fn run(shared: Arc<Shared>, dialer: Dialer, shutdown: CancellationToken) {
    let dialer = Arc::new(dialer);
    let mut slots = tokio::task::JoinSet::new();
    for index in 0..shared.config.relay.sessions.max(1) {
        slots.spawn(slot(shared.clone(), dialer.clone(), index, shutdown.clone()));
    }
    while slots.join_next().await.is_some() {}
}

/// Keeps session number `index` of the pool alive: connects (to the `index`-th address the
/// server name resolves to, so sessions spread over replicas), serves, and reconnects with
/// backoff. When the server says it is going away, a replacement is opened at once while the
/// old session drains; on shutdown, the agent says going-away and finishes its streams.
async fn slot(shared: Arc<Shared>, dialer: Arc<Dialer>, index: usize, shutdown: CancellationToken) {
    let limits = &shared.config.limits;
    let tunnel = shared.config.relay.tunnel;
    let mut backoff =
        Backoff::new(limits.backoff_base, limits.backoff_max, tunnel_proto::defaults::BACKOFF_RESET_AFTER);
    let drains = TaskTracker::new();
    loop {
        let target = dialer.address(index).await;
        let connected = tokio::select! {
            r = dialer.connect_to(&target) => r,
            _ = shutdown.cancelled() => break,
        };
        let c = match connected {
            Ok(c) => c,
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(%tunnel, server = %target, session = index, retry_in = ?delay, "cannot join tunnel: {err}");
                if sleep_or_shutdown(delay, &shutdown).await {
                    break;
                }
                continue;
            }
        };
        let started = Instant::now();
        tracing::info!(%tunnel, server = %target, session = index, "session established");
        let streams = TaskTracker::new();
        let acceptor = tokio::spawn(serve_streams(shared.clone(), c.session.clone(), streams.clone()));
        let end =
            client::run_control(&c.session, c.control, limits.keepalive_interval, limits.keepalive_timeout, &shutdown)
                .await;
        backoff.session_ended(started.elapsed());
        match end {
            ControlEnd::ServerGoingAway => {
                tracing::info!(%tunnel, server = %target, session = index, "server is going away: replacing the session while it drains");
                drains.spawn(drain(c.session, acceptor, None, limits.grace_period));
            }
            ControlEnd::ShutdownAcknowledged => {
                drain(c.session, acceptor, Some(streams), limits.grace_period).await;
                break;
            }
            ControlEnd::Lost(why) => {
                c.session.close();
                acceptor.abort();
                if shutdown.is_cancelled() {
                    break;
                }
                let delay = backoff.next_delay();
                tracing::warn!(%tunnel, server = %target, session = index, retry_in = ?delay, "session lost: {why}; reconnecting");
                if sleep_or_shutdown(delay, &shutdown).await {
                    break;
                }
            }
        }
    }
    drains.close();
    drains.wait().await;
}

/// Sleeps for `delay`; true if shutdown came first.
async fn sleep_or_shutdown(delay: std::time::Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown.cancelled() => true,
    }
}

/// Lets a session that gets no new streams finish its work, then closes it. With `streams`
/// (our own shutdown) it waits for our streams; without (the server is going away) it waits
/// for the server to close the session. Either way at most `grace`.
async fn drain(
    session: Arc<dyn Session>,
    acceptor: tokio::task::JoinHandle<()>,
    streams: Option<TaskTracker>,
    grace: std::time::Duration,
) {
    let done = async {
        match &streams {
            Some(streams) => {
                streams.close();
                streams.wait().await;
            }
            None => session.closed().await,
        }
    };
    let _ = tokio::time::timeout(grace, done).await;
    session.close();
    acceptor.abort();
}

async fn serve_streams(shared: Arc<Shared>, session: Arc<dyn Session>, streams: TaskTracker) {
    while let Ok(Some(stream)) = session.accept_stream().await {
        streams.spawn(serve_stream(shared.clone(), stream));
    }
}

async fn serve_stream(shared: Arc<Shared>, mut stream: Stream) {
    let limits = &shared.config.limits;
    let header = match tokio::time::timeout(limits.handshake_timeout, read_frame(&mut stream)).await {
        Ok(Ok(Frame::StreamHeader(h))) => h,
        Ok(Ok(other)) => {
            return answer(
                &mut stream,
                Reply::new(Status::BAD_REQUEST, format!("expected a stream header, got {:?}", other.kind())),
            )
            .await
        }
        Ok(Err(err)) => {
            return answer(&mut stream, Reply::new(Status::BAD_REQUEST, format!("malformed stream header: {err}")))
                .await
        }
        Err(_) => return,
    };
    let Some(target) = select_target(&shared, &header) else {
        let host = if header.hostname.is_empty() { "(none)" } else { &header.hostname };
        tracing::info!(host, network = %header.network, "no target for stream");
        return answer(
            &mut stream,
            Reply::new(Status::NOT_FOUND, format!("agent has no {} target for host {host}", header.network)),
        )
        .await;
    };
    match header.network {
        Network::Tcp => serve_tcp(&shared, stream, &header, target).await,
        Network::Udp => udp::serve(&shared, stream, &header, target).await,
    }
}

async fn serve_tcp(shared: &Shared, mut stream: Stream, header: &StreamHeader, target: &Target) {
    let timeout = shared.config.limits.dial_timeout;
    let dial = tokio::time::timeout(timeout, TcpStream::connect(&target.addr));
    tokio::pin!(dial);
    let dialed = match tokio::time::timeout(ACK_DELAY, &mut dial).await {
        Ok(dialed) => dialed,
        Err(_) => {
            // A slow dial: acknowledge now, so the server knows this session is alive (and the
            // mux counts the stream as accepted), then keep waiting for the target.
            if write_frame(&mut stream, &Frame::StreamReply(Reply::new(Status::CONTINUE, ""))).await.is_err() {
                return;
            }
            dial.await
        }
    };
    let tcp = match dialed {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(err)) => {
            tracing::info!(target = %target.name, addr = %target.addr, %err, "target dial failed");
            let status = Status::BAD_GATEWAY;
            return answer(
                &mut stream,
                Reply::new(status, format!("target {} is unreachable: {}", target.name, err.kind())),
            )
            .await;
        }
        Err(_) => {
            tracing::info!(target = %target.name, addr = %target.addr, "target dial timed out");
            return answer(
                &mut stream,
                Reply::new(
                    Status::GATEWAY_TIMEOUT,
                    format!("target {} did not answer within {timeout:?}", target.name),
                ),
            )
            .await;
        }
    };
    tunnel_proto::pump::tune_tcp(&tcp);
    if write_frame(&mut stream, &Frame::StreamReply(Reply::ok())).await.is_err() {
        return;
    }
    let mut tcp = tcp;
    match tunnel_proto::pump::pump_tcp(&mut tcp, &mut stream).await {
        Ok((up, down)) => {
            tracing::debug!(host = %header.hostname, visitor = ?header.visitor, target = %target.name, down, up, "stream done")
        }
        Err(err) => {
            tracing::debug!(host = %header.hostname, target = %target.name, %err, "stream failed");
            tunnel_proto::pump::reset(tcp);
        }
    }
}

pub(crate) async fn answer(stream: &mut Stream, reply: Reply) {
    let _ = write_frame(stream, &Frame::StreamReply(reply)).await;
    let _ = tokio::io::AsyncWriteExt::shutdown(stream).await;
}

/// The target for a stream: the best `host` match among targets of the stream's network,
/// else a fallback target (round-robin among several).
fn select_target<'a>(shared: &'a Shared, header: &StreamHeader) -> Option<&'a Target> {
    let targets = shared.config.targets.iter().filter(|t| t.network == header.network);
    if let Ok(host) = host::canonicalize(&header.hostname) {
        let with_host = targets.clone().filter_map(|t| t.host.as_ref().map(|p| (p, t)));
        if let Some(t) = best_match(with_host, &host) {
            return Some(t);
        }
    }
    let fallbacks: Vec<&Target> = targets.filter(|t| t.host.is_none()).collect();
    if fallbacks.is_empty() {
        return None;
    }
    let i = shared.fallback_next.fetch_add(1, Ordering::Relaxed) % fallbacks.len();
    Some(fallbacks[i])
}
