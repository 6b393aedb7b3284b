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

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::client::conn::http1::SendRequest;
use uuid::Uuid;

use tunnel_runtime::http::io::RequestBody;

/// Idle origin connections kept per (tunnel, host, session): as many as the requests a busy
/// host has in flight at once, so a burst does not open streams that its end then drops.
/// Each keeps its place in the tunnel's stream budget, which bounds them all.
pub const MAX_IDLE_PER_KEY: usize = 128;
/// How long an idle origin connection is kept: shorter than common origin keep-alive
/// timeouts (nginx 75 s), so the origin rarely closes one just as it is reused.
pub const IDLE_TIME: Duration = Duration::from_secs(30);

/// Which origin connections may serve a request: tunnel, host, the session carrying them
/// (so that reuse keeps the tunnel's round-robin among its sessions), and the visitor's
/// address. A stream names its visitor once, when it opens, and an agent may pass that on
/// to its target in a PROXY protocol header; so a connection opened for one address only
/// ever carries that address's requests, and what the origin is told is always true.
pub type Key = (Uuid, String, u64, std::net::IpAddr);

/// The connection half of an origin connection: the future that does its IO (hyper's
/// connection with upgrades, whose type cannot be named).
pub type Conn = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One origin connection. Its IO is done by whoever uses it, inline, rather than by a task
/// of its own: [`Origin::drive`] while a request goes out and its head comes back, and the
/// response body's polls after that (see `serve.rs`), so a request costs no hop between tasks.
pub struct Origin {
    /// The client side of the HTTP/1.1 connection over the stream.
    pub sender: SendRequest<RequestBody>,
    /// The connection's IO; `None` once it has ended.
    conn: Option<Conn>,
    /// Which session carries it.
    pub session_id: u64,
    agent: std::sync::Arc<crate::registry::AgentSession>,
    idle_since: Instant,
    /// Held for the life of the connection (the stream's place in its budgets).
    _hold: Box<dyn Send + Sync>,
}

impl Origin {
    /// A connection just opened; `hold` lives as long as it.
    pub fn new(
        sender: SendRequest<RequestBody>,
        conn: Conn,
        agent: std::sync::Arc<crate::registry::AgentSession>,
        hold: Box<dyn Send + Sync>,
    ) -> Origin {
        Origin { sender, conn: Some(conn), session_id: agent.id, agent, idle_since: Instant::now(), _hold: hold }
    }

    /// Whether it may take another request: open, and its session still in its pool.
    pub fn reusable(&self) -> bool {
        self.conn.is_some() && !self.sender.is_closed() && self.agent.is_live()
    }

    fn usable(&self, now: Instant) -> bool {
        self.conn.is_some() && !self.sender.is_closed() && now.duration_since(self.idle_since) < IDLE_TIME
    }

    /// Polls the connection's IO once; false once it has ended.
    pub fn poll_conn(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(conn) = self.conn.as_mut() {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                if let Err(err) = result {
                    tracing::debug!(%err, "origin connection ended");
                }
                self.conn = None;
            }
        }
        self.conn.is_some()
    }

    /// Awaits `fut` (a request on this connection) while doing the connection's IO.
    pub async fn drive<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            if self.poll_conn(cx) {
                // The IO may have completed the request.
                return fut.as_mut().poll(cx);
            }
            // The connection ended: the request resolves (with an error) on its next poll,
            // its other side being gone; ask for that poll now.
            match fut.as_mut().poll(cx) {
                Poll::Pending => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                ready => ready,
            }
        })
        .await
    }

    /// Waits until the connection can take a request, doing its IO; an error once it has
    /// ended (the origin or the agent closed it).
    pub async fn ready(&mut self) -> hyper::Result<()> {
        poll_fn(|cx| {
            if let Poll::Ready(r) = self.sender.poll_ready(cx) {
                return Poll::Ready(r);
            }
            let open = self.poll_conn(cx);
            match self.sender.poll_ready(cx) {
                Poll::Pending if !open => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                polled => polled,
            }
        })
        .await
    }

    /// Hands the connection's IO to a task of `life`'s own (an upgrade completes there); the
    /// hard stop ends it.
    pub fn detach(&mut self, life: &tunnel_runtime::Lifecycle) {
        if let Some(conn) = self.conn.take() {
            let hard = life.hard_stop().clone();
            life.tasks().spawn(async move {
                tokio::select! {
                    ended = conn => {
                        if let Err(err) = ended {
                            tracing::debug!(%err, "origin connection ended");
                        }
                    }
                    _ = hard.cancelled() => {}
                }
            });
        }
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
        if origin.sender.is_closed() || origin.conn.is_none() {
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
