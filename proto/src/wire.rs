//! The relay frames, without IO.
//!
//! Every frame is `kind: u8 | len: u16 (big endian) | body[len]`; `len` is checked against
//! [`MAX_BODY`] before anything is allocated. The first frame of a session is a
//! [`Hello`], which carries the protocol [`VERSION`]. `docs/PROTOCOL.md` describes the layout of
//! each body with hex vectors that `tests/vectors.rs` checks.
//!
//! `decode` returns `Ok(None)` when more bytes are needed, never an error for a short buffer,
//! and never consumes a partial frame.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BufMut, Bytes};
use uuid::Uuid;

/// The protocol version agents and access clients speak, sent in [`Hello`].
pub const VERSION: u8 = 1;
/// The protocol version of the peer frames between server replicas ([`PeerHello`] and the
/// frames after it): version 1 plus the peer frames.
pub const PEER_VERSION: u8 = 2;
/// Length of a peer handshake nonce and of a peer proof (HMAC-SHA256).
pub const PEER_NONCE: usize = 32;
/// Longest replica name in the peer handshake.
pub const MAX_PEER_NAME: usize = 63;
/// Largest frame body accepted; a larger `len` is an error before allocation.
pub const MAX_BODY: usize = 1024;
/// Longest hostname in a stream header (DNS names are at most 253 bytes).
pub const MAX_HOSTNAME: usize = 253;
/// Longest token in a hello.
pub const MAX_TOKEN: usize = 255;
/// Longest human-readable message in a reply.
pub const MAX_MESSAGE: usize = 512;
/// Size of the frame header (`kind` + `len`).
pub const HEADER_LEN: usize = 3;

/// Why bytes could not be decoded into a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame kind byte names no known frame.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// The length field exceeds [`MAX_BODY`].
    #[error("frame body of {0} bytes exceeds the limit of {MAX_BODY}")]
    TooLong(usize),
    /// A frame other than the one expected arrived.
    #[error("unexpected frame {0:?}")]
    Unexpected(Kind),
    /// The body is shorter or longer than its fields say.
    #[error("malformed {0:?} frame: {1}")]
    Malformed(Kind, &'static str),
}

/// Frame kinds; this enum owns every tag number on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// [`Hello`]: first frame of a session, client to server.
    Hello = 0x01,
    /// [`Reply`] to a hello.
    HelloReply = 0x02,
    /// [`StreamHeader`]: first frame of a stream.
    StreamHeader = 0x03,
    /// [`Reply`] to a stream header.
    StreamReply = 0x04,
    /// Keepalive request on the control stream.
    Ping = 0x05,
    /// Keepalive answer on the control stream.
    Pong = 0x06,
    /// The sender is shutting the session down; open no new streams on it.
    GoAway = 0x07,
    /// [`PeerHello`]: first frame of a session between server replicas (version 2).
    PeerHello = 0x08,
    /// [`PeerChallenge`]: the answer of the replica dialed.
    PeerChallenge = 0x09,
    /// [`PeerProof`]: the dialing replica's proof.
    PeerProof = 0x0a,
    /// [`PeerStream`]: first frame of a stream a replica forwards to another.
    PeerStream = 0x0b,
}

impl Kind {
    fn from_u8(b: u8) -> Result<Kind, DecodeError> {
        Ok(match b {
            0x01 => Kind::Hello,
            0x02 => Kind::HelloReply,
            0x03 => Kind::StreamHeader,
            0x04 => Kind::StreamReply,
            0x05 => Kind::Ping,
            0x06 => Kind::Pong,
            0x07 => Kind::GoAway,
            0x08 => Kind::PeerHello,
            0x09 => Kind::PeerChallenge,
            0x0a => Kind::PeerProof,
            0x0b => Kind::PeerStream,
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }
}

/// What a session's client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A `tunnel-agent`: serves streams for its tunnel.
    Agent = 1,
    /// A `tunnel-access` client: opens streams into a tunnel.
    Access = 2,
}

/// Transport protocol of a stream's visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    /// A TCP connection: the stream carries its bytes.
    Tcp = 1,
    /// A UDP flow: the stream carries length-prefixed datagrams.
    Udp = 2,
}

impl Network {
    fn from_u8(b: u8) -> Option<Network> {
        match b {
            1 => Some(Network::Tcp),
            2 => Some(Network::Udp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Network::Tcp => "tcp",
            Network::Udp => "udp",
        })
    }
}

/// The set of networks an agent session serves (bit 0 TCP, bit 1 UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Networks(u8);

impl Networks {
    /// No network.
    pub const NONE: Networks = Networks(0);
    /// TCP only.
    pub const TCP: Networks = Networks(1);
    /// UDP only.
    pub const UDP: Networks = Networks(2);
    /// Whether `n` is in the set.
    pub fn contains(self, n: Network) -> bool {
        self.0 & (1 << (n as u8 - 1)) != 0
    }
    /// The set with `n` added.
    pub fn with(self, n: Network) -> Networks {
        Networks(self.0 | (1 << (n as u8 - 1)))
    }
    /// The raw bits.
    pub fn bits(self) -> u8 {
        self.0
    }
}

/// A status code, in the spirit of HTTP. Unknown codes are kept as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u16);

impl Status {
    /// Provisional: the header arrived and is being acted on; the final reply follows.
    pub const CONTINUE: Status = Status(100);
    /// Accepted.
    pub const OK: Status = Status(200);
    /// The request was malformed.
    pub const BAD_REQUEST: Status = Status(400);
    /// Missing or wrong token.
    pub const UNAUTHORIZED: Status = Status(401);
    /// Not allowed (e.g. a private rule from a public entrypoint, a limit reached).
    pub const FORBIDDEN: Status = Status(403);
    /// No route: no rule for the hostname, or no target for it on the agent.
    pub const NOT_FOUND: Status = Status(404);
    /// The target is unreachable (connection refused, no agent could take the stream).
    pub const BAD_GATEWAY: Status = Status(502);
    /// No agent is connected for the tunnel.
    pub const UNAVAILABLE: Status = Status(503);
    /// The target did not answer in time.
    pub const GATEWAY_TIMEOUT: Status = Status(504);

    /// Whether this is 200.
    pub fn is_ok(self) -> bool {
        self == Status::OK
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self.0 {
            100 => "continue",
            200 => "ok",
            400 => "bad request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not found",
            502 => "bad gateway",
            503 => "no agent",
            504 => "timeout",
            _ => "unknown",
        };
        write!(f, "{} {}", self.0, text)
    }
}

/// A secret that never prints.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Token(pub Bytes);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// First frame of a session: who the client is and which tunnel it joins or reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version of the client.
    pub version: u8,
    /// Agent or access client.
    pub role: Role,
    /// The tunnel joined (agent) or reached (access client).
    pub tunnel: Uuid,
    /// Networks the agent serves (empty for access clients).
    pub networks: Networks,
    /// Relative weight of this agent session in its pool (1 = default).
    pub weight: u8,
    /// Credential; empty when none.
    pub token: Token,
    /// The hostname an agent asks for (`myapp`, or `myapp.dev.example.com`) under its
    /// tunnel's allowed suffix; empty when none. Sent only when set, after the token, so
    /// that a hello without it is byte for byte the one of earlier versions.
    pub hostname: String,
}

/// The longest hostname a hello may ask for.
pub const MAX_HELLO_HOSTNAME: usize = 253;

/// First frame of a stream: what the stream carries and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    /// TCP bytes or UDP datagrams.
    pub network: Network,
    /// Canonical hostname the visitor asked for; empty when unknown.
    pub hostname: String,
    /// The visitor's address, when known.
    pub visitor: Option<SocketAddr>,
}

/// First frame of a session between two server replicas: the dialing replica's name and a
/// fresh challenge for the replica it dials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHello {
    /// [`PEER_VERSION`].
    pub version: u8,
    /// Fresh random bytes the answer's proof covers.
    pub nonce: [u8; PEER_NONCE],
    /// The dialing replica's name (1 to [`MAX_PEER_NAME`] bytes).
    pub name: String,
}

/// The dialed replica's answer to a [`PeerHello`]: its proof over the dialer's nonce and a
/// fresh challenge of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerChallenge {
    /// Fresh random bytes the dialer's [`PeerProof`] covers.
    pub nonce: [u8; PEER_NONCE],
    /// HMAC-SHA256 under the cluster secret; see `docs/PROTOCOL.md`.
    pub proof: [u8; PEER_NONCE],
    /// The dialed replica's name.
    pub name: String,
}

/// Whom a forwarded stream is for, which decides the rules the receiving replica checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A public visitor: only public ingress rules may route it.
    Public,
    /// A stream of an access client of this tunnel: private rules and direct routing too.
    Private(Uuid),
}

/// First frame of a stream from one replica to another: the tunnel, whom it is for, how many
/// replicas it has crossed, and the stream header the tunnel's agent gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStream {
    /// Replica-to-replica hops taken, counting this one (1 on the first).
    pub hop: u8,
    /// Public or private, and for a private stream the access client's tunnel.
    pub scope: Scope,
    /// The tunnel the stream goes to.
    pub tunnel: Uuid,
    /// What the agent gets.
    pub header: StreamHeader,
}

/// The answer to a [`Hello`] or a [`StreamHeader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Outcome.
    pub status: Status,
    /// A short human-readable reason (empty on success).
    pub message: String,
}

impl Reply {
    /// A 200 reply.
    pub fn ok() -> Reply {
        Reply { status: Status::OK, message: String::new() }
    }
    /// A reply with a status and reason; the reason is cut to [`MAX_MESSAGE`] bytes.
    pub fn new(status: Status, message: impl Into<String>) -> Reply {
        let mut message = message.into();
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Reply { status, message }
    }
}

/// Every frame of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// See [`Hello`].
    Hello(Hello),
    /// Answer to a hello.
    HelloReply(Reply),
    /// See [`StreamHeader`].
    StreamHeader(StreamHeader),
    /// Answer to a stream header.
    StreamReply(Reply),
    /// Keepalive request carrying an opaque value echoed by the pong.
    Ping(u64),
    /// Keepalive answer.
    Pong(u64),
    /// The sender is going away.
    GoAway,
    /// See [`PeerHello`].
    PeerHello(PeerHello),
    /// See [`PeerChallenge`].
    PeerChallenge(PeerChallenge),
    /// The dialing replica's HMAC-SHA256 proof over the dialed replica's nonce.
    PeerProof([u8; PEER_NONCE]),
    /// See [`PeerStream`].
    PeerStream(PeerStream),
}

impl Frame {
    /// The frame's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Hello(_) => Kind::Hello,
            Frame::HelloReply(_) => Kind::HelloReply,
            Frame::StreamHeader(_) => Kind::StreamHeader,
            Frame::StreamReply(_) => Kind::StreamReply,
            Frame::Ping(_) => Kind::Ping,
            Frame::Pong(_) => Kind::Pong,
            Frame::GoAway => Kind::GoAway,
            Frame::PeerHello(_) => Kind::PeerHello,
            Frame::PeerChallenge(_) => Kind::PeerChallenge,
            Frame::PeerProof(_) => Kind::PeerProof,
            Frame::PeerStream(_) => Kind::PeerStream,
        }
    }

    /// Appends the encoded frame to `out`.
    ///
    /// Fields longer than their limits are cut to the limit, so an encoded frame always
    /// decodes; callers validate lengths earlier where cutting would change meaning.
    pub fn encode(&self, out: &mut impl BufMut) {
        let mut body = Vec::with_capacity(64);
        match self {
            Frame::Hello(h) => {
                body.put_u8(h.version);
                body.put_u8(h.role as u8);
                body.put_slice(h.tunnel.as_bytes());
                body.put_u8(h.networks.bits());
                body.put_u8(h.weight);
                let token = &h.token.0[..h.token.0.len().min(MAX_TOKEN)];
                body.put_u8(token.len() as u8);
                body.put_slice(token);
                if !h.hostname.is_empty() {
                    let name = cut_utf8(&h.hostname, MAX_HELLO_HOSTNAME);
                    body.put_u8(name.len() as u8);
                    body.put_slice(name);
                }
            }
            Frame::HelloReply(r) | Frame::StreamReply(r) => {
                body.put_u16(r.status.0);
                body.put_slice(cut_utf8(&r.message, MAX_MESSAGE));
            }
            Frame::StreamHeader(h) => encode_header(&mut body, h),
            Frame::Ping(v) | Frame::Pong(v) => body.put_u64(*v),
            Frame::GoAway => {}
            Frame::PeerHello(h) => {
                body.put_u8(h.version);
                body.put_slice(&h.nonce);
                put_name(&mut body, &h.name);
            }
            Frame::PeerChallenge(c) => {
                body.put_slice(&c.nonce);
                body.put_slice(&c.proof);
                put_name(&mut body, &c.name);
            }
            Frame::PeerProof(proof) => body.put_slice(proof),
            Frame::PeerStream(p) => {
                body.put_u8(p.hop);
                match p.scope {
                    Scope::Public => {
                        body.put_u8(1);
                        body.put_slice(Uuid::nil().as_bytes());
                    }
                    Scope::Private(from) => {
                        body.put_u8(2);
                        body.put_slice(from.as_bytes());
                    }
                }
                body.put_slice(p.tunnel.as_bytes());
                encode_header(&mut body, &p.header);
            }
        }
        out.put_u8(self.kind() as u8);
        out.put_u16(body.len() as u16);
        out.put_slice(&body);
    }

    /// The encoded frame as a vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        self.encode(&mut v);
        v
    }

    /// Decodes one frame from the front of `buf`. `Ok(None)` means more bytes are needed; in
    /// that case nothing is consumed.
    pub fn decode(buf: &mut impl Buf) -> Result<Option<Frame>, DecodeError> {
        if buf.remaining() < HEADER_LEN {
            return Ok(None);
        }
        let head = contiguous_prefix(buf, HEADER_LEN);
        let (kind, len) = decode_head([head[0], head[1], head[2]])?;
        if buf.remaining() < HEADER_LEN + len {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let body = buf.copy_to_bytes(len);
        decode_body(kind, body).map(Some)
    }
}

/// Reads a frame header: the kind and the body length, checked against [`MAX_BODY`] before
/// anything is allocated for the body.
pub fn decode_head(head: [u8; HEADER_LEN]) -> Result<(Kind, usize), DecodeError> {
    let kind = Kind::from_u8(head[0])?;
    let len = u16::from_be_bytes([head[1], head[2]]) as usize;
    if len > MAX_BODY {
        return Err(DecodeError::TooLong(len));
    }
    Ok((kind, len))
}

fn encode_header(body: &mut Vec<u8>, h: &StreamHeader) {
    body.put_u8(h.network as u8);
    let host = cut_utf8(&h.hostname, MAX_HOSTNAME);
    body.put_u8(host.len() as u8);
    body.put_slice(host);
    encode_addr(body, h.visitor);
}

fn put_name(body: &mut Vec<u8>, name: &str) {
    let name = cut_utf8(name, MAX_PEER_NAME);
    body.put_u8(name.len() as u8);
    body.put_slice(name);
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary, so a
/// cut string is still UTF-8 (a hostname cut mid-character would not decode).
fn cut_utf8(s: &str, max: usize) -> &[u8] {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s.as_bytes()[..end]
}

/// Copies the first `n` bytes of a possibly non-contiguous buffer without consuming them.
fn contiguous_prefix(buf: &impl Buf, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    let mut slices = [std::io::IoSlice::new(&[]); 8];
    let count = buf.chunks_vectored(&mut slices);
    for s in &slices[..count] {
        let take = (n - out.len()).min(s.len());
        out.extend_from_slice(&s[..take]);
        if out.len() == n {
            break;
        }
    }
    out.resize(n, 0);
    out
}

pub(crate) fn decode_body(kind: Kind, mut b: Bytes) -> Result<Frame, DecodeError> {
    let short = |what| DecodeError::Malformed(kind, what);
    let frame = match kind {
        Kind::Hello => {
            if b.remaining() < 1 + 1 + 16 + 1 + 1 + 1 {
                return Err(short("body too short"));
            }
            let version = b.get_u8();
            let role = match b.get_u8() {
                1 => Role::Agent,
                2 => Role::Access,
                _ => return Err(short("unknown role")),
            };
            let mut id = [0u8; 16];
            b.copy_to_slice(&mut id);
            let networks = Networks(b.get_u8() & 0b11);
            let weight = b.get_u8();
            let token_len = b.get_u8() as usize;
            if b.remaining() < token_len {
                return Err(short("token length does not match body"));
            }
            let token = Token(b.copy_to_bytes(token_len));
            let hostname = match b.remaining() {
                0 => String::new(),
                _ => {
                    let len = b.get_u8() as usize;
                    if len == 0 || b.remaining() != len {
                        return Err(short("hostname length does not match body"));
                    }
                    String::from_utf8(b.copy_to_bytes(len).to_vec()).map_err(|_| short("hostname is not UTF-8"))?
                }
            };
            Frame::Hello(Hello { version, role, tunnel: Uuid::from_bytes(id), networks, weight, token, hostname })
        }
        Kind::HelloReply | Kind::StreamReply => {
            if b.remaining() < 2 {
                return Err(short("body too short"));
            }
            let status = Status(b.get_u16());
            if b.remaining() > MAX_MESSAGE {
                return Err(short("message too long"));
            }
            // Reply::new cuts to MAX_MESSAGE: each invalid byte becomes a 3-byte U+FFFD, so
            // the text can be longer than the body, and longer than the encoder sends.
            let reply = Reply::new(status, String::from_utf8_lossy(&b));
            if kind == Kind::HelloReply {
                Frame::HelloReply(reply)
            } else {
                Frame::StreamReply(reply)
            }
        }
        Kind::StreamHeader => Frame::StreamHeader(decode_header(kind, &mut b)?),
        Kind::Ping | Kind::Pong => {
            if b.remaining() != 8 {
                return Err(short("body must be 8 bytes"));
            }
            let v = b.get_u64();
            if kind == Kind::Ping {
                Frame::Ping(v)
            } else {
                Frame::Pong(v)
            }
        }
        Kind::GoAway => {
            if b.has_remaining() {
                return Err(short("body must be empty"));
            }
            Frame::GoAway
        }
        Kind::PeerHello => {
            if b.remaining() < 1 + PEER_NONCE + 1 {
                return Err(short("body too short"));
            }
            let version = b.get_u8();
            let nonce = take_array(&mut b);
            let name = take_name(kind, &mut b)?;
            Frame::PeerHello(PeerHello { version, nonce, name })
        }
        Kind::PeerChallenge => {
            if b.remaining() < 2 * PEER_NONCE + 1 {
                return Err(short("body too short"));
            }
            let nonce = take_array(&mut b);
            let proof = take_array(&mut b);
            let name = take_name(kind, &mut b)?;
            Frame::PeerChallenge(PeerChallenge { nonce, proof, name })
        }
        Kind::PeerProof => {
            if b.remaining() != PEER_NONCE {
                return Err(short("body must be 32 bytes"));
            }
            Frame::PeerProof(take_array(&mut b))
        }
        Kind::PeerStream => {
            if b.remaining() < 2 + 16 + 16 + 2 {
                return Err(short("body too short"));
            }
            let hop = b.get_u8();
            let scope_byte = b.get_u8();
            let from = Uuid::from_bytes(take_array(&mut b));
            let scope = match scope_byte {
                1 if from.is_nil() => Scope::Public,
                1 => return Err(short("a public stream names an access tunnel")),
                2 => Scope::Private(from),
                _ => return Err(short("unknown scope")),
            };
            let tunnel = Uuid::from_bytes(take_array(&mut b));
            let header = decode_header(kind, &mut b)?;
            Frame::PeerStream(PeerStream { hop, scope, tunnel, header })
        }
    };
    Ok(frame)
}

/// The stream header fields, which must end the body.
fn decode_header(kind: Kind, b: &mut Bytes) -> Result<StreamHeader, DecodeError> {
    let short = |what| DecodeError::Malformed(kind, what);
    if b.remaining() < 2 {
        return Err(short("body too short"));
    }
    let network = Network::from_u8(b.get_u8()).ok_or(short("unknown network"))?;
    let host_len = b.get_u8() as usize;
    if host_len > MAX_HOSTNAME || b.remaining() < host_len {
        return Err(short("bad hostname length"));
    }
    let host = b.copy_to_bytes(host_len);
    let hostname = String::from_utf8(host.to_vec()).map_err(|_| short("hostname is not utf-8"))?;
    let visitor = decode_addr(b).ok_or(short("bad visitor address"))?;
    if b.has_remaining() {
        return Err(short("trailing bytes"));
    }
    Ok(StreamHeader { network, hostname, visitor })
}

/// `N` bytes off the front (the caller checked there are that many).
fn take_array<const N: usize>(b: &mut Bytes) -> [u8; N] {
    let mut out = [0u8; N];
    b.copy_to_slice(&mut out);
    out
}

/// A replica name: its length byte, then 1 to [`MAX_PEER_NAME`] bytes of UTF-8 that end the
/// body.
fn take_name(kind: Kind, b: &mut Bytes) -> Result<String, DecodeError> {
    let short = |what| DecodeError::Malformed(kind, what);
    let len = b.get_u8() as usize;
    if len == 0 || len > MAX_PEER_NAME || b.remaining() != len {
        return Err(short("bad name length"));
    }
    String::from_utf8(b.copy_to_bytes(len).to_vec()).map_err(|_| short("name is not utf-8"))
}

fn encode_addr(out: &mut Vec<u8>, addr: Option<SocketAddr>) {
    match addr {
        None => out.put_u8(0),
        Some(SocketAddr::V4(a)) => {
            out.put_u8(4);
            out.put_slice(&a.ip().octets());
            out.put_u16(a.port());
        }
        Some(SocketAddr::V6(a)) => {
            out.put_u8(6);
            out.put_slice(&a.ip().octets());
            out.put_u16(a.port());
        }
    }
}

/// `None` on a malformed address; `Some(None)` for "no address".
fn decode_addr(b: &mut Bytes) -> Option<Option<SocketAddr>> {
    if !b.has_remaining() {
        return None;
    }
    match b.get_u8() {
        0 => Some(None),
        4 if b.remaining() >= 6 => {
            let mut ip = [0u8; 4];
            b.copy_to_slice(&mut ip);
            Some(Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), b.get_u16())))
        }
        6 if b.remaining() >= 18 => {
            let mut ip = [0u8; 16];
            b.copy_to_slice(&mut ip);
            Some(Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), b.get_u16())))
        }
        _ => None,
    }
}
