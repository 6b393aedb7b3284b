//! One stream from the server: read its header, pick the target, dial it, answer, relay.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::Instrument;
use tunnel_proto::channel::Stream;
use tunnel_proto::framed::{read_frame, write_frame};
use tunnel_proto::wire::{Frame, Network, Reply, Status};

use crate::{Shared, Target};

/// A stream whose target is not connected within this time is acknowledged with a provisional
/// reply; the server presumes a session that stays silent much longer dead (its `ackTimeout`).
const ACK_DELAY: Duration = Duration::from_millis(100);

pub(crate) async fn serve(shared: Arc<Shared>, mut stream: Stream) {
    let limits = &shared.config.limits;
    let header = match tokio::time::timeout(limits.handshake_timeout, read_frame(&mut stream)).await {
        Ok(Ok(Frame::StreamHeader(h))) => h,
        Ok(Ok(other)) => {
            let why = format!("expected a stream header, got {:?}", other.kind());
            return answer(&mut stream, Reply::new(Status::BAD_REQUEST, why)).await;
        }
        Ok(Err(err)) => {
            let why = format!("malformed stream header: {err}");
            return answer(&mut stream, Reply::new(Status::BAD_REQUEST, why)).await;
        }
        Err(_) => return,
    };
    let Some(target) = shared.targets.select(&header) else {
        let host = if header.hostname.is_empty() { "(none)" } else { &header.hostname };
        tracing::info!(host, network = %header.network, "no target for stream");
        shared.metrics.stream("(none)", "no_target");
        let why = format!("agent has no {} target for host {host}", header.network);
        return answer(&mut stream, Reply::new(Status::NOT_FOUND, why)).await;
    };
    let span = tracing::debug_span!("stream", host = header.hostname.as_str(), target = %target.name, visitor = ?header.visitor);
    match header.network {
        Network::Tcp => serve_tcp(&shared, stream, target).instrument(span).await,
        Network::Udp => crate::udp::serve(&shared, stream, target).instrument(span).await,
    }
}

async fn serve_tcp(shared: &Shared, mut stream: Stream, target: &Target) {
    let timeout = shared.config.limits.dial_timeout;
    let started = std::time::Instant::now();
    let dial = tokio::time::timeout(timeout, TcpStream::connect(&target.addr));
    tokio::pin!(dial);
    let dialed = match tokio::time::timeout(ACK_DELAY, &mut dial).await {
        Ok(dialed) => dialed,
        Err(_) => {
            // A slow dial: acknowledge now, so the server knows this session is alive (and the
            // mux counts the stream as accepted), then keep waiting for the target.
            if write_frame(&mut stream, &Frame::StreamReply(Reply::new(Status::CONTINUE, ""))).await.is_err() {
                return;
            }
            dial.await
        }
    };
    let mut tcp = match dialed {
        Ok(Ok(tcp)) => {
            shared.metrics.dial_seconds.observe(started.elapsed().as_secs_f64());
            shared.metrics.stream(&target.name, "ok");
            tcp
        }
        Ok(Err(err)) => {
            shared.metrics.stream(&target.name, "refused");
            tracing::info!(target = %target.name, addr = %target.addr, %err, "target dial failed");
            let why = format!("target {} is unreachable: {}", target.name, err.kind());
            return answer(&mut stream, Reply::new(Status::BAD_GATEWAY, why)).await;
        }
        Err(_) => {
            shared.metrics.stream(&target.name, "timeout");
            tracing::info!(target = %target.name, addr = %target.addr, "target dial timed out");
            let why = format!("target {} did not answer within {timeout:?}", target.name);
            return answer(&mut stream, Reply::new(Status::GATEWAY_TIMEOUT, why)).await;
        }
    };
    tunnel_proto::pump::tune_tcp(&tcp);
    if write_frame(&mut stream, &Frame::StreamReply(Reply::ok())).await.is_err() {
        return;
    }
    match tunnel_proto::pump::pump_tcp(&mut tcp, &mut stream).await {
        Ok((down, up)) => tracing::debug!(down, up, "stream done"),
        Err(err) => {
            tracing::debug!(%err, "stream failed");
            tunnel_proto::pump::reset(tcp);
        }
    }
}

/// Answers a stream with a final reply and ends it.
pub(crate) async fn answer(stream: &mut Stream, reply: Reply) {
    let _ = write_frame(stream, &Frame::StreamReply(reply)).await;
    let _ = tokio::io::AsyncWriteExt::shutdown(stream).await;
}
