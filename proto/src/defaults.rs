//! Default limits and timeouts, each with the reason for its value. Every one can be changed
//! in configuration.

use std::time::Duration;

/// A client must open its control stream and send its hello within this time; a peer that
/// connects and says nothing costs one socket for at most this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A visitor must reveal its hostname (HTTP headers or TLS ClientHello) within this time:
/// long enough for a slow mobile link, short enough to shed slowloris visitors.
pub const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// A request body may take this long before its pace is held to [`REQUEST_BODY_MIN_RATE`]:
/// room for a slow start, and for a client that waits for `100 Continue`.
pub const REQUEST_BODY_GRACE: Duration = Duration::from_secs(10);
/// The slowest average rate, in bytes a second since the body began, at which a request body
/// may arrive once its grace is over (a slower one holds a visitor slot, a tunnel stream and
/// an origin connection for nothing: it is cut with 408). 1 KiB/s is far below any real
/// upload; an operator whose visitors upload over slower links lowers it, or sets 0 (off).
pub const REQUEST_BODY_MIN_RATE: u64 = 1024;
/// Bytes read while looking for a hostname: real request heads and ClientHellos (even with
/// post-quantum key shares) fit easily.
pub const SNIFF_MAX_BYTES: usize = 16 * 1024;
/// Streams one session may carry at once. yamux closes the whole connection beyond 512
/// inbound streams, so the budget stays below that with room for the control stream.
pub const MAX_STREAMS_PER_SESSION: usize = 500;
/// The mux's own hard limit; both ends configure the same value.
pub const MUX_MAX_STREAMS: usize = 512;
/// Visitor connections a server (or an access client) carries at once; `ulimit -n` here is
/// 20000 and each visitor costs a socket.
pub const MAX_VISITORS: usize = 8192;
/// Agent sessions one tunnel may hold: enough for many agents with several sessions each.
pub const MAX_SESSIONS_PER_TUNNEL: usize = 64;
/// An agent's connection to a local target: local services answer in milliseconds.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Waiting for the stream status from the far side: the agent's dial timeout plus slack.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts on different sessions before a visitor gets 502, as the seed describes.
pub const OPEN_ATTEMPTS: usize = 3;
/// Connecting to the server (TCP connect plus handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// First reconnect delay; doubles per failure up to [`BACKOFF_MAX`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Reconnect delay cap: a restarted server is found again within this time.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A session that lived this long resets the backoff.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// Copy buffer per direction in the byte pump: large enough for multi-Gbit/s on one stream.
pub const COPY_BUFFER: usize = 256 * 1024;
/// Keepalive ping interval on a session's control stream.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// A session whose ping is not answered within this time is dead.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// An access client waits this long for a session before failing a visitor.
pub const SESSION_WAIT: Duration = Duration::from_secs(10);
/// UDP flows one agent or one access listener carries at once; each costs a socket and a task.
pub const MAX_UDP_FLOWS: usize = 1024;
/// UDP flows of one source address on a server's public UDP entrypoints: a few dozen visitor
/// ports (a resolver's, a NAT's) fit, and 16 sources more are needed to fill one flow table.
pub const MAX_UDP_FLOWS_PER_SOURCE: usize = 64;
/// Datagrams queued per UDP flow before new ones are dropped (counted): a slow flow must not
/// hold up the listener's other flows.
pub const UDP_FLOW_QUEUE: usize = 256;
/// An access UDP flow with keepalive ends after this long without traffic (the seed's default).
pub const UDP_TTL: Duration = Duration::from_secs(5);
/// An agent UDP flow ends after this long without traffic, if the access side has not ended it.
pub const AGENT_UDP_TTL: Duration = Duration::from_secs(60);
/// Bytes read per datagram by an access UDP listener (the seed's default); larger datagrams are
/// truncated, as a UDP socket read with a smaller buffer does.
pub const UDP_READ_BUFFER: usize = 4096;
/// Sessions each agent keeps to the server: one to carry traffic while another reconnects.
pub const AGENT_SESSIONS: usize = 2;
/// On SIGTERM, time given to in-flight streams before sessions are closed.
pub const GRACE_PERIOD: Duration = Duration::from_secs(30);
/// A live agent answers a new stream within 100 ms (provisionally while a slow dial goes on);
/// one that says nothing for this long is presumed gone and the stream is retried elsewhere.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// Sessions one source address may have in their handshake at once: a NAT may hide several
/// agents, yet one host cannot hold every handshake slot.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 16;
/// Connections to the relay port in their handshake at once, in all.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;
/// Connections in their handshake from one network prefix ([`HANDSHAKE_PREFIX_V4`],
/// [`HANDSHAKE_PREFIX_V6`]) at once: one /24 or one /64 (what one host or one customer
/// usually has) cannot take more than a sixteenth of the places, however many addresses it
/// uses.
pub const MAX_HANDSHAKES_PER_PREFIX: usize = 64;
/// The IPv4 prefix length handshakes are counted by.
pub const HANDSHAKE_PREFIX_V4: u8 = 24;
/// The IPv6 prefix length handshakes are counted by.
pub const HANDSHAKE_PREFIX_V6: u8 = 64;
/// A new connection to the relay port must send its first bytes within this time (a real
/// client writes at once); an idle one gives its handshake slot back early.
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(3);
/// Sessions one source address may hold: room for many agents and access clients behind one
/// NAT, not for one host to exhaust the server.
pub const MAX_SESSIONS_PER_SOURCE: usize = 256;
/// Access-client sessions one tunnel may have at once.
pub const MAX_ACCESS_SESSIONS_PER_TUNNEL: usize = 64;
/// Access-client streams the server carries at once, apart from public visitors, so neither
/// kind of traffic can take the other's slots.
pub const MAX_ACCESS_STREAMS: usize = 8192;
/// Streams in flight to or from one tunnel (public visitors plus access streams): a quarter of
/// the visitor slots, so one tunnel's users cannot take them all.
pub const MAX_STREAMS_PER_TUNNEL: usize = 2048;
/// Public visitors one source address may have in flight.
pub const MAX_VISITORS_PER_SOURCE: usize = 1024;
