//! A session's inbound policy: streams the peer may not open are reset at once, so the data
//! sent on them is dropped instead of buffered. Measured as this process's resident memory
//! while a peer floods a session: with `Inbound::Any` and nobody accepting, the data is held
//! (the measurement can tell); with `Inbound::ControlOnly` it is not. One test in its own
//! binary, so nothing else moves the figure.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tunnel_proto::channel::mux::{MuxSession, Side};
use tunnel_proto::channel::{ChannelConfig, Inbound, Session, Stream};

const STREAMS: usize = 200;
const PER_STREAM: usize = 256 * 1024;

fn rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap()
}

/// Floods a fresh session whose server side has `inbound`; returns the memory growth (KiB)
/// while the flood is held, and how many streams the server could accept.
async fn flood(inbound: Inbound) -> (i64, usize) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dialed = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    let server =
        MuxSession::spawn(accepted, addr, Side::Server, &ChannelConfig { inbound, ..ChannelConfig::default() });
    let client = MuxSession::spawn(dialed, addr, Side::Client, &ChannelConfig::default());
    let base = rss_kib();
    let writer: Arc<dyn Session> = client.clone();
    let held: Vec<Stream> = tokio::spawn(async move {
        let chunk = vec![0x5a; PER_STREAM];
        let mut held = Vec::new();
        for _ in 0..=STREAMS {
            let Ok(mut s) = writer.open_stream().await else { break };
            let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(&chunk)).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), s.flush()).await;
            held.push(s);
        }
        held
    })
    .await
    .unwrap();
    let mut peak = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(rss_kib() - base);
    }
    let mut accepted = 0;
    while let Ok(Ok(Some(_))) = tokio::time::timeout(Duration::from_millis(200), server.accept_stream()).await {
        accepted += 1;
    }
    drop(held);
    client.close();
    server.close();
    server.closed().await;
    (peak, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_streams_are_not_buffered() {
    let (refused, accepted) = flood(Inbound::ControlOnly).await;
    eprintln!("ControlOnly: +{refused} KiB, {accepted} stream(s) accepted");
    assert_eq!(accepted, 1, "only the control stream");
    let (held, accepted) = flood(Inbound::Any).await;
    eprintln!("Any, nobody accepting: +{held} KiB, {accepted} streams accepted");
    assert!(held > 30 * 1024, "the measurement must see {STREAMS} buffered streams: +{held} KiB");
    assert!(refused < 8 * 1024, "refused streams cost +{refused} KiB");
}
