//! Live reload (SIGHUP, `POST /api/v1/reload`): the configuration file is read and validated
//! again; ingress rules, direct routing, tokens and timeouts swap at once; sessions the new
//! configuration no longer admits (their tunnel left the ingress, their token was revoked) are
//! closed with that reason; streams of rules that remain are never touched. What needs a
//! restart (listen addresses, transport, what sizes the server-wide budgets) is reported, not
//! half-applied. A file that does not validate changes nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::{json, Value};
use tunnel_proto::wire::{self, Hello, Networks, Role};
use uuid::Uuid;

use crate::config::{Config, Limits};
use crate::metrics::Outcome;
use crate::routing::{AdmitError, Routes, RoutesCell};
use crate::Shared;

/// What a reload swaps: the routes and limits in force, and the configuration's version.
pub(crate) struct InForce {
    /// The routes; readers take a snapshot per visitor or stream.
    pub(crate) routes: RoutesCell,
    /// The configuration file's routes alone, which the store's are added to.
    file_routes: RwLock<Arc<Routes>>,
    limits: RwLock<Arc<Limits>>,
    /// Applied configurations: 1 at start, one more per applied reload.
    version: AtomicU64,
}

impl InForce {
    /// The configuration at start: the file's routes, and those with the store's added.
    pub(crate) fn new(file: Routes, merged: Routes, limits: Limits) -> InForce {
        InForce {
            file_routes: RwLock::new(Arc::new(file)),
            routes: RoutesCell::new(merged),
            limits: RwLock::new(Arc::new(limits)),
            version: AtomicU64::new(1),
        }
    }

    /// The configuration file's routes, without the store's.
    pub(crate) fn file_routes(&self) -> Arc<Routes> {
        self.file_routes.read().expect("routes lock").clone()
    }

    /// The limits in force now.
    pub(crate) fn limits(&self) -> Arc<Limits> {
        self.limits.read().expect("limits lock").clone()
    }

    /// The version of the configuration in force.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Puts the file's `routes` (the store's added) and `limits` in force; returns the new
    /// version.
    fn replace(&self, shared: &Shared, routes: Routes, limits: Limits) -> u64 {
        *self.file_routes.write().expect("routes lock") = Arc::new(routes.clone());
        self.routes.replace(crate::tunnels::merged(shared, routes));
        *self.limits.write().expect("limits lock") = Arc::new(limits);
        self.version.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Reloads the configuration; returns the report (also logged) or why nothing changed.
pub(crate) fn reload(shared: &Shared) -> Result<Value, String> {
    let new = match shared.config.origin.reload() {
        Ok(config) => config,
        Err(err) => {
            shared.metrics.reloads.get_or_create(&Outcome { result: "failure" }).inc();
            tracing::warn!(error = %err, "reload refused; the configuration in force stays");
            return Err(err.to_string());
        }
    };
    let restart = needs_restart(&shared.config, &new, &shared.limits());
    let routes = new.routes();
    let mut limits = new.limits.clone();
    keep_sized_limits(&mut limits, &shared.config.limits);
    let version = shared.in_force.replace(shared, routes, limits);
    let routes = shared.routes();
    shared.metrics.config_version.set(version as i64);
    let (closed, cut) = settle(shared, &routes);
    shared.edge.files.reconfigure(&new.edge, &shared.edge.store);
    if let Some(acme) = &shared.edge.acme {
        acme.rescan();
    }
    shared.metrics.reloads.get_or_create(&Outcome { result: "success" }).inc();
    tracing::info!(version, rules = routes.ingress.rules().len(), closed, cut, "configuration reloaded");
    if !restart.is_empty() {
        tracing::warn!(settings = %restart.join(", "), "reload: these settings need a restart and were not applied");
    }
    Ok(
        json!({ "applied": true, "version": version, "closedSessions": closed, "cutStreams": cut, "needsRestart": restart }),
    )
}

/// After new routes are in force: the cluster hears of them, sessions they no longer admit
/// are closed and streams they no longer route are cut; returns (closed, cut).
pub(crate) fn settle(shared: &Shared, routes: &Routes) -> (usize, usize) {
    if let Some(cluster) = &shared.cluster {
        cluster.directory.set_own_config(crate::cluster::config_hash(routes));
    }
    (close_unadmitted(shared, routes), shared.live.recheck(routes))
}

/// The settings that differ and cannot change without a restart.
fn needs_restart(old: &Config, new: &Config, limits: &Limits) -> Vec<String> {
    let mut keys = Vec::new();
    let mut differ = |key: &str, changed: bool| {
        if changed {
            keys.push(key.to_owned());
        }
    };
    differ("addr", old.relay_addr != new.relay_addr);
    differ("listener", old.transport != new.transport);
    let eps = |c: &Config| c.entrypoints.iter().map(|e| (e.addr, e.hostname.clone())).collect::<Vec<_>>();
    differ("entryPoint", eps(old) != eps(new) || old.udp_entrypoints != new.udp_entrypoints);
    differ("gateway", old.gateways.len() != new.gateways.len());
    differ("reuse", old.reuse != new.reuse);
    differ("pidFile", old.pid_file != new.pid_file);
    let cluster = |c: &Config| c.cluster.as_ref().map(|c| (c.name.clone(), c.listen, c.advertise, c.lease));
    differ("cluster", cluster(old) != cluster(new));
    differ("admin.addr", old.admin.as_ref().map(|a| a.addr) != new.admin.as_ref().map(|a| a.addr));
    differ("certFile", format!("{:?}", old.identity) != format!("{:?}", new.identity));
    differ("acme", old.edge.acme != new.edge.acme);
    let tls = |c: &Config| c.entrypoints.iter().map(|e| e.tls).collect::<Vec<_>>();
    differ("entrypoints.tls", tls(old) != tls(new));
    let (a, b) = (limits, &new.limits);
    for (key, changed) in [
        ("limits.maxVisitors", a.max_visitors != b.max_visitors),
        ("limits.maxAccessStreams", a.max_access_streams != b.max_access_streams),
        ("limits.maxHandshakesPerSource", a.max_handshakes_per_source != b.max_handshakes_per_source),
        ("limits.maxHandshakesPerPrefix", a.max_handshakes_per_prefix != b.max_handshakes_per_prefix),
        ("limits.handshakePrefixV4/V6", a.handshake_prefix != b.handshake_prefix),
        ("limits.maxSessionsPerSource", a.max_sessions_per_source != b.max_sessions_per_source),
        ("limits.maxAccessSessionsPerTunnel", a.max_access_sessions_per_tunnel != b.max_access_sessions_per_tunnel),
        ("limits.maxStreamsPerTunnel", a.max_streams_per_tunnel != b.max_streams_per_tunnel),
        ("limits.maxVisitorsPerSource", a.max_visitors_per_source != b.max_visitors_per_source),
        ("limits.maxUdpFlows", a.max_udp_flows != b.max_udp_flows),
        ("limits.maxUdpFlowsPerSource", a.max_udp_flows_per_source != b.max_udp_flows_per_source),
    ] {
        differ(key, changed);
    }
    keys
}

/// Keeps the limits that sized the server-wide budgets at start as they are.
fn keep_sized_limits(new: &mut Limits, start: &Limits) {
    new.max_visitors = start.max_visitors;
    new.max_access_streams = start.max_access_streams;
    new.max_handshakes_per_source = start.max_handshakes_per_source;
    new.max_handshakes_per_prefix = start.max_handshakes_per_prefix;
    new.handshake_prefix = start.handshake_prefix;
    new.max_sessions_per_source = start.max_sessions_per_source;
    new.max_access_sessions_per_tunnel = start.max_access_sessions_per_tunnel;
    new.max_streams_per_tunnel = start.max_streams_per_tunnel;
    new.max_visitors_per_source = start.max_visitors_per_source;
    new.max_udp_flows = start.max_udp_flows;
    new.max_udp_flows_per_source = start.max_udp_flows_per_source;
}

/// Why `routes` no longer admits a session of `tunnel` with `token`, if it does not.
fn refusal(routes: &Routes, role: Role, tunnel: Uuid, networks: Networks, token: &wire::Token) -> Option<&'static str> {
    let hello = Hello {
        version: wire::VERSION,
        role,
        tunnel,
        networks,
        weight: 1,
        token: token.clone(),
        hostname: String::new(),
    };
    match routes.admit(&hello) {
        Ok(()) => None,
        Err(AdmitError::UnknownTunnel(_)) => Some("its tunnel left the ingress"),
        Err(_) if !routes.direct && !routes.ingress.knows(&tunnel) && !routes.auth.is_stored(&tunnel) => {
            Some("its tunnel left the ingress")
        }
        Err(_) => Some("its token was revoked"),
    }
}

/// Ends every session the new routes refuse; returns how many.
fn close_unadmitted(shared: &Shared, routes: &Routes) -> usize {
    let mut closed = 0;
    for (tunnel, record) in shared.registry.tunnels() {
        for agent in record.pool.sessions() {
            if let Some(why) = refusal(routes, Role::Agent, tunnel, agent.networks, &agent.credential) {
                tracing::info!(%tunnel, session = agent.id, reason = why, "agent session closed by the reload");
                shared.registry.leave(&tunnel, agent.id);
                agent.token.cancel();
                closed += 1;
            }
        }
    }
    for access in shared.access.iter() {
        let hello = &access.hello;
        if let Some(why) = refusal(routes, Role::Access, hello.tunnel, Networks::NONE, &hello.token) {
            tracing::info!(tunnel = %hello.tunnel, peer = %access.peer, reason = why, "access session closed by the reload");
            access.token.cancel();
            closed += 1;
        }
    }
    closed
}
