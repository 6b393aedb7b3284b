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
use tokio_util::sync::CancellationToken;
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
    /// Connections in their handshake: in all, per source address and per network prefix.
    pub handshakes: Arc<Handshakes>,
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

/// The network prefix an address is counted in: `/v4` bits of an IPv4 address (an
/// IPv4-mapped IPv6 one too), `/v6` bits of an IPv6 address.
pub fn prefix_of(ip: IpAddr, v4: u8, v6: u8) -> ipnet::IpNet {
    let ip = match ip {
        IpAddr::V6(v6addr) => v6addr.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        other => other,
    };
    let net = match ip {
        IpAddr::V4(a) => ipnet::IpNet::V4(ipnet::Ipv4Net::new(a, v4.min(32)).expect("a prefix length of at most 32")),
        IpAddr::V6(a) => ipnet::IpNet::V6(ipnet::Ipv6Net::new(a, v6.min(128)).expect("a prefix length of at most 128")),
    };
    net.trunc()
}

/// The places of connections in their relay handshake: at most `max` in all, `per_source`
/// per address and `per_prefix` per network prefix (`/24`, `/64` by default). The pool is
/// shared fairly: when it is full, a connection from a prefix that holds fewer places than the
/// largest holder takes the oldest place of that holder, whose connection is then dropped. So
/// many addresses of one network, or many networks each holding a share, cannot keep a client
/// from elsewhere out.
pub struct Handshakes {
    max: usize,
    per_prefix: usize,
    prefix_bits: (u8, u8),
    per_source: Arc<KeyedBudget<IpAddr>>,
    state: std::sync::Mutex<HandshakeState>,
}

#[derive(Default)]
struct HandshakeState {
    total: usize,
    next: u64,
    by_prefix: std::collections::HashMap<ipnet::IpNet, std::collections::VecDeque<(u64, CancellationToken)>>,
}

/// A connection's place among the handshakes; given back when dropped. `evicted` is
/// cancelled when a fairer claimant took it: the connection is then dropped.
pub struct HandshakePlace {
    handshakes: Arc<Handshakes>,
    prefix: ipnet::IpNet,
    id: u64,
    _source: Slot<IpAddr>,
    /// Cancelled when the place was given to another connection.
    pub evicted: CancellationToken,
}

/// Why a connection got no handshake place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoPlace {
    /// Its address holds all it may.
    #[error("too many handshakes from this address")]
    Source,
    /// Its network prefix holds all it may.
    #[error("too many handshakes from this network")]
    Prefix,
    /// Every place is taken, and its prefix already holds as many as any other.
    #[error("too many sessions in their handshake")]
    Full,
}

impl Handshakes {
    /// `max` places in all, `per_source` per address, `per_prefix` per prefix of
    /// `prefix_bits` (IPv4, IPv6) bits.
    pub fn new(max: usize, per_source: usize, per_prefix: usize, prefix_bits: (u8, u8)) -> Arc<Handshakes> {
        Arc::new(Handshakes {
            max,
            per_prefix,
            prefix_bits,
            per_source: KeyedBudget::new(per_source),
            state: Default::default(),
        })
    }

    /// The per-address budget (which the cluster's peer port shares).
    pub fn per_source(&self) -> &Arc<KeyedBudget<IpAddr>> {
        &self.per_source
    }

    /// A place for a connection from `ip`; see the type's documentation.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Result<HandshakePlace, NoPlace> {
        let source = self.per_source.take(&ip).ok_or(NoPlace::Source)?;
        let prefix = prefix_of(ip, self.prefix_bits.0, self.prefix_bits.1);
        let mut guard = self.state.lock().expect("handshakes lock");
        let state = &mut *guard;
        let held = state.by_prefix.get(&prefix).map_or(0, |q| q.len());
        if held >= self.per_prefix {
            return Err(NoPlace::Prefix);
        }
        if state.total >= self.max {
            // The largest holder gives up its oldest place, if it holds more than this prefix
            // would after joining.
            let victim = state.by_prefix.iter().max_by_key(|(_, q)| q.len()).map(|(p, q)| (*p, q.len()));
            match victim {
                Some((victim, len)) if len > held + 1 => {
                    let queue = state.by_prefix.get_mut(&victim).expect("the largest holder");
                    if let Some((_, token)) = queue.pop_front() {
                        token.cancel();
                        state.total -= 1;
                    }
                    if queue.is_empty() {
                        state.by_prefix.remove(&victim);
                    }
                }
                _ => return Err(NoPlace::Full),
            }
        }
        state.total += 1;
        state.next += 1;
        let (id, evicted) = (state.next, CancellationToken::new());
        state.by_prefix.entry(prefix).or_default().push_back((id, evicted.clone()));
        Ok(HandshakePlace { handshakes: self.clone(), prefix, id, _source: source, evicted })
    }
}

impl Drop for HandshakePlace {
    fn drop(&mut self) {
        let Ok(mut guard) = self.handshakes.state.lock() else { return };
        let state = &mut *guard;
        let Some(queue) = state.by_prefix.get_mut(&self.prefix) else { return };
        // An evicted place was taken out when it was given away.
        if let Some(at) = queue.iter().position(|(id, _)| *id == self.id) {
            queue.remove(at);
            let empty = queue.is_empty();
            if empty {
                state.by_prefix.remove(&self.prefix);
            }
            state.total -= 1;
        }
    }
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

    #[test]
    fn a_full_handshake_pool_gives_the_largest_holders_oldest_place_to_a_newcomer() {
        let h = Handshakes::new(4, 16, 3, (24, 64));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a: Vec<_> = (1..=3).map(|n| h.take(ip(&format!("10.0.0.{n}"))).unwrap()).collect();
        assert_eq!(h.take(ip("10.0.0.9")).err(), Some(NoPlace::Prefix), "a /24 holds 3 at most");
        let b = h.take(ip("10.0.1.1")).unwrap();
        // Full (4): a newcomer from a third network takes 10.0.0.0/24's oldest place.
        let c = h.take(ip("10.0.2.1")).unwrap();
        assert!(a[0].evicted.is_cancelled() && !a[1].evicted.is_cancelled());
        // Now 2 + 1 + 1: a fourth network would leave the largest holder no better off than it.
        let d = h.take(ip("10.0.3.1")).expect("2 > 0 + 1: one more place moves");
        assert!(a[1].evicted.is_cancelled());
        assert_eq!(h.take(ip("10.0.4.1")).err(), Some(NoPlace::Full), "every network holds one: fair");
        drop((a, b, c, d));
        assert_eq!(h.state.lock().unwrap().total, 0, "every place given back once");
        assert!(h.state.lock().unwrap().by_prefix.is_empty());
        let v6 = Handshakes::new(8, 16, 2, (24, 64));
        let _p = (v6.take(ip("2001:db8::1")).unwrap(), v6.take(ip("2001:db8::2")).unwrap());
        assert_eq!(v6.take(ip("2001:db8::ffff")).err(), Some(NoPlace::Prefix), "one /64");
        assert!(v6.take(ip("2001:db8:0:1::1")).is_ok());
    }
}
