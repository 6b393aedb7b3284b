//! The client side of a session, shared by the agent and the access client: dial, say hello,
//! keep the session alive, and back off between attempts.
//!
//! A session starts with the client opening its *control stream* and writing a
//! [`Hello`]; the server answers with a hello reply. The control stream then stays open for
//! keepalive pings and going-away notices; when it ends, the session ends.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::channel::{ChannelConfig, Connector, Session, Stream, Transport};
use crate::tls::{ClientTls, Verify};
use crate::wire::{read_frame, write_frame, Frame, FrameError, Hello, Reply, Status};

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
                other => Err(protocol(crate::wire::DecodeError::Unexpected(other.kind()).into())),
            }
        };
        match tokio::time::timeout(self.handshake_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout(target.to_owned(), self.handshake_timeout)),
        }
    }
}

/// How the control stream of a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEnd {
    /// The server sent going-away: open a replacement session now and let this one drain
    /// (the server closes it once its streams are done).
    ServerGoingAway,
    /// We said going-away (shutdown) and the server confirmed: it opens no new streams on
    /// this session; finish the ones in flight, then close it.
    ShutdownAcknowledged,
    /// The session is dead or broken, for the reason given; close it.
    Lost(String),
}

/// Runs the client end of the control stream: a ping every `interval`, the session declared
/// lost when a pong is more than `timeout` late. When `shutdown` fires, says going-away and
/// waits (at most `timeout`) for the server's confirmation. Never closes the session itself.
pub async fn run_control(
    session: &Arc<dyn Session>,
    mut control: Stream,
    interval: Duration,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> ControlEnd {
    let (mut rd, mut wr) = tokio::io::split(&mut control);
    let started = tokio::time::Instant::now();
    // Milliseconds since `started` at the last pong; read by the pinger, written by the reader.
    let last_pong = AtomicU64::new(0);
    let said_goaway = AtomicBool::new(false);
    let reader = async {
        loop {
            match read_frame(&mut rd).await {
                Ok(Frame::Pong(_)) => last_pong.store(started.elapsed().as_millis() as u64, Ordering::Relaxed),
                Ok(Frame::GoAway) if said_goaway.load(Ordering::Relaxed) => return ControlEnd::ShutdownAcknowledged,
                Ok(Frame::GoAway) => return ControlEnd::ServerGoingAway,
                Ok(other) => return ControlEnd::Lost(format!("unexpected {:?} on control stream", other.kind())),
                Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return ControlEnd::Lost("server closed the session".to_owned())
                }
                Err(err) => return ControlEnd::Lost(format!("control stream failed: {err}")),
            }
        }
    };
    let pinger = async {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq: u64 = 0;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            let since_pong = started.elapsed().saturating_sub(Duration::from_millis(last_pong.load(Ordering::Relaxed)));
            if since_pong > interval + timeout {
                return ControlEnd::Lost(format!("no keepalive answer within {timeout:?}"));
            }
            seq += 1;
            if let Err(err) = write_frame(&mut wr, &Frame::Ping(seq)).await {
                return ControlEnd::Lost(format!("control stream failed: {err}"));
            }
        }
        said_goaway.store(true, Ordering::Relaxed);
        if let Err(err) = write_frame(&mut wr, &Frame::GoAway).await {
            return ControlEnd::Lost(format!("control stream failed: {err}"));
        }
        tokio::time::sleep(timeout).await;
        ControlEnd::Lost(format!("no answer to going-away within {timeout:?}"))
    };
    tokio::select! {
        end = reader => end,
        end = pinger => end,
        _ = session.closed() => ControlEnd::Lost("session closed".to_owned()),
    }
}

/// Exponential backoff with jitter between reconnect attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    reset_after: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `base`, capped at `max`, forgotten after a session that lived
    /// `reset_after`.
    pub fn new(base: Duration, max: Duration, reset_after: Duration) -> Backoff {
        Backoff { base, max, reset_after, failures: 0 }
    }

    /// The delay before the next attempt: `base * 2^failures`, capped, with the upper half
    /// randomised so that many clients do not retry in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.failures.min(16));
        let cap = exp.min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = cap / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    /// Records that a session lasted `lived`; a long enough one resets the backoff.
    pub fn session_ended(&mut self, lived: Duration) {
        if lived >= self.reset_after {
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), Duration::from_secs(60));
        let d: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400));
        assert!(d.iter().all(|x| *x <= Duration::from_secs(2)));
        b.session_ended(Duration::from_secs(61));
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}

/// Where an agent or access client connects, from `-F relay://host:port?tunnel.id=...` or the
/// `[relay]` table of its TOML file.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Transport (by scheme).
    pub transport: Transport,
    /// Server `host:port`.
    pub addr: String,
    /// Tunnel joined or reached.
    pub tunnel: uuid::Uuid,
    /// Token, if any.
    pub token: Option<String>,
    /// Agent weight in the pool.
    pub weight: u8,
    /// Certificate verification for `relay+tls` / `relay+quic`.
    pub tls: ClientTls,
    /// Sessions an agent keeps to the server (its share of the tunnel's pool).
    pub sessions: usize,
}

impl RelayOptions {
    /// A dialer for this server saying `hello`.
    pub fn dialer(&self, hello: Hello, handshake_timeout: Duration) -> Result<Dialer, crate::tls::TlsError> {
        let channel = ChannelConfig { connect_timeout: handshake_timeout, ..ChannelConfig::default() };
        let connector = Connector::new(self.transport, &self.addr, &self.tls, channel)?;
        if self.transport.is_encrypted() && self.tls.verify == Verify::Insecure {
            tracing::warn!(server = %self.addr, "insecure=true: the server's certificate is not verified");
        }
        Ok(Dialer { connector, addr: self.addr.clone(), hello, handshake_timeout })
    }
}

/// The `[relay]` table of an agent or access client config file.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFile {
    /// Server address, `host:port` or `:port`.
    pub addr: String,
    /// Transport: `tcp` (default).
    #[serde(default)]
    pub dialer: Option<String>,
    /// `tunnel.id = "..."`.
    #[serde(default)]
    pub tunnel: Option<TunnelIdTable>,
    /// `tunnelID = "..."`, the seed's other spelling.
    #[serde(default, rename = "tunnelID")]
    pub tunnel_id: Option<String>,
    /// Token (the `TUNNEL_TOKEN` environment variable or `--token` override it).
    #[serde(default)]
    pub token: Option<String>,
    /// Weight of this agent in its tunnel's pool (1-255).
    #[serde(default)]
    pub weight: Option<u8>,
    /// PEM file of CAs to trust for the server's certificate (TLS and QUIC).
    #[serde(default, rename = "caFile")]
    pub ca_file: Option<String>,
    /// `sha256:<hex>` of the server's certificate, instead of CA verification.
    #[serde(default)]
    pub pin: Option<String>,
    /// Name to send as SNI and to verify (default: the host of `addr`).
    #[serde(default, rename = "serverName")]
    pub server_name: Option<String>,
    /// Skip certificate verification (a warning is logged).
    #[serde(default)]
    pub insecure: bool,
    /// Sessions an agent keeps to the server (default 2): a spare for fail-over and
    /// restarts, spread over the server name's addresses.
    #[serde(default)]
    pub sessions: Option<usize>,
}

/// `tunnel.id`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelIdTable {
    /// The tunnel UUID.
    pub id: String,
}

/// Parses a tunnel ID with a message showing the expected form.
pub fn parse_tunnel_id(raw: &str) -> Result<uuid::Uuid, String> {
    uuid::Uuid::parse_str(raw.trim()).map_err(|e| {
        format!("invalid tunnel ID {raw:?} ({e}); expected a UUID like 4d21094e-b74c-4916-86c1-d9fa36ea677b")
    })
}

impl RelayFile {
    /// Reads a `-F` URL into the same shape as the file's table.
    pub fn from_url(raw: &str) -> Result<RelayFile, crate::url::UrlError> {
        let mut u = crate::url::NodeUrl::parse(raw)?;
        u.expect_scheme(&["relay", "relay+tcp", "relay+tls", "relay+quic"], Transport::SCHEMES)?;
        let tunnel_id = u.take(&["tunnel.id", "tunnelID"]);
        let token = u.take(&["token"]);
        let weight = u.take_with(&["weight"], str::parse::<u8>)?;
        let (ca_file, pin, server_name) = (u.take(&["caFile"]), u.take(&["pin"]), u.take(&["serverName"]));
        let insecure = u.take_bool(&["insecure"])?.unwrap_or(false);
        let sessions = u.take_with(&["sessions", "connections"], str::parse::<usize>)?;
        let file = RelayFile {
            addr: u.addr.clone(),
            dialer: Some(u.scheme.clone()),
            tunnel: None,
            tunnel_id,
            token,
            weight,
            ca_file,
            pin,
            server_name,
            insecure,
            sessions,
        };
        u.finish()?;
        Ok(file)
    }

    /// Validates into [`RelayOptions`]; errors name the key.
    pub fn validate(self) -> Result<RelayOptions, (String, String)> {
        let dialer = self.dialer.as_deref().unwrap_or("tcp");
        let transport = Transport::from_scheme(dialer)
            .ok_or_else(|| ("dialer".to_owned(), format!("unknown transport {dialer:?}, expected tcp, tls or quic")))?;
        let verify = match (&self.ca_file, &self.pin, self.insecure) {
            (None, None, false) => Verify::SystemRoots,
            (Some(ca), None, false) => Verify::CaFile(ca.into()),
            (None, Some(pin), false) => Verify::parse_pin(pin).map_err(|e| ("pin".to_owned(), e.to_string()))?,
            (None, None, true) => Verify::Insecure,
            _ => return Err(("caFile".into(), "give at most one of caFile, pin and insecure".into())),
        };
        let tls = ClientTls { verify, server_name: self.server_name.clone() };
        tls.server_name(&crate::url::dial_addr(&self.addr)).map_err(|e| ("serverName".to_owned(), e.to_string()))?;
        let raw_id = match (self.tunnel.map(|t| t.id), self.tunnel_id) {
            (Some(id), _) | (None, Some(id)) => id,
            (None, None) => {
                return Err((
                    "tunnel.id".into(),
                    "missing: the tunnel to join (a UUID assigned by the server's ingress)".into(),
                ))
            }
        };
        let tunnel = parse_tunnel_id(&raw_id).map_err(|e| ("tunnel.id".to_owned(), e))?;
        if self.addr.is_empty() {
            return Err(("addr".into(), "missing: the server's host:port".into()));
        }
        crate::url::split_host_port(&self.addr).map_err(|e| ("addr".to_owned(), e))?;
        if let Some(t) = &self.token {
            if t.is_empty() || t.len() > crate::wire::MAX_TOKEN {
                return Err(("token".into(), format!("must be 1 to {} bytes", crate::wire::MAX_TOKEN)));
            }
        }
        let weight = self.weight.unwrap_or(1);
        if weight == 0 {
            return Err(("weight".into(), "must be between 1 and 255".into()));
        }
        let sessions = self.sessions.unwrap_or(crate::defaults::AGENT_SESSIONS);
        if !(1..=16).contains(&sessions) {
            return Err(("sessions".into(), "must be between 1 and 16".into()));
        }
        Ok(RelayOptions {
            transport,
            addr: crate::url::dial_addr(&self.addr),
            tunnel,
            token: self.token,
            weight,
            tls,
            sessions,
        })
    }
}
