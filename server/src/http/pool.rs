//! Origin connections kept for reuse: HTTP/1.1 client connections over tunnel streams, idle
//! ones pooled per (tunnel, host).
//!
//! A connection is taken for one request and given back once its response body has been read
//! to the end; one that the origin or the agent closed is dropped. At most
//! [`MAX_IDLE_PER_KEY`] wait per key, none longer than [`IDLE_TIME`]; each keeps its place in
//! the tunnel's stream budget while it lives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;
use uuid::Uuid;

use tunnel_runtime::http::io::Counted;

/// Idle origin connections kept per (tunnel, host): enough for a burst of short requests
/// without keeping a stream per past visitor.
pub const MAX_IDLE_PER_KEY: usize = 16;
/// How long an idle origin connection is kept: shorter than common origin keep-alive
/// timeouts (nginx 75 s), so the origin rarely closes one just as it is reused.
pub const IDLE_TIME: Duration = Duration::from_secs(30);

/// Which origin connections may serve a request: tunnel, host, and the session carrying
/// them (so that reuse keeps the tunnel's round-robin among its sessions).
pub type Key = (Uuid, String, u64);

/// One origin connection.
pub struct Origin {
    /// The client side of the HTTP/1.1 connection over the stream.
    pub sender: SendRequest<Counted>,
    /// Which session carries it (for the logs).
    pub session_id: u64,
    idle_since: Instant,
}

impl Origin {
    /// A connection just opened.
    pub fn new(sender: SendRequest<Counted>, session_id: u64) -> Origin {
        Origin { sender, session_id, idle_since: Instant::now() }
    }

    fn usable(&self, now: Instant) -> bool {
        !self.sender.is_closed() && now.duration_since(self.idle_since) < IDLE_TIME
    }
}

/// The idle origin connections of the server.
#[derive(Default)]
pub struct OriginPool {
    idle: Mutex<HashMap<Key, Vec<Origin>>>,
}

impl OriginPool {
    /// An idle connection for `key` that is still open, the most recently used first.
    pub fn take(&self, key: &Key) -> Option<Origin> {
        let now = Instant::now();
        let mut idle = self.idle.lock().expect("origin pool lock");
        let list = idle.get_mut(key)?;
        let found = loop {
            match list.pop() {
                Some(o) if o.usable(now) => break Some(o),
                Some(_) => continue,
                None => break None,
            }
        };
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    /// Gives a connection back after a complete response, unless it is closed or `live` says
    /// its session has left the pool. `live` is asked under the pool's lock, so a session
    /// that leaves (and then calls [`OriginPool::drop_session`]) keeps nothing here.
    pub fn put(&self, key: Key, mut origin: Origin, live: impl FnOnce() -> bool) {
        if origin.sender.is_closed() {
            return;
        }
        origin.idle_since = Instant::now();
        let mut idle = self.idle.lock().expect("origin pool lock");
        if !live() {
            return;
        }
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_KEY {
            list.push(origin);
        }
    }

    /// Drops connections idle for too long or closed.
    pub fn expire(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock().expect("origin pool lock");
        idle.retain(|_, list| {
            list.retain(|o| o.usable(now));
            !list.is_empty()
        });
    }

    /// Drops the idle connections carried by session `id`: it left its pool (drained, closed
    /// or found dead), and its idle streams would hold its drain or fail the next request.
    pub fn drop_session(&self, id: u64) {
        self.idle.lock().expect("origin pool lock").retain(|key, _| key.2 != id);
    }

    /// Drops every idle connection.
    pub fn clear(&self) {
        self.idle.lock().expect("origin pool lock").clear();
    }
}

/// Expires idle connections every few seconds until `stop`.
pub async fn run_expiry(pool: Arc<OriginPool>, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(IDLE_TIME / 6);
    loop {
        tokio::select! {
            _ = tick.tick() => pool.expire(),
            _ = stop.cancelled() => {
                pool.clear();
                return;
            }
        }
    }
}
