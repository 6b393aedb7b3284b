//! One stream from the server: read its header, ask for its targets, dial them in turn until
//! one answers, write the PROXY protocol header if the target wants one, answer, relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::Instrument;
use tunnel_proto::channel::Stream;
use tunnel_proto::framed::{read_stream_header, refuse, write_frame};
use tunnel_proto::wire::{Frame, Network, Reply, Status};

use crate::proxy_protocol::{self, ProxyVersion};
use crate::target::Candidate;
use crate::{Shared, Target};

/// A stream whose target is not connected within this time is acknowledged with a provisional
/// reply; the server presumes a session that stays silent much longer dead (its `ackTimeout`).
const ACK_DELAY: Duration = Duration::from_millis(100);

pub(crate) async fn serve(shared: Arc<Shared>, mut stream: Stream) {
    let limits = &shared.config.limits;
    let pick = |frame| match frame {
        Frame::StreamHeader(h) => Ok(h),
        other => Err(other),
    };
    let Ok(header) = read_stream_header(&mut stream, limits.handshake_timeout, pick).await else { return };
    let candidates = shared.targets.select(&header);
    if candidates.is_empty() {
        let host = if header.hostname.is_empty() { "(none)" } else { &header.hostname };
        tracing::info!(host, network = %header.network, "no target for stream");
        shared.metrics.stream("(none)", "no_target");
        let why = format!("agent has no {} target for host {host}", header.network);
        return refuse(&mut stream, Reply::new(Status::NOT_FOUND, why)).await;
    }
    let span = tracing::debug_span!("stream", host = header.hostname.as_str(), target = tracing::field::Empty, visitor = ?header.visitor);
    match header.network {
        Network::Tcp => serve_tcp(&shared, stream, &candidates, header.visitor).instrument(span).await,
        // Boxed: a TCP stream's task does not reserve room for a UDP flow's state.
        Network::Udp => Box::pin(crate::udp::serve(&shared, stream, candidates[0].target)).instrument(span).await,
    }
}

/// Why no target of a stream could be dialed: the last attempt's failure.
enum DialFailure {
    Refused(String, std::io::Error),
    Timeout(String),
}

async fn serve_tcp(shared: &Shared, mut stream: Stream, candidates: &[Candidate<'_>], visitor: Option<SocketAddr>) {
    // On the heap, and gone once dialed: the stream's task does not keep room for it while
    // it relays.
    let dialed = {
        let mut dial = Box::pin(dial_any(shared, candidates));
        let first = tokio::time::timeout(ACK_DELAY, &mut dial).await;
        match first {
            Ok(dialed) => dialed,
            Err(_) => {
                // A slow dial: acknowledge now, so the server knows this session is alive (and
                // the mux counts the stream as accepted), then keep waiting for the target.
                let ack = Frame::StreamReply(Reply::new(Status::CONTINUE, ""));
                if write_frame(&mut stream, &ack).await.is_err() {
                    return;
                }
                dial.await
            }
        }
    };
    let tried = candidates.len();
    let (mut tcp, target) = match dialed {
        Ok(dialed) => dialed,
        Err(DialFailure::Refused(name, err)) => {
            let why = format!("target {name} is unreachable: {}{}", err.kind(), tried_note(tried));
            return refuse(&mut stream, Reply::new(Status::BAD_GATEWAY, why)).await;
        }
        Err(DialFailure::Timeout(name)) => {
            let timeout = shared.config.limits.dial_timeout;
            let why = format!("target {name} did not answer within {timeout:?}{}", tried_note(tried));
            return refuse(&mut stream, Reply::new(Status::GATEWAY_TIMEOUT, why)).await;
        }
    };
    tracing::Span::current().record("target", target.name.as_str());
    tunnel_proto::pump::tune_tcp(&tcp);
    if let Some(version) = target.proxy_protocol {
        if let Err(err) = write_proxy_header(&mut tcp, version, visitor).await {
            tracing::info!(target = %target.name, %err, "cannot write the PROXY protocol header");
            let why = format!("target {} closed before the PROXY protocol header", target.name);
            return refuse(&mut stream, Reply::new(Status::BAD_GATEWAY, why)).await;
        }
    }
    if let Some(tls) = &target.tls {
        // A target that only speaks TLS: the handshake, verified as configured, before the
        // stream is acknowledged, so a failure is the visitor's 502 with the reason.
        let timeout = shared.config.limits.handshake_timeout;
        let handshake = tls.connector.connect(tls.server_name.clone(), tcp);
        let mut tls_stream = match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                tracing::info!(target = %target.name, %err, "TLS handshake with the target failed");
                let why = format!("target {}: TLS handshake failed: {err}", target.name);
                return refuse(&mut stream, Reply::new(Status::BAD_GATEWAY, why)).await;
            }
            Err(_) => {
                tracing::info!(target = %target.name, "TLS handshake with the target timed out");
                let why = format!("target {}: TLS handshake did not finish within {timeout:?}", target.name);
                return refuse(&mut stream, Reply::new(Status::GATEWAY_TIMEOUT, why)).await;
            }
        };
        if write_frame(&mut stream, &Frame::StreamReply(Reply::ok())).await.is_err() {
            return;
        }
        match tunnel_proto::pump::pump(&mut tls_stream, &mut stream).await {
            Ok((down, up)) => tracing::debug!(target = %target.name, down, up, "stream done"),
            Err(err) => tracing::debug!(target = %target.name, %err, "stream failed"),
        }
        return;
    }
    if write_frame(&mut stream, &Frame::StreamReply(Reply::ok())).await.is_err() {
        return;
    }
    match tunnel_proto::pump::pump_tcp(&mut tcp, &mut stream).await {
        Ok((down, up)) => tracing::debug!(target = %target.name, down, up, "stream done"),
        Err(err) => {
            tracing::debug!(target = %target.name, %err, "stream failed");
            tunnel_proto::pump::reset(tcp);
        }
    }
}

fn tried_note(tried: usize) -> String {
    if tried > 1 {
        format!(" (and the {} other targets for this host failed too)", tried - 1)
    } else {
        String::new()
    }
}

/// Dials the candidates in order, each under the dial timeout, until one answers; each
/// outcome is reported to the target's health. Nothing has reached the visitor yet, so a
/// failed dial is simply retried on the next.
async fn dial_any<'a>(
    shared: &Shared,
    candidates: &'a [Candidate<'a>],
) -> Result<(TcpStream, &'a Target), DialFailure> {
    let timeout = shared.config.limits.dial_timeout;
    let mut last = DialFailure::Timeout(String::new());
    for c in candidates {
        let target = c.target;
        let started = std::time::Instant::now();
        match tokio::time::timeout(timeout, TcpStream::connect(&target.addr)).await {
            Ok(Ok(tcp)) => {
                c.succeeded();
                shared.metrics.dial_seconds.observe(started.elapsed().as_secs_f64());
                shared.metrics.stream(&target.name, "ok");
                return Ok((tcp, target));
            }
            Ok(Err(err)) => {
                c.failed();
                shared.metrics.stream(&target.name, "refused");
                tracing::info!(target = %target.name, addr = %target.addr, %err, "target dial failed");
                last = DialFailure::Refused(target.name.clone(), err);
            }
            Err(_) => {
                c.failed();
                shared.metrics.stream(&target.name, "timeout");
                tracing::info!(target = %target.name, addr = %target.addr, "target dial timed out");
                last = DialFailure::Timeout(target.name.clone());
            }
        }
    }
    Err(last)
}

/// Writes the PROXY protocol header for `visitor` before any byte of the stream.
async fn write_proxy_header(
    tcp: &mut TcpStream,
    version: ProxyVersion,
    visitor: Option<SocketAddr>,
) -> std::io::Result<()> {
    let header = proxy_protocol::header(version, visitor, tcp.peer_addr()?)?;
    tcp.write_all(&header).await
}
