//! Which replica holds agent sessions for which tunnel.
//!
//! [`Presence`] is what the visitor path asks: synchronous, from memory. The single-node
//! default is [`Alone`]: no other replica, nothing to ask. A cluster's [`Directory`] is a cache
//! of every replica's published [`Record`], kept by the Redis task (`super::redis`); local
//! pool changes reach that task through [`Presence::changed`], which never waits.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use tokio::sync::Notify;
use tunnel_proto::wire::{Network, Networks};
use uuid::Uuid;

/// What one replica publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// Its name.
    pub name: String,
    /// Its peer address.
    pub peer: SocketAddr,
    /// The hash of the configuration it runs (ingress, tokens, direct routing).
    pub config: String,
    /// Tunnels it holds agent sessions for, and the networks they serve (bit set).
    pub tunnels: BTreeMap<Uuid, u8>,
}

/// Another replica that holds sessions of a tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its name.
    pub name: String,
    /// Where to dial it.
    pub peer: SocketAddr,
}

/// Tunnel presence as the visitor path sees it.
pub trait Presence: Send + Sync {
    /// Other replicas holding sessions of `tunnel` that serve `network`, in a stable order.
    fn holders(&self, tunnel: &Uuid, network: Network) -> Vec<Holder>;
    /// The local pool of `tunnel` changed (synchronous: the change is published later).
    fn changed(&self, tunnel: Uuid);
}

/// One replica alone: nobody else holds anything.
pub struct Alone;

impl Presence for Alone {
    fn holders(&self, _: &Uuid, _: Network) -> Vec<Holder> {
        Vec::new()
    }

    fn changed(&self, _: Uuid) {}
}

/// The other replicas' records, as last read from Redis, and the health of that link.
pub struct Directory {
    own: String,
    own_peer: SocketAddr,
    own_config: RwLock<String>,
    replicas: RwLock<HashMap<String, Record>>,
    /// Whether Redis answers (forwarding is off while it does not).
    up: AtomicBool,
    /// The last Redis error, for `/readyz`.
    last_error: Mutex<Option<String>>,
    /// Set by every local change; the Redis task publishes once per wake-up.
    dirty: AtomicBool,
    pub(super) wake: Notify,
    /// Replica configurations already warned about (name, hash).
    warned: Mutex<std::collections::HashSet<(String, String)>>,
}

impl Directory {
    /// An empty directory for replica `own` at `own_peer` running configuration `config`.
    pub fn new(own: String, own_peer: SocketAddr, config: String) -> Directory {
        Directory {
            own,
            own_peer,
            own_config: RwLock::new(config),
            replicas: RwLock::default(),
            up: AtomicBool::new(false),
            last_error: Mutex::new(Some("not connected to Redis yet".into())),
            dirty: AtomicBool::new(true),
            wake: Notify::new(),
            warned: Mutex::default(),
        }
    }

    /// This replica's name.
    pub fn own(&self) -> &str {
        &self.own
    }

    /// This replica's advertised peer address.
    pub fn own_peer(&self) -> SocketAddr {
        self.own_peer
    }

    /// The hash of this replica's configuration.
    pub fn own_config(&self) -> String {
        self.own_config.read().expect("config lock").clone()
    }

    /// A reload applied another configuration.
    pub fn set_own_config(&self, hash: String) {
        *self.own_config.write().expect("config lock") = hash;
        self.mark_dirty();
    }

    /// Whether Redis answered last time.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Redis answers again.
    pub(super) fn set_up(&self) {
        self.up.store(true, Ordering::Relaxed);
        *self.last_error.lock().expect("error lock") = None;
    }

    /// Redis failed: forget what others hold (no forwarding on stale presence) and say why.
    pub(super) fn set_down(&self, why: String) {
        self.up.store(false, Ordering::Relaxed);
        self.replicas.write().expect("replicas lock").clear();
        *self.last_error.lock().expect("error lock") = Some(why);
    }

    /// The last Redis error, while Redis is down.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("error lock").clone()
    }

    pub(super) fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Whether a publish is due (and clears the mark).
    pub(super) fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    /// Replaces every other replica's record (a full read).
    pub(super) fn replace_all(&self, records: Vec<Record>) {
        let mut map = HashMap::new();
        for r in records {
            if r.name != self.own {
                self.check_config(&r);
                map.insert(r.name.clone(), r);
            }
        }
        let mut replicas = self.replicas.write().expect("replicas lock");
        for (name, old) in replicas.iter() {
            if !map.contains_key(name) {
                tracing::info!(replica = %name, tunnels = 0, peer = %old.peer, "cluster: replica gone (its lease expired or it left)");
            }
        }
        for (name, new) in &map {
            if replicas.get(name).is_none_or(|old| old.tunnels != new.tunnels) {
                tracing::info!(replica = %name, tunnels = new.tunnels.len(), peer = %new.peer, "cluster: replica's tunnels changed");
            }
        }
        *replicas = map;
    }

    /// Sets or (with `None`) removes one replica's record.
    pub(super) fn update(&self, name: &str, record: Option<Record>) {
        if name == self.own {
            return;
        }
        let mut replicas = self.replicas.write().expect("replicas lock");
        match record {
            Some(r) => {
                self.check_config(&r);
                if replicas.get(name).is_none_or(|old| old.tunnels != r.tunnels) {
                    tracing::info!(replica = %name, tunnels = r.tunnels.len(), peer = %r.peer, "cluster: replica's tunnels changed");
                }
                replicas.insert(name.to_owned(), r);
            }
            None => {
                if let Some(old) = replicas.remove(name) {
                    tracing::info!(replica = %name, tunnels = 0, peer = %old.peer, "cluster: replica gone (its lease expired or it left)");
                }
            }
        }
    }

    /// Logs once per replica and configuration hash that differs from ours.
    fn check_config(&self, r: &Record) {
        let own = self.own_config();
        if r.config == own {
            return;
        }
        if self.warned.lock().expect("warned lock").insert((r.name.clone(), r.config.clone())) {
            tracing::warn!(replica = %r.name, theirs = %r.config, ours = %own, "replica runs another configuration (ingress rules, tokens or direct routing differ)");
        }
    }

    /// The other replicas' records, by name.
    pub fn replicas(&self) -> Vec<Record> {
        let mut all: Vec<Record> = self.replicas.read().expect("replicas lock").values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Names of replicas whose configuration differs from ours.
    pub fn disagreeing(&self) -> Vec<String> {
        let own = self.own_config();
        self.replicas().into_iter().filter(|r| r.config != own).map(|r| r.name).collect()
    }
}

impl Presence for Directory {
    fn holders(&self, tunnel: &Uuid, network: Network) -> Vec<Holder> {
        if !self.is_up() {
            return Vec::new();
        }
        let replicas = self.replicas.read().expect("replicas lock");
        let mut found: Vec<Holder> = replicas
            .values()
            .filter(|r| r.peer != self.own_peer)
            .filter(|r| r.tunnels.get(tunnel).is_some_and(|bits| networks(*bits).contains(network)))
            .map(|r| Holder { name: r.name.clone(), peer: r.peer })
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found
    }

    fn changed(&self, _: Uuid) {
        self.mark_dirty();
    }
}

fn networks(bits: u8) -> Networks {
    let mut n = Networks::NONE;
    for net in [Network::Tcp, Network::Udp] {
        if Networks::NONE.with(net).bits() & bits != 0 {
            n = n.with(net);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, peer: &str, tunnels: &[(Uuid, u8)]) -> Record {
        Record {
            name: name.into(),
            peer: peer.parse().unwrap(),
            config: "c1".into(),
            tunnels: tunnels.iter().copied().collect(),
        }
    }

    #[test]
    fn holders_come_from_other_replicas_serving_the_network_while_redis_is_up() {
        let t = Uuid::from_u128(7);
        let d = Directory::new("a".into(), "127.0.0.1:1".parse().unwrap(), "c1".into());
        d.replace_all(vec![
            record("a", "127.0.0.1:1", &[(t, 1)]),
            record("c", "127.0.0.3:1", &[(t, 3)]),
            record("b", "127.0.0.2:1", &[(t, 1)]),
            record("ghost", "127.0.0.1:1", &[(t, 1)]),
        ]);
        assert!(d.holders(&t, Network::Tcp).is_empty(), "nothing while Redis is down");
        d.set_up();
        let names = |n| d.holders(&t, n).into_iter().map(|h| h.name).collect::<Vec<_>>();
        assert_eq!(names(Network::Tcp), ["b", "c"], "not itself, nor a record with its own address");
        assert_eq!(names(Network::Udp), ["c"]);
        d.update("b", None);
        assert_eq!(names(Network::Tcp), ["c"]);
        d.set_down("gone".into());
        d.set_up();
        assert!(names(Network::Tcp).is_empty(), "a Redis failure forgets the others");
    }

    #[test]
    fn a_replica_with_another_configuration_is_listed() {
        let d = Directory::new("a".into(), "127.0.0.1:1".parse().unwrap(), "c1".into());
        let mut other = record("b", "127.0.0.2:1", &[]);
        other.config = "c2".into();
        d.replace_all(vec![other, record("c", "127.0.0.3:1", &[])]);
        assert_eq!(d.disagreeing(), ["b"]);
    }
}
