//! QUIC sessions (quinn): each relay stream is one bidirectional QUIC stream, so a lost packet
//! stalls only the stream it belongs to.
//!
//! Tuned for long-lived agent sessions: keepalive pings below the idle timeout, the same
//! stream limit as the mux, and 4 MiB UDP socket buffers (the kernel default drops packets at
//! high rates).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, EndpointConfig, IdleTimeout, TokioRuntime, TransportConfig, VarInt};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::OnceCell;

use super::Inbound;
use super::{BoxFuture, ChannelConfig, Session, Stream};
use crate::tls::TlsError;

/// QUIC keepalive: a few per idle timeout, and below common NAT UDP timeouts (30 s).
const KEEPALIVE: Duration = Duration::from_secs(3);
/// A QUIC connection silent this long is dead: a killed peer sends no close, so this bounds
/// how long its session lingers.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// UDP socket buffers.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Data a QUIC connection's peer may have in flight across all its streams: what a peer can make
/// the other side buffer, whether or not anything reads it (quinn's default is unbounded).
pub const RECEIVE_WINDOW: u32 = 16 * 1024 * 1024;

fn transport_config(config: &ChannelConfig) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.receive_window(VarInt::from_u32(RECEIVE_WINDOW));
    t.max_concurrent_bidi_streams(VarInt::from_u32(config.max_streams as u32));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.keep_alive_interval(Some(KEEPALIVE));
    t.max_idle_timeout(Some(IdleTimeout::try_from(IDLE_TIMEOUT).expect("idle timeout in range")));
    Arc::new(t)
}

fn udp_socket(addr: SocketAddr, reuse: bool) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    crate::socket::set_reuse_port(&socket, reuse)?;
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The server endpoint.
pub(super) fn server(addr: SocketAddr, tls: Arc<rustls::ServerConfig>, config: &ChannelConfig) -> io::Result<Endpoint> {
    let crypto = QuicServerConfig::try_from(tls).map_err(io::Error::other)?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server_config.transport_config(transport_config(config));
    Endpoint::new(
        EndpointConfig::default(),
        Some(server_config),
        udp_socket(addr, config.reuse_port)?,
        Arc::new(TokioRuntime),
    )
}

/// Completes an incoming connection's handshake.
pub(super) async fn establish(incoming: quinn::Incoming, inbound: Inbound) -> io::Result<Arc<dyn Session>> {
    let conn = incoming.await.map_err(|e| io::Error::new(io::ErrorKind::ConnectionAborted, explain(&e)))?;
    let session = Arc::new(QuicSession { conn });
    session.set_inbound(inbound);
    Ok(session)
}

/// The client side: one endpoint per address family, made on first use and reused.
pub(super) struct Dialer {
    client: quinn::ClientConfig,
    inbound: Inbound,
    server_name: String,
    v4: OnceCell<Endpoint>,
    v6: OnceCell<Endpoint>,
}

impl Dialer {
    pub(super) fn new(
        tls: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
        config: &ChannelConfig,
    ) -> Result<Dialer, TlsError> {
        let crypto = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(transport_config(config));
        let server_name = match &name {
            rustls::pki_types::ServerName::DnsName(d) => d.as_ref().to_owned(),
            rustls::pki_types::ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
            other => format!("{other:?}"),
        };
        Ok(Dialer { client, inbound: config.inbound, server_name, v4: OnceCell::new(), v6: OnceCell::new() })
    }

    pub(super) async fn connect(&self, addr: &str) -> io::Result<Arc<dyn Session>> {
        let target = tokio::net::lookup_host(addr)
            .await?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{addr} has no address")))?;
        let (cell, local) = if target.is_ipv4() { (&self.v4, "0.0.0.0:0") } else { (&self.v6, "[::]:0") };
        let endpoint = cell
            .get_or_try_init(|| async {
                let socket = udp_socket(local.parse().expect("literal address"), false)?;
                Endpoint::new(EndpointConfig::default(), None, socket, Arc::new(TokioRuntime))
            })
            .await?;
        let connecting = endpoint
            .connect_with(self.client.clone(), target, &self.server_name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let conn = connecting.await.map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, explain(&e)))?;
        let session = Arc::new(QuicSession { conn });
        session.set_inbound(self.inbound);
        Ok(session)
    }
}

/// One line saying why a QUIC connection failed, naming a certificate problem plainly.
fn explain(err: &quinn::ConnectionError) -> String {
    let text = err.to_string();
    if text.contains("UnknownIssuer") {
        "certificate verification failed: unknown issuer (trust its CA with caFile= or pin its fingerprint with pin=sha256:...)".into()
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        "certificate verification failed: name mismatch (the certificate is not valid for the server name; set serverName=)".into()
    } else if text.contains("pin mismatch") || text.contains("PinMismatch") {
        // rustls shows the verifier's error with Debug: `PinMismatch { presented: "sha256:..." }`.
        let presented = text.find("sha256:").map(|at| {
            let rest = &text[at..];
            &rest[..rest.find(|c: char| c != ':' && !c.is_ascii_alphanumeric()).unwrap_or(rest.len())]
        });
        format!(
            "certificate verification failed: pin mismatch: the server presented {}",
            presented.unwrap_or("another certificate")
        )
    } else {
        format!("QUIC connection failed: {text}")
    }
}

struct QuicSession {
    conn: quinn::Connection,
}

fn join(send: quinn::SendStream, recv: quinn::RecvStream) -> Stream {
    Box::new(tokio::io::join(recv, send))
}

impl Session for QuicSession {
    fn open_stream(&self) -> BoxFuture<'_, io::Result<Stream>> {
        Box::pin(async move {
            let (send, recv) =
                self.conn.open_bi().await.map_err(|e| io::Error::new(io::ErrorKind::ConnectionAborted, e))?;
            Ok(join(send, recv))
        })
    }

    fn accept_stream(&self) -> BoxFuture<'_, io::Result<Option<Stream>>> {
        Box::pin(async move {
            match self.conn.accept_bi().await {
                Ok((send, recv)) => Ok(Some(join(send, recv))),
                Err(quinn::ConnectionError::ApplicationClosed(_))
                | Err(quinn::ConnectionError::LocallyClosed)
                | Err(quinn::ConnectionError::ConnectionClosed(_)) => Ok(None),
                Err(e) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, e)),
            }
        })
    }

    fn close(&self) {
        self.conn.close(VarInt::from_u32(0), b"closing");
    }

    fn closed(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.conn.closed().await;
        })
    }

    fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    fn peer_addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// `Refuse` resets every stream the peer opens from now on; `ControlOnly` and `Any` leave
    /// streams to `accept_stream` (what nobody accepts is bounded by the connection's receive
    /// window, [`RECEIVE_WINDOW`]).
    fn set_inbound(&self, inbound: Inbound) {
        if inbound != Inbound::Refuse {
            return;
        }
        let conn = self.conn.clone();
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let _ = recv.stop(VarInt::from_u32(0));
                let _ = send.reset(VarInt::from_u32(0));
            }
        });
    }
}
