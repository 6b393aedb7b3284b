//! `udp://` listeners: one flow per visitor address, each flow one stream to the tunnel.
//!
//! Life of a flow: the first datagram from a new visitor address creates it (under the
//! listener's flow cap); the flow task opens a stream with a UDP header and sends that
//! datagram right behind it; datagrams go up as they arrive and answers go back to the
//! visitor's address. Without `keepalive` the flow ends after its first answer; with it, after
//! `ttl` without traffic. Each flow has a bounded queue: when it is full, new datagrams for
//! that flow are dropped and counted, and other flows are not held up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tunnel_proto::datagram::{self, MAX_DATAGRAM};
use tunnel_proto::defaults;
use tunnel_proto::wire::{Frame, StreamHeader};

use crate::{current_session, open_stream, ListenerConfig, Shared};

type Flows = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

/// Receives datagrams on `socket` until shutdown and hands them to their flows.
pub(crate) async fn run(
    shared: Arc<Shared>,
    socket: UdpSocket,
    listener: Arc<ListenerConfig>,
    shutdown: CancellationToken,
) {
    let socket = Arc::new(socket);
    let flows: Flows = Arc::default();
    let dropped = AtomicU64::new(0);
    let mut buf = vec![0u8; listener.read_buffer_size];
    loop {
        let (n, peer) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(got) => got,
                // ICMP errors from earlier sends surface here; they concern one visitor only.
                Err(err) => {
                    tracing::debug!(%err, "UDP receive error");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let data = buf[..n].to_vec();
        let mut map = flows.lock().expect("flows lock");
        let data = match map.get(&peer).map(|tx| tx.try_send(data)) {
            None => Some(buf[..n].to_vec()),
            Some(Ok(())) => None,
            Some(Err(mpsc::error::TrySendError::Full(_))) => {
                let total = dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::debug!(%peer, dropped = total, "UDP flow queue full, datagram dropped");
                None
            }
            Some(Err(mpsc::error::TrySendError::Closed(d))) => Some(d),
        };
        let Some(data) = data else { continue };
        map.remove(&peer);
        if map.len() >= shared.config.limits.max_udp_flows {
            let total = dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::debug!(%peer, dropped = total, "UDP flow limit reached, datagram dropped");
            continue;
        }
        let (tx, rx) = mpsc::channel(defaults::UDP_FLOW_QUEUE);
        let _ = tx.try_send(data);
        map.insert(peer, tx.clone());
        drop(map);
        let flow = Flow {
            shared: shared.clone(),
            socket: socket.clone(),
            peer,
            listener: listener.clone(),
            flows: flows.clone(),
            tx,
        };
        shared.in_flight.spawn(flow.run(rx));
    }
}

struct Flow {
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    listener: Arc<ListenerConfig>,
    flows: Flows,
    /// Our own entry in `flows`, to remove only ourselves.
    tx: mpsc::Sender<Vec<u8>>,
}

impl Flow {
    async fn run(self, mut rx: mpsc::Receiver<Vec<u8>>) {
        let why = match self.relay(&mut rx).await {
            Ok(why) => why,
            Err(why) => {
                tracing::info!(peer = %self.peer, "UDP flow failed: {why}");
                why
            }
        };
        self.forget();
        tracing::debug!(peer = %self.peer, "UDP flow ended: {why}");
    }

    /// Removes this flow from the listener's table so the next datagram starts a new one.
    fn forget(&self) {
        let mut map = self.flows.lock().expect("flows lock");
        if map.get(&self.peer).is_some_and(|tx| tx.same_channel(&self.tx)) {
            map.remove(&self.peer);
        }
    }

    async fn relay(&self, rx: &mut mpsc::Receiver<Vec<u8>>) -> Result<String, String> {
        let first = rx.recv().await.ok_or("no datagram")?;
        let session = current_session(&self.shared).await.ok_or("not connected to the server")?;
        let header = StreamHeader {
            network: self.listener.network,
            hostname: self.listener.hostname.clone().unwrap_or_default(),
            visitor: Some(self.peer),
        };
        let mut message = Frame::StreamHeader(header).to_vec();
        datagram::encode(&first, &mut message).map_err(|e| e.to_string())?;
        let stream =
            open_stream(&self.shared, &session, &message).await.map_err(|r| format!("{} {}", r.status, r.message))?;
        Ok(self.pump(stream, rx).await)
    }

    async fn pump(&self, stream: tunnel_proto::channel::Stream, rx: &mut mpsc::Receiver<Vec<u8>>) -> String {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let activity = datagram::Activity::default();
        let up = async {
            let mut scratch = Vec::new();
            while let Some(d) = rx.recv().await {
                activity.touch();
                if let Err(err) = datagram::write(&mut wr, &d, &mut scratch).await {
                    return format!("stream failed: {err}");
                }
            }
            "listener closed".to_owned()
        };
        let down = async {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                match datagram::read(&mut rd, &mut buf).await {
                    Ok(Some(n)) => {
                        activity.touch();
                        if !self.listener.keepalive {
                            // Forget first: the visitor's next datagram must start a new flow.
                            self.forget();
                        }
                        let _ = self.socket.send_to(&buf[..n], self.peer).await;
                        if !self.listener.keepalive {
                            return "answered (no keepalive)".to_owned();
                        }
                    }
                    Ok(None) => return "tunnel ended the flow".to_owned(),
                    Err(err) => return format!("stream failed: {err}"),
                }
            }
        };
        let ttl = self.listener.ttl;
        let idle = activity.idle(ttl);
        let why = tokio::select! {
            why = up => why,
            why = down => why,
            why = idle => why,
        };
        let _ = wr.shutdown().await;
        why
    }
}
