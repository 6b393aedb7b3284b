//! 1. Memory before authentication: streams opened before the hello, and streams an agent
//!    opens though the server never accepts any, are reset at once instead of buffered. The
//!    real server's memory stays within a bound during the flood and comes back after it;
//!    `proto/tests/inbound.rs` shows the same flood buffered when the policy lets it in.
//! 2. Memory held by idle visitors: visitors that each download a little, then hold their
//!    connections open without a byte more. The copy buffers their downloads grew are given
//!    back once they sit idle, and the server and agent come back near their baseline while
//!    the visitors stay connected.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnel_proto::framed::{read_frame, write_frame};
use tunnel_proto::wire::{self, Frame, Hello, Networks, Role, Token};
use tunnel_proto::Uuid;
use tunnel_tests::{agent, tunnel_id, Server};

use super::{rss_kib, runtime, session};

/// Streams each attacking connection opens, and what it writes on each.
const STREAMS: usize = 500;
const PER_STREAM: usize = 256 * 1024;
/// Attacking connections.
const CONNECTIONS: usize = 4;
/// What the attack may add to the server's memory at its peak (without the defence it added
/// about 125 MiB per connection).
const BOUND_KIB: u64 = 48 * 1024;

/// Opens `STREAMS` streams on `session` and writes `PER_STREAM` bytes on each (giving up on
/// a stream the server resets).
async fn flood(session: &std::sync::Arc<dyn tunnel_proto::channel::Session>) -> Vec<tunnel_proto::channel::Stream> {
    let chunk = vec![0x5a; PER_STREAM];
    let mut held = Vec::new();
    for _ in 0..STREAMS {
        let Ok(mut s) = session.open_stream().await else { break };
        let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(&chunk)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), s.flush()).await;
        held.push(s);
    }
    held
}

fn attack(as_agent: bool) -> (u64, u64, u64) {
    let id = tunnel_id();
    let url = format!("relay://127.0.0.1:0?tunnel=ok.example:{id}&handshakeTimeout=60s");
    let server = Server::start(&["-L", &url], 0);
    let pid = server.proc.pid();
    let base = rss_kib(pid);
    let rt = runtime();
    let peak = rt.block_on(async {
        let mut kept = Vec::new();
        for _ in 0..CONNECTIONS {
            let (s, mut control) = session(server.relay).await;
            if as_agent {
                // A valid hello (no tokens are configured): admitted, and pings would keep it.
                let hello = Hello {
                    version: wire::VERSION,
                    role: Role::Agent,
                    tunnel: Uuid::parse_str(&id).unwrap(),
                    networks: Networks::TCP,
                    weight: 1,
                    token: Token::default(),
                    hostname: String::new(),
                };
                write_frame(&mut control, &Frame::Hello(hello)).await.unwrap();
                let reply = read_frame(&mut control).await;
                assert!(matches!(&reply, Ok(Frame::HelloReply(r)) if r.status.is_ok()), "{reply:?}");
            } else {
                // Half a hello: the server waits for the rest until its handshake timeout.
                control.write_all(&[0x01, 0x00]).await.unwrap();
                control.flush().await.unwrap();
            }
            // Stream IO in a task of its own, as the mux wants it.
            let flooding = s.clone();
            let streams = tokio::spawn(async move { flood(&flooding).await }).await.unwrap();
            kept.push((s, control, streams));
        }
        // The streams' data reaches the server after the writes return: sample its memory
        // while the attack holds its connections.
        let mut peak = 0;
        for _ in 0..30 {
            peak = peak.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (s, _, _) in &kept {
            s.close();
        }
        drop(kept);
        peak
    });
    drop(rt);
    // Once the attackers are gone, the server settles back.
    let mut after = rss_kib(pid);
    for _ in 0..50 {
        if after <= base + BOUND_KIB / 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        after = rss_kib(pid);
    }
    (base, peak, after)
}

fn check(what: &str, (base, peak, after): (u64, u64, u64)) {
    eprintln!("{what}: server RSS {base} KiB before, {peak} KiB at the peak, {after} KiB after");
    assert!(peak <= base + BOUND_KIB, "{what}: the attack pinned {} KiB (bound {BOUND_KIB} KiB)", peak - base);
    assert!(after <= base + BOUND_KIB / 2, "{what}: memory did not come back: {after} KiB, baseline {base} KiB");
}

#[test]
fn streams_opened_before_the_hello_are_not_buffered() {
    check("before the hello", attack(false));
}

#[test]
fn streams_an_admitted_agent_opens_are_not_buffered() {
    check("an admitted agent", attack(true));
}

/// Visitors that download, then sit idle with their connections open.
const IDLE_VISITORS: usize = 300;
/// What each downloads first.
const DOWNLOAD: usize = 64 * 1024;
/// What they may leave in the server and agent together once idle (without the defence the
/// buffers their downloads grew stayed: 69 MiB for 300, about 235 KiB per visitor).
const IDLE_BOUND_KIB: u64 = 16 * 1024;

#[test]
fn idle_visitors_give_back_the_buffers_their_downloads_grew() {
    let rt = runtime();
    // The origin answers each byte a connection sends with DOWNLOAD bytes, and holds it open.
    let origin = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut byte = [0u8; 1];
                    while conn.read(&mut byte).await.unwrap_or(0) == 1 {
                        if conn.write_all(&vec![b'x'; DOWNLOAD]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    });
    let id = tunnel_id();
    let server = Server::start(
        &["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0/dl.example&tunnel=dl.example:{id}")],
        1,
    );
    let agent = agent(&server, &[&format!("rtcp://:0/{origin}")], &id, "", 1);
    let (spid, apid) = (server.proc.pid(), agent.pid());
    let rss = || rss_kib(spid) + rss_kib(apid);
    let base = rss();
    let entrypoint = server.entrypoints[0];
    let mut visitors = rt.block_on(async {
        let mut visitors = Vec::new();
        for _ in 0..IDLE_VISITORS {
            let mut tcp = tokio::net::TcpStream::connect(entrypoint).await.unwrap();
            tcp.write_all(b"x").await.unwrap();
            let mut got = vec![0u8; DOWNLOAD];
            tokio::time::timeout(super::ATTACK, tcp.read_exact(&mut got)).await.expect("download in time").unwrap();
            visitors.push(tcp);
        }
        visitors
    });
    let held = rss();
    let mut after = held;
    let deadline = std::time::Instant::now() + super::ATTACK;
    while after > base + IDLE_BOUND_KIB && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = rss();
    }
    eprintln!("{IDLE_VISITORS} idle visitors: server + agent RSS {base} KiB before, {held} KiB once downloaded, {after} KiB idle");
    assert!(
        after <= base + IDLE_BOUND_KIB,
        "{IDLE_VISITORS} idle visitors keep {} KiB in the server and agent (bound {IDLE_BOUND_KIB} KiB)",
        after - base
    );
    // Still connected: a second download arrives whole.
    rt.block_on(async {
        for tcp in visitors.iter_mut().take(10) {
            tcp.write_all(b"x").await.unwrap();
            let mut got = vec![0u8; DOWNLOAD];
            tokio::time::timeout(super::ATTACK, tcp.read_exact(&mut got))
                .await
                .expect("second download in time")
                .unwrap();
            assert!(got.iter().all(|b| *b == b'x'));
        }
    });
    drop(visitors);
}
