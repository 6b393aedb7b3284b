//! Budgets that keep one source address or one tunnel from taking what others need: a count
//! per key (an address, a tunnel) under a cap, with a slot that gives its place back when
//! dropped.
//!
//! The server holds one of each: handshakes and sessions per source address, access
//! sessions per tunnel, streams in flight per tunnel (public visitors and access streams),
//! public visitors and UDP flows per source address; and the server-wide places (visitors,
//! access streams). Together no tenant can exhaust another's share.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::Semaphore;
use uuid::Uuid;

/// Counts per key, each under `max`.
pub struct KeyedBudget<K: Hash + Eq + Clone> {
    max: usize,
    counts: DashMap<K, usize>,
}

/// One place in a [`KeyedBudget`]; dropping it gives the place back.
pub struct Slot<K: Hash + Eq + Clone> {
    budget: Arc<KeyedBudget<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> KeyedBudget<K> {
    /// A budget of `max` per key.
    pub fn new(max: usize) -> Arc<KeyedBudget<K>> {
        Arc::new(KeyedBudget { max, counts: DashMap::new() })
    }

    /// A place for `key`, unless it already holds `max`.
    pub fn take(self: &Arc<Self>, key: &K) -> Option<Slot<K>> {
        let mut n = self.counts.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        drop(n);
        Some(Slot { budget: self.clone(), key: key.clone() })
    }

    /// Places `key` holds now.
    pub fn held(&self, key: &K) -> usize {
        self.counts.get(key).map(|n| *n).unwrap_or(0)
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        if let Some(mut n) = self.budget.counts.get_mut(&self.key) {
            *n -= 1;
        }
        // Keys with nothing held go, so the table only holds keys in use.
        self.budget.counts.remove_if(&self.key, |_, n| *n == 0);
    }
}

/// Every budget of a server: the server-wide places and the caps per key.
pub struct Budgets {
    /// Public visitors in flight (`maxVisitors`).
    pub visitors: Arc<Semaphore>,
    /// Access-client streams in flight, apart from public visitors (`maxAccessStreams`).
    pub access_streams: Arc<Semaphore>,
    /// Connections in their handshake, per source address.
    pub handshakes_per_source: Arc<KeyedBudget<IpAddr>>,
    /// Established sessions (agents and access clients), per source address.
    pub sessions_per_source: Arc<KeyedBudget<IpAddr>>,
    /// Access-client sessions, per tunnel.
    pub access_sessions_per_tunnel: Arc<KeyedBudget<Uuid>>,
    /// Streams in flight, per tunnel: public visitors of the tunnel, and streams of the
    /// tunnel's access clients.
    pub streams_per_tunnel: Arc<KeyedBudget<Uuid>>,
    /// Public visitors in flight, per source address.
    pub visitors_per_source: Arc<KeyedBudget<IpAddr>>,
    /// UDP flows of public UDP entrypoints, per source address (over every UDP entrypoint).
    pub udp_flows_per_source: Arc<KeyedBudget<IpAddr>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_key_and_given_back() {
        let b = KeyedBudget::<u8>::new(2);
        let (a1, a2) = (b.take(&1).unwrap(), b.take(&1).unwrap());
        assert!(b.take(&1).is_none(), "key 1 is full");
        let _other = b.take(&2).expect("another key has its own share");
        drop(a1);
        assert_eq!(b.held(&1), 1);
        assert!(b.take(&1).is_some());
        drop(a2);
        assert_eq!(b.counts.len(), 1, "keys with nothing held leave the table");
    }
}
