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

impl FlowOpener for Opener {
    async fn open(&self, peer: SocketAddr, first: &[u8]) -> Result<Stream, String> {
        let permit = self.shared.streams.clone().try_acquire_owned().map_err(|_| "at the session's stream limit")?;
        let session = current_session(&self.shared).await.ok_or("not connected to the server")?;
        let header = StreamHeader {
            network: self.listener.network,
            hostname: self.listener.hostname.clone().unwrap_or_default(),
            visitor: Some(peer),
        };
        let mut message = Frame::StreamHeader(header).to_vec();
        datagram::encode(first, &mut message).map_err(|e| e.to_string())?;
        let stream = open_stream(&self.shared, session.as_ref(), &message)
            .await
            .map_err(|r| format!("{} {}", r.status, r.message))?;
        Ok(Box::new(Holding::new(stream, permit)))
    }
}
