//! Bad input ([SEC]): garbage and truncated or oversized frames on the relay port, connection
//! floods, slowloris and malformed visitors on the entrypoint (`bad_input/visitors.rs`), and
//! invalid tunnel IDs, unregistered tunnels and wrong tokens from agents (`bad_input/agents.rs`)
//! get a clear error or a close, and never disturb other tunnels.
//!
//! Every test runs a server with a healthy tunnel (`ok.example`: an agent and an HTTP origin).
//! A [`Prober`] curls it in a loop while the bad input is in flight, and the test curls it
//! once more at the end. Servers use 1 s handshake and sniff timeouts; the tests wait up to
//! [`DEADLINE`] for a close, so they check that the close comes, never how fast.

#[path = "bad_input/agents.rs"]
mod agents;
#[path = "bad_input/visitors.rs"]
mod visitors;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use tunnel_proto::channel::{self, ChannelConfig, Session, Stream, Transport};
use tunnel_proto::framed::read_frame;
use tunnel_proto::wire::{Frame, Hello, Networks, Reply, Role, Token};
use tunnel_proto::Uuid;
use tunnel_tests::{agent, curl, http_get, origin, read_until_close, tunnel_id, Proc, Server};

/// How long a test waits for the server to close a bad connection: far above the timeouts
/// configured, so that a slow machine does not fail, while a server that never closes does.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Short handshake and sniff timeouts, appended to a server's `-L` URL.
pub const FAST: &str = "&sniffTimeout=1s&handshakeTimeout=1s";

/// The healthy tunnel's hostname.
pub const HEALTHY: &str = "ok.example";

/// A server with the healthy tunnel and its agent.
pub struct World {
    /// The server.
    pub server: Server,
    /// The healthy tunnel's agent.
    pub agent: Proc,
    /// The healthy tunnel's ID.
    pub id: String,
}

impl World {
    /// A server routing `ok.example` to a fresh tunnel, plus `rules` (`,host:UUID...`) and
    /// `query` (`&key=value...`) on its `-L` URL; the healthy agent adds `agent_query` to its
    /// relay URL.
    pub fn start(rules: &str, query: &str, agent_query: &str) -> World {
        let id = tunnel_id();
        let url = format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel={HEALTHY}:{id}{rules}{query}");
        World::with_server(Server::start(&["-L", &url], 1), id, agent_query)
    }

    /// Starts the healthy agent (and its origin) on a running server whose ingress routes
    /// `ok.example` to `id`.
    pub fn with_server(server: Server, id: String, agent_query: &str) -> World {
        let origin = origin::http("healthy");
        let agent = agent(&server, &[&format!("rtcp://:0/{origin}")], &id, agent_query, 1);
        World { server, agent, id }
    }

    /// The (only) entrypoint.
    pub fn ep(&self) -> SocketAddr {
        self.server.entrypoints[0]
    }

    /// One curl through the healthy tunnel must succeed.
    pub fn assert_healthy(&self) {
        if let Err(why) = probe_once(self.ep()) {
            panic!(
                "the healthy tunnel failed after the bad input: {why}\nserver output:\n{}",
                self.server.proc.output()
            );
        }
    }

    /// Starts curling the healthy tunnel in the background.
    pub fn probe(&self) -> Prober {
        Prober::start(self.ep())
    }
}

fn probe_once(ep: SocketAddr) -> Result<(), String> {
    let (code, out) = curl(&["-w", "\n%{http_code}", "-H", &format!("Host: {HEALTHY}"), &format!("http://{ep}/probe")]);
    if code != 0 {
        return Err(format!("curl exit code {code}: {out}"));
    }
    match out.rsplit_once('\n') {
        Some((body, "200")) if body.starts_with("origin=healthy") => Ok(()),
        _ => Err(format!("unexpected answer: {out:?}")),
    }
}

/// Curls the healthy tunnel in a loop, from its start until [`Prober::finish`]; at least one
/// request runs after the start, and every request must succeed.
pub struct Prober {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<Result<usize, String>>>,
}

impl Prober {
    fn start(ep: SocketAddr) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let mut done = 0;
            loop {
                probe_once(ep).map_err(|e| format!("request {}: {e}", done + 1))?;
                done += 1;
                if flag.load(Ordering::SeqCst) {
                    return Ok(done);
                }
            }
        });
        Prober { stop, handle: Some(handle) }
    }

    /// Stops probing; panics if any request failed.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take().expect("running").join() {
            Ok(Ok(n)) => assert!(n >= 1),
            Ok(Err(why)) => panic!("the healthy tunnel failed during the bad input: {why}"),
            Err(_) => panic!("prober thread panicked"),
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// `n` pseudo-random bytes, reproducible from `seed`.
pub fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut buf);
    buf
}

/// Reads until the server closes and asserts that it did, within [`DEADLINE`]; returns
/// what was read.
pub fn assert_closed(conn: &mut TcpStream, what: &str) -> Vec<u8> {
    let (read, closed) = read_until_close(conn, DEADLINE);
    assert!(closed, "{what}: still open after {DEADLINE:?}; read so far: {:?}", String::from_utf8_lossy(&read));
    read
}

#[test]
fn garbage_on_the_relay_port_is_closed() {
    let world = World::start("", FAST, "");
    let mut conns = Vec::new();
    for seed in 0..8u64 {
        let mut conn = TcpStream::connect(world.server.relay).expect("connect to relay");
        // The server may close, even reset, before it has read everything: only the close
        // matters here.
        let _ = conn.write_all(&random_bytes(seed, 4096 + 512 * seed as usize));
        conns.push((format!("garbage seed {seed}"), conn));
    }
    conns.push(("idle connection".to_owned(), TcpStream::connect(world.server.relay).expect("connect")));
    let prober = world.probe();
    for (what, conn) in &mut conns {
        assert_closed(conn, what);
    }
    prober.finish();
    world.assert_healthy();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// Opens a session to the relay and its first stream (where the hello goes), as a client.
async fn control(relay: SocketAddr) -> (Arc<dyn Session>, Stream) {
    let session = channel::connect(Transport::Tcp, &relay.to_string(), &ChannelConfig::default())
        .await
        .expect("connect to relay");
    let stream = session.open_stream().await.expect("open control stream");
    (session, stream)
}

/// Sends `bytes` on a new session's control stream and returns the hello reply, after
/// checking that the server then closes the session.
async fn answer_to(relay: SocketAddr, bytes: &[u8], what: &str) -> Reply {
    let (session, mut stream) = control(relay).await;
    stream.write_all(bytes).await.expect("write");
    stream.flush().await.expect("flush");
    let reply = match timeout(DEADLINE, read_frame(&mut stream)).await {
        Ok(Ok(Frame::HelloReply(r))) => r,
        Ok(other) => panic!("{what}: expected a hello reply, got {other:?}"),
        Err(_) => panic!("{what}: no hello reply within {DEADLINE:?}"),
    };
    assert_session_closed(&session, &mut stream, what).await;
    reply
}

/// The control stream reaches its end (or fails) and the session closes, within [`DEADLINE`].
async fn assert_session_closed(session: &Arc<dyn Session>, stream: &mut Stream, what: &str) {
    let mut buf = [0u8; 256];
    match timeout(DEADLINE, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("{what}: unexpected bytes after the reply: {:?}", &buf[..n]),
        Err(_) => panic!("{what}: control stream still open after {DEADLINE:?}"),
    }
    assert!(timeout(DEADLINE, session.closed()).await.is_ok(), "{what}: session still open after {DEADLINE:?}");
}

fn hello(version: u8, tunnel: Uuid, token: &str) -> Hello {
    Hello {
        version,
        role: Role::Agent,
        tunnel,
        networks: Networks::TCP,
        weight: 1,
        token: Token(token.as_bytes().to_vec().into()),
        hostname: String::new(),
    }
}

#[test]
fn truncated_hello_is_closed_within_the_handshake_timeout() {
    let world = World::start("", FAST, "");
    let rt = runtime();
    let full = Frame::Hello(hello(1, world.id.parse().unwrap(), "")).to_vec();
    let (session, mut stream) = rt.block_on(async {
        let (session, mut stream) = control(world.server.relay).await;
        stream.write_all(&full[..2]).await.expect("write");
        stream.flush().await.expect("flush");
        (session, stream)
    });
    let prober = world.probe();
    rt.block_on(assert_session_closed(&session, &mut stream, "2 bytes of a hello"));
    prober.finish();
    world.assert_healthy();
}

#[test]
fn malformed_and_oversized_hellos_get_400_and_a_close() {
    let world = World::start("", FAST, "");
    let known: Uuid = world.id.parse().unwrap();
    let mut bad_role = Frame::Hello(hello(1, known, "")).to_vec();
    bad_role[4] = 9;
    let mut bad_token_len = Frame::Hello(hello(1, known, "abc")).to_vec();
    bad_token_len[3 + 20] = 200;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("hello header with length 0xFFFF", vec![0x01, 0xff, 0xff], "65535"),
        ("unknown frame kind", vec![0x99, 0x00, 0x00], "0x99"),
        ("ping instead of hello", Frame::Ping(1).to_vec(), "Ping"),
        ("hello with role 9", bad_role, "unknown role"),
        ("hello whose token length disagrees", bad_token_len, "token length"),
        ("hello with version 99", Frame::Hello(hello(99, known, "")).to_vec(), "99"),
    ];
    let rt = runtime();
    let prober = world.probe();
    for (what, bytes, needle) in &cases {
        let reply = rt.block_on(answer_to(world.server.relay, bytes, what));
        assert_eq!(reply.status.0, 400, "{what}: {reply:?}");
        assert!(reply.message.contains(needle), "{what}: the reply should say {needle:?}: {reply:?}");
    }
    prober.finish();
    world.assert_healthy();
}

#[test]
fn unknown_tunnel_gets_404_without_tokens() {
    let world = World::start("", FAST, "");
    let stray = Uuid::new_v4();
    let rt = runtime();
    let prober = world.probe();
    for role in [Role::Agent, Role::Access] {
        let h = Hello { role, ..hello(1, stray, "") };
        let reply = rt.block_on(answer_to(world.server.relay, &Frame::Hello(h).to_vec(), "unknown tunnel"));
        assert_eq!(reply.status.0, 404, "{role:?}: {reply:?}");
        assert!(reply.message.contains(&stray.to_string()), "the 404 names the tunnel: {reply:?}");
    }
    prober.finish();
    world.assert_healthy();
}

#[test]
fn unknown_tunnel_and_wrong_token_get_the_same_401() {
    const TOKEN: &str = "relay-Secret-3d9f";
    let world = World::start("", &format!("{FAST}&token={TOKEN}"), &format!("token={TOKEN}"));
    let known: Uuid = world.id.parse().unwrap();
    let stray = Uuid::new_v4();
    let rt = runtime();
    let prober = world.probe();
    let cases = [
        ("unknown tunnel, right token", stray, TOKEN),
        ("unknown tunnel, no token", stray, ""),
        ("known tunnel, wrong token", known, "wrong-Secret-3d9f"),
        ("known tunnel, no token", known, ""),
    ];
    let mut replies = Vec::new();
    for (what, tunnel, token) in cases {
        let reply = rt.block_on(answer_to(world.server.relay, &Frame::Hello(hello(1, tunnel, token)).to_vec(), what));
        assert_eq!(reply.status.0, 401, "{what}: {reply:?}");
        replies.push((what, reply));
    }
    for (what, reply) in &replies[1..] {
        assert_eq!(reply, &replies[0].1, "{what} and {} must get the same answer", replies[0].0);
    }
    prober.finish();
    world.assert_healthy();
    let out = world.server.proc.output();
    assert!(!out.contains(TOKEN) && !out.contains("wrong-Secret"), "the server logged a token:\n{out}");
}

#[test]
fn connection_flood_does_not_disturb_other_tunnels() {
    // Long timeouts, so that the flood is still open while the other tunnels are checked.
    let other = tunnel_id();
    let world = World::start(&format!(",b.example:{other}"), "&sniffTimeout=60s&handshakeTimeout=60s", "");
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(TcpStream::connect_timeout(&world.server.relay, DEADLINE).expect("connect to relay"));
        flood.push(TcpStream::connect_timeout(&world.ep(), DEADLINE).expect("connect to entrypoint"));
    }
    let prober = world.probe();
    for _ in 0..5 {
        world.assert_healthy();
    }
    // A new agent still joins, and its tunnel serves.
    let origin_b = origin::http("b");
    let _agent_b = agent(&world.server, &[&format!("rtcp://:0/{origin_b}")], &other, "", 2);
    let (status, body) = http_get(world.ep(), "b.example", "/");
    assert_eq!((status, body.starts_with("origin=b")), (200, true), "{body}");
    prober.finish();
    drop(flood);
    world.assert_healthy();
}
