//! Dialing the server and the hello exchange that opens a session.
//!
//! The configured servers (one, or the replicas of a cluster) are turned into *candidates*,
//! the addresses a session may be dialed to ([`Dialer::candidates`]); each is dialed with its
//! own server's connector, so TLS verifies the name that server was configured with.
//!
//! A session starts with the client opening its *control stream* and writing a
//! [`Hello`]; the server answers with a hello reply. The control stream then stays open for
//! keepalive pings and going-away notices ([`super::control`]); when it ends, the session
//! ends.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tunnel_proto::channel::{Connector, Session, Stream};
use tunnel_proto::framed::{read_frame, write_frame, FrameError};
use tunnel_proto::wire::{DecodeError, Frame, Hello, Reply, Status};

/// Why a session could not be established.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server could not be reached.
    #[error("cannot connect to server {addr}: {source}")]
    Dial {
        /// The server address.
        addr: String,
        /// The cause.
        source: io::Error,
    },
    /// The server answered the hello with an error.
    #[error("server refused the session: {} {}", .0.status, .0.message)]
    Refused(Reply),
    /// The server did not answer in time.
    #[error("no answer from server {0} within {1:?}")]
    Timeout(String, Duration),
    /// The server spoke something else.
    #[error("handshake with server {addr} failed: {source}")]
    Protocol {
        /// The server address.
        addr: String,
        /// The cause.
        source: FrameError,
    },
}

impl ConnectError {
    /// The status the server refused with, if it did.
    pub fn status(&self) -> Option<Status> {
        match self {
            ConnectError::Refused(r) => Some(r.status),
            _ => None,
        }
    }
}

/// One configured server: its address as configured and the connector that dials it (its
/// own TLS name).
pub struct Server {
    /// The server's `host:port` as configured.
    pub addr: String,
    /// Dials the transport, verifying this server's name.
    pub connector: Connector,
}

/// One address a session may be dialed to: an address of configured server number `server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The `host:port` to dial (resolved, unless through a proxy or unresolvable).
    pub addr: String,
    /// Index of the configured server it belongs to.
    pub server: usize,
}

/// Where and how to connect.
pub struct Dialer {
    /// The configured servers, in order (at least one).
    pub servers: Vec<Server>,
    /// What to say in the hello.
    pub hello: Hello,
    /// Limit for connect plus hello reply.
    pub handshake_timeout: Duration,
    /// Lasting refusals, counted across the client's session slots.
    pub refusals: super::refusal::Refusals,
    /// Whether the servers' names are resolved here to spread sessions over their addresses;
    /// not through a proxy, which is handed the names.
    pub resolve: bool,
}

/// An established session and its control stream.
pub struct Connected {
    /// The session.
    pub session: Arc<dyn Session>,
    /// The control stream (keepalive, going-away).
    pub control: Stream,
}

impl Dialer {
    /// The addresses sessions are spread over, resolved afresh: each configured server's
    /// addresses (a name resolving to several replicas gives several, sorted), in configured
    /// order, each address once. A server whose name does not resolve stands for itself, so
    /// its dial reports the resolution error. Never empty.
    pub async fn candidates(&self) -> Vec<Candidate> {
        let mut all: Vec<Candidate> = Vec::new();
        for (server, s) in self.servers.iter().enumerate() {
            for addr in self.addresses_of(&s.addr).await {
                if !all.iter().any(|c| c.addr == addr) {
                    all.push(Candidate { addr, server });
                }
            }
        }
        all
    }

    /// The addresses of one configured server.
    async fn addresses_of(&self, configured: &str) -> Vec<String> {
        if !self.resolve {
            return vec![configured.to_owned()];
        }
        let mut found: Vec<std::net::SocketAddr> = match tokio::net::lookup_host(configured).await {
            Ok(found) => found.collect(),
            Err(_) => Vec::new(),
        };
        found.sort();
        found.dedup();
        if found.is_empty() {
            return vec![configured.to_owned()];
        }
        found.iter().map(ToString::to_string).collect()
    }

    /// Dials `candidate` and performs the hello exchange.
    pub async fn connect_to(&self, candidate: &Candidate) -> Result<Connected, ConnectError> {
        let target = candidate.addr.as_str();
        let attempt = async {
            let session = self.servers[candidate.server]
                .connector
                .connect(target)
                .await
                .map_err(|source| ConnectError::Dial { addr: target.to_owned(), source })?;
            let protocol = |source| ConnectError::Protocol { addr: target.to_owned(), source };
            let mut control = session.open_stream().await.map_err(|e| protocol(e.into()))?;
            write_frame(&mut control, &Frame::Hello(self.hello.clone())).await.map_err(|e| protocol(e.into()))?;
            match read_frame(&mut control).await.map_err(protocol)? {
                Frame::HelloReply(r) if r.status.is_ok() => Ok(Connected { session, control }),
                Frame::HelloReply(r) => {
                    session.close();
                    Err(ConnectError::Refused(r))
                }
                other => Err(protocol(DecodeError::Unexpected(other.kind()).into())),
            }
        };
        match tokio::time::timeout(self.handshake_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout(target.to_owned(), self.handshake_timeout)),
        }
    }
}
