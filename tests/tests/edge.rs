//! Attacks on the public edge ([SEC], issue: close the holes at the public edge). Each test
//! performs one attack, bounded in count and time, against the real binaries on loopback, and
//! checks what it must not achieve: memory pinned before authentication or by idle visitors
//! after a download, one tenant starving the others, a join to a tunnel left without a token,
//! a tunnel ID in a public answer, an access client torn down by load, handshake slots held by
//! idle connections, forged log lines.

#[path = "edge/access_load.rs"]
mod access_load;
#[path = "edge/answers.rs"]
mod answers;
#[path = "edge/handshakes.rs"]
mod handshakes;
#[path = "edge/logs.rs"]
mod logs;
#[path = "edge/memory.rs"]
mod memory;
#[path = "edge/tenants.rs"]
mod tenants;
#[path = "edge/tokens.rs"]
mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tunnel_proto::channel::{self, ChannelConfig, Session, Stream, Transport};
use tunnel_tests::{http_get, Server};

/// The server's resident memory in KiB, from `/proc`.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

/// A multi-thread runtime for the attackers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// Opens a session to the relay as a client would, and its control stream.
pub async fn session(relay: SocketAddr) -> (Arc<dyn Session>, Stream) {
    let session = channel::connect(Transport::Tcp, &relay.to_string(), &ChannelConfig::default())
        .await
        .expect("connect to relay");
    let stream = session.open_stream().await.expect("open control stream");
    (session, stream)
}

/// Opens a session to the relay as an access client of `tunnel` (no token) and returns it once
/// admitted, or `None` when refused.
pub async fn access_session(relay: SocketAddr, tunnel: &str) -> Option<(Arc<dyn Session>, Stream)> {
    use tunnel_proto::framed::{read_frame, write_frame};
    use tunnel_proto::wire::{self, Frame, Hello, Networks, Role, Token};
    let (s, mut control) = session(relay).await;
    let hello = Hello {
        version: wire::VERSION,
        role: Role::Access,
        tunnel: tunnel_proto::Uuid::parse_str(tunnel).unwrap(),
        networks: Networks::NONE,
        weight: 0,
        token: Token::default(),
        hostname: String::new(),
    };
    write_frame(&mut control, &Frame::Hello(hello)).await.unwrap();
    match read_frame(&mut control).await {
        Ok(Frame::HelloReply(r)) if r.status.is_ok() => Some((s, control)),
        _ => None,
    }
}

/// Sends `n` requests for `host` to `ep` and counts the 200s.
pub fn served(ep: SocketAddr, host: &str, n: usize) -> usize {
    (0..n).filter(|_| http_get(ep, host, "/").0 == 200).count()
}

/// How long an attack keeps going at most.
pub const ATTACK: Duration = Duration::from_secs(20);

/// Asserts that `server`'s log has no raw control character other than newline.
pub fn assert_clean_log(server: &Server) {
    let out = server.proc.output();
    let dirty: Vec<&str> = out.lines().filter(|l| l.chars().any(|c| c.is_control() && c != '\t')).collect();
    assert!(dirty.is_empty(), "raw control characters in the server log: {dirty:?}");
}
