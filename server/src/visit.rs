//! A visitor's way through the server: one path, whatever door it came through.
//!
//! The server has six doors: public TCP entrypoints ([`crate::entrypoint`]), each request of
//! an HTTP visitor on them ([`crate::http`]), access clients' streams ([`crate::relay`]),
//! public UDP flows ([`crate::udp_entry`]), the sealed-address gateway ([`crate::gateway`])
//! and streams another replica forwards ([`crate::cluster::peer`]). Each door only names its
//! visitor and calls this module, then pumps:
//! 1. [`Shared::admit`], once per visitor (connection, flow or access stream): the server's
//!    place for its kind of visitor and its source address's place ([`Door`] says which);
//!    the [`Admission`] gives both back when dropped;
//! 2. [`Shared::visit`] per stream: the routing decision ([`Routes::decide`] and nothing
//!    else), the tunnel's place in `maxStreamsPerTunnel`, the open (local sessions first,
//!    then replica links: [`Shared::open_stream`]) and the counts. An HTTP request, which may
//!    reuse an origin connection, asks [`Shared::decide`] and, when it needs a new stream,
//!    [`Shared::open`] (the same two halves);
//! 3. the door pumps the bytes until both sides are done or [`Opened::cut`] fires, and
//!    [`Opened::carried`] counts them.
//!
//! A stream that [`Shared::visit`] opened stays in [`LiveStreams`] while it lives: a reload
//! decides each again with the new routes and cuts those it no longer routes (a removed
//! private rule stops serving the connections it admitted before).
//!
//! Every refusal is a [`Refusal`]: what the visitor is told (status and host, nothing about
//! tunnels or addresses) apart from the detail for the log.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tunnel_proto::framed::ReplyTimeouts;
use tunnel_proto::wire::{Network, Reply, Scope, Status, StreamHeader};
use uuid::Uuid;

use crate::budget::Slot;
use crate::registry::{AgentStream, OpenError};
use crate::routing::{Decision, Reach, RouteError, Routes};
use crate::Shared;

/// The way a visitor came in: which places it takes, and what its refusals say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Door {
    /// A public TCP entrypoint (raw, TLS passthrough or HTTP), or the relay port shared with
    /// one.
    Entrypoint,
    /// One request of an HTTP visitor of an entrypoint: admitted with its connection
    /// ([`Door::Entrypoint`]), routed by its own host and path, and counted as opened once it
    /// is forwarded, on a new stream or a reused origin connection.
    Request,
    /// The sealed-address gateway.
    Gateway,
    /// A public UDP entrypoint: one visitor per flow.
    Udp,
    /// A stream of an access client's session.
    Access,
    /// A stream another replica forwards: admitted there, routed again here, opened on this
    /// replica's own sessions only.
    Forwarded,
}

impl Door {
    /// Whether visitors of this door are public (counted in `tunnel_visitors_total`).
    fn public(self) -> bool {
        matches!(self, Door::Entrypoint | Door::Gateway | Door::Udp)
    }
}

/// A visitor asking for a stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Visitor<'a> {
    /// How it came in.
    pub door: Door,
    /// Its source address (the session's, for access and forwarded streams).
    pub peer: SocketAddr,
    /// The hostname it names: canonical for public visitors, as sent otherwise.
    pub host: &'a str,
    /// Who asks, and the path of an HTTP request.
    pub reach: Reach<'a>,
    /// TCP or UDP.
    pub network: Network,
    /// The visitor's address as the agent is told it.
    pub forwarded_for: Option<SocketAddr>,
}

/// How to open: the bytes that go right behind the stream header, the session to try first,
/// and those not to try.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Opening<'a> {
    /// Bytes already read from the visitor.
    pub prefix: &'a [u8],
    /// A session (or replica link) to try first.
    pub prefer: Option<u64>,
    /// Sessions (or links) not to try.
    pub avoid: &'a [u64],
}

/// Why a visitor is refused: what it is told, and the detail for the log (empty when the
/// answer says it all).
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    /// The answer: status, and a message naming at most the host.
    pub reply: Reply,
    /// For the server's log only.
    pub detail: String,
}

impl Refusal {
    /// A refusal with `status` and `message` for the visitor and `detail` for the log.
    pub(crate) fn new(status: Status, message: impl Into<String>, detail: impl Into<String>) -> Refusal {
        Refusal { reply: Reply::new(status, message), detail: detail.into() }
    }

    fn route(err: &RouteError) -> Refusal {
        let message = err.public_message();
        let detail = err.to_string();
        let detail = if detail == message { String::new() } else { detail };
        Refusal { reply: Reply::new(err.status(), message), detail }
    }

    /// The reason to log: the detail, or the answer's message.
    pub(crate) fn reason(&self) -> &str {
        if self.detail.is_empty() {
            &self.reply.message
        } else {
            &self.detail
        }
    }
}

/// A visitor's places among the server's visitors and its source address's (an access
/// stream's: among the access streams and its tunnel's streams); given back when dropped.
#[derive(Default)]
pub(crate) struct Admission {
    _server: Option<OwnedSemaphorePermit>,
    _source: Option<Slot<IpAddr>>,
    _tunnel: Option<Slot<Uuid>>,
}

/// The streams [`Shared::visit`] opened that are still carrying bytes, with what decided
/// them, so a reload can decide each again.
#[derive(Default)]
pub(crate) struct LiveStreams {
    next: std::sync::atomic::AtomicU64,
    by_id: dashmap::DashMap<u64, LiveStream>,
}

struct LiveStream {
    host: String,
    reach: LiveReach,
    tunnel: Uuid,
    cut: tokio_util::sync::CancellationToken,
}

/// A [`Reach`] that owns its parts (a live stream carries no HTTP path).
#[derive(Clone, Copy)]
enum LiveReach {
    Public,
    Private(Uuid),
    Forwarded(Uuid, Scope),
}

impl LiveReach {
    fn of(reach: Reach<'_>) -> LiveReach {
        match reach {
            Reach::Public { .. } => LiveReach::Public,
            Reach::Private { access } => LiveReach::Private(access),
            Reach::Forwarded { tunnel, scope } => LiveReach::Forwarded(tunnel, scope),
        }
    }

    fn reach(self) -> Reach<'static> {
        match self {
            LiveReach::Public => Reach::Public { path: None },
            LiveReach::Private(access) => Reach::Private { access },
            LiveReach::Forwarded(tunnel, scope) => Reach::Forwarded { tunnel, scope },
        }
    }
}

/// A stream's entry in [`LiveStreams`]; removed when dropped.
pub(crate) struct Live {
    streams: Arc<LiveStreams>,
    id: u64,
    /// Cancelled when a reload no longer routes the stream.
    pub(crate) cut: tokio_util::sync::CancellationToken,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.streams.by_id.remove(&self.id);
    }
}

impl LiveStreams {
    fn register(self: &Arc<Self>, host: &str, reach: Reach<'_>, tunnel: Uuid) -> Live {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cut = tokio_util::sync::CancellationToken::new();
        let stream = LiveStream { host: host.to_owned(), reach: LiveReach::of(reach), tunnel, cut: cut.clone() };
        self.by_id.insert(id, stream);
        Live { streams: self.clone(), id, cut }
    }

    /// Decides every live stream again with `routes`; cuts those that no longer go to their
    /// tunnel, and returns how many.
    pub(crate) fn recheck(&self, routes: &Routes) -> usize {
        let mut cut = 0;
        for stream in self.by_id.iter() {
            let holds = routes.decide(&stream.host, stream.reach.reach()).is_ok_and(|d| d.tunnel == stream.tunnel);
            if !holds && !stream.cut.is_cancelled() {
                tracing::info!(host = %stream.host, tunnel = %stream.tunnel, "stream cut by the reload: no rule routes it any more");
                stream.cut.cancel();
                cut += 1;
            }
        }
        cut
    }
}

/// A stream to an agent for a visitor, with its place in the tunnel's stream budget.
pub(crate) struct Opened {
    /// The stream and its session's place.
    pub agent: AgentStream,
    /// The tunnel it goes to.
    pub tunnel: Uuid,
    /// The tunnel in metrics.
    pub label: String,
    /// The place in `maxStreamsPerTunnel` (an access stream's is in its admission).
    pub slot: Option<Slot<Uuid>>,
    /// Its entry among the live streams, when it is one a reload decides again.
    pub(crate) live: Option<Live>,
}

impl Shared {
    /// Takes a visitor's places, once: among the server's public visitors (or access
    /// streams) and, when `source` is known, its source address's. A visitor behind a
    /// trusted balancer takes its source place later ([`Shared::admit_source`]), once the
    /// balancer named it. `entrypoint` is the door in metrics.
    pub(crate) fn admit(&self, door: Door, entrypoint: &str, source: Option<IpAddr>) -> Result<Admission, Refusal> {
        let server = match door {
            Door::Entrypoint | Door::Gateway | Door::Udp => Some(&self.budgets.visitors),
            Door::Access => Some(&self.budgets.access_streams),
            Door::Request | Door::Forwarded => None,
        };
        let server = match server.map(|pool| pool.clone().try_acquire_owned()) {
            None => None,
            Some(Ok(permit)) => Some(permit),
            Some(Err(_)) => {
                let why = match door {
                    Door::Access => "server is at its access stream limit",
                    _ => "visitor limit reached",
                };
                return Err(self.refused(door, entrypoint, Refusal::new(Status::UNAVAILABLE, why, "")));
            }
        };
        let mut admission = Admission { _server: server, ..Admission::default() };
        if let Some(ip) = source {
            self.admit_source(&mut admission, door, entrypoint, ip)?;
        }
        Ok(admission)
    }

    /// Takes an access stream's place among the streams of `tunnel`, the access client's, at
    /// once: a stream that never sends its header holds it, so one tenant's silent streams
    /// cannot hold more than its tunnel's share of the access streams.
    pub(crate) fn admit_tunnel(&self, admission: &mut Admission, tunnel: &Uuid) -> Result<(), Refusal> {
        match self.budgets.streams_per_tunnel.take(tunnel) {
            Some(slot) => {
                admission._tunnel = Some(slot);
                Ok(())
            }
            None => Err(Refusal::new(Status::UNAVAILABLE, "tunnel is at its stream limit", "")),
        }
    }

    /// Takes the place of source address `ip` for a visitor already admitted.
    pub(crate) fn admit_source(
        &self,
        admission: &mut Admission,
        door: Door,
        entrypoint: &str,
        ip: IpAddr,
    ) -> Result<(), Refusal> {
        let (budget, why) = match door {
            Door::Entrypoint | Door::Gateway => {
                (&self.budgets.visitors_per_source, "too many visitors from this address")
            }
            Door::Udp => (&self.budgets.udp_flows_per_source, "too many UDP flows from this address"),
            Door::Request | Door::Access | Door::Forwarded => return Ok(()),
        };
        match budget.take(&ip) {
            Some(slot) => {
                admission._source = Some(slot);
                Ok(())
            }
            None => Err(self.refused(door, entrypoint, Refusal::new(Status::UNAVAILABLE, why, ""))),
        }
    }

    /// Counts a public visitor refused before it was served.
    fn refused(&self, door: Door, entrypoint: &str, refusal: Refusal) -> Refusal {
        if door.public() {
            self.metrics.visitor(entrypoint, "refused");
        }
        refusal
    }

    /// Counts a public visitor's outcome: `served`, `refused` or `left`.
    pub(crate) fn visited(&self, door: Door, entrypoint: &str, outcome: &'static str) {
        if door.public() {
            self.metrics.visitor(entrypoint, outcome);
        }
    }

    /// Where `visitor` goes, by the routes in force now.
    pub(crate) fn decide<'r>(&self, routes: &'r Routes, visitor: &Visitor<'_>) -> Result<Decision<'r>, Refusal> {
        routes.decide(visitor.host, visitor.reach).map_err(|err| Refusal::route(&err))
    }

    /// Routes `visitor` and opens its stream: see the module documentation.
    pub(crate) async fn visit(&self, visitor: &Visitor<'_>, prefix: &[u8]) -> Result<(String, Opened), Refusal> {
        let (tunnel, host) = {
            let routes = self.routes();
            let decision = self.decide(&routes, visitor)?;
            (decision.tunnel, decision.host)
        };
        let opening = Opening { prefix, ..Opening::default() };
        let mut opened = self.open(visitor, tunnel, &host, opening).await?;
        opened.live = Some(self.live.register(&host, visitor.reach, tunnel));
        Ok((host, opened))
    }

    /// Opens a stream to `tunnel` for `visitor`, naming canonical `host` to the agent: takes
    /// the tunnel's stream place, opens, and counts the stream opened or failed.
    pub(crate) async fn open(
        &self,
        visitor: &Visitor<'_>,
        tunnel: Uuid,
        host: &str,
        opening: Opening<'_>,
    ) -> Result<Opened, Refusal> {
        // An access stream took its place when admitted (`admit_tunnel`).
        let slot = match visitor.door {
            Door::Access => None,
            _ => match self.budgets.streams_per_tunnel.take(&tunnel) {
                Some(slot) => Some(slot),
                None => {
                    let message = match visitor.door {
                        Door::Forwarded => "tunnel is at its stream limit".to_owned(),
                        _ => format!("{host}: too many visitors at once"),
                    };
                    return Err(Refusal::new(Status::UNAVAILABLE, message, "tunnel is at its stream limit"));
                }
            },
        };
        let header =
            StreamHeader { network: visitor.network, hostname: host.to_owned(), visitor: visitor.forwarded_for };
        let scope = match visitor.reach {
            Reach::Public { .. } => Scope::Public,
            Reach::Private { access } => Scope::Private(access),
            Reach::Forwarded { scope, .. } => scope,
        };
        let label = self.tunnel_label(&tunnel);
        let request = StreamRequest {
            tunnel: &tunnel,
            scope,
            header: &header,
            opening,
            timeouts: self.limits().reply_timeouts(),
            // A forwarded stream crosses one replica at most: this replica's sessions only.
            local_only: visitor.door == Door::Forwarded,
        };
        match self.open_stream(&request).await {
            Ok(agent) => {
                match visitor.door {
                    // Counted when its response comes ([`Shared::forwarded_request`]).
                    Door::Request => {}
                    // Counted as opened by the replica that forwarded it.
                    Door::Forwarded => self.metrics.forwarded("in", "ok"),
                    _ => self.metrics.opened(&label),
                }
                Ok(Opened { agent, tunnel, label, slot, live: None })
            }
            Err(err) => {
                match visitor.door {
                    // Counted as failed by the replica that forwarded it.
                    Door::Forwarded => self.metrics.forwarded("in", "failed"),
                    _ => self.metrics.failed(&label, err.status().0),
                }
                tracing::debug!(peer = %visitor.peer, host, %tunnel, door = ?visitor.door, error = %err, "no stream opened");
                Err(self.open_refusal(visitor, &tunnel, host, &err))
            }
        }
    }

    /// Counts an HTTP request forwarded to `tunnel` (its label), whether on a new stream or
    /// a reused origin connection.
    pub(crate) fn forwarded_request(&self, label: &str) {
        self.metrics.opened(label);
    }

    /// What a visitor is told when no stream could be opened.
    fn open_refusal(&self, visitor: &Visitor<'_>, tunnel: &Uuid, host: &str, err: &OpenError) -> Refusal {
        let detail = err.reply_for_tunnel(tunnel).message;
        match visitor.door {
            Door::Entrypoint | Door::Request | Door::Gateway | Door::Udp => {
                Refusal { reply: err.reply_for_public(host), detail }
            }
            // An access client named its tunnel: it may read the reason.
            Door::Access => Refusal { reply: err.reply_for_tunnel(tunnel), detail: String::new() },
            Door::Forwarded => {
                let reply = match err {
                    // The forwarding replica tries the next holder on this answer.
                    OpenError::NoAgent(_) | OpenError::Busy | OpenError::Failed(_) => {
                        Reply::new(Status::UNAVAILABLE, detail.clone())
                    }
                    _ => err.reply_for_tunnel(tunnel),
                };
                Refusal { reply, detail }
            }
        }
    }

    /// Opens a stream of `request`: on a session of this server's pool, or when it has none
    /// that can take the stream, through another replica that holds the tunnel.
    pub(crate) async fn open_stream(&self, request: &StreamRequest<'_>) -> Result<AgentStream, OpenError> {
        // The open is boxed (the forwarding to another replica most of all): its state is
        // large, and every visitor task would otherwise reserve room for it for its whole life.
        let cluster = match &self.cluster {
            Some(cluster) if !request.local_only => cluster,
            _ => return Box::pin(self.registry.open_request(request)).await,
        };
        if request.opening.prefer.is_some_and(|id| cluster.is_link(id)) {
            return Box::pin(cluster.open(self, request)).await;
        }
        match Box::pin(self.registry.open_request(request)).await {
            Err(local @ (OpenError::NoAgent(_) | OpenError::Failed(_) | OpenError::Busy)) => {
                // No session here could take it (none, failed, or all at their stream limit):
                // another replica's may.
                let elsewhere = StreamRequest { opening: Opening { prefer: None, ..request.opening }, ..*request };
                match Box::pin(cluster.open(self, &elsewhere)).await {
                    Err(OpenError::NoAgent(_)) => Err(local),
                    other => other,
                }
            }
            other => other,
        }
    }
}

/// One stream to open: for which tunnel and whom, with which header, and how.
#[derive(Clone, Copy)]
pub(crate) struct StreamRequest<'a> {
    /// The tunnel.
    pub tunnel: &'a Uuid,
    /// Whom it is for; a replica forwarded to checks it again.
    pub scope: Scope,
    /// The stream header.
    pub header: &'a StreamHeader,
    /// The bytes behind the header, and which sessions to try.
    pub opening: Opening<'a>,
    /// How long the agent has to acknowledge and answer.
    pub timeouts: ReplyTimeouts,
    /// This server's own sessions only.
    pub local_only: bool,
}

impl Opened {
    /// Resolves when a reload no longer routes this stream (never for one it does not
    /// follow): its door then ends it. The future owns what it waits on, so the door can
    /// pump the stream meanwhile.
    pub(crate) fn cut(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let token = self.cut_token();
        async move {
            match token {
                Some(token) => token.cancelled_owned().await,
                None => std::future::pending().await,
            }
        }
    }

    /// The token [`Opened::cut`] waits on, for a stream handed to code that cannot select.
    pub(crate) fn cut_token(&self) -> Option<tokio_util::sync::CancellationToken> {
        self.live.as_ref().map(|l| l.cut.clone())
    }

    /// Counts the bytes the stream carried, once it is done.
    pub(crate) fn carried(&self, shared: &Shared, from_visitor: u64, to_visitor: u64) {
        shared.metrics.carried(&self.label, from_visitor, to_visitor);
    }
}
