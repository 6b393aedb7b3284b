//! Public entrypoints: visitors from the internet.
//!
//! Life of a visitor: accepted under the visitor limit; its hostname is sniffed from the HTTP
//! `Host` header or the TLS SNI (or fixed, on a raw entrypoint); the best ingress rule that is
//! not private names the tunnel; the registry opens a stream to one of the tunnel's agents,
//! sending the header and the sniffed bytes at once; then bytes flow both ways until both
//! sides are done. A visitor that cannot be routed gets an HTTP error response when it spoke
//! HTTP, and a close otherwise.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tunnel_proto::pump::accept_until;
use tunnel_proto::sniff::{self, Guess, SniffError};
use tunnel_proto::wire::{Network, Reply, Status, StreamHeader};

use crate::Shared;
use tunnel_proto::http;

/// Accepts visitors on one entrypoint until shutdown.
pub(crate) async fn run(shared: Arc<Shared>, listener: TcpListener, raw_host: Option<String>) {
    loop {
        let Some((tcp, peer)) = accept_until(&shared.shutdown, "entrypoint", || listener.accept()).await else {
            return;
        };
        let Ok(permit) = shared.visitors.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "visitor refused: visitor limit reached");
            continue;
        };
        tunnel_proto::pump::tune_accepted(&tcp);
        let task_shared = shared.clone();
        let raw_host = raw_host.clone();
        shared.tasks.spawn(async move {
            serve_visitor(&task_shared, tcp, peer, raw_host).await;
            drop(permit);
        });
    }
}

/// What the visitor spoke, to choose how to answer errors.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Speaks {
    Http,
    Other,
}

async fn serve_visitor(shared: &Shared, mut tcp: TcpStream, peer: SocketAddr, raw_host: Option<String>) {
    let limits = &shared.config.limits;
    let (host, prefix, speaks) = match raw_host {
        Some(h) => (h, Vec::new(), Speaks::Other),
        None => {
            let s = sniff::read_hostname(&mut tcp, limits.sniff_timeout, limits.sniff_max_bytes).await;
            let speaks = if s.guess() == Some(Guess::Http) { Speaks::Http } else { Speaks::Other };
            match s.result {
                Ok(found) => match found.hostname() {
                    Some(h) => (h.to_owned(), s.prefix, speaks),
                    None => {
                        return refuse(
                            tcp,
                            peer,
                            speaks,
                            "",
                            Reply::new(Status::BAD_REQUEST, "TLS ClientHello without SNI"),
                        )
                        .await
                    }
                },
                Err(err) => return sniff_failed(tcp, peer, speaks, err).await,
            }
        }
    };
    let rule = match shared.config.ingress.lookup(&host) {
        Some(rule) if !rule.private => rule,
        _ => {
            return refuse(tcp, peer, speaks, &host, Reply::new(Status::NOT_FOUND, format!("no route for host {host}")))
                .await
        }
    };
    let header = StreamHeader { network: Network::Tcp, hostname: host.clone(), visitor: Some(peer) };
    let mut agent = match shared.registry.open(&rule.tunnel, &header, &prefix, limits.reply_timeouts()).await {
        Ok(agent) => agent,
        Err(reply) => {
            // The answer names the host, whichever side (registry or agent) wrote it.
            let reply = if reply.message.contains(host.as_str()) {
                reply
            } else {
                Reply::new(reply.status, format!("{host}: {}", reply.message))
            };
            return refuse(tcp, peer, speaks, &host, reply).await;
        }
    };
    drop(prefix); // sent with the header; not kept for the life of the visitor
    tracing::debug!(%peer, %host, tunnel = %rule.tunnel, session = agent.session_id, "visitor connected");
    match tunnel_proto::pump::pump_tcp(&mut tcp, &mut agent.stream).await {
        Ok((up, down)) => tracing::debug!(%peer, %host, up, down, "visitor done"),
        Err(err) => {
            tracing::debug!(%peer, %host, %err, "visitor stream failed");
            tunnel_proto::pump::reset(tcp);
        }
    }
}

async fn sniff_failed(tcp: TcpStream, peer: SocketAddr, speaks: Speaks, err: SniffError) {
    let status = match &err {
        SniffError::Io(_) => {
            tracing::debug!(%peer, %err, "visitor left before naming a host");
            return;
        }
        SniffError::Timeout(_) => Status(408),
        SniffError::TooLarge(_) => Status(431),
        _ => Status::BAD_REQUEST,
    };
    refuse(tcp, peer, speaks, "", Reply::new(status, err.to_string())).await
}

/// Answers a visitor that cannot be served, logging the reason once.
async fn refuse(mut tcp: TcpStream, peer: SocketAddr, speaks: Speaks, host: &str, reply: Reply) {
    tracing::info!(%peer, host, status = reply.status.0, "visitor refused: {}", reply.message);
    if speaks == Speaks::Http {
        let response = http::error_response(reply.status, &reply.message);
        let _ = tcp.write_all(&response).await;
        let _ = tcp.shutdown().await;
        // Read what the visitor still sends (bounded) so the close is not a reset that
        // destroys the response before the visitor reads it.
        let drain = async {
            let mut buf = [0u8; 4096];
            let mut left: usize = 64 * 1024;
            while left > 0 {
                match tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
    }
}
