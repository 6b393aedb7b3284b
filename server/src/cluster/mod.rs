//! Several replicas of the server sharing their tunnels ([SCALE]).
//!
//! - [`config`]: the `[cluster]` table;
//! - [`presence`]: which replica holds sessions for which tunnel, as the visitor path reads
//!   it (from memory, never waiting), with [`presence::Alone`] for a single server;
//! - [`redis`]: the task that publishes this replica's presence in Redis under a lease and
//!   follows the others';
//! - [`peer`]: the authenticated links between replicas, and the peer listener that serves
//!   streams forwarded to this replica.
//!
//! A visitor of a tunnel with no session here is forwarded to a replica that has one
//! ([`Cluster::open`]): each holder in turn, before the visitor gets 502. Without Redis a
//! replica serves its own tunnels and forwards nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use dashmap::DashMap;
use sha2::{Digest, Sha256};
use tunnel_proto::channel::{ChannelConfig, Inbound, Listener};
use tunnel_proto::tls::{ClientTls, Verify};
use tunnel_proto::wire::Network;
use uuid::Uuid;

use crate::registry::open::{attempt, Attempt};
use crate::registry::{AgentStream, OpenError};
use crate::routing::Routes;
use crate::visit::StreamRequest;
use crate::Shared;

pub mod config;
pub mod peer;
pub mod presence;
pub mod redis;

pub use config::{ClusterConfig, ClusterFile};
use presence::{Directory, Presence};

/// A replica's part in its cluster.
pub struct Cluster {
    /// Its configuration.
    pub config: ClusterConfig,
    /// The other replicas, as last read.
    pub directory: Arc<Directory>,
    /// How peer links verify the other replica's certificate (the relay's own, which every
    /// replica shares).
    tls: ClientTls,
    slots: DashMap<SocketAddr, Arc<tokio::sync::Mutex<peer::Slot>>>,
    by_id: DashMap<u64, Arc<peer::Link>>,
    /// The server, for the tasks that keep links (set once started).
    server: std::sync::OnceLock<std::sync::Weak<Shared>>,
}

impl Cluster {
    /// Binds the peer listener; `fingerprint` is the relay certificate's, which peers pin.
    pub async fn bind(
        mut config: ClusterConfig,
        shared_config: &crate::Config,
        identity: Option<&tunnel_proto::tls::ServerIdentity>,
        routes: &Routes,
    ) -> anyhow::Result<(Cluster, Listener)> {
        use anyhow::Context;
        let channel = ChannelConfig {
            inbound: Inbound::ControlOnly,
            reuse_port: shared_config.reuse,
            ..ChannelConfig::default()
        };
        let listener = Listener::bind(config.listen, shared_config.transport, identity, channel)
            .await
            .with_context(|| format!("cannot listen on the cluster peer address {}", config.listen))?;
        let bound = listener.local_addr()?;
        if config.advertise.port() == 0 {
            config.advertise.set_port(bound.port());
        }
        let tls = match identity {
            Some(id) => ClientTls { verify: Verify::parse_pin(&id.fingerprint())?, server_name: None },
            None => ClientTls::default(),
        };
        tracing::info!(addr = %bound, advertise = %config.advertise, replica = %config.name, "cluster: peer listener up");
        let directory = Arc::new(Directory::new(config.name.clone(), config.advertise, config_hash(routes)));
        Ok((
            Cluster {
                config,
                directory,
                tls,
                slots: DashMap::new(),
                by_id: DashMap::new(),
                server: Default::default(),
            },
            listener,
        ))
    }

    /// Starts the Redis task and the peer listener.
    pub(crate) fn start(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        listener: Listener,
        tasks: &mut tokio::task::JoinSet<()>,
    ) {
        let _ = self.server.set(Arc::downgrade(shared));
        tasks.spawn(peer::accept(shared.clone(), self.clone(), listener));
        let snapshot = shared.clone();
        let health = shared.clone();
        let task = redis::Task {
            url: self.config.redis.expose().to_owned(),
            lease: self.config.lease,
            tunnels: Box::new(move || own_tunnels(&snapshot)),
            health: Box::new(move |up| {
                health.metrics.cluster_redis_up.set(up as i64);
            }),
        };
        // The task outlives the accept loops: it removes the presence after the drain starts.
        tokio::spawn(redis::run(task, self.directory.clone(), shared.life.stopping().clone()));
    }

    /// A link id when `tunnel` has no session here: the first holder's live link, for a
    /// caller that keeps connections per session.
    pub(crate) fn pick(&self, tunnel: &Uuid, network: Network) -> Option<u64> {
        self.directory.holders(tunnel, network).into_iter().find_map(|h| {
            let slot = self.slots.get(&h.peer)?.clone();
            let slot = slot.try_lock().ok()?;
            slot.link_id()
        })
    }

    /// Whether `id` is a link that is still up.
    pub(crate) fn is_live(&self, id: u64) -> bool {
        peer::live(self, id)
    }

    /// Whether `id` names a link rather than a local session.
    pub(crate) fn is_link(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// Forwards a stream to a replica holding its tunnel: link `prefer` first, none of
    /// `avoid`, each holder in turn while one answers that it has no agent or cannot be
    /// reached.
    pub(crate) async fn open(
        self: &Arc<Self>,
        shared: &Shared,
        request: &StreamRequest<'_>,
    ) -> Result<AgentStream, OpenError> {
        let (tunnel, header, opening) = (request.tunnel, request.header, &request.opening);
        let mut holders = self.directory.holders(tunnel, header.network);
        if holders.is_empty() {
            return Err(OpenError::NoAgent(header.network));
        }
        if let Some(link) = opening.prefer.and_then(|id| self.by_id.get(&id).map(|l| l.clone())) {
            if let Some(i) = holders.iter().position(|h| h.name == link.name) {
                let h = holders.remove(i);
                holders.insert(0, h);
            }
        }
        let message = peer::message(*tunnel, request.scope, header, opening.prefix);
        let mut last = None;
        let mut busy = false;
        // A link found dead by this stream (its replica restarted, say) is dialed again once.
        let mut redialed = false;
        let mut queue: std::collections::VecDeque<presence::Holder> = holders.into();
        while let Some(holder) = queue.pop_front() {
            let link = match self.link(shared, holder.peer).await {
                Ok(link) => link,
                Err(why) => {
                    tracing::debug!(replica = %holder.name, peer = %holder.peer, reason = %why, "cluster: replica unreachable; trying the next");
                    last = Some(format!("replica {} unreachable: {why}", holder.name));
                    continue;
                }
            };
            if opening.avoid.contains(&link.agent.id) {
                continue;
            }
            match attempt(&link.agent, &message, request.timeouts).await {
                Attempt::Opened(stream) => {
                    shared.metrics.forwarded("out", "ok");
                    return Ok(stream);
                }
                Attempt::Answered(reply) if peer::unavailable(&reply) => {
                    tracing::debug!(replica = %holder.name, reason = %reply.message, "cluster: replica has no agent for the stream; trying the next");
                    last = Some(format!("replica {}: {}", holder.name, reply.message));
                }
                Attempt::Answered(reply) => {
                    shared.metrics.forwarded("out", "refused");
                    return Err(OpenError::Refused(reply));
                }
                Attempt::Timeout(t) => {
                    shared.metrics.forwarded("out", "failed");
                    return Err(OpenError::Timeout(t));
                }
                Attempt::Busy => busy = true,
                Attempt::Failed { error, silent } => {
                    tracing::debug!(replica = %holder.name, %error, "cluster: forwarding failed; trying the next replica");
                    if silent {
                        link.agent.session.close();
                    } else if !redialed && link.agent.session.is_closed() {
                        redialed = true;
                        queue.push_front(holder.clone());
                    }
                    last = Some(format!("replica {}: {error}", holder.name));
                }
            }
        }
        shared.metrics.forwarded("out", "failed");
        Err(match (last, busy) {
            (Some(why), _) => {
                tracing::info!(%tunnel, reason = %why, "cluster: no replica holding the tunnel could take the stream");
                OpenError::Replicas(why)
            }
            (None, true) => OpenError::Busy,
            (None, false) => OpenError::NoAgent(header.network),
        })
    }

    /// What `/readyz` and the API say of the cluster.
    pub(crate) fn status(&self) -> serde_json::Value {
        let d = &self.directory;
        let replicas: Vec<serde_json::Value> = d
            .replicas()
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name,
                    "peer": r.peer.to_string(),
                    "config": r.config,
                    "tunnels": r.tunnels.len(),
                    "sameConfig": r.config == d.own_config(),
                })
            })
            .collect();
        serde_json::json!({
            "name": d.own(),
            "peer": d.own_peer().to_string(),
            "state": if d.is_up() { "ok" } else { "degraded" },
            "redis": d.is_up(),
            "reason": d.last_error(),
            "config": d.own_config(),
            "replicas": replicas,
            "configMismatch": d.disagreeing(),
        })
    }
}

/// The tunnels this replica holds sessions for, and the networks they serve.
fn own_tunnels(shared: &Shared) -> BTreeMap<Uuid, u8> {
    let mut out = BTreeMap::new();
    for (id, record) in shared.registry.tunnels() {
        let bits = record
            .pool
            .sessions()
            .iter()
            .filter(|s| !s.session.is_closed())
            .fold(0u8, |bits, s| bits | s.networks.bits());
        if bits != 0 {
            out.insert(id, bits);
        }
    }
    out
}

/// The hash replicas compare: ingress rules, direct routing and the tokens (as hashes).
pub fn config_hash(routes: &Routes) -> String {
    let mut h = Sha256::new();
    for rule in routes.ingress.rules() {
        h.update(format!(
            "{}|{:?}|{}|{}|{};",
            rule.pattern,
            rule.path,
            rule.tunnel,
            rule.private,
            rule.basic_auth.len()
        ));
        for cred in &rule.basic_auth {
            h.update(format!("{cred:?};"));
        }
    }
    h.update(format!("direct={};", routes.direct));
    h.update(routes.auth.fingerprint());
    hex::encode(&h.finalize()[..6])
}
