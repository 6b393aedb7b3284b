//! Dialing the server and the hello exchange that opens a session.
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

/// Where and how to connect.
pub struct Dialer {
    /// Dials the transport.
    pub connector: Connector,
    /// The server's `host:port`.
    pub addr: String,
    /// What to say in the hello.
    pub hello: Hello,
    /// Limit for connect plus hello reply.
    pub handshake_timeout: Duration,
    /// Lasting refusals, counted across the client's session slots.
    pub refusals: super::refusal::Refusals,
    /// Whether the server's name is resolved here to spread sessions over its addresses;
    /// not through a proxy, which is handed the name.
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
    /// Dials the server and performs the hello exchange.
    pub async fn connect(&self) -> Result<Connected, ConnectError> {
        self.connect_to(&self.addr).await
    }

    /// The address session number `index` should use: the server name is resolved afresh
    /// and sessions are spread over its addresses (several replicas behind one name). Falls
    /// back to the configured address, whose dial then reports the resolution error.
    pub async fn address(&self, index: usize) -> String {
        if !self.resolve {
            return self.addr.clone();
        }
        match tokio::net::lookup_host(&self.addr).await {
            Ok(found) => {
                let mut addrs: Vec<std::net::SocketAddr> = found.collect();
                addrs.sort();
                addrs.dedup();
                if addrs.is_empty() {
                    self.addr.clone()
                } else {
                    addrs[index % addrs.len()].to_string()
                }
            }
            Err(_) => self.addr.clone(),
        }
    }

    /// Dials `target` (one address of the server) and performs the hello exchange.
    pub async fn connect_to(&self, target: &str) -> Result<Connected, ConnectError> {
        let attempt = async {
            let session = self
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
