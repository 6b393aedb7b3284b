//! Tunnels, their pools of agent sessions, and opening streams to them.
//!
//! - [`pool`]: one tunnel's sessions, the cap on them, and the weighted pick per stream;
//! - [`open`]: opening a stream to a tunnel (header and pipelined bytes, acknowledgement and
//!   reply timeouts, retries on other sessions), with typed errors that become the answers
//!   visitors and access clients get.
//!
//! Each tunnel has a [`TunnelRecord`] that holds its pool. The record of a tunnel named by
//! ingress outlives its sessions, so what is kept per tunnel (counters, for one) survives a
//! reconnect; the record of a tunnel reached only by direct routing goes with its last
//! session, so unknown IDs cannot pile up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tunnel_proto::channel::Session;
use uuid::Uuid;

pub mod open;
pub mod pool;

pub use open::{AgentStream, OpenError};
pub use pool::{AgentSession, Join, Pool, PoolFull};

/// What the server keeps for one tunnel.
#[derive(Default)]
pub struct TunnelRecord {
    /// Its live agent sessions.
    pub pool: Pool,
    /// Kept while empty (the tunnel is named by ingress).
    keep: bool,
}

/// Every tunnel the server knows of.
#[derive(Default)]
pub struct Registry {
    tunnels: DashMap<Uuid, Arc<TunnelRecord>>,
    next_id: AtomicU64,
    /// Told of every session that leaves its pool (to drop what is kept per session).
    on_leave: std::sync::OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
    /// Told of every tunnel whose pool changed (to publish the cluster's presence).
    on_change: std::sync::OnceLock<Box<dyn Fn(Uuid) + Send + Sync>>,
}

impl Registry {
    /// Adds an agent session to its tunnel's pool. `keep` makes the tunnel's record outlive
    /// its sessions.
    pub fn join(
        &self,
        tunnel: Uuid,
        session: Arc<dyn Session>,
        join: Join,
        token: CancellationToken,
        keep: bool,
    ) -> Result<Arc<AgentSession>, PoolFull> {
        let id = self.next_session_id();
        let max_sessions = join.max_sessions;
        let agent = Arc::new(AgentSession::new(id, tunnel, session, join, token));
        // The map entry stays locked while the session is added: `leave` drops an empty
        // record, and must not drop one that is about to receive a session.
        let record =
            self.tunnels.entry(tunnel).or_insert_with(|| Arc::new(TunnelRecord { pool: Pool::default(), keep }));
        record.pool.add(agent.clone(), max_sessions)?;
        drop(record);
        if let Some(hook) = self.on_change.get() {
            hook(tunnel);
        }
        Ok(agent)
    }

    /// A session number no other session of this server has (links to other replicas take
    /// theirs here too, so per-session state never mixes them up).
    pub fn next_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Removes a session from its pool (no-op when already gone).
    pub fn leave(&self, tunnel: &Uuid, id: u64) {
        if let Some(record) = self.tunnels.get(tunnel).map(|r| r.clone()) {
            record.pool.remove(id);
        }
        self.tunnels.remove_if(tunnel, |_, r| !r.keep && r.pool.is_empty());
        if let Some(hook) = self.on_leave.get() {
            hook(id);
        }
        if let Some(hook) = self.on_change.get() {
            hook(*tunnel);
        }
    }

    /// Sets what is told of each tunnel whose pool changed (once; later calls are ignored).
    pub fn on_change(&self, hook: impl Fn(Uuid) + Send + Sync + 'static) {
        let _ = self.on_change.set(Box::new(hook));
    }

    /// Sets what is told of each session leaving its pool (once; later calls are ignored).
    pub fn on_leave(&self, hook: impl Fn(u64) + Send + Sync + 'static) {
        let _ = self.on_leave.set(Box::new(hook));
    }

    /// Whether session `id` of `tunnel` is still in its pool and serving `network`.
    pub fn is_live(&self, tunnel: &Uuid, network: tunnel_proto::wire::Network, id: u64) -> bool {
        self.tunnel(tunnel).is_some_and(|r| r.pool.get(network, id).is_some())
    }

    /// Every tunnel with a record, and its record.
    pub fn tunnels(&self) -> Vec<(Uuid, Arc<TunnelRecord>)> {
        self.tunnels.iter().map(|e| (*e.key(), e.value().clone())).collect()
    }

    /// The record of a tunnel, if any session ever joined it.
    pub fn tunnel(&self, tunnel: &Uuid) -> Option<Arc<TunnelRecord>> {
        self.tunnels.get(tunnel).map(|r| r.clone())
    }

    /// Number of live sessions in a tunnel's pool.
    pub fn session_count(&self, tunnel: &Uuid) -> usize {
        self.tunnel(tunnel).map(|r| r.pool.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
