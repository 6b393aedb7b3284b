//! `rudp` streams: one UDP flow per stream, datagrams framed by [`tunnel_proto::datagram`].
//!
//! The agent opens a connected UDP socket to the target, answers 200, and then relays
//! datagrams both ways ([`tunnel_runtime::udp::relay`]) until the access side ends the
//! stream, the target socket fails, or nothing moved for the target's `ttl`.

use std::net::SocketAddr;

use tokio::net::UdpSocket;
use tunnel_proto::channel::Stream;
use tunnel_proto::framed::{refuse, write_frame};
use tunnel_proto::wire::{Frame, Reply, Status};
use tunnel_runtime::udp::{relay, DatagramSink, DatagramSource, FlowEnd};

use crate::{Shared, Target};

pub(crate) async fn serve(shared: &Shared, mut stream: Stream, target: &Target) {
    let Ok(_permit) = shared.udp_flows.try_acquire() else {
        let reply = Reply::new(Status::UNAVAILABLE, "agent is at its UDP flow limit");
        return refuse(&mut stream, reply).await;
    };
    let socket = match connect(&target.addr).await {
        Ok(s) => s,
        Err(err) => {
            tracing::info!(target = %target.name, addr = %target.addr, %err, "UDP target unusable");
            let why = format!("target {} is unreachable: {}", target.name, err.kind());
            return refuse(&mut stream, Reply::new(Status::BAD_GATEWAY, why)).await;
        }
    };
    if write_frame(&mut stream, &Frame::StreamReply(Reply::ok())).await.is_err() {
        return;
    }
    tracing::debug!("UDP flow started");
    let why = relay(
        stream,
        TargetSocket(&socket),
        TargetSocket(&socket),
        target.read_buffer_size,
        target.udp_ttl,
        "access side",
    )
    .await;
    tracing::debug!(reason = %why, "UDP flow ended");
}

async fn connect(addr: &str) -> std::io::Result<UdpSocket> {
    let target: SocketAddr = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "target name has no address"))?;
    let local: SocketAddr = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let socket = UdpSocket::bind(local).await?;
    socket.connect(target).await?;
    Ok(socket)
}

/// The connected socket to the target, both as the source and the sink of datagrams.
struct TargetSocket<'a>(&'a UdpSocket);

impl DatagramSource for TargetSocket<'_> {
    async fn recv(&mut self, buf: &mut [u8]) -> Result<usize, FlowEnd> {
        loop {
            match self.0.recv(buf).await {
                Ok(n) => return Ok(n),
                // An ICMP unreachable for an earlier datagram: the target may come back.
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(err) => return Err(FlowEnd::Socket(err)),
            }
        }
    }
}

impl DatagramSink for TargetSocket<'_> {
    async fn send(&mut self, datagram: &[u8]) -> Result<(), FlowEnd> {
        // A send error (e.g. an ICMP unreachable reported late) loses this datagram only, as
        // UDP would.
        let _ = self.0.send(datagram).await;
        Ok(())
    }
}
