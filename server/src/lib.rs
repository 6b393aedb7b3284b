//! `tunnel-server`: the public side of tunnel.
//!
//! It listens for data-channel sessions from agents and access clients on its relay
//! listener ([`relay`]), and for visitors on public entrypoints ([`entrypoint`]). Every
//! routing decision is made by the [`routing::Routes`] value in force (ingress rules, direct
//! routing, tokens); visitors go to a tunnel, and from the tunnel's pool in the [`registry`]
//! to one agent session, which carries the visitor's bytes to a target. Access clients reach
//! tunnels through the private entrypoint: streams they open on their own session, routed by
//! the same table (private rules included) or by tunnel ID in direct mode. A [`gateway`] is a
//! public port whose visitors name their target by a sealed address.
//!
//! `docs/ARCHITECTURE.md` follows a visitor, an access stream and a UDP flow through these
//! files.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinSet;
use tunnel_proto::channel::SharedPort;
use tunnel_proto::channel::{ChannelConfig, Inbound, Incoming, Listener};
use tunnel_proto::pump::accept_until;
use tunnel_runtime::Lifecycle;

mod admin;
pub mod auth;
pub mod budget;
pub mod cluster;
pub mod config;
mod entrypoint;
pub mod gateway;
pub mod http;
pub mod https;
pub mod identity;
pub mod ingress;
pub mod metrics;
pub mod pidfile;
pub mod registry;
mod relay;
mod reload;
pub mod routing;
pub mod store;
pub mod tunnels;
pub mod udp_entry;
mod visit;

pub use config::{Config, FileConfig};

/// A running server's parts, each with one job; every task of the server holds them. The way
/// of a visitor through them is [`visit`].
pub(crate) struct Shared {
    /// The configuration the server started with (listeners, transport, and what sizes the
    /// server-wide budgets); what a reload changes is `in_force`.
    pub(crate) config: Config,
    /// The routes and limits in force, which a reload swaps.
    pub(crate) in_force: reload::InForce,
    /// The server's places: visitors, access streams, and the caps per source and tunnel.
    pub(crate) budgets: budget::Budgets,
    /// Tunnels and their pools of agent sessions.
    pub(crate) registry: registry::Registry,
    /// This server's part in a cluster of replicas, if it is one.
    pub(crate) cluster: Option<Arc<cluster::Cluster>>,
    /// What HTTP visitors share: idle origin connections, basic authentication.
    pub(crate) http: http::State,
    /// Access-client sessions, for the API and for ending those a reload no longer admits.
    pub(crate) access: relay::AccessSessions,
    /// The counters.
    pub(crate) metrics: metrics::Metrics,
    /// The streams carrying bytes now, which a reload decides again.
    pub(crate) live: Arc<visit::LiveStreams>,
    /// HTTPS entrypoints' certificates (files, the ACME CA) and TLS settings.
    pub(crate) edge: https::Edge,
    /// Tunnels, secrets and routes made at run time (the store).
    pub(crate) tunnels: tunnels::Tunnels,
    /// Stopping (listeners close, sessions hear going-away), the hard stop after the grace
    /// period, and every session and visitor task.
    pub(crate) life: Lifecycle,
}

impl Shared {
    /// The limits in force now.
    pub(crate) fn limits(&self) -> Arc<config::Limits> {
        self.in_force.limits()
    }

    /// The routes in force now; hold them for one visitor or stream, not across long waits.
    pub(crate) fn routes(&self) -> Arc<routing::Routes> {
        self.in_force.routes.snapshot()
    }

    /// The session [`Shared::open_stream`] would try first for `network`: a local one, or the link
    /// to a replica holding the tunnel.
    pub(crate) fn pick_session(&self, tunnel: &uuid::Uuid, network: tunnel_proto::wire::Network) -> Option<u64> {
        self.registry
            .pick_session(tunnel, network)
            .or_else(|| self.cluster.as_ref().and_then(|c| c.pick(tunnel, network)))
    }

    /// Whether session (or link) `id` may still carry streams of `tunnel`.
    pub(crate) fn is_live(&self, tunnel: &uuid::Uuid, network: tunnel_proto::wire::Network, id: u64) -> bool {
        self.registry.is_live(tunnel, network, id) || self.cluster.as_ref().is_some_and(|c| c.is_live(id))
    }

    /// The label of `tunnel` in metrics: its ID when the ingress names it, `direct` otherwise
    /// (labels stay bounded by the configuration).
    pub(crate) fn tunnel_label(&self, tunnel: &uuid::Uuid) -> String {
        if !self.metrics.on {
            // Nobody reads the metrics: no label to build on the visitor path.
            String::new()
        } else if self.routes().ingress.knows(tunnel) {
            tunnel.to_string()
        } else {
            "direct".to_owned()
        }
    }
}

/// A running server.
pub struct Server {
    relay_addr: SocketAddr,
    admin: Option<tunnel_runtime::admin::Admin>,
    entrypoint_addrs: Vec<SocketAddr>,
    udp_entrypoint_addrs: Vec<SocketAddr>,
    gateway_addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    /// The accept loops; they end when stopping begins.
    listeners: JoinSet<()>,
    /// Written once listening, removed when the server is dropped after its drain.
    _pid_file: Option<pidfile::PidFile>,
}

impl Server {
    /// Binds every listener and starts serving.
    pub async fn spawn(config: Config) -> anyhow::Result<Server> {
        // Until its hello is admitted, a session may open only its control stream.
        let channel =
            ChannelConfig { inbound: Inbound::ControlOnly, reuse_port: config.reuse, ..ChannelConfig::default() };
        let identity = if config.transport.is_encrypted() { Some(identity::load(&config.identity)?) } else { None };
        let listener = Listener::bind(config.relay_addr, config.transport, identity.as_ref(), channel)
            .await
            .with_context(|| format!("cannot listen on relay address {}", config.relay_addr))?;
        let relay_addr = listener.local_addr()?;
        let mut entrypoints = Vec::new();
        for ep in &config.entrypoints {
            // One listener per thread: each accepts and serves its own visitors.
            let l = tunnel_proto::pump::bind_listener_group(ep.addr, config.reuse, tunnel_runtime::threads::count())
                .with_context(|| format!("cannot listen on entrypoint {}", ep.addr))?;
            entrypoints.push((l, ep.hostname.clone(), ep.http_options()));
        }
        let https_port = entrypoints.iter().find(|(_, _, o)| o.tls).map(|(l, _, _)| l[0].local_addr()).transpose()?;
        let edge = https::Edge::new(&config.edge, https_port.map(|a| a.port()), config.cluster.as_ref())
            .map_err(|e| anyhow::anyhow!("HTTPS certificates: {e}"))?;
        let udp_sockets = udp_entry::bind_all(&config.udp_entrypoints, config.reuse)?;
        let gateways = gateway::bind_all(&config.gateways).await?;
        let routes = config.routes();
        let cluster = match &config.cluster {
            Some(c) => Some(cluster::Cluster::bind(c.clone(), &config, identity.as_ref(), &routes).await?),
            None => None,
        };
        let (cluster, peer_listener) = match cluster {
            Some((c, l)) => (Some(Arc::new(c)), Some(l)),
            None => (None, None),
        };
        for warning in routes.token_warnings().into_iter().chain(routes.protection_warnings()) {
            tracing::warn!(message = %warning);
        }
        if routes.direct {
            tracing::warn!("direct routing is on: access clients may reach any tunnel by its ID");
        }
        let servers = match config.advertise.is_empty() {
            false => config.advertise.iter().map(|a| format!("{}://{a}", config.transport.scheme())).collect(),
            true => vec![format!("{}://{}", config.transport.scheme(), advertised(relay_addr))],
        };
        let pin = identity.as_ref().map(|id| id.fingerprint());
        let tunnels =
            tunnels::Tunnels::open(config.state_dir.join("tunnels.db"), config.cluster.as_ref(), servers, pin)
                .map_err(|e| anyhow::anyhow!("the tunnel store: {e}"))?;
        let merged = tunnels::merge(&tunnels, routes.clone());
        let shared = Arc::new(Shared {
            budgets: config.limits.budgets(),
            in_force: reload::InForce::new(routes, merged, config.limits.clone()),
            tunnels,
            metrics: metrics::Metrics { on: config.admin.is_some(), ..metrics::Metrics::default() },
            live: Arc::default(),
            access: relay::AccessSessions::default(),
            registry: registry::Registry::default(),
            http: http::State::default(),
            edge,
            config,
            life: Lifecycle::new(),
            cluster,
        });
        let mut listeners = JoinSet::new();
        let transport = shared.config.transport;
        match &identity {
            Some(id) => {
                tracing::info!(addr = %relay_addr, %transport, fingerprint = %id.fingerprint(), "relay listening")
            }
            None => tracing::info!(addr = %relay_addr, %transport, "relay listening"),
        }
        listeners.spawn(accept_sessions(shared.clone(), listener));
        let mut entrypoint_addrs = Vec::new();
        listeners.spawn(http::pool::run_expiry(shared.http.origins.clone(), shared.life.stopping().clone()));
        let origins = shared.http.origins.clone();
        shared.registry.on_leave(move |session| origins.drop_session(session));
        if let (Some(cluster), Some(listener)) = (shared.cluster.clone(), peer_listener) {
            let presence = cluster.directory.clone();
            shared.registry.on_change(move |tunnel| cluster::presence::Presence::changed(presence.as_ref(), tunnel));
            cluster.start(&shared, listener, &mut listeners);
        }
        for (l, hostname, options) in entrypoints {
            let addr = l[0].local_addr()?;
            tracing::info!(addr = %addr, hostname = hostname.as_deref().unwrap_or("(sniffed)"), "entrypoint listening");
            entrypoint_addrs.push(addr);
            listeners.spawn(entrypoint::run(
                shared.clone(),
                l,
                hostname,
                Arc::from(addr.to_string()),
                Arc::new(options),
            ));
        }
        https::start(&shared, &mut listeners);
        listeners.spawn(tunnels::watch(shared.clone()));
        let udp_entrypoint_addrs = udp_entry::spawn_all(&shared, udp_sockets, &mut listeners)?;
        let gateway_addrs = gateway::spawn_all(&shared, gateways, &mut listeners)?;
        let pid_file = shared.config.pid_file.as_deref().map(pidfile::PidFile::create).transpose()?;
        shared.metrics.config_version.set(1);
        let admin = tunnel_runtime::admin::Admin::start(shared.config.admin.as_ref(), |mut registry| {
            shared.metrics.register(&mut registry);
            shared.edge.register(&mut registry);
            if shared.cluster.is_some() {
                shared.metrics.register_cluster(&mut registry);
            }
            Arc::new(admin::ServerAdmin { shared: shared.clone(), registry, relay: relay_addr })
        })
        .await
        .with_context(|| {
            format!("cannot listen on the admin address {:?}", shared.config.admin.as_ref().map(|a| a.addr))
        })?;
        let reloading = shared.clone();
        listeners.spawn(tunnel_runtime::telemetry::on_sighup(reloading.life.stopping().clone(), move || {
            let _ = reload::reload(&reloading);
        }));
        Ok(Server {
            admin,
            relay_addr,
            entrypoint_addrs,
            udp_entrypoint_addrs,
            gateway_addrs,
            shared,
            listeners,
            _pid_file: pid_file,
        })
    }

    /// The relay listener's bound address.
    pub fn relay_addr(&self) -> SocketAddr {
        self.relay_addr
    }

    /// The entrypoints' bound addresses, in configuration order.
    pub fn entrypoint_addrs(&self) -> &[SocketAddr] {
        &self.entrypoint_addrs
    }

    /// The UDP entrypoints' bound addresses, in configuration order.
    pub fn udp_entrypoint_addrs(&self) -> &[SocketAddr] {
        &self.udp_entrypoint_addrs
    }

    /// The gateways' bound addresses, in configuration order.
    pub fn gateway_addrs(&self) -> &[SocketAddr] {
        &self.gateway_addrs
    }

    /// Graceful drain: stops accepting sessions and visitors, tells every session the server
    /// is going away, lets streams in flight finish for at most `grace`, then closes the rest.
    pub async fn shutdown(mut self, grace: Duration) {
        self.shared.life.begin_stop();
        // Each accept loop ends and drops its listener: only then is the drain announced, so
        // a visitor or session that comes after the announcement is refused.
        while self.listeners.join_next().await.is_some() {}
        tracing::info!(?grace, "shutting down: listeners closed, draining sessions");
        if !self.shared.life.drain(grace).await {
            tracing::warn!(?grace, "streams still open after the grace period are cut");
        }
        // The admin listener answers (readiness 503) through the drain, and goes last.
        if let Some(admin) = self.admin.take() {
            admin.stop().await;
        }
    }

    /// The admin listener's bound address, if it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.local_addr())
    }

    /// The configured grace period.
    pub fn grace_period(&self) -> Duration {
        self.shared.limits().grace_period
    }
}

impl tunnel_runtime::cli::Stop for Server {
    async fn stop(self) {
        let grace = self.grace_period();
        self.shutdown(grace).await
    }
}

/// The relay address a connection token names when `advertise` is not set: the bound one,
/// with an unspecified address (`0.0.0.0`, `::`) as loopback.
pub(crate) fn advertised(relay: SocketAddr) -> SocketAddr {
    match relay.ip().is_unspecified() {
        true => SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), relay.port()),
        false => relay,
    }
}

async fn accept_sessions(shared: Arc<Shared>, listener: Listener) {
    let spread = tunnel_runtime::threads::Spread::new();
    loop {
        let Some(incoming) = accept_until(shared.life.stopping(), "relay", || listener.accept()).await else {
            return;
        };
        let peer = incoming.peer_addr();
        let slots = match shared.budgets.handshakes.take(peer.ip()) {
            Ok(place) => place,
            Err(why) => {
                tracing::debug!(%peer, reason = %why, "connection dropped");
                continue;
            }
        };
        let task_shared = shared.clone();
        let serve = move |incoming: Incoming| async move {
            let shared = task_shared;
            if !shared.config.share_port {
                return relay::serve_session(shared, incoming, slots).await;
            }
            // The port is shared with an entrypoint: a session's ClientHello offers the relay's
            // ALPN; anything else is a visitor.
            let timeout = shared.limits().sniff_timeout;
            match incoming.classify(timeout).await {
                Ok(SharedPort::Relay(incoming)) => relay::serve_session(shared, incoming, slots).await,
                Ok(SharedPort::Visitor(tcp, read)) => {
                    drop(slots);
                    entrypoint::serve_shared(shared, tcp, peer, read).await;
                }
                Err(err) => {
                    tracing::debug!(%peer, %err, "connection to the shared port closed before it said what it is")
                }
            }
        };
        spread.spawn_moved(shared.life.tasks(), incoming, serve);
    }
}
