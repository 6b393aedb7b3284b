//! Public UDP entrypoints (`udp://:5353/dns.example`): datagrams from the internet, one flow
//! per visitor address, each flow one stream to an agent serving UDP for the hostname.
//!
//! Life of a flow: the shared flow table ([`tunnel_runtime::udp::serve_flows`]) creates it on
//! the first datagram of a new visitor address (under `maxUdpFlows` for the entrypoint) and
//! queues what follows while the stream is being opened (a full queue drops, counted). The
//! [`Opener`] takes the flow's places in the budgets (the server's visitors, the source
//! address's `maxUdpFlowsPerSource`, the tunnel's streams), routes the hostname by the public
//! rules ([`crate::routing::Routes::route_public`]: private rules never), and opens a UDP
//! stream to one of the tunnel's agents with the visitor's address in the header and the first
//! datagram right behind it. Then datagrams go both ways as on an access client's listener;
//! the places are given back when the flow ends. A flow that cannot be routed or opened sends
//! nothing anywhere: it is one refusal line (under the refusal log budget) and a count.

mod config;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tunnel_proto::channel::Stream;
use tunnel_proto::datagram;
use tunnel_proto::wire::{Network, Reply, Scope, Status, StreamHeader};
use tunnel_runtime::udp::{serve_flows, FlowOpener, FlowOptions};
use tunnel_runtime::visitor;

pub use config::{parse, Invalid, Parsed, UdpEntrypoint};

use crate::budget::KeyedBudget;
use crate::Shared;

/// Binds every UDP entrypoint, in configuration order.
pub(crate) fn bind_all(entrypoints: &[UdpEntrypoint], reuse: bool) -> anyhow::Result<Vec<UdpSocket>> {
    entrypoints
        .iter()
        .map(|ep| {
            tunnel_proto::socket::udp_socket(ep.addr, reuse)
                .and_then(UdpSocket::from_std)
                .with_context(|| format!("cannot listen on entrypoint udp://{}", ep.addr))
        })
        .collect()
}

/// Serves each bound UDP entrypoint until stopping begins; returns their bound addresses.
pub(crate) fn spawn_all(
    shared: &Arc<Shared>,
    sockets: Vec<UdpSocket>,
    listeners: &mut JoinSet<()>,
) -> anyhow::Result<Vec<SocketAddr>> {
    let limits = &shared.config.limits;
    // One budget over every UDP entrypoint: a source's flows are counted wherever they are.
    let per_source = KeyedBudget::new(limits.max_udp_flows_per_source);
    let mut addrs = Vec::new();
    for (socket, ep) in sockets.into_iter().zip(&shared.config.udp_entrypoints) {
        let addr = socket.local_addr()?;
        tracing::info!(addr = %addr, network = "udp", hostname = %ep.hostname, "entrypoint listening");
        addrs.push(addr);
        let options = Arc::new(FlowOptions {
            keepalive: ep.keepalive,
            ttl: ep.ttl,
            read_buffer_size: ep.read_buffer_size,
            max_flows: limits.max_udp_flows,
        });
        let opener = Arc::new(Opener {
            shared: shared.clone(),
            hostname: ep.hostname.clone(),
            label: format!("udp://{addr}"),
            per_source: per_source.clone(),
        });
        let (tasks, stopping) = (shared.life.tasks().clone(), shared.life.stopping().clone());
        listeners.spawn(serve_flows(socket, options, opener, tasks, stopping));
    }
    Ok(addrs)
}

/// Opens the stream of each new flow of one UDP entrypoint.
struct Opener {
    shared: Arc<Shared>,
    hostname: String,
    /// The entrypoint in the metrics.
    label: String,
    per_source: Arc<KeyedBudget<IpAddr>>,
}

impl FlowOpener for Opener {
    async fn open(&self, peer: SocketAddr, first: &[u8]) -> Result<Stream, String> {
        let peer = tunnel_proto::socket::canonical_peer(peer);
        match self.try_open(peer, first).await {
            Ok(stream) => {
                self.shared.metrics.visitor(&self.label, "served");
                tracing::debug!(%peer, host = %self.hostname, "UDP flow opened");
                Ok(stream)
            }
            Err((reply, detail)) => {
                self.shared.metrics.visitor(&self.label, "refused");
                visitor::log_refusal(peer, &self.hostname, &reply, &detail);
                Err(if detail.is_empty() { reply.message } else { detail })
            }
        }
    }

    fn failed(&self, _peer: SocketAddr, _why: &str) {
        // Logged by `open`, under the refusal log budget: a flood of refused flows costs the
        // log one line a second.
    }

    fn dropped(&self, reason: &'static str) {
        self.shared.metrics.udp_dropped(&self.label, reason);
    }
}

/// Why a flow was refused: what a visitor would be told, and the operator's detail (if any).
type Refusal = (Reply, String);

impl Opener {
    async fn try_open(&self, peer: SocketAddr, first: &[u8]) -> Result<Stream, Refusal> {
        let host = &self.hostname;
        let busy = |why: &str| (Reply::new(Status::UNAVAILABLE, format!("{host}: {why}")), String::new());
        let visitor = self.shared.visitors.clone().try_acquire_owned().map_err(|_| busy("visitor limit reached"))?;
        let source = self.per_source.take(&peer.ip()).ok_or_else(|| busy("too many UDP flows from this address"))?;
        let tunnel = match self.shared.routes.snapshot().route_public(host) {
            Ok(rule) => rule.tunnel,
            Err(err) => return Err((Reply::new(err.status(), err.to_string()), String::new())),
        };
        let in_tunnel = self.shared.budgets.streams_per_tunnel.take(&tunnel).ok_or_else(|| {
            let (reply, _) = busy("too many visitors at once");
            (reply, "tunnel is at its stream limit".to_owned())
        })?;
        let header = StreamHeader { network: Network::Udp, hostname: host.clone(), visitor: Some(peer) };
        let mut prefix = Vec::with_capacity(first.len() + 2);
        datagram::encode(first, &mut prefix)
            .map_err(|e| (Reply::new(Status::BAD_REQUEST, format!("{host}: {e}")), String::new()))?;
        let label = self.shared.tunnel_label(&tunnel);
        let limits = self.shared.limits();
        let agent = match self
            .shared
            .open(&tunnel, Scope::Public, None, &[], &header, &prefix, limits.reply_timeouts())
            .await
        {
            Ok(agent) => agent,
            Err(err) => {
                self.shared.metrics.failed(&label, err.status().0);
                return Err((err.reply_for_public(host), err.reply_for_tunnel(&tunnel).message));
            }
        };
        self.shared.metrics.opened(&label);
        Ok(Box::new(Held { stream: agent.stream, _places: (agent.permit, visitor, source, in_tunnel) }))
    }
}

/// A flow's stream with its places in the budgets, given back when the flow ends.
struct Held<P> {
    stream: Stream,
    _places: P,
}

impl<P: Unpin> AsyncRead for Held<P> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<P: Unpin> AsyncWrite for Held<P> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
