//! Public UDP entrypoints (`udp://:5353/dns.example`): datagrams from the internet, one flow
//! per visitor address, each flow one stream to an agent serving UDP for the hostname.
//!
//! Life of a flow: the shared flow table ([`tunnel_runtime::udp::serve_flows`]) creates it on
//! the first datagram of a new visitor address (under `maxUdpFlows` for the entrypoint) and
//! queues what follows while the stream is being opened (a full queue drops, counted). The
//! [`Opener`] names the flow a visitor of [`Door::Udp`] and takes the way every visitor takes
//! ([`crate::visit`]): the places in the budgets (the server's visitors, the source address's
//! `maxUdpFlowsPerSource`, the tunnel's streams), the routing decision (public rules without a
//! path, on a host with no protected rule), and a UDP stream to one of the tunnel's agents
//! with the visitor's address in the header and the first datagram right behind it. Then datagrams go both ways as on an access client's listener;
//! the places are given back when the flow ends. A flow that cannot be routed or opened sends
//! nothing anywhere: it is one refusal line (under the refusal log budget) and a count.

mod config;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tunnel_proto::channel::Stream;
use tunnel_proto::datagram;
use tunnel_proto::wire::{Network, Status};
use tunnel_runtime::udp::{serve_flows, FlowOpener, FlowOptions, Holding};
use tunnel_runtime::visitor;

pub use config::{parse, Invalid, Parsed, UdpEntrypoint};

use crate::routing::Reach;
use crate::visit::{Admission, Door, Refusal, Visitor};
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
        let opener =
            Arc::new(Opener { shared: shared.clone(), hostname: ep.hostname.clone(), label: format!("udp://{addr}") });
        let (tasks, stopping) = (shared.life.tasks().clone(), shared.life.stopping().clone());
        listeners.spawn(serve_flows(socket, options, opener, tasks, stopping));
    }
    Ok(addrs)
}

/// Why a flow of a UDP entrypoint was refused: the reason logged, naming the hostname (the
/// visitor itself is told nothing).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotOpened(String);

/// Opens the stream of each new flow of one UDP entrypoint.
struct Opener {
    shared: Arc<Shared>,
    hostname: String,
    /// The entrypoint in the metrics.
    label: String,
}

impl FlowOpener for Opener {
    type Error = NotOpened;

    async fn open(&self, peer: SocketAddr, first: &[u8]) -> Result<Stream, NotOpened> {
        let peer = tunnel_proto::socket::canonical_peer(peer);
        let opened = match self.shared.admit(Door::Udp, &self.label, Some(peer.ip())) {
            Ok(admission) => {
                let opened = self.try_open(admission, peer, first).await;
                let outcome = if opened.is_ok() { "served" } else { "refused" };
                self.shared.visited(Door::Udp, &self.label, outcome);
                opened
            }
            Err(refusal) => Err(refusal),
        };
        match opened {
            Ok(stream) => {
                tracing::debug!(%peer, host = %self.hostname, "UDP flow opened");
                Ok(stream)
            }
            Err(refusal) => {
                visitor::log_refusal(peer, &self.hostname, &refusal.reply, &refusal.detail);
                let reason = refusal.reason();
                Err(NotOpened(match reason.contains(self.hostname.as_str()) {
                    true => reason.to_owned(),
                    false => format!("{}: {reason}", self.hostname),
                }))
            }
        }
    }

    fn failed(&self, _peer: SocketAddr, _why: &NotOpened) {
        // Logged by `open`, under the refusal log budget: a flood of refused flows costs the
        // log one line a second.
    }

    fn dropped(&self, reason: &'static str) {
        self.shared.metrics.udp_dropped(&self.label, reason);
    }
}

impl Opener {
    /// Opens the stream of an admitted flow, its first datagram right behind the header.
    async fn try_open(&self, admission: Admission, peer: SocketAddr, first: &[u8]) -> Result<Stream, Refusal> {
        let host = &self.hostname;
        let mut prefix = Vec::with_capacity(first.len() + 2);
        datagram::encode(first, &mut prefix)
            .map_err(|e| Refusal::new(Status::BAD_REQUEST, format!("{host}: {e}"), ""))?;
        let visitor = Visitor {
            door: Door::Udp,
            peer,
            host,
            reach: Reach::Public { path: None },
            network: Network::Udp,
            forwarded_for: Some(peer),
        };
        let (_, opened) = self.shared.visit(&visitor, &prefix).await?;
        let cut = opened.cut_token();
        let places = (opened.agent.permit, opened.slot, opened.live, admission);
        Ok(Box::new(Holding::cut_by(opened.agent.stream, places, cut)))
    }
}
