//! Opening a stream to a tunnel.
//!
//! A stream picks a session of the tunnel's pool serving its network; the stream header and
//! any bytes already read from the visitor go out at once (pipelined), and the agent's reply
//! is awaited under the acknowledgement and reply timeouts. A session that cannot take the
//! stream (its stream budget is spent, opening fails, it stays silent) is skipped and another
//! tried, up to [`defaults::OPEN_ATTEMPTS`]; a silent or failed session leaves the pool at
//! once. An answer from an agent, even a refusal, is final.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tunnel_proto::channel::Stream;
use tunnel_proto::defaults;
use tunnel_proto::framed::{exchange, ReplyError, ReplyTimeouts};
use tunnel_proto::wire::{Frame, Network, Reply, Scope, Status, StreamHeader};
use uuid::Uuid;

use super::{AgentSession, Registry};
use crate::visit::StreamRequest;

/// A stream to an agent, with its place in the session's stream budget.
pub struct AgentStream {
    /// The stream, after the agent's 200 reply.
    pub stream: Stream,
    /// Held for the life of the stream.
    pub permit: OwnedSemaphorePermit,
    /// Which session carries it.
    pub session_id: u64,
    /// That session.
    pub agent: std::sync::Arc<super::AgentSession>,
}

/// Why no stream to the tunnel could be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No session of the tunnel serves the network.
    #[error("no agent connected ({0})")]
    NoAgent(Network),
    /// Every session is at its stream limit.
    #[error("every session is at its stream limit")]
    Busy,
    /// Sessions were tried and failed.
    #[error("no agent could take the stream: {0}")]
    Failed(ReplyError),
    /// The agent acknowledged the stream but gave no final answer in time.
    #[error("agent did not answer within {0:?}")]
    Timeout(Duration),
    /// The agent answered with a refusal (no target, target unreachable, ...).
    #[error("{}", .0.message)]
    Refused(Reply),
    /// Other replicas holding the tunnel were tried, and none could take the stream.
    #[error("no replica could take the stream: {0}")]
    Replicas(String),
}

impl OpenError {
    /// The stream status of this failure.
    pub fn status(&self) -> Status {
        match self {
            OpenError::NoAgent(_) | OpenError::Busy => Status::UNAVAILABLE,
            OpenError::Failed(_) | OpenError::Replicas(_) => Status::BAD_GATEWAY,
            OpenError::Timeout(_) => Status::GATEWAY_TIMEOUT,
            OpenError::Refused(reply) => reply.status,
        }
    }

    /// The reply for whoever named the tunnel (an access client): the reason, with the
    /// tunnel's ID where the server itself failed.
    pub fn reply_for_tunnel(&self, tunnel: &Uuid) -> Reply {
        match self {
            OpenError::NoAgent(network) => {
                Reply::new(self.status(), format!("no agent connected for tunnel {tunnel} ({network})"))
            }
            OpenError::Busy => {
                Reply::new(self.status(), format!("every session of tunnel {tunnel} is at its stream limit"))
            }
            OpenError::Failed(err) => {
                Reply::new(self.status(), format!("no agent of tunnel {tunnel} could take the stream: {err}"))
            }
            OpenError::Timeout(_) => Reply::new(self.status(), self.to_string()),
            // Which replicas were tried, at which addresses, is for the server log.
            OpenError::Replicas(_) => {
                Reply::new(self.status(), format!("no replica holding tunnel {tunnel} could take the stream"))
            }
            OpenError::Refused(reply) => reply.clone(),
        }
    }
}

impl OpenError {
    /// The reply for a public visitor of `host`: the status and the host only. Tunnel IDs,
    /// target names and addresses, and the agent's own words stay in the server log.
    pub fn reply_for_public(&self, host: &str) -> Reply {
        let status = self.status();
        let why = match status {
            Status::UNAVAILABLE => "no agent connected",
            Status::GATEWAY_TIMEOUT => "the target did not answer in time",
            Status::NOT_FOUND => "no target for this host",
            Status::BAD_REQUEST => "bad request",
            _ if matches!(self, OpenError::Refused(_)) => "the target is unreachable",
            _ => "no agent could take the request",
        };
        Reply::new(status, format!("{host}: {why}"))
    }
}

/// What one try of a session gave.
pub(crate) enum Attempt {
    /// The agent (or replica) answered 200.
    Opened(AgentStream),
    /// It answered with a refusal.
    Answered(Reply),
    /// It acknowledged the stream but gave no final answer in time.
    Timeout(Duration),
    /// Its stream budget is spent.
    Busy,
    /// The stream failed before any answer; `silent` when not even acknowledged.
    Failed {
        /// The failure.
        error: ReplyError,
        /// No acknowledgement came: the peer is gone without a word.
        silent: bool,
    },
}

/// Tries `agent` once: takes a place in its stream budget, sends `message` (the stream's
/// header and first bytes) and waits for the answer. The one step of every attempt loop, over
/// local sessions and replica links alike.
pub(crate) async fn attempt(agent: &Arc<AgentSession>, message: &[u8], timeouts: ReplyTimeouts) -> Attempt {
    let Ok(permit) = agent.budget.clone().try_acquire_owned() else { return Attempt::Busy };
    match exchange(agent.session.as_ref(), message, timeouts).await {
        Ok((stream, reply)) if reply.status.is_ok() => {
            Attempt::Opened(AgentStream { stream, permit, session_id: agent.id, agent: agent.clone() })
        }
        Ok((_, reply)) => Attempt::Answered(reply),
        Err(ReplyError::Timeout(t)) => Attempt::Timeout(t),
        Err(error) => {
            let silent = matches!(error, ReplyError::Silent(_));
            Attempt::Failed { error, silent }
        }
    }
}

impl Registry {
    /// Opens a stream to an agent of `tunnel`, sends `header` and `prefix` (pipelined), and
    /// waits for the agent's reply; see the module documentation.
    pub async fn open(
        &self,
        tunnel: &Uuid,
        header: &StreamHeader,
        prefix: &[u8],
        timeouts: ReplyTimeouts,
    ) -> Result<AgentStream, OpenError> {
        let opening = crate::visit::Opening { prefix, ..Default::default() };
        let request = StreamRequest { tunnel, scope: Scope::Public, header, opening, timeouts, local_only: true };
        self.open_request(&request).await
    }

    /// The session [`Registry::open`] would try next for `network`, taking its round-robin
    /// turn: a caller keeping streams per session picks with this and then opens preferring
    /// it, so reused streams keep the pool's balance.
    pub fn pick_session(&self, tunnel: &Uuid, network: Network) -> Option<u64> {
        self.tunnel(tunnel)?.pool.pick(network, &[]).map(|agent| agent.id)
    }

    /// As [`Registry::open`], trying session `prefer` first when it is still in the pool, and
    /// sessions in `avoid` not at all.
    pub(crate) async fn open_request(&self, request: &StreamRequest<'_>) -> Result<AgentStream, OpenError> {
        let (tunnel, header, opening) = (request.tunnel, request.header, &request.opening);
        let Some(record) = self.tunnel(tunnel) else { return Err(OpenError::NoAgent(header.network)) };
        let mut preferred =
            opening.prefer.filter(|id| !opening.avoid.contains(id)).and_then(|id| record.pool.get(header.network, id));
        let mut tried = false;
        let mut skip = opening.avoid.to_vec();
        let mut busy = false;
        let mut last_error = None;
        let mut message = Frame::StreamHeader(header.clone()).to_vec();
        message.extend_from_slice(opening.prefix);
        for _ in 0..defaults::OPEN_ATTEMPTS {
            let Some(agent) = preferred.take().or_else(|| record.pool.pick(header.network, &skip)) else { break };
            tried = true;
            skip.push(agent.id);
            match attempt(&agent, &message, request.timeouts).await {
                Attempt::Opened(stream) => return Ok(stream),
                Attempt::Answered(reply) => return Err(OpenError::Refused(reply)),
                Attempt::Timeout(t) => return Err(OpenError::Timeout(t)),
                Attempt::Busy => busy = true,
                Attempt::Failed { error, silent } => {
                    if silent {
                        // Not even an acknowledgement: the peer is gone without a word
                        // (killed, frozen, or its link blackholed). Stop using the session.
                        tracing::info!(session = agent.id, %tunnel, %error, "agent session unresponsive; closing it");
                        agent.session.close();
                    } else {
                        tracing::debug!(session = agent.id, %tunnel, %error, "opening a stream failed, trying another session");
                    }
                    if silent || agent.session.is_closed() {
                        self.leave(tunnel, agent.id);
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(match (tried, busy, last_error) {
            (false, _, _) => OpenError::NoAgent(header.network),
            (_, _, Some(err)) => OpenError::Failed(err),
            (_, true, None) => OpenError::Busy,
            (_, false, None) => OpenError::NoAgent(header.network),
        })
    }
}
