//! The server end of a session's control stream: answers pings, says going-away when the
//! server stops, confirms the client's going-away; and the drain that follows.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tunnel_proto::channel::{Session, Stream};
use tunnel_proto::framed::{read_frame, write_frame};
use tunnel_proto::wire::Frame;

use crate::Shared;

/// How a session's control stream ended.
pub(crate) enum ControlOutcome {
    /// The server is shutting down and said going-away.
    ServerDraining,
    /// The client said going-away; confirmed.
    ClientLeaving,
    /// This session alone was ended by the server.
    Evicted,
    /// Dead or broken.
    Lost(String),
}

impl ControlOutcome {
    /// Whether streams in flight get to finish before the session closes.
    pub(super) fn drains(&self) -> bool {
        matches!(self, ControlOutcome::ServerDraining | ControlOutcome::ClientLeaving)
    }
}

impl std::fmt::Display for ControlOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlOutcome::ServerDraining => f.write_str("server shutting down"),
            ControlOutcome::ClientLeaving => f.write_str("client is going away"),
            ControlOutcome::Evicted => f.write_str("closed by the server"),
            ControlOutcome::Lost(why) => f.write_str(why),
        }
    }
}

/// Answers pings until the session ends, stays silent past the keepalive timeout, either side
/// says going-away (the client's is confirmed with a going-away of our own), or `token` (this
/// session's own) is cancelled.
pub(crate) async fn control_loop(
    shared: &Shared,
    session: &Arc<dyn Session>,
    mut control: Stream,
    token: &CancellationToken,
) -> ControlOutcome {
    let idle = shared.limits().keepalive_timeout;
    let stopping = shared.life.stopping();
    loop {
        let frame = tokio::select! {
            f = tokio::time::timeout(idle, read_frame(&mut control)) => f,
            _ = session.closed() => return ControlOutcome::Lost("session closed".to_owned()),
            _ = stopping.cancelled() => {
                let _ = write_frame(&mut control, &Frame::GoAway).await;
                return ControlOutcome::ServerDraining;
            }
            _ = token.cancelled() => return ControlOutcome::Evicted,
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

/// Waits until `idle` (no stream in flight), the session ends, the grace period passes, or
/// the hard stop (of the server or of this session).
pub(super) async fn drain(
    shared: &Shared,
    session: &Arc<dyn Session>,
    token: &CancellationToken,
    idle: impl std::future::Future<Output = ()>,
) {
    tokio::select! {
        _ = idle => {}
        _ = session.closed() => {}
        _ = token.cancelled() => {}
        _ = tokio::time::sleep(shared.limits().grace_period) => {}
    }
}
