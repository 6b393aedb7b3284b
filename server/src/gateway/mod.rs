//! The sealed-address gateway (seed `004_*`): an entrypoint whose visitors never learn the
//! addresses they reach.
//!
//! Life of a visitor: accepted under the visitor limit, it sends one line, the base64 of
//! `openssl enc -e -aes-256-cbc -a -salt -k SECRET` applied to a target, within the line
//! timeout and [`MAX_LINE`] bytes. The line is opened with the gateway's secret ([`seal`]). A
//! `host:port` that the gateway's allow list admits is dialed by the server itself; any other
//! target is an ingress hostname, which takes the way every visitor takes ([`crate::visit`]):
//! admitted under the server's visitor limit and its source address's budget when accepted,
//! routed as a public visitor that carries no path (so never by a private rule, nor to a host
//! with a protected rule: the bytes after the line could ask for any path), opened under the
//! tunnel's stream budget, and counted. Each attempt is bounded by `timeout`, and a failed one
//! is tried again `retry` times. The gateway then answers exactly one status line: `200\n`, after
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
use tunnel_proto::wire::{Network, Status};
use tunnel_runtime::visitor::LogBudget;
use uuid::Uuid;

use crate::routing::Reach;
use crate::visit::{Door, Opened, Opening, Visitor};
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
    /// The gateway in metrics: `gateway://` and its bound address.
    label: String,
    /// PBKDF2 derivations run at once (off the async workers), one per core.
    derivations: Semaphore,
}

/// Accepts visitors on one gateway until shutdown.
async fn run(shared: Arc<Shared>, listener: TcpListener, config: GatewayConfig) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let label = match listener.local_addr() {
        Ok(addr) => format!("gateway://{addr}"),
        Err(_) => format!("gateway://{}", config.addr),
    };
    let gateway = Arc::new(Gateway { config, label, derivations: Semaphore::new(cores) });
    loop {
        let Some((tcp, peer)) = accept_until(shared.life.stopping(), "gateway", || listener.accept()).await else {
            return;
        };
        let peer = tunnel_proto::socket::canonical_peer(peer);
        // Over the server's or its address's visitor budget: closed at once, as a public
        // entrypoint does (no task, no status line to wait for).
        let admission = match shared.admit(Door::Gateway, &gateway.label, Some(peer.ip())) {
            Ok(admission) => admission,
            Err(refusal) => {
                tracing::debug!(%peer, reason = refusal.reason(), "gateway visitor refused");
                continue;
            }
        };
        tunnel_proto::pump::tune_accepted(&tcp);
        let (task_shared, gateway) = (shared.clone(), gateway.clone());
        shared.life.tasks().spawn(async move {
            let outcome = serve_visitor(&task_shared, &gateway, tcp, peer).await;
            task_shared.visited(Door::Gateway, &gateway.label, outcome);
            drop(admission);
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
    /// Through a tunnel, as the canonical ingress hostname `host`.
    Tunnel { tunnel: Uuid, host: String },
}

/// What the visitor's bytes go to after 200.
enum Upstream {
    Direct(TcpStream),
    Tunnel(Opened),
}

/// Serves one visitor; returns its outcome for the metrics: `served`, `refused` or `left`.
async fn serve_visitor(shared: &Shared, gateway: &Gateway, mut tcp: TcpStream, peer: SocketAddr) -> &'static str {
    let config = &gateway.config;
    let line = match line::read_line(&mut tcp, MAX_LINE, config.line_timeout).await {
        Ok(line) => line,
        Err(LineError::Io(err)) => {
            tracing::debug!(%peer, %err, "gateway visitor failed before its line");
            return "left";
        }
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
        return "left";
    }
    tracing::debug!(%peer, host = %target.host, "gateway visitor connected");
    let upstream_cut = match &upstream {
        Upstream::Tunnel(opened) => opened.cut_token(),
        Upstream::Direct(_) => None,
    };
    let pump = async {
        match &mut upstream {
            Upstream::Direct(target_tcp) => tunnel_proto::pump::pump_tcp(&mut tcp, target_tcp).await,
            Upstream::Tunnel(opened) => tunnel_proto::pump::pump_tcp(&mut tcp, &mut opened.agent.stream).await,
        }
    };
    // A direct connection has no session for the end of the grace period to close.
    let cut = async {
        match &upstream_cut {
            Some(cut) => cut.clone().cancelled_owned().await,
            None => std::future::pending().await,
        }
    };
    let pumped = tokio::select! {
        biased;
        () = cut => Err(std::io::Error::other("cut: a reload no longer routes the host here")),
        pumped = pump => pumped,
        _ = shared.life.hard_stop().cancelled() => Err(std::io::Error::other("server stopped after its grace period")),
    };
    match pumped {
        Ok((up, down)) => {
            if let Upstream::Tunnel(opened) = &upstream {
                opened.carried(shared, up + early, down);
            }
            tracing::debug!(%peer, host = %target.host, up = up + early, down, "gateway visitor done")
        }
        Err(err) => {
            tracing::debug!(%peer, host = %target.host, %err, "gateway visitor stream failed");
            tunnel_proto::pump::reset(tcp);
        }
    }
    "served"
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
    let route = route(shared, config, target, peer)?;
    let mut attempt = 0;
    loop {
        let failure = match &route {
            Route::Direct(addr) => dial(config.timeout, addr, early).await,
            Route::Tunnel { tunnel, host } => {
                let visitor = visitor(host, peer);
                through_tunnel(shared, config.timeout, &visitor, *tunnel, early).await
            }
        };
        match failure {
            Ok(upstream) => return Ok(upstream),
            Err(failure) if failure.retryable && attempt < config.retry => {
                tracing::debug!(%peer, host = %target.host, attempt, status = failure.status.0, reason = %failure.why, "gateway dial failed, retrying");
                attempt += 1;
            }
            Err(failure) => return Err(failure),
        }
    }
}

/// A gateway visitor asking for `host`: a public visitor that carries no path.
fn visitor(host: &str, peer: SocketAddr) -> Visitor<'_> {
    Visitor {
        door: Door::Gateway,
        peer,
        host,
        reach: Reach::Public { path: None },
        network: Network::Tcp,
        forwarded_for: Some(peer),
    }
}

/// The allow list first, then the routing decision every visitor gets. An unknown host, a
/// private rule and a host with a protected rule get the same answer.
fn route(shared: &Shared, config: &GatewayConfig, target: &Target, peer: SocketAddr) -> Result<Route, Failure> {
    if let (true, Some(addr)) = (config.allow.admits(target), target.dial_addr()) {
        return Ok(Route::Direct(addr));
    }
    let routes = shared.routes();
    match shared.decide(&routes, &visitor(&target.host, peer)) {
        Ok(decision) => Ok(Route::Tunnel { tunnel: decision.tunnel, host: decision.host }),
        Err(refusal) => Err(Failure::new(
            Status::BAD_GATEWAY,
            format!("{}: {} (and not in allowAddresses)", target.host, refusal.reason()),
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
    visitor: &Visitor<'_>,
    tunnel: Uuid,
    early: &[u8],
) -> Result<Upstream, Failure> {
    let opening = shared.open(visitor, tunnel, visitor.host, Opening { prefix: early, ..Opening::default() });
    match tokio::time::timeout(timeout, opening).await {
        Ok(Ok(opened)) => Ok(Upstream::Tunnel(opened)),
        Ok(Err(refusal)) => {
            let why = format!("tunnel {tunnel}: {}", refusal.reason());
            Err(match refusal.reply.status {
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

/// Answers a visitor that cannot be served with its status line and closes, logging why once;
/// the outcome is `refused`.
async fn refuse(mut tcp: TcpStream, peer: SocketAddr, failure: Failure) -> &'static str {
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
    if matches!(tokio::time::timeout(WRITE_TIMEOUT, answer).await, Ok(Ok(()))) {
        tunnel_runtime::visitor::read_out(&mut tcp, DRAIN_BYTES, DRAIN_TIMEOUT).await;
    }
    "refused"
}
