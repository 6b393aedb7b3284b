//! Plain-HTTP visitors of a sniffing listener, served by hyper request by request.
//!
//! Each request names its own host ([`target::request_host`]; ambiguous ones get 400) and
//! travels on a stream of its own that names that host, so the server checks every request
//! against its rules (`route_private`): a second request on a keep-alive connection cannot
//! ride the first one's stream to another host. The origin receives the request in origin
//! form with `Host` set to the routed host, over HTTP/1.1 (HTTP/2 visitors with prior
//! knowledge included). An `Upgrade` (WebSocket) that the origin accepts with 101 becomes a
//! byte pump.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tunnel_proto::wire::{Frame, Network, Reply, Status, StreamHeader};
use tunnel_runtime::http::io::Prefixed;
use tunnel_runtime::http::{proxy, target};
use tunnel_runtime::visitor;

use crate::{admin, current_session, open_stream, Shared};

type Out = tunnel_runtime::http::Body;

/// Serves one HTTP visitor whose first bytes (`prefix`) were read by the sniffer.
pub(crate) async fn serve(shared: Arc<Shared>, tcp: TcpStream, prefix: Vec<u8>, peer: SocketAddr) {
    let limits = &shared.config.limits;
    let builder = tunnel_runtime::http::visitor_server(limits.sniff_timeout, limits.sniff_max_bytes);
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, peer, req).await) }
    });
    let io = TokioIo::new(Prefixed::new(prefix, tcp));
    if let Err(err) = builder.serve_connection_with_upgrades(io, svc).await {
        tracing::debug!(%peer, %err, "HTTP visitor connection ended");
    }
}

async fn handle(shared: &Shared, peer: SocketAddr, mut req: Request<Incoming>) -> Response<Out> {
    let host = match target::request_host(&req) {
        Ok(host) => host,
        Err(err) => return error(peer, "", Reply::new(Status::BAD_REQUEST, err.to_string())),
    };
    let Ok(permit) = shared.streams.clone().try_acquire_owned() else {
        let why = "too many connections through this access client at once";
        return error(peer, &host, Reply::new(Status::UNAVAILABLE, why));
    };
    let Some(session) = current_session(shared).await else {
        let why = format!("not connected to the server at {}", shared.config.relay.describe_servers());
        return error(peer, &host, Reply::new(Status::UNAVAILABLE, why));
    };
    let header = StreamHeader { network: Network::Tcp, hostname: host.clone(), visitor: Some(peer) };
    let stream = match open_stream(shared, session.as_ref(), &Frame::StreamHeader(header).to_vec()).await {
        Ok(stream) => stream,
        Err(reply) => {
            shared.metrics.failures.get_or_create(&admin::StatusLabel { status: reply.status.0 }).inc();
            return error(peer, &host, reply);
        }
    };
    shared.metrics.streams.inc();
    let (mut sender, conn) = match hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(err) => return error(peer, &host, Reply::new(Status::BAD_GATEWAY, format!("origin handshake: {err}"))),
    };
    shared.tasks.spawn(async move {
        if let Err(err) = conn.with_upgrades().await {
            tracing::debug!(%err, "origin connection ended");
        }
        drop(permit);
    });
    let upgrading = proxy::takes_upgrade(&req);
    let visitor_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
    let Ok(host_value) = hyper::header::HeaderValue::from_str(&host) else {
        return error(peer, &host, Reply::new(Status::BAD_REQUEST, "bad host"));
    };
    proxy::to_origin(&mut req, &host_value, upgrading);
    tracing::debug!(%peer, %host, method = %req.method(), path = %req.uri().path(), "request");
    let mut resp = match sender.send_request(req).await {
        Ok(resp) => resp,
        Err(err) => return error(peer, &host, Reply::new(Status::BAD_GATEWAY, format!("the origin failed: {err}"))),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(visitor_upgrade) = visitor_upgrade {
            let origin_upgrade = hyper::upgrade::on(&mut resp);
            shared.tasks.spawn(proxy::pump_upgraded(visitor_upgrade, origin_upgrade, sender));
        }
        return resp.map(|_| Empty::new().map_err(|never| match never {}).boxed_unsync());
    }
    proxy::strip_hop_by_hop(resp.headers_mut(), false);
    // The origin connection ends with its response: `sender` goes with this scope, and the
    // connection task closes the stream once the body has been read.
    resp.map(|body| body.boxed_unsync())
}

/// An answer from the access client itself, logged as refusals are.
fn error(peer: SocketAddr, host: &str, reply: Reply) -> Response<Out> {
    visitor::log_refusal(peer, host, &reply, "");
    tunnel_runtime::http::error_reply(reply.status, &reply.message).0
}
