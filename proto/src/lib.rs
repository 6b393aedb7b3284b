//! The shared core of tunnel: everything the server, the agent and the access client must
//! agree on.
//!
//! - [`wire`]: the relay frames (session hello, stream header, status replies), sans IO;
//!   [`framed`] reads and writes them on a stream, [`datagram`] frames UDP inside a stream.
//! - [`channel`]: the data channel. A [`channel::Session`] is one connection between an agent
//!   or access client and the server, carrying many [`channel::Stream`]s; TCP + yamux is the
//!   first implementation, and nothing above it names the transport.
//! - [`host`]: hostname canonicalisation and the ingress / target patterns
//!   (`example.org`, `.example.com`, `*.example.com`).
//! - [`sniff`]: pure HTTP `Host` and TLS SNI sniffers plus the reader that applies them to a
//!   visitor connection under a timeout and byte cap.
//! - [`pump`]: the byte pump between two connections (half-close preserved) and socket setup.
//! - [`tls`]: certificates, pins and rustls configurations of the encrypted transports.
//!
//! What the binaries share that is not the protocol (configuration loading, logging, the
//! client's session keeper, the visitor path) lives in the `tunnel-runtime` crate.
//!
//! The life of a visitor connection: a visitor connects to a server entrypoint; the server
//! sniffs the hostname, finds the ingress rule and a session of that rule's tunnel, opens a
//! stream on it and writes a [`wire::StreamHeader`] followed at once by the sniffed bytes. The
//! agent reads the header, dials the matching target and answers with a
//! [`wire::StreamReply`]; from then on the stream carries the visitor's bytes both ways.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod channel;
pub mod datagram;
pub mod defaults;
pub mod framed;
pub mod host;
pub mod peer;
pub mod pump;
pub mod rewind;
pub mod sniff;
pub mod socket;
pub mod tls;
pub mod wire;

pub use uuid::Uuid;
