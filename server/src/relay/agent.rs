//! Agent sessions: joining the tunnel's pool, serving the control stream, leaving.

use std::sync::Arc;

use tunnel_proto::channel::{Inbound, Session, Stream};
use tunnel_proto::framed::write_frame;
use tunnel_proto::wire::{Frame, Hello, Reply, Status};

use super::control::{control_loop, drain};
use super::transport_label;
use crate::metrics::SessionLabels;
use crate::registry::Join;
use crate::Shared;

pub(super) async fn serve(shared: Arc<Shared>, session: Arc<dyn Session>, mut control: Stream, hello: Hello) {
    // The server opens an agent session's streams; any the agent opens is reset.
    session.set_inbound(Inbound::Refuse);
    let limits = shared.limits();
    let join = Join {
        networks: hello.networks,
        weight: hello.weight,
        credential: hello.token.clone(),
        max_streams: limits.max_streams_per_session,
        max_sessions: limits.max_sessions_per_tunnel,
    };
    let keep = shared.routes().ingress.knows(&hello.tunnel);
    let token = shared.life.session_token();
    let agent = match shared.registry.join(hello.tunnel, session.clone(), join, token.clone(), keep) {
        Ok(agent) => agent,
        Err(full) => {
            shared.metrics.handshake_failed("pool_full");
            tracing::info!(tunnel = %hello.tunnel, peer = %session.peer_addr(), reason = %full, "session refused");
            super::refuse(&shared, &session, &mut control, Reply::new(Status::FORBIDDEN, full.to_string())).await;
            return;
        }
    };
    if write_frame(&mut control, &Frame::HelloReply(Reply::ok())).await.is_err() {
        shared.registry.leave(&hello.tunnel, agent.id);
        return;
    }
    let span = tracing::info_span!("session", id = agent.id, tunnel = %hello.tunnel, role = "agent", peer = %session.peer_addr());
    span.in_scope(|| {
        tracing::info!(sessions = shared.registry.session_count(&hello.tunnel), thread = agent.home, "agent joined")
    });
    let gauge = SessionLabels {
        tunnel: shared.tunnel_label(&hello.tunnel),
        role: "agent",
        transport: transport_label(&shared),
    };
    shared.metrics.sessions.get_or_create(&gauge).inc();
    let outcome = control_loop(&shared, &session, control, &token).await;
    // No new streams from here on; the ones in flight may finish.
    shared.registry.leave(&hello.tunnel, agent.id);
    if !hello.hostname.is_empty() {
        // The hostname it asked for goes with the tunnel's last agent.
        let (releasing, tunnel) = (shared.clone(), hello.tunnel);
        drop(tokio::task::spawn_blocking(move || crate::tunnels::release(&releasing, tunnel)));
    }
    if outcome.drains() {
        drain(&shared, &session, &token, agent.idle()).await;
    }
    session.close();
    shared.metrics.sessions.get_or_create(&gauge).dec();
    span.in_scope(
        || tracing::info!(sessions = shared.registry.session_count(&hello.tunnel), reason = %outcome, "agent left"),
    );
}
