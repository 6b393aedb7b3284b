//! 1. Memory before authentication: streams opened before the hello, and streams an agent
//!    opens though the server never accepts any, are reset at once instead of buffered. The
//!    real server's memory stays within a bound during the flood and comes back after it;
//!    `proto/tests/inbound.rs` shows the same flood buffered when the policy lets it in.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tunnel_proto::framed::{read_frame, write_frame};
use tunnel_proto::wire::{self, Frame, Hello, Networks, Role, Token};
use tunnel_proto::Uuid;
use tunnel_tests::{tunnel_id, Server};

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
