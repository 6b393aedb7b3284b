//! `udp://` listeners: the shared flow table ([`tunnel_runtime::udp::serve_flows`]), each
//! flow one stream to the tunnel, opened on the access client's current session.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel_proto::channel::Stream;
use tunnel_proto::datagram;
use tunnel_proto::wire::{Frame, StreamHeader};
use tunnel_runtime::udp::{serve_flows, FlowOpener, FlowOptions, Holding};

use crate::{current_session, open_stream, ListenerConfig, Shared};

/// Receives datagrams on `socket` until `shutdown`, one flow per visitor address.
pub(crate) async fn run(
    shared: Arc<Shared>,
    socket: UdpSocket,
    listener: ListenerConfig,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let options = Arc::new(FlowOptions {
        keepalive: listener.keepalive,
        ttl: listener.ttl,
        read_buffer_size: listener.read_buffer_size,
        max_flows: shared.config.limits.max_udp_flows,
    });
    serve_flows(socket, options, Arc::new(Opener { shared, listener }), tasks, shutdown).await
}

struct Opener {
    shared: Arc<Shared>,
    listener: ListenerConfig,
}

/// Why a flow's stream was not opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotOpened {
    /// The session carries as many streams as it may.
    #[error("at the session's stream limit")]
    Busy,
    /// No session to the server now.
    #[error("not connected to the server")]
    NotConnected,
    /// The first datagram cannot be framed.
    #[error("{0}")]
    Datagram(#[from] std::io::Error),
    /// The server or the agent refused the stream.
    #[error("{} {}", .0.status, .0.message)]
    Refused(tunnel_proto::wire::Reply),
}

impl FlowOpener for Opener {
    type Error = NotOpened;

    async fn open(&self, peer: SocketAddr, first: &[u8]) -> Result<Stream, NotOpened> {
        let permit = self.shared.streams.clone().try_acquire_owned().map_err(|_| NotOpened::Busy)?;
        let session = current_session(&self.shared).await.ok_or(NotOpened::NotConnected)?;
        let header = StreamHeader {
            network: self.listener.network,
            hostname: self.listener.hostname.clone().unwrap_or_default(),
            visitor: Some(peer),
        };
        let mut message = Frame::StreamHeader(header).to_vec();
        datagram::encode(first, &mut message)?;
        let stream = open_stream(&self.shared, session.as_ref(), &message).await.map_err(NotOpened::Refused)?;
        Ok(Box::new(Holding::new(stream, permit)))
    }
}
