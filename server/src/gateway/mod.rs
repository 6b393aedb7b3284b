//! The sealed-address gateway (seed `004_*`): an entrypoint whose visitors never learn the
//! addresses they reach.
//!
//! Life of a visitor: accepted under the visitor limit, it sends one line, the base64 of
//! `openssl enc -e -aes-256-cbc -a -salt -k SECRET` applied to a target, within the line
//! timeout and [`MAX_LINE`] bytes. The line is opened with the gateway's secret ([`seal`]). A
//! `host:port` that the gateway's allow list admits is dialed by the server itself; any other
//! target is an ingress hostname, routed through its tunnel as a public visitor would be
//! (private rules never match). Each attempt is bounded by `timeout`, and a failed one is
//! tried again `retry` times. The gateway then answers exactly one status line: `200\n`, after
//! which the target first gets whatever the visitor sent after its line and bytes flow both
//! ways; or `400\n`, `401\n`, `502\n`, `504\n`, after which the connection closes. Nothing
//! else is ever written before the bytes flow, and no answer names a tunnel or an address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tunnel_proto::pump::accept_until;
use tunnel_proto::wire::{Network, Scope, Status, StreamHeader};
use tunnel_runtime::visitor::LogBudget;
use uuid::Uuid;

use crate::registry::AgentStream;
use crate::Shared;

pub mod config;
mod line;
pub mod seal;
pub mod target;

pub use config::{GatewayConfig, GatewayFile};
use line::LineError;
use seal::Sealed;
use target::Target;

/// Longest line accepted, ending excluded: a sealed 300-byte address is 448 base64 bytes.
pub const MAX_LINE: usize = 1024;
/// Time to write a status line to a visitor that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// After a refusal, what the visitor still sends is read (up to this much, for at most
/// [`DRAIN_TIMEOUT`]) so that the close is not a reset that destroys the status line.
const DRAIN_BYTES: usize = 64 * 1024;
/// See [`DRAIN_BYTES`].
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds every configured gateway.
pub(crate) async fn bind_all(gateways: &[GatewayConfig]) -> anyhow::Result<Vec<(TcpListener, GatewayConfig)>> {
    let mut bound = Vec::new();
    for gw in gateways {
        let listener = tunnel_proto::pump::bind_listener_reuse(gw.addr, gw.reuse)
            .await
            .with_context(|| format!("cannot listen on gateway {}", gw.addr))?;
        bound.push((listener, gw.clone()));
    }
    Ok(bound)
}

/// Starts the accept loop of each bound gateway; returns their addresses.
pub(crate) fn spawn_all(
    shared: &Arc<Shared>,
    bound: Vec<(TcpListener, GatewayConfig)>,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    for (listener, config) in bound {
        let addr = listener.local_addr()?;
        tracing::info!(addr = %addr, direct = !config.allow.is_empty(), "gateway listening");
        addrs.push(addr);
        tasks.spawn(run(shared.clone(), listener, config));
    }
    Ok(addrs)
}

/// A gateway's runtime state.
struct Gateway {
    config: GatewayConfig,
    /// PBKDF2 derivations run at once (off the async workers), one per core.
    derivations: Semaphore,
}

/// Accepts visitors on one gateway until shutdown.
async fn run(shared: Arc<Shared>, listener: TcpListener, config: GatewayConfig) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let gateway = Arc::new(Gateway { config, derivations: Semaphore::new(cores) });
    loop {
        let Some((tcp, peer)) = accept_until(shared.life.stopping(), "gateway", || listener.accept()).await else {
            return;
        };
        let peer = tunnel_proto::socket::canonical_peer(peer);
        let Ok(permit) = shared.visitors.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "gateway visitor refused: visitor limit reached");
            continue;
        };
        tunnel_proto::pump::tune_accepted(&tcp);
        let (task_shared, gateway) = (shared.clone(), gateway.clone());
        shared.life.tasks().spawn(async move {
            serve_visitor(&task_shared, &gateway, tcp, peer).await;
            drop(permit);
        });
    }
}

/// Why a visitor gets a status other than 200: the status, whether another attempt may
/// succeed, and the reason (for the server's log only).
#[derive(Debug)]
struct Failure {
    status: Status,
    retryable: bool,
    why: String,
}

impl Failure {
    fn new(status: Status, why: impl Into<String>) -> Failure {
        Failure { status, retryable: false, why: why.into() }
    }

    fn retryable(status: Status, why: impl Into<String>) -> Failure {
        Failure { status, retryable: true, why: why.into() }
    }
}

/// Where a target is reached.
enum Route {
    /// The server dials `host:port` itself.
    Direct(String),
    /// Through a tunnel, as the ingress hostname `host`.
    Tunnel { tunnel: Uuid, host: String },
}

/// What the visitor's bytes go to after 200.
enum Upstream {
    Direct(TcpStream),
    Tunnel(AgentStream),
}

async fn serve_visitor(shared: &Shared, gateway: &Gateway, mut tcp: TcpStream, peer: SocketAddr) {
    let config = &gateway.config;
    let line = match line::read_line(&mut tcp, MAX_LINE, config.line_timeout).await {
        Ok(line) => line,
        Err(LineError::Io(err)) => return tracing::debug!(%peer, %err, "gateway visitor failed before its line"),
        Err(err) => return refuse(tcp, peer, Failure::new(Status::BAD_REQUEST, err.to_string())).await,
    };
    let target = match open(gateway, &line.line).await {
        Ok(target) => target,
        Err(failure) => return refuse(tcp, peer, failure).await,
    };
    let mut upstream = match connect(shared, config, &target, &line.rest, peer).await {
        Ok(upstream) => upstream,
        Err(failure) => return refuse(tcp, peer, failure).await,
    };
    let early = line.rest.len() as u64;
    drop(line);
    if tcp.write_all(b"200\n").await.is_err() {
        return;
    }
    tracing::debug!(%peer, host = %target.host, "gateway visitor connected");
    let pump = async {
        match &mut upstream {
            Upstream::Direct(target_tcp) => tunnel_proto::pump::pump_tcp(&mut tcp, target_tcp).await,
            Upstream::Tunnel(agent) => tunnel_proto::pump::pump_tcp(&mut tcp, &mut agent.stream).await,
        }
    };
    // A direct connection has no session for the end of the grace period to close.
    let pumped = tokio::select! {
        pumped = pump => pumped,
        _ = shared.life.hard_stop().cancelled() => Err(std::io::Error::other("server stopped after its grace period")),
    };
    match pumped {
        Ok((up, down)) => tracing::debug!(%peer, host = %target.host, up = up + early, down, "gateway visitor done"),
        Err(err) => {
            tracing::debug!(%peer, host = %target.host, %err, "gateway visitor stream failed");
            tunnel_proto::pump::reset(tcp);
        }
    }
}

/// Opens the sealed line: 400 when it is not one, 401 when it does not decrypt to a target.
async fn open(gateway: &Gateway, line: &[u8]) -> Result<Target, Failure> {
    let sealed = Sealed::parse(line).map_err(|e| Failure::new(Status::BAD_REQUEST, e.to_string()))?;
    let opener = gateway.config.opener.clone();
    let opened = if opener.is_costly() {
        let _permit = gateway.derivations.acquire().await.map_err(|_| Failure::new(Status::BAD_GATEWAY, "closing"))?;
        tokio::task::spawn_blocking(move || opener.open(&sealed))
            .await
            .map_err(|e| Failure::new(Status::BAD_GATEWAY, format!("key derivation failed: {e}")))?
    } else {
        opener.open(&sealed)
    };
    let text = opened.map_err(|e| Failure::new(Status::UNAUTHORIZED, e.to_string()))?;
    Target::parse(&text).map_err(|e| Failure::new(Status::UNAUTHORIZED, format!("decrypts to no address: {e}")))
}

/// Reaches the target, trying again after a retryable failure, `retry` times at most.
async fn connect(
    shared: &Shared,
    config: &GatewayConfig,
    target: &Target,
    early: &[u8],
    peer: SocketAddr,
) -> Result<Upstream, Failure> {
    let route = route(shared, config, target)?;
    let mut attempt = 0;
    loop {
        let failure = match &route {
            Route::Direct(addr) => dial(config.timeout, addr, early).await,
            Route::Tunnel { tunnel, host } => through_tunnel(shared, config.timeout, tunnel, host, early, peer).await,
        };
        match failure {
            Ok(upstream) => return Ok(upstream),
            Err(failure) if failure.retryable && attempt < config.retry => {
                tracing::debug!(%peer, host = %target.host, attempt, status = failure.status.0, "gateway dial failed, retrying: {}", failure.why);
                attempt += 1;
            }
            Err(failure) => return Err(failure),
        }
    }
}

/// The allow list first, then public ingress rules. An unknown host and a private rule get
/// the same answer.
fn route(shared: &Shared, config: &GatewayConfig, target: &Target) -> Result<Route, Failure> {
    if let (true, Some(addr)) = (config.allow.admits(target), target.dial_addr()) {
        return Ok(Route::Direct(addr));
    }
    match shared.routes.snapshot().ingress.lookup(&target.host) {
        Some(rule) if !rule.private => Ok(Route::Tunnel { tunnel: rule.tunnel, host: target.host.clone() }),
        Some(_) => Err(Failure::new(Status::BAD_GATEWAY, format!("{} has only a private rule", target.host))),
        None => Err(Failure::new(
            Status::BAD_GATEWAY,
            format!("{} is in no ingress rule and not in allowAddresses", target.host),
        )),
    }
}

/// One direct dial; the visitor's early bytes are sent at once.
async fn dial(timeout: Duration, addr: &str, early: &[u8]) -> Result<Upstream, Failure> {
    let mut tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(err)) => return Err(Failure::retryable(Status::BAD_GATEWAY, format!("dial {addr}: {err}"))),
        Err(_) => {
            return Err(Failure::retryable(Status::GATEWAY_TIMEOUT, format!("dial {addr}: no answer in {timeout:?}")))
        }
    };
    tunnel_proto::pump::tune_tcp(&tcp);
    if let Err(err) = tcp.write_all(early).await {
        return Err(Failure::new(Status::BAD_GATEWAY, format!("{addr} failed at once: {err}")));
    }
    Ok(Upstream::Direct(tcp))
}

/// One stream through the tunnel; the header and the early bytes leave together, and the
/// agent's final answer decides.
async fn through_tunnel(
    shared: &Shared,
    timeout: Duration,
    tunnel: &Uuid,
    host: &str,
    early: &[u8],
    peer: SocketAddr,
) -> Result<Upstream, Failure> {
    let header = StreamHeader { network: Network::Tcp, hostname: host.to_owned(), visitor: Some(peer) };
    let opening = shared.open(tunnel, Scope::Public, None, &[], &header, early, shared.limits().reply_timeouts());
    match tokio::time::timeout(timeout, opening).await {
        Ok(Ok(agent)) => Ok(Upstream::Tunnel(agent)),
        Ok(Err(err)) => {
            let why = format!("tunnel {tunnel}: {}", err.reply_for_tunnel(tunnel).message);
            Err(match err.status() {
                Status::GATEWAY_TIMEOUT => Failure::retryable(Status::GATEWAY_TIMEOUT, why),
                Status::BAD_GATEWAY | Status::UNAVAILABLE => Failure::retryable(Status::BAD_GATEWAY, why),
                _ => Failure::new(Status::BAD_GATEWAY, why),
            })
        }
        Err(_) => {
            Err(Failure::retryable(Status::GATEWAY_TIMEOUT, format!("tunnel {tunnel}: no answer in {timeout:?}")))
        }
    }
}

/// Answers a visitor that cannot be served with its status line and closes, logging why once.
async fn refuse(mut tcp: TcpStream, peer: SocketAddr, failure: Failure) {
    // At info once a second with the count held back, the rest at debug: a flood of bad
    // lines must not flood the log.
    static REFUSALS: LogBudget = LogBudget::new();
    let (status, reason) = (failure.status.0, failure.why.as_str());
    match REFUSALS.take() {
        Some(suppressed) => tracing::info!(%peer, status, reason, suppressed, "gateway visitor refused"),
        None => tracing::debug!(%peer, status, reason, "gateway visitor refused"),
    }
    let status = format!("{}\n", failure.status.0);
    let answer = async {
        tcp.write_all(status.as_bytes()).await?;
        tcp.shutdown().await
    };
    if !matches!(tokio::time::timeout(WRITE_TIMEOUT, answer).await, Ok(Ok(()))) {
        return;
    }
    tunnel_runtime::visitor::read_out(&mut tcp, DRAIN_BYTES, DRAIN_TIMEOUT).await;
}
