//! Public entrypoints: visitors from the internet.
//!
//! Life of a visitor: admitted ([`crate::visit`]: the server's visitor limit and its source
//! address's); its hostname is sniffed from the HTTP `Host` header or the TLS SNI (or fixed,
//! on a raw entrypoint) by the shared visitor path ([`tunnel_runtime::visitor`]); an HTTP
//! visitor goes to [`crate::http`], every other one to [`Shared::visit`], which routes it
//! (public rules without a path, on a host with no protected rule), opens a stream to one of
//! the tunnel's agents with the header and the sniffed bytes at once, and counts it; then
//! bytes flow both ways until both sides are done. A visitor that cannot be routed gets an
//! HTTP error response when it spoke HTTP, and a close otherwise.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;
use tunnel_proto::pump::accept_until;
use tunnel_proto::wire::{Network, Reply, Status};
use tunnel_runtime::proxy_protocol;
use tunnel_runtime::visitor::{self, Named, Speaks, Unnamed};

use crate::http::HttpOptions;
use crate::routing::Reach;
use crate::visit::{Admission, Door, Visitor};
use crate::Shared;

/// Accepts visitors on one entrypoint until shutdown. With a listener for each thread (see
/// [`tunnel_proto::socket::tcp_listener_group`]) each thread accepts its own visitors and
/// serves them where they were accepted; a single listener hands its visitors to the threads
/// in turn.
pub(crate) async fn run(
    shared: Arc<Shared>,
    listeners: Vec<std::net::TcpListener>,
    raw_host: Option<String>,
    label: Arc<str>,
    options: Arc<HttpOptions>,
) {
    let spread = listeners.len() == 1;
    let mut loops = tokio::task::JoinSet::new();
    for (index, listener) in listeners.into_iter().enumerate() {
        let accepting = accept(shared.clone(), listener, raw_host.clone(), label.clone(), options.clone(), spread);
        match tunnel_runtime::threads::handle(index) {
            Some(thread) if !spread => loops.spawn_on(accepting, thread),
            _ => loops.spawn(accepting),
        };
    }
    while loops.join_next().await.is_some() {}
}

/// One listener's accept loop; its visitors are served on this thread, or spread over the
/// threads with `spread`.
async fn accept(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    raw_host: Option<String>,
    label: Arc<str>,
    options: Arc<HttpOptions>,
    spread: bool,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => return tracing::error!(%err, entrypoint = %label, "entrypoint listener could not be registered"),
    };
    let spread = spread.then(tunnel_runtime::threads::Spread::new);
    loop {
        let Some((tcp, peer)) = accept_until(shared.life.stopping(), "entrypoint", || listener.accept()).await else {
            return;
        };
        let peer = tunnel_proto::socket::canonical_peer(peer);
        // A load balancer sending the PROXY protocol is counted by the visitor it names.
        let behind_balancer = options.proxy_protocol && options.trusts(peer.ip());
        let source = (!behind_balancer).then(|| peer.ip());
        let mut admission = match shared.admit(Door::Entrypoint, &label, source) {
            Ok(admission) => admission,
            Err(refusal) => {
                tracing::debug!(%peer, reason = refusal.reason(), "visitor refused");
                continue;
            }
        };
        tunnel_proto::pump::tune_accepted(&tcp);
        let task_shared = shared.clone();
        let (raw_host, label, options) = (raw_host.clone(), label.clone(), options.clone());
        let span = tracing::debug_span!("visitor", %peer);
        let serve = move |mut tcp: TcpStream| {
            async move {
                let shared = task_shared;
                let peer = match behind_balancer {
                    false => peer,
                    true => match behind(&shared, &mut tcp, peer, &mut admission, &label).await {
                        Some(visitor) => visitor,
                        None => return,
                    },
                };
                let outcome = serve_visitor(&shared, tcp, peer, raw_host, options, Vec::new()).await;
                shared.visited(Door::Entrypoint, &label, outcome);
                drop(admission);
            }
            .instrument(span)
        };
        match &spread {
            Some(spread) => spread.spawn_moved(shared.life.tasks(), tcp, serve),
            None => drop(shared.life.tasks().spawn(serve(tcp))),
        }
    }
}

/// Serves a visitor of the relay port shared with an entrypoint (`sharePort`), whose first
/// bytes (`read`, not a relay ClientHello) were read to tell: as a visitor of a sniffing
/// entrypoint, under the same budgets.
pub(crate) async fn serve_shared(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, read: Vec<u8>) {
    let label = "relay";
    let _admission = match shared.admit(Door::Entrypoint, label, Some(peer.ip())) {
        Ok(admission) => admission,
        Err(refusal) => return tracing::debug!(%peer, reason = refusal.reason(), "visitor refused"),
    };
    let options = Arc::new(HttpOptions { reuse_origins: true, ..HttpOptions::default() });
    let outcome = serve_visitor(&shared, tcp, peer, None, options, read).await;
    shared.visited(Door::Entrypoint, label, outcome);
}

/// Reads the PROXY protocol header a trusted balancer at `balancer` sends first, and takes a
/// place in the budget of the visitor it names; `None` (the connection is closed, and the
/// visitor counted as refused) when the header is missing, bad or slow, names no visitor, or
/// the visitor is over its budget.
async fn behind(
    shared: &Shared,
    tcp: &mut TcpStream,
    balancer: SocketAddr,
    admission: &mut Admission,
    label: &str,
) -> Option<SocketAddr> {
    let timeout = shared.limits().sniff_timeout;
    let reply = |why: String| Reply::new(Status::BAD_REQUEST, why);
    let visitor = match proxy_protocol::read_header(tcp, timeout).await {
        Ok(Some(visitor)) => visitor,
        Ok(None) => {
            tracing::debug!(%balancer, "PROXY protocol header without a visitor (a health check): closed");
            shared.visited(Door::Entrypoint, label, "refused");
            return None;
        }
        Err(err) => {
            visitor::log_refusal(balancer, "", &reply(err.to_string()), "the balancer's connection is closed");
            shared.visited(Door::Entrypoint, label, "refused");
            return None;
        }
    };
    match shared.admit_source(admission, Door::Entrypoint, label, visitor.ip()) {
        Ok(()) => Some(visitor),
        Err(refusal) => {
            tracing::debug!(%visitor, %balancer, reason = refusal.reason(), "visitor refused");
            None
        }
    }
}

/// Serves one visitor; returns its outcome for the metrics: `served`, `refused` or `left`.
async fn serve_visitor(
    shared: &Arc<Shared>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    raw_host: Option<String>,
    options: Arc<HttpOptions>,
    read: Vec<u8>,
) -> &'static str {
    let limits = shared.limits();
    let Named { host, prefix, speaks } = match raw_host {
        Some(host) => Named { host, prefix: read, speaks: Speaks::Other },
        None => match visitor::sniff_host_after(&mut tcp, read, limits.sniff_timeout, limits.sniff_max_bytes).await {
            Ok(named) => named,
            Err(Unnamed::Left(err)) => {
                tracing::debug!(%peer, %err, "visitor left before naming a host");
                return "left";
            }
            Err(Unnamed::Refuse(speaks, reply)) => {
                visitor::refuse(tcp, peer, speaks, "", reply, "").await;
                return "refused";
            }
        },
    };
    if speaks == Speaks::Http {
        if options.tls {
            let reply = Reply::new(Status::BAD_REQUEST, "plain HTTP was sent to an HTTPS port");
            visitor::refuse(tcp, peer, speaks, &host, reply, "").await;
            return "refused";
        }
        // Every request is routed on its own, by its own target.
        // Boxed: a raw visitor's task does not reserve room for an HTTP connection's state.
        return Box::pin(crate::http::serve(shared.clone(), tcp, prefix, peer, options, None)).await;
    }
    if options.tls && speaks == Speaks::Other && shared.edge.takes(&shared.routes(), &host, &prefix) {
        // Terminated here, then served as HTTP (or a CA's validation answered); other hosts
        // pass through below.
        return Box::pin(crate::https::serve(shared.clone(), tcp, prefix, host, peer, options)).await;
    }
    let visitor = Visitor {
        door: Door::Entrypoint,
        peer,
        host: &host,
        reach: Reach::Public { path: None },
        network: Network::Tcp,
        forwarded_for: Some(peer),
    };
    let mut opened = match shared.visit(&visitor, &prefix).await {
        Ok((_, opened)) => opened,
        Err(refusal) => {
            visitor::refuse(tcp, peer, speaks, &host, refusal.reply, &refusal.detail).await;
            return "refused";
        }
    };
    let prefix_len = prefix.len();
    drop(prefix); // sent with the header; not kept for the life of the visitor
    tracing::debug!(%peer, %host, tunnel = %opened.tunnel, session = opened.agent.session_id, "visitor connected");
    // The sniffed bytes went out with the header: they count as the visitor's.
    let sent = prefix_len as u64;
    let cut = opened.cut();
    let pumped = tokio::select! {
        biased;
        () = cut => Err(std::io::Error::other("cut: a reload no longer routes the host here")),
        pumped = tunnel_proto::pump::pump_tcp(&mut tcp, &mut opened.agent.stream) => pumped,
    };
    match pumped {
        Ok((up, down)) => {
            opened.carried(shared, up + sent, down);
            tracing::debug!(%peer, %host, up, down, "visitor done");
        }
        Err(err) => {
            tracing::debug!(%peer, %host, %err, "visitor stream failed");
            tunnel_proto::pump::reset(tcp);
        }
    }
    "served"
}
