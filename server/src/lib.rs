//! `tunnel-server`: the public side of tunnel.
//!
//! It listens for data-channel sessions from agents and access clients on its relay
//! listener ([`relay`]), and for visitors on public entrypoints ([`entrypoint`]). Visitors are
//! routed by hostname through the [`ingress`] table to a tunnel, and from the tunnel's pool in
//! the [`registry`] to one agent session, which carries the visitor's bytes to a target.
//! Access clients reach tunnels through the private entrypoint: streams they open on their
//! own session, routed by the same table (private rules included) or by tunnel ID in direct
//! mode.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel_proto::channel::{ChannelConfig, Listener};
use tunnel_proto::pump::accept_until;
use tunnel_proto::tls::ServerIdentity;

pub mod auth;
pub mod config;
mod entrypoint;

pub mod ingress;
pub mod registry;
mod relay;

pub use config::{Config, FileConfig};

/// Connections allowed to be in their handshake at once; bounds what a flood of idle
/// connections to the relay port can cost.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// State shared by every task of a server.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) registry: registry::Registry,
    pub(crate) auth: auth::Auth,
    pub(crate) visitors: Arc<Semaphore>,
    /// Stop accepting and tell every session the server is going away.
    pub(crate) shutdown: CancellationToken,
    /// The grace period is over: close whatever is still open.
    pub(crate) hard_stop: CancellationToken,
    /// Every session and visitor task, so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
}

/// A running server.
pub struct Server {
    relay_addr: SocketAddr,
    entrypoint_addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl Server {
    /// Binds every listener and starts serving.
    pub async fn spawn(config: Config) -> anyhow::Result<Server> {
        let channel = ChannelConfig::default();
        let identity = if config.transport.is_encrypted() { Some(load_identity(&config.identity)?) } else { None };
        let listener = Listener::bind(config.relay_addr, config.transport, identity.as_ref(), channel)
            .await
            .with_context(|| format!("cannot listen on relay address {}", config.relay_addr))?;
        let relay_addr = listener.local_addr()?;
        let mut entrypoints = Vec::new();
        for ep in &config.entrypoints {
            let l = tunnel_proto::pump::bind_listener(ep.addr)
                .await
                .with_context(|| format!("cannot listen on entrypoint {}", ep.addr))?;
            entrypoints.push((l, ep.hostname.clone()));
        }
        let auth = auth::Auth::new(&config.global_tokens, &config.tunnel_tokens);
        if !auth.enabled() {
            tracing::warn!("no tokens configured: any agent may join a tunnel in the ingress and any access client may reach it; set --token or [[tokens]]");
        }
        if config.direct {
            tracing::warn!("direct routing is on: access clients may reach any tunnel by its ID");
        }
        let shared = Arc::new(Shared {
            visitors: Arc::new(Semaphore::new(config.limits.max_visitors)),
            registry: registry::Registry::default(),
            auth,
            config,
            shutdown: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let mut tasks = JoinSet::new();
        match &identity {
            Some(id) => {
                tracing::info!(addr = %relay_addr, transport = %shared.config.transport, fingerprint = %id.fingerprint(), "relay listening")
            }
            None => tracing::info!(addr = %relay_addr, transport = %shared.config.transport, "relay listening"),
        }
        tasks.spawn(accept_sessions(shared.clone(), listener));
        let mut entrypoint_addrs = Vec::new();
        for (l, hostname) in entrypoints {
            let addr = l.local_addr()?;
            tracing::info!(addr = %addr, hostname = hostname.as_deref().unwrap_or("(sniffed)"), "entrypoint listening");
            entrypoint_addrs.push(addr);
            tasks.spawn(entrypoint::run(shared.clone(), l, hostname));
        }
        Ok(Server { relay_addr, entrypoint_addrs, shared, tasks })
    }

    /// The relay listener's bound address.
    pub fn relay_addr(&self) -> SocketAddr {
        self.relay_addr
    }

    /// The entrypoints' bound addresses, in configuration order.
    pub fn entrypoint_addrs(&self) -> &[SocketAddr] {
        &self.entrypoint_addrs
    }

    /// Graceful drain: stops accepting sessions and visitors, tells every session the server
    /// is going away, lets streams in flight finish for at most `grace`, then closes the rest.
    pub async fn shutdown(mut self, grace: Duration) {
        self.shared.shutdown.cancel();
        // Each accept loop ends and drops its listener: only then is the drain announced, so
        // a visitor or session that comes after the announcement is refused.
        while self.tasks.join_next().await.is_some() {}
        tracing::info!(?grace, "shutting down: listeners closed, draining sessions");
        self.shared.tasks.close();
        if tokio::time::timeout(grace, self.shared.tasks.wait()).await.is_err() {
            tracing::warn!(?grace, "streams still open after the grace period are cut");
        }
        self.shared.hard_stop.cancel();
        self.shared.tasks.wait().await;
    }

    /// The configured grace period.
    pub fn grace_period(&self) -> Duration {
        self.shared.config.limits.grace_period
    }
}

fn load_identity(source: &config::IdentitySource) -> anyhow::Result<ServerIdentity> {
    match source {
        config::IdentitySource::Files { cert, key } => Ok(ServerIdentity::load(cert, key)?),
        config::IdentitySource::SelfSigned { dir, names } => {
            let id = ServerIdentity::load_or_generate(dir, names)
                .with_context(|| format!("cannot keep a self-signed certificate in {}", dir.display()))?;
            tracing::info!(dir = %dir.display(), "using a self-signed certificate; clients pin it with pin={}", id.fingerprint());
            Ok(id)
        }
    }
}

async fn accept_sessions(shared: Arc<Shared>, listener: Listener) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let Some(incoming) = accept_until(&shared.shutdown, "relay", || listener.accept()).await else { return };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::debug!(peer = %incoming.peer_addr(), "too many sessions in their handshake, connection dropped");
            continue;
        };
        shared.tasks.spawn(relay::serve_session(shared.clone(), incoming, permit));
    }
}
