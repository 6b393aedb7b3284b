//! One tunnel's pool of agent sessions: joining under the pool's cap, leaving, and the
//! weighted round-robin pick of a session for each new stream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tunnel_proto::channel::Session;
use tunnel_proto::wire::{Network, Networks};
use uuid::Uuid;

/// One agent session in a pool.
pub struct AgentSession {
    /// Server-local session number, for logs and removal.
    pub id: u64,
    /// The tunnel it joined.
    pub tunnel: Uuid,
    /// The session.
    pub session: Arc<dyn Session>,
    /// Networks it serves.
    pub networks: Networks,
    /// Relative share of streams (at least 1).
    pub weight: u8,
    /// Cancelled to end this session alone (eviction, the hard stop).
    pub token: CancellationToken,
    /// The token it joined with, for a reload to check it again.
    pub credential: tunnel_proto::wire::Token,
    /// When it joined.
    pub since: std::time::SystemTime,
    /// The thread its driver runs on ([`tunnel_runtime::threads::index`] when it joined).
    pub home: usize,
    pub(super) budget: Arc<Semaphore>,
    max_streams: usize,
    /// Set once the session has left its pool: what is kept for reuse on it is dropped.
    left: std::sync::atomic::AtomicBool,
}

impl AgentSession {
    /// A session record; `max_streams` bounds the streams it carries at once.
    pub fn new(id: u64, tunnel: Uuid, session: Arc<dyn Session>, join: Join, token: CancellationToken) -> AgentSession {
        AgentSession {
            home: tunnel_runtime::threads::index(),
            id,
            tunnel,
            session,
            networks: join.networks,
            weight: join.weight.max(1),
            token,
            credential: join.credential,
            since: std::time::SystemTime::now(),
            budget: Arc::new(Semaphore::new(join.max_streams)),
            max_streams: join.max_streams,
            left: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Resolves once no stream is in flight on this session (for a drain: call it after the
    /// session has left the pool, so no new stream starts).
    pub async fn idle(&self) {
        let _ = self.budget.acquire_many(self.max_streams as u32).await;
    }

    /// Whether the session is still in its pool and open (streams kept for reuse on it may
    /// take new requests).
    pub fn is_live(&self) -> bool {
        !self.left.load(Ordering::Relaxed) && !self.session.is_closed()
    }

    /// Its stream budget (a stream holds one permit).
    pub fn budget(&self) -> Arc<Semaphore> {
        self.budget.clone()
    }

    /// Streams in flight now.
    pub fn streams_in_flight(&self) -> usize {
        self.max_streams - self.budget.available_permits()
    }
}

/// The weight that makes a session exclusive: the others of its pool take streams only while
/// no exclusive session can.
pub const EXCLUSIVE: u8 = 255;

/// What a joining agent session asks for, and the limits it gets.
#[derive(Debug, Clone)]
pub struct Join {
    /// Networks served.
    pub networks: Networks,
    /// Weight in the pool.
    pub weight: u8,
    /// The token it joined with.
    pub credential: tunnel_proto::wire::Token,
    /// Streams at once on the session.
    pub max_streams: usize,
    /// Sessions the pool may hold.
    pub max_sessions: usize,
}

/// A pool is full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tunnel already has {0} sessions")]
pub struct PoolFull(pub usize);

/// The live agent sessions of one tunnel.
#[derive(Default)]
pub struct Pool {
    sessions: RwLock<Vec<Arc<AgentSession>>>,
    next: AtomicUsize,
}

impl Pool {
    /// Adds a session unless the pool already holds `max`.
    pub fn add(&self, agent: Arc<AgentSession>, max: usize) -> Result<(), PoolFull> {
        let mut sessions = self.sessions.write().expect("pool lock");
        if sessions.len() >= max {
            return Err(PoolFull(max));
        }
        sessions.push(agent);
        Ok(())
    }

    /// Removes session `id` (no-op when already gone).
    pub fn remove(&self, id: u64) {
        self.sessions.write().expect("pool lock").retain(|s| {
            if s.id == id {
                s.left.store(true, Ordering::Relaxed);
            }
            s.id != id
        });
    }

    /// Sessions in the pool.
    pub fn len(&self) -> usize {
        self.sessions.read().expect("pool lock").len()
    }

    /// Whether the pool has no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every session, for listings and eviction.
    pub fn sessions(&self) -> Vec<Arc<AgentSession>> {
        self.sessions.read().expect("pool lock").clone()
    }

    /// The live session `id` if it serves `network`.
    pub fn get(&self, network: Network, id: u64) -> Option<Arc<AgentSession>> {
        let sessions = self.sessions.read().expect("pool lock");
        sessions.iter().find(|s| s.id == id && s.networks.contains(network) && !s.session.is_closed()).cloned()
    }

    /// Picks a live session serving `network`, skipping `tried`, by weighted round-robin.
    pub fn pick(&self, network: Network, tried: &[u64]) -> Option<Arc<AgentSession>> {
        let sessions = self.sessions.read().expect("pool lock");
        let mut candidates: Vec<&Arc<AgentSession>> = sessions
            .iter()
            .filter(|s| s.networks.contains(network) && !tried.contains(&s.id) && !s.session.is_closed())
            .collect();
        // Weight 255 is exclusive (active/standby): while a session of that weight can take
        // the stream, the others are standbys.
        if candidates.iter().any(|s| s.weight == EXCLUSIVE) {
            candidates.retain(|s| s.weight == EXCLUSIVE);
        }
        // Sessions on the caller's thread first (when all weigh the same): their streams
        // wake no other thread.
        let here = tunnel_runtime::threads::index();
        if tunnel_runtime::threads::count() > 1
            && candidates.iter().any(|s| s.home == here)
            && candidates.windows(2).all(|w| w[0].weight == w[1].weight)
        {
            candidates.retain(|s| s.home == here);
        }
        let weights: Vec<u8> = candidates.iter().map(|s| s.weight).collect();
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        weighted_pick(&weights, turn).map(|i| candidates[i].clone())
    }
}

/// The index chosen on round-robin turn `turn` among candidates of these weights: over
/// `sum(weights)` consecutive turns, candidate `i` is chosen `weights[i]` times.
pub fn weighted_pick(weights: &[u8], turn: usize) -> Option<usize> {
    let total: usize = weights.iter().map(|w| *w as usize).sum();
    if total == 0 {
        return None;
    }
    let mut slot = turn % total;
    for (i, w) in weights.iter().enumerate() {
        if slot < *w as usize {
            return Some(i);
        }
        slot -= *w as usize;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_share_the_turns() {
        let mut counts = [0usize; 3];
        for turn in 0..600 {
            counts[weighted_pick(&[1, 2, 3], turn).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 200, 300]);
        assert_eq!(weighted_pick(&[], 7), None);
        assert_eq!(weighted_pick(&[0, 0], 7), None);
        assert_eq!(weighted_pick(&[0, 5], 3), Some(1), "a zero weight is never chosen");
    }
}
