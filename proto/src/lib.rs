//! The shared core of tunnel: everything the server, the agent and the access client must
//! agree on.
//!
//! - [`wire`]: the relay frames (session hello, stream header, status replies), sans IO.
//! - [`channel`]: the data channel. A [`channel::Session`] is one connection between an agent
//!   or access client and the server, carrying many [`channel::Stream`]s; TCP + yamux is the
//!   first implementation, and nothing above it names the transport.
//! - [`host`]: hostname canonicalisation and the ingress / target patterns
//!   (`example.org`, `.example.com`, `*.example.com`).
//! - [`sniff`]: pure HTTP `Host` and TLS SNI sniffers plus the reader that applies them to a
//!   visitor connection under a timeout and byte cap.
//! - [`url`]: the gost-style `scheme://addr/target?key=value` command-line URLs.
//! - [`pump`]: the byte pump between two connections (half-close preserved) and socket setup.
//!
//! The life of a visitor connection: a visitor connects to a server entrypoint; the server
//! sniffs the hostname, finds the ingress rule and a session of that rule's tunnel, opens a
//! stream on it and writes a [`wire::StreamHeader`] followed at once by the sniffed bytes. The
//! agent reads the header, dials the matching target and answers with a
//! [`wire::StreamReply`]; from then on the stream carries the visitor's bytes both ways.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod channel;
pub mod client;
pub mod config;
pub mod datagram;
pub mod defaults;
pub mod host;
pub mod http;
pub mod pump;
pub mod sniff;
pub mod telemetry;
pub mod tls;
pub mod url;
pub mod wire;

pub use uuid::Uuid;
