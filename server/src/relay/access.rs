//! Access-client sessions: the private entrypoint. Each stream the client opens is a visitor:
//! its header names a hostname, [`crate::routing::Routes::route_private`] decides whether
//! this client's tunnel may reach it, and the registry carries it to an agent.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tracing::Instrument;
use tunnel_proto::channel::{Inbound, Session, Stream};
use tunnel_proto::framed::{read_frame, write_frame};
use tunnel_proto::wire::{Frame, Hello, Reply, Scope, Status, StreamHeader};
use uuid::Uuid;

use super::control::{control_loop, drain, ControlOutcome};
use super::{transport_label, AccessRecord};
use crate::metrics::SessionLabels;
use crate::routing::carried;
use crate::Shared;

pub(super) async fn serve(shared: Arc<Shared>, session: Arc<dyn Session>, mut control: Stream, hello: Hello) {
    let Some(_tunnel_slot) = shared.budgets.access_sessions_per_tunnel.take(&hello.tunnel) else {
        let reply = Reply::new(Status::FORBIDDEN, "tunnel has too many access sessions");
        tracing::debug!(tunnel = %hello.tunnel, peer = %session.peer_addr(), "session refused: tunnel has too many access sessions");
        return super::refuse(&shared, &session, &mut control, reply).await;
    };
    session.set_inbound(Inbound::Any);
    if write_frame(&mut control, &Frame::HelloReply(Reply::ok())).await.is_err() {
        return;
    }
    let span = tracing::info_span!("session", tunnel = %hello.tunnel, role = "access", peer = %session.peer_addr());
    span.in_scope(|| tracing::info!("access client connected"));
    let token = shared.life.session_token();
    let max = shared.limits().max_streams_per_session;
    let budget = Arc::new(Semaphore::new(max));
    let id = shared.next_access_id.fetch_add(1, Ordering::Relaxed) + 1;
    let record = AccessRecord {
        hello: hello.clone(),
        peer: session.peer_addr(),
        since: std::time::SystemTime::now(),
        token: token.clone(),
        budget: budget.clone(),
        max_streams: max,
    };
    shared.access_sessions.insert(id, record);
    let gauge = SessionLabels {
        tunnel: shared.tunnel_label(&hello.tunnel),
        role: "access",
        transport: transport_label(&shared),
    };
    shared.metrics.sessions.get_or_create(&gauge).inc();
    let accept = async {
        while let Ok(Some(mut stream)) = session.accept_stream().await {
            // Three budgets: the session's, the tunnel's (all its access clients and public
            // visitors), and the server's for access streams, apart from public visitors.
            let admitted = match budget.clone().try_acquire_owned() {
                Err(_) => Err("session is at its stream limit"),
                Ok(permit) => match shared.budgets.streams_per_tunnel.take(&hello.tunnel) {
                    None => Err("tunnel is at its stream limit"),
                    Some(slot) => match shared.access_streams.clone().try_acquire_owned() {
                        Err(_) => Err("server is at its access stream limit"),
                        Ok(server) => Ok((permit, slot, server)),
                    },
                },
            };
            let held = match admitted {
                Ok(held) => held,
                Err(why) => {
                    tokio::spawn(async move { refuse(&mut stream, Reply::new(Status::UNAVAILABLE, why)).await });
                    continue;
                }
            };
            let task_shared = shared.clone();
            let span = tracing::debug_span!(parent: &span, "stream");
            shared.life.tasks().spawn(
                async move {
                    serve_stream(task_shared, hello.tunnel, stream).await;
                    drop(held);
                }
                .instrument(span),
            );
        }
    };
    tokio::pin!(accept);
    let outcome = tokio::select! {
        outcome = control_loop(&shared, &session, control, &token) => outcome,
        _ = &mut accept => ControlOutcome::Lost("session ended".to_owned()),
    };
    if outcome.drains() {
        let idle = async {
            let _ = budget.acquire_many(max as u32).await;
        };
        tokio::select! {
            _ = drain(&shared, &session, &token, idle) => {}
            _ = &mut accept => {}
        }
    }
    session.close();
    shared.access_sessions.remove(&id);
    shared.metrics.sessions.get_or_create(&gauge).dec();
    span.in_scope(|| tracing::info!(reason = %outcome, "access client left"));
}

/// One stream from an access client: a visitor of the private entrypoint.
async fn serve_stream(shared: Arc<Shared>, access_tunnel: Uuid, mut stream: Stream) {
    let limits = shared.limits();
    let header = match tokio::time::timeout(limits.handshake_timeout, read_frame(&mut stream)).await {
        Ok(Ok(Frame::StreamHeader(h))) => h,
        Ok(Ok(other)) => {
            let why = format!("expected a stream header, got {:?}", other.kind());
            return refuse(&mut stream, Reply::new(Status::BAD_REQUEST, why)).await;
        }
        Ok(Err(err)) => {
            let why = format!("malformed stream header: {err}");
            return refuse(&mut stream, Reply::new(Status::BAD_REQUEST, why)).await;
        }
        Err(_) => return,
    };
    if !carried(header.network) {
        return refuse(&mut stream, Reply::new(Status::BAD_REQUEST, "unknown network")).await;
    }
    let route = match shared.routes.snapshot().route_private(access_tunnel, &header.hostname) {
        Ok(route) => route,
        Err(err) => {
            tracing::info!(tunnel = %access_tunnel, host = header.hostname.as_str(), status = err.status().0, reason = %err, "private stream refused");
            let _ = write_frame(&mut stream, &Frame::StreamReply(Reply::new(err.status(), err.to_string()))).await;
            return;
        }
    };
    let header = StreamHeader { hostname: route.host, ..header };
    let label = shared.tunnel_label(&route.tunnel);
    match shared
        .open(&route.tunnel, Scope::Private(access_tunnel), None, &[], &header, &[], limits.reply_timeouts())
        .await
    {
        Ok(mut agent) => {
            shared.metrics.opened(&label);
            if write_frame(&mut stream, &Frame::StreamReply(Reply::ok())).await.is_err() {
                return;
            }
            if let Ok((from_visitor, to_visitor)) = tunnel_proto::pump::pump(&mut stream, &mut agent.stream).await {
                shared.metrics.carried(&label, from_visitor, to_visitor);
            }
        }
        Err(err) => {
            shared.metrics.failed(&label, err.status().0);
            let reply = err.reply_for_tunnel(&route.tunnel);
            tracing::info!(tunnel = %route.tunnel, host = header.hostname.as_str(), status = reply.status.0, reason = %reply.message, "private stream failed");
            let _ = write_frame(&mut stream, &Frame::StreamReply(reply)).await;
        }
    }
}

async fn refuse(stream: &mut Stream, reply: Reply) {
    tracing::debug!(status = reply.status.0, reason = %reply.message, "access stream refused");
    let _ = write_frame(stream, &Frame::StreamReply(reply)).await;
}
