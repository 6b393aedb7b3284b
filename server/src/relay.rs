//! The relay listener: sessions from agents and access clients.
//!
//! Life of a session: the transport is established, the client opens its control stream and
//! sends a hello, all within the handshake timeout. The server checks version, tunnel and
//! token, answers, and then either adds the session to its tunnel's pool (agent) or serves
//! the streams it opens (access client). The control stream answers pings; a session silent
//! for longer than the keepalive timeout is closed.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tunnel_proto::channel::{Incoming, Session, Stream};
use tunnel_proto::host;
use tunnel_proto::wire::{self, read_frame, write_frame, Frame, Hello, Network, Reply, Role, Status, StreamHeader};
use uuid::Uuid;

use crate::Shared;

/// Serves one accepted connection until its session ends.
pub(crate) async fn serve_session(shared: Arc<Shared>, incoming: Incoming, handshake_permit: OwnedSemaphorePermit) {
    let peer = incoming.peer_addr();
    let timeout = shared.config.limits.handshake_timeout;
    let handshake = async {
        let session = incoming.establish().await.map_err(|e| format!("transport handshake failed: {e}"))?;
        let mut control = match session.accept_stream().await {
            Ok(Some(s)) => s,
            Ok(None) => return Err("closed before its hello".to_owned()),
            Err(e) => return Err(format!("failed before its hello: {e}")),
        };
        match read_frame(&mut control).await {
            Ok(Frame::Hello(hello)) => Ok((session, control, hello)),
            Ok(other) => {
                let reply = Reply::new(Status::BAD_REQUEST, format!("expected a hello, got {:?}", other.kind()));
                let _ = write_frame(&mut control, &Frame::HelloReply(reply)).await;
                Err(format!("sent {:?} instead of a hello", other.kind()))
            }
            Err(err) => {
                let reply = Reply::new(Status::BAD_REQUEST, format!("malformed hello: {err}"));
                let _ = write_frame(&mut control, &Frame::HelloReply(reply)).await;
                Err(format!("malformed hello: {err}"))
            }
        }
    };
    let (session, mut control, hello) = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(parts)) => parts,
        Ok(Err(why)) => {
            tracing::debug!(%peer, "session refused: {why}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "session refused: no hello within {timeout:?}");
            return;
        }
    };
    drop(handshake_permit);
    if let Err(reply) = admit(&shared, &hello) {
        tracing::info!(%peer, tunnel = %hello.tunnel, status = reply.status.0, "session refused: {}", reply.message);
        let _ = write_frame(&mut control, &Frame::HelloReply(reply)).await;
        let _ = control.shutdown().await;
        // Let the reply leave before the connection goes.
        let _ = tokio::time::timeout(timeout, session.closed()).await;
        session.close();
        return;
    }
    match hello.role {
        Role::Agent => serve_agent(shared, session, control, hello).await,
        Role::Access => serve_access(shared, session, control, hello).await,
    }
}

/// Decides whether a hello is admitted. An unknown tunnel and a wrong token get the same
/// answer when tokens are configured, so the answer reveals neither.
fn admit(shared: &Shared, hello: &Hello) -> Result<(), Reply> {
    if hello.version != wire::VERSION {
        return Err(Reply::new(
            Status::BAD_REQUEST,
            format!("unsupported protocol version {}, this server speaks {}", hello.version, wire::VERSION),
        ));
    }
    let known = shared.config.direct || shared.config.ingress.knows(&hello.tunnel);
    let token_ok = shared.auth.admits(&hello.tunnel, &hello.token.0);
    if shared.auth.enabled() && !(known && token_ok) {
        return Err(Reply::new(Status::UNAUTHORIZED, "unauthorized: unknown tunnel or invalid token"));
    }
    if !known {
        return Err(Reply::new(
            Status::NOT_FOUND,
            format!("tunnel {} is in no ingress rule and direct routing is off", hello.tunnel),
        ));
    }
    if hello.role == Role::Agent && hello.networks == wire::Networks::NONE {
        return Err(Reply::new(Status::BAD_REQUEST, "agent serves no network (no rtcp or rudp service)"));
    }
    Ok(())
}

async fn serve_agent(shared: Arc<Shared>, session: Arc<dyn Session>, mut control: Stream, hello: Hello) {
    let limits = &shared.config.limits;
    let added = shared.registry.add(
        hello.tunnel,
        session.clone(),
        hello.networks,
        hello.weight,
        limits.max_streams_per_session,
        limits.max_sessions_per_tunnel,
    );
    let agent = match added {
        Ok(agent) => agent,
        Err(full) => {
            let _ =
                write_frame(&mut control, &Frame::HelloReply(Reply::new(Status::FORBIDDEN, full.to_string()))).await;
            let _ = tokio::time::timeout(limits.handshake_timeout, session.closed()).await;
            session.close();
            return;
        }
    };
    if write_frame(&mut control, &Frame::HelloReply(Reply::ok())).await.is_err() {
        shared.registry.remove(&hello.tunnel, agent.id);
        return;
    }
    let span = tracing::info_span!("session", id = agent.id, tunnel = %hello.tunnel, role = "agent", peer = %session.peer_addr());
    let _enter = span.enter();
    tracing::info!(sessions = shared.registry.session_count(&hello.tunnel), "agent joined");
    drop(_enter);
    let outcome = control_loop(&shared, &session, control).await;
    // No new streams from here on; the ones in flight may finish.
    shared.registry.remove(&hello.tunnel, agent.id);
    if outcome.drains() {
        drain(&shared, &session, agent.idle()).await;
    }
    session.close();
    let _enter = span.enter();
    tracing::info!(sessions = shared.registry.session_count(&hello.tunnel), "agent left: {outcome}");
}

async fn serve_access(shared: Arc<Shared>, session: Arc<dyn Session>, mut control: Stream, hello: Hello) {
    if write_frame(&mut control, &Frame::HelloReply(Reply::ok())).await.is_err() {
        return;
    }
    tracing::info!(tunnel = %hello.tunnel, peer = %session.peer_addr(), "access client connected");
    let max = shared.config.limits.max_streams_per_session;
    let budget = Arc::new(Semaphore::new(max));
    let accept = async {
        while let Ok(Some(mut stream)) = session.accept_stream().await {
            let Ok(permit) = budget.clone().try_acquire_owned() else {
                tokio::spawn(async move {
                    refuse(&mut stream, Status::UNAVAILABLE, "session is at its stream limit".into()).await;
                });
                continue;
            };
            let task_shared = shared.clone();
            shared.tasks.spawn(async move {
                serve_access_stream(task_shared, hello.tunnel, stream).await;
                drop(permit);
            });
        }
    };
    tokio::pin!(accept);
    let outcome = tokio::select! {
        outcome = control_loop(&shared, &session, control) => outcome,
        _ = &mut accept => ControlOutcome::Lost("session ended".to_owned()),
    };
    if outcome.drains() {
        let idle = async {
            let _ = budget.acquire_many(max as u32).await;
        };
        tokio::select! {
            _ = drain(&shared, &session, idle) => {}
            _ = &mut accept => {}
        }
    }
    session.close();
    tracing::info!(tunnel = %hello.tunnel, peer = %session.peer_addr(), "access client left: {outcome}");
}

/// Waits until `idle` (no stream in flight), the session ends, the grace period passes, or
/// the server's hard stop.
async fn drain(shared: &Shared, session: &Arc<dyn Session>, idle: impl std::future::Future<Output = ()>) {
    tokio::select! {
        _ = idle => {}
        _ = session.closed() => {}
        _ = shared.hard_stop.cancelled() => {}
        _ = tokio::time::sleep(shared.config.limits.grace_period) => {}
    }
}

/// How a session's control stream ended.
enum ControlOutcome {
    /// The server is shutting down and said going-away.
    ServerDraining,
    /// The client said going-away; confirmed.
    ClientLeaving,
    /// Dead or broken.
    Lost(String),
}

impl ControlOutcome {
    /// Whether streams in flight get to finish before the session closes.
    fn drains(&self) -> bool {
        !matches!(self, ControlOutcome::Lost(_))
    }
}

impl std::fmt::Display for ControlOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlOutcome::ServerDraining => f.write_str("server shutting down"),
            ControlOutcome::ClientLeaving => f.write_str("client is going away"),
            ControlOutcome::Lost(why) => f.write_str(why),
        }
    }
}

/// Answers pings until the session ends, stays silent past the keepalive timeout, or either
/// side says going-away (the client's is confirmed with a going-away of our own).
async fn control_loop(shared: &Shared, session: &Arc<dyn Session>, mut control: Stream) -> ControlOutcome {
    let idle = shared.config.limits.keepalive_timeout;
    let shutdown = shared.shutdown.clone();
    loop {
        let frame = tokio::select! {
            f = tokio::time::timeout(idle, read_frame(&mut control)) => f,
            _ = session.closed() => return ControlOutcome::Lost("session closed".to_owned()),
            _ = shutdown.cancelled() => {
                let _ = write_frame(&mut control, &Frame::GoAway).await;
                return ControlOutcome::ServerDraining;
            }
        };
        match frame {
            Ok(Ok(Frame::Ping(v))) => {
                if let Err(err) = write_frame(&mut control, &Frame::Pong(v)).await {
                    return ControlOutcome::Lost(format!("control stream failed: {err}"));
                }
            }
            Ok(Ok(Frame::GoAway)) => {
                let _ = write_frame(&mut control, &Frame::GoAway).await;
                return ControlOutcome::ClientLeaving;
            }
            Ok(Ok(other)) => return ControlOutcome::Lost(format!("unexpected {:?} on control stream", other.kind())),
            Ok(Err(err)) => return ControlOutcome::Lost(format!("control stream ended: {err}")),
            Err(_) => return ControlOutcome::Lost(format!("no keepalive within {idle:?}")),
        }
    }
}

/// One stream from an access client: a visitor of the private entrypoint.
async fn serve_access_stream(shared: Arc<Shared>, access_tunnel: Uuid, mut stream: Stream) {
    let Ok(visitor_permit) = shared.visitors.clone().try_acquire_owned() else {
        let reply = Reply::new(Status::UNAVAILABLE, "server is at its visitor limit");
        let _ = write_frame(&mut stream, &Frame::StreamReply(reply)).await;
        return;
    };
    let header = match tokio::time::timeout(shared.config.limits.handshake_timeout, read_frame(&mut stream)).await {
        Ok(Ok(Frame::StreamHeader(h))) => h,
        Ok(Ok(other)) => {
            return refuse(
                &mut stream,
                Status::BAD_REQUEST,
                format!("expected a stream header, got {:?}", other.kind()),
            )
            .await
        }
        Ok(Err(err)) => {
            return refuse(&mut stream, Status::BAD_REQUEST, format!("malformed stream header: {err}")).await
        }
        Err(_) => return,
    };
    let target = match route_private(&shared, access_tunnel, &header) {
        Ok(t) => t,
        Err(reply) => {
            tracing::info!(tunnel = %access_tunnel, host = %header.hostname, "private stream refused: {}", reply.message);
            let _ = write_frame(&mut stream, &Frame::StreamReply(reply)).await;
            return;
        }
    };
    let header = StreamHeader { hostname: canonical_or_empty(&header.hostname), ..header };
    match shared.registry.open(&target, &header, &[], shared.config.limits.reply_timeouts()).await {
        Ok(mut agent) => {
            if write_frame(&mut stream, &Frame::StreamReply(Reply::ok())).await.is_err() {
                return;
            }
            let _ = tunnel_proto::pump::pump(&mut stream, &mut agent.stream).await;
            drop(agent.permit);
        }
        Err(reply) => {
            tracing::info!(tunnel = %target, host = %header.hostname, status = reply.status.0, "private stream failed: {}", reply.message);
            let _ = write_frame(&mut stream, &Frame::StreamReply(reply)).await;
        }
    }
    drop(visitor_permit);
}

async fn refuse(stream: &mut Stream, status: Status, message: String) {
    tracing::debug!(status = status.0, "access stream refused: {message}");
    let _ = write_frame(stream, &Frame::StreamReply(Reply::new(status, message))).await;
}

fn canonical_or_empty(raw: &str) -> String {
    host::canonicalize(raw).unwrap_or_default()
}

/// The private entrypoint's routing: a rule for the hostname must name the access client's
/// tunnel (private or not); otherwise direct routing reaches the tunnel by ID.
fn route_private(shared: &Shared, tunnel: Uuid, header: &StreamHeader) -> Result<Uuid, Reply> {
    if header.network != Network::Tcp && header.network != Network::Udp {
        return Err(Reply::new(Status::BAD_REQUEST, "unknown network"));
    }
    let host = if header.hostname.is_empty() {
        None
    } else {
        Some(
            host::canonicalize(&header.hostname)
                .map_err(|e| Reply::new(Status::BAD_REQUEST, format!("invalid hostname: {e}")))?,
        )
    };
    if let Some(rule) = host.as_deref().and_then(|h| shared.config.ingress.lookup(h)) {
        if rule.tunnel == tunnel {
            return Ok(tunnel);
        }
    }
    if shared.config.direct {
        return Ok(tunnel);
    }
    Err(match host {
        Some(h) => Reply::new(Status::NOT_FOUND, format!("no ingress rule routes {h:?} to tunnel {tunnel}")),
        None => Reply::new(Status::BAD_REQUEST, "no hostname given and direct routing is off"),
    })
}
