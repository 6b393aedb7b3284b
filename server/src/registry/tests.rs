//! The pool and the stream open against real mux sessions over in-memory pipes, each with a
//! scripted agent on the far end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tunnel_proto::channel::mux::{MuxSession, Side};
use tunnel_proto::channel::{ChannelConfig, Session};
use tunnel_proto::framed::{read_frame, write_frame, ReplyTimeouts};
use tunnel_proto::wire::{Frame, Network, Networks, Reply, Status, StreamHeader};
use uuid::Uuid;

use super::{Join, OpenError, Registry};

/// How a scripted agent answers every stream.
#[derive(Clone, Copy)]
enum Agent {
    /// Reads the header and answers with this status.
    Answers(u16),
    /// Accepts the stream and never says a word.
    Silent,
}

const TUNNEL: Uuid = Uuid::from_u128(0x4d21094e_b74c_4916_86c1_d9fa36ea677b);
const QUICK: ReplyTimeouts = ReplyTimeouts { ack: Duration::from_millis(300), reply: Duration::from_secs(5) };

fn addr() -> SocketAddr {
    "127.0.0.1:1".parse().unwrap()
}

/// The server's end of a session whose agent behaves as `agent`.
fn session(agent: Agent) -> Arc<dyn Session> {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let config = ChannelConfig::default();
    let server = MuxSession::spawn(a, addr(), Side::Server, &config);
    let far = MuxSession::spawn(b, addr(), Side::Client, &config);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok(Some(mut stream)) = far.accept_stream().await {
            match agent {
                Agent::Answers(code) => {
                    assert!(matches!(read_frame(&mut stream).await, Ok(Frame::StreamHeader(_))));
                    let reply = Reply::new(Status(code), if code == 200 { "" } else { "no target" });
                    write_frame(&mut stream, &Frame::StreamReply(reply)).await.unwrap();
                    held.push(stream);
                }
                Agent::Silent => held.push(stream),
            }
        }
    });
    server
}

fn join(registry: &Registry, agent: Agent, networks: Networks, max_streams: usize) -> u64 {
    join_weighted(registry, agent, networks, max_streams, 1)
}

fn join_weighted(registry: &Registry, agent: Agent, networks: Networks, max_streams: usize, weight: u8) -> u64 {
    let j = Join { networks, weight, credential: Default::default(), max_streams, max_sessions: 8 };
    registry.join(TUNNEL, session(agent), j, CancellationToken::new(), true).unwrap().id
}

fn header(network: Network) -> StreamHeader {
    StreamHeader { network, hostname: "www.example.com".into(), visitor: None }
}

#[tokio::test]
async fn a_silent_session_is_closed_removed_and_the_stream_retried() {
    let registry = Registry::default();
    let silent = join(&registry, Agent::Silent, Networks::TCP, 10);
    let good = join(&registry, Agent::Answers(200), Networks::TCP, 10);
    // Round-robin starts with the first session: the silent one.
    let opened = registry.open(&TUNNEL, &header(Network::Tcp), b"GET /", QUICK).await.unwrap();
    assert_eq!(opened.session_id, good);
    let left: Vec<u64> = registry.tunnel(&TUNNEL).unwrap().pool.sessions().iter().map(|s| s.id).collect();
    assert_eq!(left, [good], "session {silent} left the pool");
}

#[tokio::test]
async fn an_agent_refusal_is_final() {
    let registry = Registry::default();
    join(&registry, Agent::Answers(404), Networks::TCP, 10);
    join(&registry, Agent::Answers(200), Networks::TCP, 10);
    match registry.open(&TUNNEL, &header(Network::Tcp), &[], QUICK).await {
        Err(OpenError::Refused(reply)) => assert_eq!(reply.status, Status::NOT_FOUND),
        other => panic!("expected the agent's 404, got {:?}", other.map(|s| s.session_id)),
    }
    assert_eq!(registry.session_count(&TUNNEL), 2, "a refusal closes no session");
}

#[tokio::test]
async fn no_session_for_the_network_and_spent_budgets() {
    let registry = Registry::default();
    let err = registry.open(&TUNNEL, &header(Network::Tcp), &[], QUICK).await.err().unwrap();
    assert!(matches!(err, OpenError::NoAgent(Network::Tcp)) && err.status() == Status::UNAVAILABLE);
    join(&registry, Agent::Answers(200), Networks::UDP, 10);
    let err = registry.open(&TUNNEL, &header(Network::Tcp), &[], QUICK).await.err().unwrap();
    assert!(matches!(err, OpenError::NoAgent(Network::Tcp)), "a UDP-only agent serves no TCP stream");
    let reply = err.reply_for_tunnel(&TUNNEL);
    assert!(reply.message.contains(&TUNNEL.to_string()) && reply.message.contains("tcp"), "{}", reply.message);

    join(&registry, Agent::Answers(200), Networks::TCP, 1);
    let held = registry.open(&TUNNEL, &header(Network::Tcp), &[], QUICK).await.unwrap();
    let err = registry.open(&TUNNEL, &header(Network::Tcp), &[], QUICK).await.err().unwrap();
    assert!(matches!(err, OpenError::Busy), "the only TCP session carries its one stream");
    drop(held);
    assert!(registry.open(&TUNNEL, &header(Network::Tcp), &[], QUICK).await.is_ok(), "the permit came back");
}

#[tokio::test]
async fn records_of_unnamed_tunnels_go_with_their_last_session() {
    let registry = Registry::default();
    let j =
        Join { networks: Networks::TCP, weight: 1, credential: Default::default(), max_streams: 1, max_sessions: 1 };
    let a = registry.join(TUNNEL, session(Agent::Silent), j.clone(), CancellationToken::new(), false).unwrap();
    let full = registry.join(TUNNEL, session(Agent::Silent), j.clone(), CancellationToken::new(), false);
    assert!(full.is_err(), "the pool holds one session");
    registry.leave(&TUNNEL, a.id);
    assert!(registry.tunnel(&TUNNEL).is_none());
    let kept = registry.join(TUNNEL, session(Agent::Silent), j, CancellationToken::new(), true).unwrap();
    registry.leave(&TUNNEL, kept.id);
    assert!(registry.tunnel(&TUNNEL).is_some(), "a tunnel named by ingress keeps its record");
}

#[tokio::test]
async fn weight_255_is_exclusive_while_it_can_take_streams() {
    let registry = Registry::default();
    let standby = join(&registry, Agent::Answers(200), Networks::TCP, 10);
    let active = join_weighted(&registry, Agent::Answers(200), Networks::TCP, 10, 255);
    for _ in 0..6 {
        let s = registry.open(&TUNNEL, &header(Network::Tcp), &[], QUICK).await.unwrap();
        assert_eq!(s.session_id, active, "the standby takes nothing while the exclusive session is up");
    }
    registry.leave(&TUNNEL, active);
    let s = registry.open(&TUNNEL, &header(Network::Tcp), &[], QUICK).await.unwrap();
    assert_eq!(s.session_id, standby, "the standby takes over");
}
