//! Access-client sessions: the private entrypoint. Each stream the client opens is a visitor
//! of [`Door::Access`] ([`crate::visit`]): admitted under the session's stream budget and the
//! server's access streams, its header names a hostname, the routing decision says whether
//! this client's tunnel may reach it, and it is opened under the tunnel's stream budget and
//! counted like any other visitor.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tracing::Instrument;
use tunnel_proto::channel::{Inbound, Session, Stream};
use tunnel_proto::framed::{read_stream_header, refuse, write_frame};
use tunnel_proto::wire::{Frame, Hello, Reply, Status};
use uuid::Uuid;

use super::control::{control_loop, drain, ControlOutcome};
use super::{transport_label, AccessRecord};
use crate::metrics::SessionLabels;
use crate::routing::{carried, Reach};
use crate::visit::{Door, Visitor};
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
    let record = AccessRecord {
        hello: hello.clone(),
        peer: session.peer_addr(),
        since: std::time::SystemTime::now(),
        token: token.clone(),
        budget: budget.clone(),
        max_streams: max,
    };
    let id = shared.access.insert(record);
    let gauge = SessionLabels {
        tunnel: shared.tunnel_label(&hello.tunnel),
        role: "access",
        transport: transport_label(&shared),
    };
    shared.metrics.sessions.get_or_create(&gauge).inc();
    let accept = async {
        while let Ok(Some(mut stream)) = session.accept_stream().await {
            // Three budgets before the header is read: the session's, the server's for access
            // streams (apart from public visitors), and its tunnel's (its access clients and
            // public visitors together).
            let admitted = match budget.clone().try_acquire_owned() {
                Err(_) => Err(Reply::new(Status::UNAVAILABLE, "session is at its stream limit")),
                Ok(permit) => {
                    let admitted = shared.admit(Door::Access, "", None).and_then(|mut admission| {
                        shared.admit_tunnel(&mut admission, &hello.tunnel).map(|()| admission)
                    });
                    match admitted {
                        Ok(admission) => Ok((permit, admission)),
                        Err(refusal) => Err(refusal.reply),
                    }
                }
            };
            let task_shared = shared.clone();
            let peer = session.peer_addr();
            let span = tracing::debug_span!(parent: &span, "stream");
            shared.life.tasks().spawn(
                async move {
                    match admitted {
                        Ok(held) => {
                            serve_stream(task_shared, hello.tunnel, peer, stream).await;
                            drop(held);
                        }
                        Err(reply) => {
                            tracing::debug!(status = reply.status.0, reason = %reply.message, "access stream refused");
                            refuse(&mut stream, reply).await;
                        }
                    }
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
    shared.access.remove(id);
    shared.metrics.sessions.get_or_create(&gauge).dec();
    span.in_scope(|| tracing::info!(reason = %outcome, "access client left"));
}

/// One stream from an access client of `access_tunnel`: a visitor of the private entrypoint.
async fn serve_stream(shared: Arc<Shared>, access_tunnel: Uuid, peer: SocketAddr, mut stream: Stream) {
    let timeout = shared.limits().handshake_timeout;
    let pick = |frame| match frame {
        Frame::StreamHeader(h) => Ok(h),
        other => Err(other),
    };
    let Ok(header) = read_stream_header(&mut stream, timeout, pick).await else { return };
    if !carried(header.network) {
        return refuse(&mut stream, Reply::new(Status::BAD_REQUEST, "unknown network")).await;
    }
    let visitor = Visitor {
        door: Door::Access,
        peer,
        host: &header.hostname,
        reach: Reach::Private { access: access_tunnel },
        network: header.network,
        forwarded_for: header.visitor,
    };
    let (host, mut opened) = match shared.visit(&visitor, &[]).await {
        Ok(visited) => visited,
        Err(refusal) => {
            let (status, reason) = (refusal.reply.status.0, refusal.reason().to_owned());
            tracing::info!(tunnel = %access_tunnel, host = header.hostname.as_str(), status, %reason, "private stream refused");
            return refuse(&mut stream, refusal.reply).await;
        }
    };
    if write_frame(&mut stream, &Frame::StreamReply(Reply::ok())).await.is_err() {
        return;
    }
    tracing::debug!(tunnel = %opened.tunnel, %host, "private stream connected");
    let cut = opened.cut();
    tokio::select! {
        biased;
        () = cut => tracing::debug!(tunnel = %opened.tunnel, %host, "private stream cut: a reload no longer routes it"),
        pumped = tunnel_proto::pump::pump(&mut stream, &mut opened.agent.stream) => {
            if let Ok((from_visitor, to_visitor)) = pumped {
                opened.carried(&shared, from_visitor, to_visitor);
            }
        }
    }
}
