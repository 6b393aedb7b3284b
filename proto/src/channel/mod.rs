//! The data channel between an agent or access client and the server.
//!
//! A [`Session`] is one connection carrying many [`Stream`]s. Everything above this module
//! uses only the trait; the transports live in their own files and are the only code that
//! names the mux or the transport library:
//! - `relay://`: TCP + yamux ([`mux`]);
//! - `relay+tls://`: TLS 1.3 (rustls) over TCP + yamux ([`mux`] over tokio-rustls);
//! - `relay+quic://`: QUIC (quinn), one QUIC stream per relay stream ([`quic`]).
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
use crate::tls::{ClientTls, ServerIdentity, TlsError};

pub mod mux;
pub mod quic;

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
    /// Which streams the peer may open from now on (see [`Inbound`]).
    fn set_inbound(&self, inbound: Inbound);
}

/// Which streams the peer of a session may open. A stream the session does not take is reset
/// at once, so whatever the peer sent on it is dropped instead of buffered until a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Every stream, up to the mux limit (an agent's session: the server opens streams).
    Any,
    /// Only the next one: the control stream of a session whose hello has not come yet.
    ControlOnly,
    /// None (an agent session on the server, an access client's session).
    Refuse,
}

/// The transport of a data channel, chosen by the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `relay://`: TCP + yamux.
    Tcp,
    /// `relay+tls://`: TLS 1.3 over TCP + yamux.
    Tls,
    /// `relay+quic://`: QUIC, one QUIC stream per relay stream.
    Quic,
}

impl Transport {
    /// The schemes accepted on command lines, for error messages.
    pub const SCHEMES: &'static str = "relay, relay+tls, relay+quic";

    /// The transport for a URL scheme (or a TOML `dialer` / `listener` value).
    pub fn from_scheme(scheme: &str) -> Option<Transport> {
        match scheme {
            "relay" | "relay+tcp" | "tcp" => Some(Transport::Tcp),
            "relay+tls" | "tls" => Some(Transport::Tls),
            "relay+quic" | "quic" => Some(Transport::Quic),
            _ => None,
        }
    }

    /// The URL scheme that selects this transport.
    pub fn scheme(self) -> &'static str {
        match self {
            Transport::Tcp => "relay",
            Transport::Tls => "relay+tls",
            Transport::Quic => "relay+quic",
        }
    }

    /// Whether the transport needs certificates.
    pub fn is_encrypted(self) -> bool {
        self != Transport::Tcp
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Quic => "quic",
        })
    }
}

/// Settings shared by both ends of a session.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// The mux's stream limit; both ends must agree.
    pub max_streams: usize,
    /// Connect (and transport handshake) timeout for dialers.
    pub connect_timeout: Duration,
    /// Which streams the peer may open when the session starts.
    pub inbound: Inbound,
    /// Listeners share their port with other processes (`SO_REUSEPORT`).
    pub reuse_port: bool,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            max_streams: defaults::MUX_MAX_STREAMS,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            inbound: Inbound::Any,
            reuse_port: false,
        }
    }
}

/// Opens the TCP connection a session runs over, in place of a direct connect: through an
/// HTTP CONNECT or SOCKS5 proxy, which is handed the server's `host:port` as written and
/// resolves it itself.
pub trait TcpDial: Send + Sync + 'static {
    /// A connection to `addr` (`host:port`), ready for the session's first byte.
    fn dial<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<TcpStream>>;
}

/// Dials the server: holds what every attempt reuses (TLS configuration, QUIC endpoint).
pub struct Connector {
    transport: Transport,
    config: ChannelConfig,
    tls: Option<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
    quic: Option<quic::Dialer>,
    tcp: Option<Arc<dyn TcpDial>>,
}

impl Connector {
    /// A connector for the server at `addr` (`host:port`); `tls` is used by the encrypted
    /// transports.
    pub fn new(
        transport: Transport,
        addr: &str,
        tls: &ClientTls,
        config: ChannelConfig,
    ) -> Result<Connector, TlsError> {
        let (tls, quic) = match transport {
            Transport::Tcp => (None, None),
            Transport::Tls => (Some((tls.client_config()?, tls.server_name(addr)?)), None),
            Transport::Quic => (None, Some(quic::Dialer::new(tls.client_config()?, tls.server_name(addr)?, &config)?)),
        };
        Ok(Connector { transport, config, tls, quic, tcp: None })
    }

    /// Opens the TCP connections with `dial` (a proxy) instead of connecting directly. QUIC
    /// runs over UDP and cannot pass a TCP proxy: its configuration refuses the combination,
    /// and its connects fail if one comes here anyway.
    pub fn via(mut self, dial: Arc<dyn TcpDial>) -> Connector {
        self.tcp = Some(dial);
        self
    }

    /// The transport.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Dials `addr` and starts a session as the client. TLS verification failures come back
    /// as errors whose message names the reason.
    pub async fn connect(&self, addr: &str) -> io::Result<Arc<dyn Session>> {
        let timeout = self.config.connect_timeout;
        let attempt = async {
            if let Some(quic) = &self.quic {
                if self.tcp.is_some() {
                    return Err(io::Error::new(io::ErrorKind::Unsupported, "QUIC cannot go through a TCP proxy"));
                }
                return quic.connect(addr).await;
            }
            let tcp = match &self.tcp {
                Some(dial) => dial.dial(addr).await?,
                None => TcpStream::connect(addr).await?,
            };
            crate::pump::tune_tcp(&tcp);
            let peer = tcp.peer_addr()?;
            match &self.tls {
                None => Ok(mux::MuxSession::spawn(tcp, peer, mux::Side::Client, &self.config)),
                Some((cfg, name)) => {
                    let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(explain)?;
                    Ok(mux::MuxSession::spawn(tls, peer, mux::Side::Client, &self.config))
                }
            }
        };
        tokio::time::timeout(timeout, attempt).await.map_err(|_| {
            io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr} timed out after {timeout:?}"))
        })?
    }
}

/// Dials `addr` once with default TLS settings (system roots); for tools and tests.
pub async fn connect(transport: Transport, addr: &str, config: &ChannelConfig) -> io::Result<Arc<dyn Session>> {
    let connector = Connector::new(transport, addr, &ClientTls::default(), config.clone()).map_err(io::Error::other)?;
    connector.connect(addr).await
}

/// Turns a TLS handshake failure into an error that says what did not verify.
fn explain(err: io::Error) -> io::Error {
    match crate::tls::describe_error(&err) {
        Some(why) => io::Error::new(err.kind(), why),
        None => err,
    }
}

/// The server's relay listener.
pub struct Listener {
    inner: ListenerInner,
    config: ChannelConfig,
}

enum ListenerInner {
    Tcp(TcpListener, Option<tokio_rustls::TlsAcceptor>),
    Quic(quinn::Endpoint),
}

/// A connection accepted by a [`Listener`] whose transport handshake has not run yet.
pub struct Incoming {
    inner: IncomingInner,
    peer: SocketAddr,
    config: ChannelConfig,
}

enum IncomingInner {
    Tcp(TcpStream, Option<tokio_rustls::TlsAcceptor>),
    /// A TLS connection whose ClientHello was read to tell it from a visitor's.
    Replayed(crate::rewind::Prefixed<TcpStream>, tokio_rustls::TlsAcceptor),
    Quic(Box<quinn::Incoming>),
}

/// What a connection to a relay port shared with an entrypoint is.
pub enum SharedPort {
    /// A session's: its ClientHello offers the relay's ALPN.
    Relay(Incoming),
    /// A visitor's, with the bytes read to tell (to be sniffed on from there).
    Visitor(TcpStream, Vec<u8>),
}

/// The largest ClientHello read to tell a session from a visitor.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

impl Listener {
    /// Binds the relay listener. The encrypted transports need the server's identity.
    pub async fn bind(
        addr: SocketAddr,
        transport: Transport,
        identity: Option<&ServerIdentity>,
        config: ChannelConfig,
    ) -> io::Result<Listener> {
        let server_config = match (transport, identity) {
            (Transport::Tcp, _) => None,
            (_, Some(id)) => Some(id.server_config().map_err(io::Error::other)?),
            (_, None) => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{transport} needs a certificate")))
            }
        };
        let inner = match transport {
            Transport::Tcp => ListenerInner::Tcp(crate::socket::tcp_listener(addr, config.reuse_port)?, None),
            Transport::Tls => {
                let acceptor = tokio_rustls::TlsAcceptor::from(server_config.expect("checked above"));
                ListenerInner::Tcp(crate::socket::tcp_listener(addr, config.reuse_port)?, Some(acceptor))
            }
            Transport::Quic => ListenerInner::Quic(quic::server(addr, server_config.expect("checked above"), &config)?),
        };
        Ok(Listener { inner, config })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.inner {
            ListenerInner::Tcp(l, _) => l.local_addr(),
            ListenerInner::Quic(e) => e.local_addr(),
        }
    }

    /// Accepts the next connection.
    pub async fn accept(&self) -> io::Result<Incoming> {
        match &self.inner {
            ListenerInner::Tcp(l, tls) => {
                let (tcp, peer) = l.accept().await?;
                crate::pump::tune_tcp(&tcp);
                Ok(Incoming { inner: IncomingInner::Tcp(tcp, tls.clone()), peer, config: self.config.clone() })
            }
            ListenerInner::Quic(endpoint) => {
                let incoming = endpoint
                    .accept()
                    .await
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "QUIC endpoint closed"))?;
                let peer = incoming.remote_address();
                Ok(Incoming { inner: IncomingInner::Quic(Box::new(incoming)), peer, config: self.config.clone() })
            }
        }
    }

    /// Stops accepting (QUIC: refuses new connections, existing ones go on).
    pub fn close(&self) {
        if let ListenerInner::Quic(e) = &self.inner {
            e.set_server_config(None);
        }
    }
}

/// An [`Incoming`] taken off the reactor of the runtime that accepted it, to go on on another
/// runtime ([`Detached::attach`] there). A QUIC connection stays with its endpoint.
pub struct Detached {
    inner: DetachedInner,
    peer: SocketAddr,
    config: ChannelConfig,
}

enum DetachedInner {
    Tcp(std::net::TcpStream, Option<tokio_rustls::TlsAcceptor>),
    Kept(IncomingInner),
}

impl Detached {
    /// The connection again, registered with the calling runtime.
    pub fn attach(self) -> io::Result<Incoming> {
        let inner = match self.inner {
            DetachedInner::Tcp(std, tls) => IncomingInner::Tcp(TcpStream::from_std(std)?, tls),
            DetachedInner::Kept(inner) => inner,
        };
        Ok(Incoming { inner, peer: self.peer, config: self.config })
    }
}

impl Incoming {
    /// The connection off this runtime's reactor, to be attached on another.
    pub fn detach(self) -> io::Result<Detached> {
        let inner = match self.inner {
            IncomingInner::Tcp(tcp, tls) => DetachedInner::Tcp(tcp.into_std()?, tls),
            other => DetachedInner::Kept(other),
        };
        Ok(Detached { inner, peer: self.peer, config: self.config })
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Resolves once the peer has sent something (for QUIC the packet that opened the
    /// connection already did).
    pub async fn readable(&self) -> io::Result<()> {
        match &self.inner {
            IncomingInner::Tcp(tcp, _) => {
                // A peek waits for a byte (or the close); readiness alone can be reported for a
                // socket that has nothing to read.
                let mut first = [0u8; 1];
                match tcp.peek(&mut first).await? {
                    0 => Err(io::ErrorKind::UnexpectedEof.into()),
                    _ => Ok(()),
                }
            }
            IncomingInner::Replayed(..) | IncomingInner::Quic(_) => Ok(()),
        }
    }

    /// On a TLS relay port shared with an entrypoint: reads the first bytes (at most
    /// [`MAX_CLIENT_HELLO`], within `timeout`) until they show a ClientHello offering the
    /// relay's ALPN ([`crate::tls::ALPN`], which every agent and access client sends) or
    /// anything else, a visitor's (TLS to another name, or plain HTTP). A connection that
    /// says nothing in time, or closes, is an error.
    pub async fn classify(self, timeout: std::time::Duration) -> io::Result<SharedPort> {
        let IncomingInner::Tcp(mut tcp, Some(acceptor)) = self.inner else {
            return Ok(SharedPort::Relay(self));
        };
        let mut buf = Vec::with_capacity(2048);
        let read = async {
            loop {
                use tokio::io::AsyncReadExt;
                let room = (MAX_CLIENT_HELLO - buf.len()) as u64;
                if AsyncReadExt::take(&mut tcp, room).read_buf(&mut buf).await? == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
                match crate::sniff::tls_offers_alpn(&buf, crate::tls::ALPN) {
                    Ok(None) if buf.len() < MAX_CLIENT_HELLO => continue,
                    Ok(Some(true)) => return Ok(true),
                    _ => return Ok(false),
                }
            }
        };
        let relay = match tokio::time::timeout(timeout, read).await {
            Ok(result) => result?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "nothing sent in time")),
        };
        Ok(match relay {
            true => SharedPort::Relay(Incoming {
                inner: IncomingInner::Replayed(crate::rewind::Prefixed::new(buf, tcp), acceptor),
                peer: self.peer,
                config: self.config,
            }),
            false => SharedPort::Visitor(tcp, buf),
        })
    }

    /// Runs the transport handshake and starts the session as the server.
    pub async fn establish(self) -> io::Result<Arc<dyn Session>> {
        match self.inner {
            IncomingInner::Tcp(tcp, None) => {
                Ok(mux::MuxSession::spawn(tcp, self.peer, mux::Side::Server, &self.config))
            }
            IncomingInner::Tcp(tcp, Some(acceptor)) => {
                let tls = acceptor.accept(tcp).await.map_err(explain)?;
                Ok(mux::MuxSession::spawn(tls, self.peer, mux::Side::Server, &self.config))
            }
            IncomingInner::Replayed(io, acceptor) => {
                let tls = acceptor.accept(io).await.map_err(explain)?;
                Ok(mux::MuxSession::spawn(tls, self.peer, mux::Side::Server, &self.config))
            }
            IncomingInner::Quic(incoming) => quic::establish(*incoming, self.config.inbound).await,
        }
    }
}
