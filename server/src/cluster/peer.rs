//! Replica to replica: the peer handshake (an HMAC over fresh nonces under the cluster
//! secret, both ways, never the secret itself), the links a replica dials to forward
//! visitors, and the peer listener that serves streams forwarded to this replica.
//!
//! A forwarded stream starts with a [`PeerStream`] frame. The receiving replica checks the
//! ingress again (public rules for a public visitor, the access client's tunnel for a private
//! stream), then opens the stream on a session of its own pool, never on another replica: a
//! stream crosses at most one hop, so stale presence cannot make a loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tunnel_proto::channel::{ChannelConfig, Connector, Inbound, Incoming, Listener, Session, Stream};
use tunnel_proto::framed::{read_frame, read_stream_header, refuse, write_frame};
use tunnel_proto::peer::{proof, verify, Prover};
use tunnel_proto::wire::{
    Frame, Network, Networks, PeerChallenge, PeerHello, PeerStream, Reply, Scope, Status, StreamHeader, PEER_NONCE,
    PEER_VERSION,
};
use tunnel_runtime::visitor::LogBudget;

use super::Cluster;
use crate::registry::{AgentSession, Join};
use crate::routing::Reach;
use crate::visit::{Door, Visitor};
use crate::Shared;

/// A link that failed to come up is not dialed again for this long: the visitors behind it
/// go to the next replica at once.
const DIAL_HOLD_OFF: Duration = Duration::from_secs(1);
/// Peer handshakes in progress at once on the peer listener.
const MAX_PEER_HANDSHAKES: usize = 64;

/// Info-level budget of refused peers (a wrong secret is worth a line, a flood is not).
static REFUSED: LogBudget = LogBudget::new();

fn nonce() -> [u8; PEER_NONCE] {
    let mut n = [0u8; PEER_NONCE];
    rand::rng().fill_bytes(&mut n);
    n
}

/// An authenticated session to another replica, as a pool entry: forwarded streams take its
/// stream budget, and pooled origin connections on it go when it does.
pub struct Link {
    /// The session, wrapped as the registry's sessions are.
    pub agent: Arc<AgentSession>,
    /// The replica's name, as it proved it.
    pub name: String,
}

/// Links kept to one replica at most: each carries `maxStreamsPerSession` streams, so
/// together they carry this many times that.
const MAX_LINKS_PER_REPLICA: usize = 16;

/// The links to one address.
#[derive(Default)]
pub(super) struct Slot {
    links: Vec<Arc<Link>>,
    failed: Option<Instant>,
}

impl Slot {
    /// The id of its first link that is up.
    pub(super) fn link_id(&self) -> Option<u64> {
        self.links.iter().find(|l| l.agent.is_live()).map(|l| l.agent.id)
    }
}

impl Cluster {
    /// A link to `peer` with room for a stream: an open one, or a new one when every open
    /// link is at its stream limit (up to [`MAX_LINKS_PER_REPLICA`]; beyond that the first,
    /// whose budget then says busy). One dial at a time per address; a failed dial is not
    /// tried again for [`DIAL_HOLD_OFF`].
    pub(super) async fn link(self: &Arc<Self>, shared: &Shared, peer: SocketAddr) -> Result<Arc<Link>, String> {
        let slot = self.slots.entry(peer).or_default().clone();
        let mut slot = slot.lock().await;
        slot.links.retain(|l| !l.agent.session.is_closed());
        if let Some(link) = slot.links.iter().find(|l| l.agent.budget().available_permits() > 0) {
            return Ok(link.clone());
        }
        if slot.links.len() >= MAX_LINKS_PER_REPLICA {
            return Ok(slot.links[0].clone());
        }
        if slot.failed.is_some_and(|at| at.elapsed() < DIAL_HOLD_OFF) {
            return Err(format!("replica at {peer} failed to connect less than {DIAL_HOLD_OFF:?} ago"));
        }
        match self.dial(shared, peer).await {
            Ok(link) => {
                slot.links.push(link.clone());
                slot.failed = None;
                Ok(link)
            }
            Err(why) => {
                slot.failed = Some(Instant::now());
                Err(why)
            }
        }
    }

    /// Dials `peer`, proves this replica and checks the other's proof, then keeps the link
    /// alive with pings until it ends.
    async fn dial(self: &Arc<Self>, shared: &Shared, peer: SocketAddr) -> Result<Arc<Link>, String> {
        let limits = shared.limits();
        let timeout = limits.ack_timeout.max(Duration::from_secs(1));
        let channel = ChannelConfig { connect_timeout: timeout, inbound: Inbound::Refuse, ..ChannelConfig::default() };
        let target = peer.to_string();
        let connector =
            Connector::new(shared.config.transport, &target, &self.tls, channel).map_err(|e| e.to_string())?;
        let own = self.config.name.clone();
        let secret = self.config.secret.expose().as_bytes().to_vec();
        let handshake = async {
            let session = connector.connect(&target).await.map_err(|e| format!("cannot connect: {e}"))?;
            let mut control =
                session.open_stream().await.map_err(|e| format!("cannot open its control stream: {e}"))?;
            let mine = nonce();
            let hello = Frame::PeerHello(PeerHello { version: PEER_VERSION, nonce: mine, name: own.clone() });
            write_frame(&mut control, &hello).await.map_err(|e| e.to_string())?;
            let challenge = match read_frame(&mut control).await.map_err(|e| e.to_string())? {
                Frame::PeerChallenge(c) => c,
                Frame::HelloReply(r) => return Err(format!("refused: {} {}", r.status, r.message)),
                other => return Err(format!("answered with {:?}", other.kind())),
            };
            if !verify(&secret, Prover::Listener, &mine, &challenge.nonce, &own, &challenge.name, &challenge.proof) {
                session.close();
                return Err(format!("replica {:?} does not hold this cluster's secret", challenge.name));
            }
            let answer = proof(&secret, Prover::Dialer, &challenge.nonce, &mine, &own, &challenge.name);
            write_frame(&mut control, &Frame::PeerProof(answer)).await.map_err(|e| e.to_string())?;
            match read_frame(&mut control).await.map_err(|e| e.to_string())? {
                Frame::HelloReply(r) if r.status.is_ok() => Ok((session, control, challenge.name)),
                Frame::HelloReply(r) => Err(format!("refused: {} {}", r.status, r.message)),
                other => Err(format!("answered with {:?}", other.kind())),
            }
        };
        let (session, control, name) = match tokio::time::timeout(limits.handshake_timeout, handshake).await {
            Ok(Ok(parts)) => parts,
            Ok(Err(why)) => {
                tracing::info!(%peer, reason = %why, "cluster: link to replica failed");
                return Err(why);
            }
            Err(_) => return Err(format!("no handshake within {:?}", limits.handshake_timeout)),
        };
        let id = shared.registry.next_session_id();
        let join = Join {
            networks: Networks::TCP.with(Network::Udp),
            weight: 1,
            credential: Default::default(),
            max_streams: limits.max_streams_per_session,
            max_sessions: 1,
        };
        let token = CancellationToken::new();
        let agent = Arc::new(AgentSession::new(id, uuid::Uuid::nil(), session.clone(), join, token.clone()));
        let link = Arc::new(Link { agent, name: name.clone() });
        self.by_id.insert(id, link.clone());
        tracing::info!(%peer, replica = %name, "cluster: link to replica up");
        let Some(shared) = self.server.get().and_then(std::sync::Weak::upgrade) else {
            session.close();
            return Err("the server is stopping".into());
        };
        let cluster = self.clone();
        tokio::spawn(async move {
            let stop = shared.life.stopping().clone();
            let interval = tunnel_proto::defaults::KEEPALIVE_INTERVAL;
            let end = tokio::select! {
                end = tunnel_runtime::client::run_control(&session, control, interval, tunnel_proto::defaults::KEEPALIVE_TIMEOUT, &stop) => format!("{end:?}"),
                _ = token.cancelled() => "closed".to_owned(),
            };
            cluster.by_id.remove(&id);
            // Streams in flight finish; no new one starts (the slot sees a closed session
            // only once it is closed, so take it out now).
            if let Some(slot) = cluster.slots.get(&peer).map(|s| s.clone()) {
                slot.lock().await.links.retain(|l| l.agent.id != id);
            }
            shared.registry.leave(&uuid::Uuid::nil(), id);
            tracing::info!(%peer, replica = %name, reason = %end, "cluster: link to replica down");
            session.closed().await;
        });
        Ok(link)
    }
}

/// Whether `id` is a live link (a session id the HTTP pool keeps connections on).
pub(super) fn live(cluster: &Cluster, id: u64) -> bool {
    cluster.by_id.get(&id).is_some_and(|l| l.agent.is_live())
}

/// The frame a forwarded stream starts with, and the bytes already read from the visitor.
pub(super) fn message(tunnel: uuid::Uuid, scope: Scope, header: &StreamHeader, prefix: &[u8]) -> Vec<u8> {
    let frame = Frame::PeerStream(PeerStream { hop: 1, scope, tunnel, header: header.clone() });
    let mut message = frame.to_vec();
    message.extend_from_slice(prefix);
    message
}

/// Whether a reply from another replica means it has no agent that could take the stream
/// (the next replica is tried), rather than an answer from an agent.
pub(super) fn unavailable(reply: &Reply) -> bool {
    reply.status == Status::UNAVAILABLE
}

/// Accepts peer sessions until the server stops.
pub(crate) async fn accept(shared: Arc<Shared>, cluster: Arc<Cluster>, listener: Listener) {
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PEER_HANDSHAKES));
    loop {
        let Some(incoming) =
            tunnel_proto::pump::accept_until(shared.life.stopping(), "peer", || listener.accept()).await
        else {
            return;
        };
        // The relay's per-source handshake budget, and a small one of the peer port's own: one
        // address cannot hold every handshake place of the peer port.
        let Some(source) = shared.budgets.handshakes.per_source().take(&incoming.peer_addr().ip()) else {
            tracing::debug!(peer = %incoming.peer_addr(), "cluster: too many handshakes from this address, connection dropped");
            continue;
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::debug!(peer = %incoming.peer_addr(), "cluster: too many peer handshakes, connection dropped");
            continue;
        };
        let (shared, cluster) = (shared.clone(), cluster.clone());
        let tasks = shared.life.tasks().clone();
        tasks.spawn(async move { serve(shared, cluster, incoming, (permit, source)).await });
    }
}

/// One peer session: the handshake, then the streams it forwards.
async fn serve<P>(shared: Arc<Shared>, cluster: Arc<Cluster>, incoming: Incoming, permit: P) {
    let addr = incoming.peer_addr();
    let timeout = shared.limits().handshake_timeout;
    // A replica speaks at once; an idle connection gives its places back early.
    let first = tunnel_proto::defaults::FIRST_BYTES_TIMEOUT.min(timeout);
    if !matches!(tokio::time::timeout(first, incoming.readable()).await, Ok(Ok(()))) {
        return tracing::debug!(peer = %addr, "cluster: peer refused: nothing sent in time");
    }
    let (session, control, name) = match tokio::time::timeout(timeout, handshake(&cluster, incoming)).await {
        Ok(Ok(parts)) => parts,
        Ok(Err(why)) => {
            return match REFUSED.take() {
                Some(suppressed) => tracing::warn!(peer = %addr, reason = %why, suppressed, "cluster: peer refused"),
                None => tracing::debug!(peer = %addr, reason = %why, "cluster: peer refused"),
            };
        }
        Err(_) => return tracing::debug!(peer = %addr, "cluster: peer refused: no handshake in time"),
    };
    drop(permit);
    tracing::info!(peer = %addr, replica = %name, "cluster: replica connected");
    let token = shared.life.session_token();
    let accept = async {
        while let Ok(Some(stream)) = session.accept_stream().await {
            let shared = shared.clone();
            let from = name.clone();
            shared.life.tasks().clone().spawn(async move { serve_stream(shared, &from, addr, stream).await });
        }
    };
    tokio::pin!(accept);
    let outcome = tokio::select! {
        outcome = crate::relay::control::control_loop(&shared, &session, control, &token) => outcome.to_string(),
        _ = &mut accept => "session ended".to_owned(),
    };
    session.close();
    tracing::info!(peer = %addr, replica = %name, reason = %outcome, "cluster: replica disconnected");
}

/// The listener's half of the handshake.
async fn handshake(cluster: &Cluster, incoming: Incoming) -> Result<(Arc<dyn Session>, Stream, String), String> {
    let session = incoming.establish().await.map_err(|e| format!("transport handshake failed: {e}"))?;
    let mut control = match session.accept_stream().await {
        Ok(Some(s)) => s,
        _ => return Err("closed before its hello".into()),
    };
    let hello = match read_frame(&mut control).await {
        Ok(Frame::PeerHello(h)) => h,
        Ok(other) => {
            let why = format!("expected a peer hello, got {:?} (agents and access clients connect to the relay address, not the peer address)", other.kind());
            let _ = write_frame(&mut control, &Frame::HelloReply(Reply::new(Status::BAD_REQUEST, why.clone()))).await;
            return Err(why);
        }
        Err(err) => return Err(format!("malformed peer hello: {err}")),
    };
    if hello.version != PEER_VERSION {
        let why = format!("unsupported peer protocol version {}, this replica speaks {PEER_VERSION}", hello.version);
        let _ = write_frame(&mut control, &Frame::HelloReply(Reply::new(Status::BAD_REQUEST, why.clone()))).await;
        return Err(why);
    }
    let secret = cluster.config.secret.expose().as_bytes();
    let own = cluster.config.name.as_str();
    let mine = nonce();
    let answer = proof(secret, Prover::Listener, &hello.nonce, &mine, &hello.name, own);
    let challenge = Frame::PeerChallenge(PeerChallenge { nonce: mine, proof: answer, name: own.to_owned() });
    write_frame(&mut control, &challenge).await.map_err(|e| e.to_string())?;
    let given = match read_frame(&mut control).await {
        Ok(Frame::PeerProof(p)) => p,
        Ok(other) => return Err(format!("expected a peer proof, got {:?}", other.kind())),
        // The dialer hangs up when our proof does not hold under its secret.
        Err(err) => {
            return Err(format!(
                "replica {:?} left after the challenge ({err}): its cluster secret differs",
                hello.name
            ))
        }
    };
    if !verify(secret, Prover::Dialer, &mine, &hello.nonce, &hello.name, own, &given) {
        let _ = write_frame(&mut control, &Frame::HelloReply(Reply::new(Status::UNAUTHORIZED, "wrong cluster secret")))
            .await;
        let _ = control.shutdown().await;
        return Err(format!("replica {:?} proved a wrong cluster secret", hello.name));
    }
    // Streams may follow the 200 at once: accept them before saying it.
    session.set_inbound(Inbound::Any);
    write_frame(&mut control, &Frame::HelloReply(Reply::ok())).await.map_err(|e| e.to_string())?;
    Ok((session, control, hello.name))
}

/// One forwarded stream from replica `from` at `peer`: a visitor of [`Door::Forwarded`],
/// checked against this replica's routes, then carried by a session of this replica's own
/// pool.
async fn serve_stream(shared: Arc<Shared>, from: &str, peer: SocketAddr, mut stream: Stream) {
    let timeout = shared.limits().handshake_timeout;
    let pick = |frame| match frame {
        Frame::PeerStream(p) => Ok(p),
        other => Err(other),
    };
    let Ok(p) = read_stream_header(&mut stream, timeout, pick).await else { return };
    if p.hop != 1 {
        tracing::info!(replica = %from, tunnel = %p.tunnel, hop = p.hop, "cluster: forwarded stream refused: a stream crosses one replica at most");
        return refuse(&mut stream, Reply::new(Status::UNAVAILABLE, "a stream crosses one replica at most")).await;
    }
    if !crate::routing::carried(p.header.network) {
        return refuse(&mut stream, Reply::new(Status::BAD_REQUEST, "unknown network")).await;
    }
    let visitor = Visitor {
        door: Door::Forwarded,
        peer,
        host: &p.header.hostname,
        reach: Reach::Forwarded { tunnel: p.tunnel, scope: p.scope },
        network: p.header.network,
        forwarded_for: p.header.visitor,
    };
    let mut opened = match shared.visit(&visitor, &[]).await {
        Ok((_, opened)) => opened,
        Err(refusal) => {
            tracing::info!(replica = %from, tunnel = %p.tunnel, scope = ?p.scope, host = %p.header.hostname, status = refusal.reply.status.0, reason = refusal.reason(), "cluster: forwarded stream refused here; not forwarded again");
            // Which rule, tunnel or agent is for this replica's log.
            let reply = match refusal.reply.status {
                Status::NOT_FOUND => Reply::new(Status::NOT_FOUND, "no route"),
                _ => refusal.reply,
            };
            return refuse(&mut stream, reply).await;
        }
    };
    if write_frame(&mut stream, &Frame::StreamReply(Reply::ok())).await.is_err() {
        return;
    }
    let cut = opened.cut();
    tokio::select! {
        biased;
        () = cut => tracing::debug!(replica = %from, tunnel = %opened.tunnel, "forwarded stream cut: a reload no longer routes it"),
        pumped = tunnel_proto::pump::pump(&mut stream, &mut opened.agent.stream) => {
            if let Ok((from_visitor, to_visitor)) = pumped {
                opened.carried(&shared, from_visitor, to_visitor);
            }
        }
    }
}
