//! Tunnels and their pools of agent sessions, and opening a stream to a tunnel.
//!
//! A pool holds every live agent session of one tunnel. A stream picks a session by weighted
//! round-robin among those serving the stream's network; if the session cannot open the
//! stream, another is tried (up to [`defaults::OPEN_ATTEMPTS`]) before the visitor gets 502.
//! A session that fails leaves the pool at once.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tunnel_proto::channel::{Session, Stream};
use tunnel_proto::defaults;
use tunnel_proto::wire::{read_reply, Frame, Network, Networks, Reply, ReplyError, Status, StreamHeader};
use uuid::Uuid;

/// One agent session in a pool.
pub struct AgentSession {
    /// Server-local session number, for logs and removal.
    pub id: u64,
    /// The tunnel it joined.
    pub tunnel: Uuid,
    /// The session.
    pub session: Arc<dyn Session>,
    /// Networks it serves.
    pub networks: Networks,
    /// Relative share of streams (at least 1).
    pub weight: u8,
    budget: Arc<Semaphore>,
    max_streams: usize,
}

impl AgentSession {
    /// Resolves once no stream is in flight on this session (for a drain: call it after the
    /// session has left the pool, so no new stream starts).
    pub async fn idle(&self) {
        let _ = self.budget.acquire_many(self.max_streams as u32).await;
    }
}

#[derive(Default)]
struct Pool {
    sessions: RwLock<Vec<Arc<AgentSession>>>,
    next: AtomicUsize,
}

/// A pool is full.
#[derive(Debug, thiserror::Error)]
#[error("tunnel already has {0} sessions")]
pub struct PoolFull(pub usize);

/// Every tunnel with at least one agent session.
#[derive(Default)]
pub struct Registry {
    tunnels: DashMap<Uuid, Arc<Pool>>,
    next_id: AtomicU64,
}

/// A stream to an agent, with its place in the session's stream budget.
pub struct AgentStream {
    /// The stream, after the agent's 200 reply.
    pub stream: Stream,
    /// Held for the life of the stream.
    pub permit: OwnedSemaphorePermit,
    /// Which session carries it.
    pub session_id: u64,
}

impl Registry {
    /// Adds a session to its tunnel's pool.
    pub fn add(
        &self,
        tunnel: Uuid,
        session: Arc<dyn Session>,
        networks: Networks,
        weight: u8,
        max_streams: usize,
        max_sessions: usize,
    ) -> Result<Arc<AgentSession>, PoolFull> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let agent = Arc::new(AgentSession {
            id,
            tunnel,
            session,
            networks,
            weight: weight.max(1),
            budget: Arc::new(Semaphore::new(max_streams)),
            max_streams,
        });
        // The map entry stays locked while the session is pushed: `remove` drops a pool only
        // when it is empty, and must not drop one that is about to receive a session.
        let pool = self.tunnels.entry(tunnel).or_default();
        let mut sessions = pool.sessions.write().expect("pool lock");
        if sessions.len() >= max_sessions {
            return Err(PoolFull(max_sessions));
        }
        sessions.push(agent.clone());
        Ok(agent)
    }

    /// Removes a session from its pool (no-op when already gone).
    pub fn remove(&self, tunnel: &Uuid, id: u64) {
        if let Some(pool) = self.tunnels.get(tunnel).map(|p| p.clone()) {
            pool.sessions.write().expect("pool lock").retain(|s| s.id != id);
        }
        self.tunnels.remove_if(tunnel, |_, p| p.sessions.read().expect("pool lock").is_empty());
    }

    /// Number of live sessions in a tunnel's pool.
    pub fn session_count(&self, tunnel: &Uuid) -> usize {
        self.tunnels.get(tunnel).map(|p| p.sessions.read().expect("pool lock").len()).unwrap_or(0)
    }

    /// Picks a session of `tunnel` serving `network`, skipping `tried`, by weighted round-robin.
    fn pick(&self, tunnel: &Uuid, network: Network, tried: &[u64]) -> Option<Arc<AgentSession>> {
        let pool = self.tunnels.get(tunnel)?.clone();
        let sessions = pool.sessions.read().expect("pool lock");
        let candidates: Vec<&Arc<AgentSession>> = sessions
            .iter()
            .filter(|s| s.networks.contains(network) && !tried.contains(&s.id) && !s.session.is_closed())
            .collect();
        let total: usize = candidates.iter().map(|s| s.weight as usize).sum();
        if total == 0 {
            return None;
        }
        let mut slot = pool.next.fetch_add(1, Ordering::Relaxed) % total;
        for s in candidates {
            if slot < s.weight as usize {
                return Some(s.clone());
            }
            slot -= s.weight as usize;
        }
        None
    }

    /// Opens a stream to an agent of `tunnel`, sends `header` and `prefix` (pipelined), and
    /// waits for the agent's reply. Session failures are retried on other sessions; an
    /// answer from an agent (even an error) is final.
    pub async fn open(
        &self,
        tunnel: &Uuid,
        header: &StreamHeader,
        prefix: &[u8],
        timeouts: ReplyTimeouts,
    ) -> Result<AgentStream, Reply> {
        let mut tried = Vec::new();
        let mut busy = false;
        let mut last_error = None;
        let mut message = Frame::StreamHeader(header.clone()).to_vec();
        message.extend_from_slice(prefix);
        for _ in 0..defaults::OPEN_ATTEMPTS {
            let Some(agent) = self.pick(tunnel, header.network, &tried) else { break };
            tried.push(agent.id);
            let Ok(permit) = agent.budget.clone().try_acquire_owned() else {
                busy = true;
                continue;
            };
            match exchange(&agent.session, &message, timeouts).await {
                Ok((stream, reply)) if reply.status.is_ok() => {
                    return Ok(AgentStream { stream, permit, session_id: agent.id });
                }
                Ok((_, reply)) => return Err(reply),
                Err(ReplyError::Timeout(t)) => {
                    return Err(Reply::new(Status::GATEWAY_TIMEOUT, format!("agent did not answer within {t:?}")));
                }
                Err(err) => {
                    if matches!(err, ReplyError::Silent(_)) {
                        // Not even an acknowledgement: the peer is gone without a word
                        // (killed, frozen, or its link blackholed). Stop using the session.
                        tracing::info!(session = agent.id, %tunnel, "agent session unresponsive ({err}); closing it");
                        agent.session.close();
                    } else {
                        tracing::debug!(%err, session = agent.id, "opening a stream failed, trying another session");
                    }
                    if agent.session.is_closed() {
                        self.remove(tunnel, agent.id);
                    }
                    last_error = Some(err);
                }
            }
        }
        Err(match (tried.is_empty(), busy, last_error) {
            (true, _, _) => {
                Reply::new(Status::UNAVAILABLE, format!("no agent connected for tunnel {tunnel} ({})", header.network))
            }
            (_, _, Some(err)) => {
                Reply::new(Status::BAD_GATEWAY, format!("no agent of tunnel {tunnel} could take the stream: {err}"))
            }
            (_, true, None) => {
                Reply::new(Status::UNAVAILABLE, format!("every session of tunnel {tunnel} is at its stream limit"))
            }
            _ => Reply::new(Status::BAD_GATEWAY, format!("no agent of tunnel {tunnel} could take the stream")),
        })
    }
}

async fn exchange(
    session: &Arc<dyn Session>,
    message: &[u8],
    timeouts: ReplyTimeouts,
) -> Result<(Stream, Reply), ReplyError> {
    use tokio::io::AsyncWriteExt;
    let io = |e: std::io::Error| ReplyError::Frame(e.into());
    let mut stream = session.open_stream().await.map_err(io)?;
    stream.write_all(message).await.map_err(io)?;
    let reply = read_reply(&mut stream, timeouts.ack, timeouts.reply).await?;
    Ok((stream, reply))
}

/// How long an agent has to acknowledge a stream, and to answer it.
#[derive(Debug, Clone, Copy)]
pub struct ReplyTimeouts {
    /// First (provisional or final) reply: a live agent sends it at once.
    pub ack: Duration,
    /// Final reply: the agent's dial to its target.
    pub reply: Duration,
}
