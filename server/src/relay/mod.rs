//! The relay listener: sessions from agents and access clients.
//!
//! Life of a session: the transport is established, the client opens its control stream and
//! sends a hello, all within the handshake timeout. [`crate::routing::Routes::admit`] checks
//! version, tunnel and token; the server answers, and then either adds the session to its
//! tunnel's pool ([`agent`]) or serves the streams it opens ([`access`]). The control stream
//! ([`control`]) answers pings; a session silent for longer than the keepalive timeout is
//! closed. Each session has a token of its own, so it can be ended alone.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tunnel_proto::channel::{Incoming, Session, Stream};
use tunnel_proto::framed::{read_frame, write_frame};
use tunnel_proto::wire::{Frame, Hello, Reply, Role, Status};
use tunnel_runtime::visitor::LogBudget;

use crate::Shared;

/// The info-level budget of session refusal lines (a flood of bad hellos must not flood the
/// log).
static REFUSALS: LogBudget = LogBudget::new();

mod access;
mod agent;
pub(crate) mod control;

/// An access-client session, as the API lists it and a reload checks it.
pub(crate) struct AccessRecord {
    /// Its hello (tunnel and token).
    pub(crate) hello: Hello,
    /// The client's address.
    pub(crate) peer: std::net::SocketAddr,
    /// When it was admitted.
    pub(crate) since: std::time::SystemTime,
    /// Ends this session alone.
    pub(crate) token: tokio_util::sync::CancellationToken,
    /// Its stream budget: streams in flight are what is taken from it.
    pub(crate) budget: Arc<tokio::sync::Semaphore>,
    /// The budget's size.
    pub(crate) max_streams: usize,
}

/// The access-client sessions of a server, by a number of their own.
#[derive(Default)]
pub(crate) struct AccessSessions {
    by_id: dashmap::DashMap<u64, AccessRecord>,
    next: std::sync::atomic::AtomicU64,
}

impl AccessSessions {
    /// Adds a session; returns its number.
    pub(crate) fn insert(&self, record: AccessRecord) -> u64 {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        self.by_id.insert(id, record);
        id
    }

    /// Removes session `id`.
    pub(crate) fn remove(&self, id: u64) {
        self.by_id.remove(&id);
    }

    /// The sessions now.
    pub(crate) fn iter(&self) -> impl Iterator<Item = dashmap::mapref::multiple::RefMulti<'_, u64, AccessRecord>> {
        self.by_id.iter()
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// The `transport` label of this server's sessions.
pub(crate) fn transport_label(shared: &Shared) -> &'static str {
    shared.config.transport.scheme().strip_prefix("relay+").unwrap_or("tcp")
}

/// A connection's places among the handshakes in progress (the server's, its address's and
/// its network's), given back when the hello has been read or the handshake failed.
pub(crate) type HandshakeSlots = crate::budget::HandshakePlace;

/// Serves one accepted connection until its session ends.
pub(crate) async fn serve_session(shared: Arc<Shared>, incoming: Incoming, slots: HandshakeSlots) {
    let peer = incoming.peer_addr();
    let timeout = shared.limits().handshake_timeout;
    // A real client speaks at once; an idle connection gives its slots back early.
    let first = tunnel_proto::defaults::FIRST_BYTES_TIMEOUT.min(timeout);
    if !matches!(tokio::time::timeout(first, incoming.readable()).await, Ok(Ok(()))) {
        shared.metrics.handshake_failed("silent");
        return tracing::debug!(%peer, reason = "nothing sent in time", ?first, "session refused");
    }
    let evicted = slots.evicted.clone();
    let handshake = tokio::select! {
        done = tokio::time::timeout(timeout, handshake(incoming)) => done,
        _ = evicted.cancelled() => {
            shared.metrics.handshake_failed("evicted");
            return tracing::debug!(%peer, "session refused: its handshake place went to a connection from a network holding fewer");
        }
    };
    let (session, mut control, hello) = match handshake {
        Ok(Ok(parts)) => parts,
        Ok(Err(why)) => {
            shared.metrics.handshake_failed("malformed");
            return tracing::debug!(%peer, reason = %why, "session refused");
        }
        Err(_) => {
            shared.metrics.handshake_failed("timeout");
            return tracing::debug!(%peer, reason = "no hello in time", ?timeout, "session refused");
        }
    };
    drop(slots);
    if let Err(err) = shared.routes().admit(&hello) {
        let status = err.status().0;
        shared.metrics.handshake_failed(err.label());
        match REFUSALS.take() {
            Some(suppressed) => {
                tracing::info!(%peer, tunnel = %hello.tunnel, status, reason = %err, suppressed, "session refused")
            }
            None => tracing::debug!(%peer, tunnel = %hello.tunnel, status, reason = %err, "session refused"),
        }
        refuse(&shared, &session, &mut control, Reply::new(err.status(), err.to_string())).await;
        return;
    }
    let Some(_source) = shared.budgets.sessions_per_source.take(&peer.ip()) else {
        shared.metrics.handshake_failed("per_source");
        let reply = Reply::new(Status::FORBIDDEN, "too many sessions from this address");
        tracing::debug!(%peer, tunnel = %hello.tunnel, "session refused: too many sessions from this address");
        return refuse(&shared, &session, &mut control, reply).await;
    };
    if hello.role == Role::Agent && !hello.hostname.is_empty() {
        // The store's calls block: off the visitors' threads.
        let (claiming, tunnel, asked) = (shared.clone(), hello.tunnel, hello.hostname.clone());
        let claimed = tokio::task::spawn_blocking(move || crate::tunnels::claim(&claiming, tunnel, &asked)).await;
        match claimed {
            Ok(Ok(_)) => {}
            Ok(Err(why)) => {
                shared.metrics.handshake_failed("hostname");
                tracing::info!(%peer, tunnel = %hello.tunnel, hostname = %hello.hostname, reason = %why, "session refused");
                return refuse(&shared, &session, &mut control, Reply::new(Status(409), why)).await;
            }
            Err(_) => {
                return refuse(&shared, &session, &mut control, Reply::new(Status::UNAVAILABLE, "try again")).await
            }
        }
    }
    match hello.role {
        Role::Agent => agent::serve(shared, session, control, hello).await,
        Role::Access => access::serve(shared, session, control, hello).await,
    }
}

/// The transport handshake, the control stream and the hello.
async fn handshake(incoming: Incoming) -> Result<(Arc<dyn Session>, Stream, Hello), String> {
    let session = incoming.establish().await.map_err(|e| format!("transport handshake failed: {e}"))?;
    let mut control = match session.accept_stream().await {
        Ok(Some(s)) => s,
        Ok(None) => return Err("closed before its hello".to_owned()),
        Err(e) => return Err(format!("failed before its hello: {e}")),
    };
    let why = match read_frame(&mut control).await {
        Ok(Frame::Hello(hello)) => return Ok((session, control, hello)),
        Ok(other) => format!("expected a hello, got {:?}", other.kind()),
        Err(err) => format!("malformed hello: {err}"),
    };
    let _ = write_frame(&mut control, &Frame::HelloReply(Reply::new(Status::BAD_REQUEST, why.clone()))).await;
    Err(why)
}

/// Answers a hello with a refusal and closes the session once the answer has left.
async fn refuse(shared: &Shared, session: &Arc<dyn Session>, control: &mut Stream, reply: Reply) {
    let _ = write_frame(control, &Frame::HelloReply(reply)).await;
    let _ = control.shutdown().await;
    // Let the reply leave before the connection goes.
    let _ = tokio::time::timeout(shared.limits().handshake_timeout, session.closed()).await;
    session.close();
}
