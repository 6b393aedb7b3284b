//! `rudp` streams: one UDP flow per stream, datagrams framed by [`tunnel_proto::datagram`].
//!
//! The agent opens a connected UDP socket to the target, answers 200, and then relays
//! datagrams both ways until the access side ends the stream, the target socket fails, or
//! nothing moved for the target's `ttl`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tunnel_proto::channel::Stream;
use tunnel_proto::datagram::{self, MAX_DATAGRAM};
use tunnel_proto::wire::{Reply, Status, StreamHeader};

use crate::{answer, Shared, Target};

pub(crate) async fn serve(shared: &Shared, mut stream: Stream, header: &StreamHeader, target: &Target) {
    let Ok(_permit) = shared.udp_flows.try_acquire() else {
        let reply = Reply::new(Status::UNAVAILABLE, "agent is at its UDP flow limit");
        return answer(&mut stream, reply).await;
    };
    let socket = match connect(&target.addr).await {
        Ok(s) => s,
        Err(err) => {
            tracing::info!(target = %target.name, addr = %target.addr, %err, "UDP target unusable");
            let reply =
                Reply::new(Status::BAD_GATEWAY, format!("target {} is unreachable: {}", target.name, err.kind()));
            return answer(&mut stream, reply).await;
        }
    };
    if tunnel_proto::wire::write_frame(&mut stream, &tunnel_proto::wire::Frame::StreamReply(Reply::ok())).await.is_err()
    {
        return;
    }
    tracing::debug!(host = %header.hostname, visitor = ?header.visitor, target = %target.name, "UDP flow started");
    let why = relay(stream, &socket, target.udp_ttl, target.read_buffer_size).await;
    tracing::debug!(host = %header.hostname, visitor = ?header.visitor, target = %target.name, "UDP flow ended: {why}");
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

async fn relay(stream: Stream, socket: &UdpSocket, ttl: Duration, read_buffer: usize) -> String {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let activity = datagram::Activity::default();
    let up = async {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            match datagram::read(&mut rd, &mut buf).await {
                Ok(Some(n)) => {
                    activity.touch();
                    // A send error (e.g. an ICMP unreachable reported late) loses this
                    // datagram only, as UDP would.
                    let _ = socket.send(&buf[..n]).await;
                }
                Ok(None) => return "access side ended the flow".to_owned(),
                Err(err) => return format!("stream failed: {err}"),
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; read_buffer];
        let mut scratch = Vec::with_capacity(read_buffer + 2);
        loop {
            match socket.recv(&mut buf).await {
                Ok(n) => {
                    activity.touch();
                    if let Err(err) = datagram::write(&mut wr, &buf[..n], &mut scratch).await {
                        return format!("stream failed: {err}");
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(err) => return format!("target socket failed: {err}"),
            }
        }
    };
    let idle = activity.idle(ttl);
    tokio::select! {
        why = up => why,
        why = down => why,
        why = idle => why,
    }
}
