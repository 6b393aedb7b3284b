//! The data channel between an agent or access client and the server.
//!
//! A [`Session`] is one connection carrying many [`Stream`]s. Everything above this module
//! uses only the trait; the transports live in their own files and are the only code that
//! names the mux or the transport library:
//! - `relay://`: TCP + yamux ([`mux`]).
//!
//! The server gets sessions from a [`Listener`]: `accept` returns as soon as a connection
//! arrives, and the (possibly slow) transport handshake happens in
//! [`Incoming::establish`], which the caller runs in its own task under a timeout.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::defaults;

pub mod mux;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a stream can do: read, write, shut down its write half.
pub trait StreamIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> StreamIo for T {}

/// One multiplexed stream.
pub type Stream = Box<dyn StreamIo>;

/// One data-channel connection carrying many streams, in either direction.
pub trait Session: Send + Sync + 'static {
    /// Opens a new stream to the peer.
    fn open_stream(&self) -> BoxFuture<'_, io::Result<Stream>>;
    /// Waits for the next stream the peer opens; `Ok(None)` once the session has ended.
    fn accept_stream(&self) -> BoxFuture<'_, io::Result<Option<Stream>>>;
    /// Starts closing the session; streams in flight fail.
    fn close(&self);
    /// Resolves once the session has ended, for whatever reason.
    fn closed(&self) -> BoxFuture<'_, ()>;
    /// Whether the session has ended.
    fn is_closed(&self) -> bool;
    /// The peer's address.
    fn peer_addr(&self) -> SocketAddr;
}

/// The transport of a data channel, chosen by the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `relay://`: TCP + yamux.
    Tcp,
}

impl Transport {
    /// The schemes accepted on command lines, for error messages.
    pub const SCHEMES: &'static str = "relay";

    /// The transport for a URL scheme.
    pub fn from_scheme(scheme: &str) -> Option<Transport> {
        match scheme {
            "relay" | "relay+tcp" => Some(Transport::Tcp),
            _ => None,
        }
    }
}

/// Settings shared by both ends of a session.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// The mux's stream limit; both ends must agree.
    pub max_streams: usize,
    /// TCP connect (and transport handshake) timeout for dialers.
    pub connect_timeout: Duration,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig { max_streams: defaults::MUX_MAX_STREAMS, connect_timeout: defaults::CONNECT_TIMEOUT }
    }
}

/// Dials the server at `addr` (`host:port`) and starts a session as the client.
pub async fn connect(transport: Transport, addr: &str, config: &ChannelConfig) -> io::Result<Arc<dyn Session>> {
    match transport {
        Transport::Tcp => {
            let tcp = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr} timed out")))??;
            crate::pump::tune_tcp(&tcp);
            let peer = tcp.peer_addr()?;
            Ok(mux::MuxSession::spawn(tcp, peer, mux::Side::Client, config))
        }
    }
}

/// The server's relay listener.
pub struct Listener {
    tcp: TcpListener,
    transport: Transport,
    config: ChannelConfig,
}

/// A connection accepted by a [`Listener`] whose transport handshake has not run yet.
pub struct Incoming {
    tcp: TcpStream,
    peer: SocketAddr,
    transport: Transport,
    config: ChannelConfig,
}

impl Listener {
    /// Binds the relay listener.
    pub async fn bind(addr: SocketAddr, transport: Transport, config: ChannelConfig) -> io::Result<Listener> {
        let tcp = TcpListener::bind(addr).await?;
        Ok(Listener { tcp, transport, config })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accepts the next connection.
    pub async fn accept(&self) -> io::Result<Incoming> {
        let (tcp, peer) = self.tcp.accept().await?;
        crate::pump::tune_tcp(&tcp);
        Ok(Incoming { tcp, peer, transport: self.transport, config: self.config.clone() })
    }
}

impl Incoming {
    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Runs the transport handshake and starts the session as the server.
    pub async fn establish(self) -> io::Result<Arc<dyn Session>> {
        match self.transport {
            Transport::Tcp => Ok(mux::MuxSession::spawn(self.tcp, self.peer, mux::Side::Server, &self.config)),
        }
    }
}
