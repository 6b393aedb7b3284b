//! Server replicas sharing tunnels through a real `redis-server` ([SCALE]): three replicas
//! on 127.0.0.1, .2 and .3 with an agent on one; public HTTP, raw TCP, and access-client TCP
//! and UDP visitors on the others reach it; `kill -9` of the agent's replica; a replica with a
//! wrong cluster secret; a stale presence entry pointing in a circle; Redis stopped and back.
//!
//! Every wait is on a log line (or the harness's poll of an external program); durations are
//! printed as `measured:`, never asserted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use tunnel_tests::redis::Redis;
use tunnel_tests::{access, addr_in, curl, http_get, origin, tunnel_id, Proc, Server};

const SECRET: &str = "cluster-secret-0123456789";

/// A replica's server, with its admin and peer addresses.
struct Replica {
    server: Server,
    admin: SocketAddr,
    peer: SocketAddr,
}

impl Replica {
    /// Replica `name` on 127.0.0.`n`: an HTTP entrypoint, a raw one for `raw.example`, public
    /// rules `app.example` and `raw.example` and private ones `priv.example` and `dns.example`
    /// to `tunnel`.
    fn start(n: u8, name: &str, tunnel: &str, redis: &Redis, secret: &str) -> Replica {
        Replica::start_with(n, name, tunnel, redis, secret, "")
    }

    /// As [`Replica::start`], with `top` (e.g. the listener and certificate) at the head of
    /// its TOML.
    fn start_with(n: u8, name: &str, tunnel: &str, redis: &Redis, secret: &str, top: &str) -> Replica {
        let ip = format!("127.0.0.{n}");
        let toml = format!(
            r#"
{top}
addr = "{ip}:0"
entryPoint = ["{ip}:0", "{ip}:0/raw.example"]

[[ingress.rules]]
hostname = "app.example"
endpoint = "{tunnel}"
[[ingress.rules]]
hostname = "raw.example"
endpoint = "{tunnel}"
[[ingress.rules]]
hostname = "priv.example"
endpoint = "${tunnel}"
[[ingress.rules]]
hostname = "dns.example"
endpoint = "${tunnel}"

[admin]
addr = "{ip}:0"

[cluster]
name = "{name}"
peer = "{ip}:0"
redis = "{url}"
secret = "{secret}"
lease = "3s"
"#,
            url = redis.url()
        );
        let server = Server::start_file(&toml, 2);
        let admin = addr_in(&server.proc.wait_for("admin listening"));
        let peer = addr_in(&server.proc.wait_for("cluster: peer listener up"));
        server.proc.wait_for("cluster: presence published");
        Replica { server, admin, peer }
    }

    /// Waits until this replica has read that `other` holds `n` tunnels (the `k`-th time).
    fn sees(&self, other: &str, n: usize, k: usize) {
        let line = format!("replica={other} tunnels={n}");
        self.server.proc.wait_for_nth(&line, k);
    }

    fn readyz(&self) -> serde_json::Value {
        let (code, body) = curl(&[&format!("http://{}/readyz", self.admin)]);
        assert_eq!(code, 0, "curl /readyz");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/readyz is not JSON ({e}): {body}"))
    }
}

/// What every scenario has: Redis on a socket in a directory of its own, a tunnel, and an HTTP
/// and a UDP echo origin for its agent.
struct Setup {
    redis: Redis,
    tunnel: String,
    http: SocketAddr,
    udp: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let redis = Redis::unix(dir.path());
        Setup { redis, tunnel: tunnel_id(), http: origin::http("web"), udp: origin::udp_echo(), _dir: dir }
    }

    /// Replica `name` on 127.0.0.`n` with the cluster's secret.
    fn replica(&self, n: u8, name: &str) -> Replica {
        Replica::start(n, name, &self.tunnel, &self.redis, SECRET)
    }

    /// An agent with one session, on `r` only.
    fn agent_on(&self, r: &Replica) -> Proc {
        agent(&format!("relay://{}?tunnel.id={}&sessions=1", r.server.relay, self.tunnel), self.http, self.udp)
    }
}

/// An agent of `tunnel` serving `http` (TCP) and `udp` (UDP) with the given `-F` URL.
fn agent(relay: &str, http: SocketAddr, udp: SocketAddr) -> Proc {
    let (tcp_service, udp_service) = (format!("rtcp://:0/{http}"), format!("rudp://:0/{udp}"));
    let p = Proc::start("tunnel-agent", &["-L", &tcp_service, "-L", &udp_service, "-F", relay]);
    p.wait_for("session established");
    p
}

/// A raw TCP visitor: an HTTP request written by hand to the raw entrypoint; the answer
/// (its head and its `Content-Length` of body; the origin keeps the connection open).
fn raw_visit(addr: SocketAddr) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"GET /raw HTTP/1.1\r\nHost: raw.example\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok());
            if length.is_some_and(|n| body.len() >= n) {
                return text;
            }
        }
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return text,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// A raw visitor that sends one request, reads the start of its answer and keeps its
/// connection (and so its stream) open.
fn held_visitor(addr: SocketAddr) -> (TcpStream, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"GET /held HTTP/1.1\r\nHost: raw.example\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    let n = c.read(&mut buf).unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    (c, answer)
}

fn udp_visit(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.send_to(payload, addr).unwrap();
    let mut buf = [0u8; 2048];
    let n = s.recv(&mut buf).unwrap_or_else(|e| panic!("no UDP answer through {addr}: {e}"));
    buf[..n].to_vec()
}

/// Every kind of visitor on `r` reaches the origin `name` of the tunnel.
fn every_visitor_reaches(r: &Replica, tunnel: &str, name: &str, udp_tag: &[u8]) {
    let (status, body) = http_get(r.server.entrypoints[0], "app.example", "/web");
    assert_eq!(status, 200, "public HTTP visitor on {}: {body}\n{}", r.server.relay, r.server.proc.output());
    assert!(body.contains(&format!("origin={name}")), "{body}");
    let raw = raw_visit(r.server.entrypoints[1]);
    assert!(raw.starts_with("HTTP/1.1 200") && raw.contains(&format!("origin={name}")), "raw visitor: {raw}");
    let (_client, addrs) =
        access(&r.server, &["tcp://127.0.0.1:0/priv.example", "udp://127.0.0.1:0/dns.example"], tunnel, "");
    let (status, body) = http_get(addrs[0], "priv.example", "/private");
    assert_eq!(status, 200, "access-client TCP visitor: {body}");
    assert!(body.contains(&format!("origin={name}")), "{body}");
    assert_eq!(udp_visit(addrs[1], udp_tag), udp_tag, "access-client UDP visitor");
}

#[test]
fn visitors_on_any_replica_reach_an_agent_on_one_and_its_loss_costs_no_later_request() {
    let setup = Setup::new();
    let (tunnel, http, udp) = (&setup.tunnel, setup.http, setup.udp);
    let (a, b, c) = (setup.replica(1, "a"), setup.replica(2, "b"), setup.replica(3, "c"));
    // One session, on A first; B and C are its next candidates.
    let relay =
        format!("relay://{},{},{}?tunnel.id={tunnel}&sessions=1", a.server.relay, b.server.relay, c.server.relay);
    let mut agent = agent(&relay, http, udp);
    a.server.proc.wait_for("agent joined");
    b.sees("a", 1, 1);
    c.sees("a", 1, 1);
    for r in [&b, &c] {
        every_visitor_reaches(r, tunnel, "web", b"ping");
    }
    for r in [&b, &c] {
        let ready = r.readyz();
        assert_eq!(ready["cluster"]["state"], "ok", "{ready}");
        assert_eq!(ready["cluster"]["configMismatch"], serde_json::json!([]), "{ready}");
        let (_, metrics) = curl(&[&format!("http://{}/metrics", r.admin)]);
        assert!(metrics.contains(r#"tunnel_cluster_forwarded_total{direction="out",result="ok"}"#), "{metrics}");
        assert!(metrics.contains("tunnel_cluster_redis_up 1"), "{metrics}");
    }
    let (_, metrics) = curl(&[&format!("http://{}/metrics", a.admin)]);
    assert!(metrics.contains(r#"tunnel_cluster_forwarded_total{direction="in",result="ok"}"#), "{metrics}");

    // kill -9 of the agent's replica: its presence expires with the lease, the agent moves.
    let killed = Instant::now();
    a.server.proc.signal("KILL");
    let moved = agent.wait_for_nth("session established", 2);
    let holder = if moved.contains(&b.server.relay.to_string()) { &b } else { &c };
    let other = if std::ptr::eq(holder, &b) { &c } else { &b };
    holder.server.proc.wait_for("agent joined");
    let holder_name = if std::ptr::eq(holder, &b) { "b" } else { "c" };
    other.sees(holder_name, 1, 1);
    b.server.proc.wait_for("replica gone (its lease expired or it left) replica=a");
    c.server.proc.wait_for("replica gone (its lease expired or it left) replica=a");
    println!("measured: replica a forgotten by b and c {:?} after kill -9 (lease 3s)", killed.elapsed());
    let mut failures = Vec::new();
    for i in 0..20 {
        for r in [&b, &c] {
            let (status, body) = http_get(r.server.entrypoints[0], "app.example", &format!("/after/{i}"));
            if status != 200 {
                failures.push(format!("{} -> {status} {body}", r.server.relay));
            }
            if !raw_visit(r.server.entrypoints[1]).starts_with("HTTP/1.1 200") {
                failures.push(format!("raw on {}", r.server.relay));
            }
        }
    }
    assert!(failures.is_empty(), "requests failed after the agent moved: {failures:?}");
    every_visitor_reaches(other, tunnel, "web", b"after");
    agent.signal("KILL");
    let _ = agent.wait_exit();
}

/// Replicas sharing one certificate forward over TLS and over QUIC: the peer link pins the
/// relay's own certificate.
#[test]
fn forwarding_runs_over_tls_and_quic() {
    let dir = tempfile::tempdir().unwrap();
    let san = "subjectAltName=DNS:relay.example,IP:127.0.0.1,IP:127.0.0.2";
    let (cert, key) = tunnel_tests::self_signed(dir.path(), "relay.example", &["-addext", san]);
    let redis = Redis::unix(dir.path());
    let (http, udp) = (origin::http("web"), origin::udp_echo());
    for listener in ["tls", "quic"] {
        let tunnel = tunnel_id();
        let top =
            format!("listener = \"{listener}\"\ncertFile = \"{}\"\nkeyFile = \"{}\"", cert.display(), key.display());
        let (a_name, b_name) = (format!("{listener}-a"), format!("{listener}-b"));
        let a = Replica::start_with(1, &a_name, &tunnel, &redis, SECRET, &top);
        let b = Replica::start_with(2, &b_name, &tunnel, &redis, SECRET, &top);
        let fp = a.server.fingerprint.clone().expect("a fingerprint");
        let relay = format!("relay+{listener}://{}?tunnel.id={tunnel}&sessions=1&pin={fp}", a.server.relay);
        let mut agent = agent(&relay, http, udp);
        b.sees(&a_name, 1, 1);
        every_visitor_reaches(&b, &tunnel, "web", listener.as_bytes());
        b.server.proc.wait_for("cluster: link to replica up");
        a.server.proc.wait_for(&format!("replica={b_name}"));
        agent.signal("KILL");
        let _ = agent.wait_exit();
    }
}

#[test]
fn a_replica_with_a_wrong_secret_is_refused_and_logged() {
    let setup = Setup::new();
    let tunnel = &setup.tunnel;
    let a = setup.replica(1, "a");
    let intruder = Replica::start(4, "intruder", tunnel, &setup.redis, "another-secret-0123456789");
    let _agent = setup.agent_on(&a);
    intruder.sees("a", 1, 1);
    let (status, body) = http_get(intruder.server.entrypoints[0], "app.example", "/");
    assert_eq!(status, 502, "a replica outside the cluster gets nothing forwarded: {body}");
    assert!(
        !body.contains(tunnel.as_str()) && !body.contains(&a.peer.to_string()),
        "the answer reveals nothing: {body}"
    );
    intruder.server.proc.wait_for("does not hold this cluster's secret");
    a.server.proc.wait_for("cluster: peer refused");
    // And the other way: A's proof over the intruder's nonce did not pass, so A never served it.
    assert!(!a.server.proc.logged("cluster: replica connected"), "{}", a.server.proc.output());
}

/// A link carries `maxStreamsPerSession` streams; more visitors at once open more links.
#[test]
fn more_visitors_than_one_link_carries_open_more_links() {
    let setup = Setup::new();
    let a = setup.replica(1, "a");
    let b = Replica::start_with(2, "b", &setup.tunnel, &setup.redis, SECRET, "limits = { maxStreamsPerSession = 4 }");
    let _agent = setup.agent_on(&a);
    b.sees("a", 1, 1);
    // Ten raw visitors keep their connections (and streams) open, each after one answer.
    let mut held = Vec::new();
    for i in 0..10 {
        let (c, answer) = held_visitor(b.server.entrypoints[1]);
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "visitor {i} of 10 on a replica whose links carry 4 streams each: {answer:?}"
        );
        held.push(c);
    }
    b.server.proc.wait_for_nth("cluster: link to replica up", 3);
    drop(held);
}

/// A visitor on a replica whose own sessions of the tunnel are all at their stream limit goes
/// to another replica that holds the tunnel.
#[test]
fn a_replica_at_its_stream_limit_forwards_to_one_with_room() {
    let setup = Setup::new();
    let a = setup.replica(1, "a");
    let b = Replica::start_with(2, "b", &setup.tunnel, &setup.redis, SECRET, "limits = { maxStreamsPerSession = 1 }");
    // One session on each replica.
    let relay = format!("relay://{},{}?tunnel.id={}&sessions=2", a.server.relay, b.server.relay, setup.tunnel);
    let _agent = agent(&relay, setup.http, setup.udp);
    a.server.proc.wait_for("agent joined");
    b.server.proc.wait_for("agent joined");
    b.sees("a", 1, 1);
    let mut held = Vec::new();
    for i in 0..3 {
        let (c, answer) = held_visitor(b.server.entrypoints[1]);
        assert!(answer.starts_with("HTTP/1.1 200"), "visitor {i}: B's one stream is taken, A has room: {answer:?}");
        held.push(c);
    }
    a.server.proc.wait_for("cluster: replica connected");
    drop(held);
}

/// Idle connections from one address to a replica's peer port take only that address's
/// handshake places: another replica still links and forwards.
#[test]
fn idle_connections_to_the_peer_port_do_not_lock_out_the_other_replicas() {
    let setup = Setup::new();
    let (a, b) = (setup.replica(1, "a"), setup.replica(2, "b"));
    let _agent = setup.agent_on(&a);
    b.sees("a", 1, 1);
    let idle: Vec<TcpStream> = (0..100)
        .filter_map(|_| {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
            s.bind(&"127.0.0.9:0".parse::<SocketAddr>().unwrap().into()).ok()?;
            s.connect(&a.peer.into()).ok()?;
            Some(s.into())
        })
        .collect();
    assert_eq!(idle.len(), 100, "the idle connections are open");
    let (status, body) = http_get(b.server.entrypoints[0], "app.example", "/");
    assert_eq!(status, 200, "B still links to A and forwards: {body}");
    drop(idle);
}

#[test]
fn a_forwarded_stream_never_takes_a_second_hop() {
    let setup = Setup::new();
    let (redis, tunnel) = (&setup.redis, &setup.tunnel);
    let (a, b) = (setup.replica(1, "a"), setup.replica(2, "b"));
    // Stale presence in a circle: "ghost-a" at A's peer address and "ghost-b" at B's both
    // claim the tunnel, which no replica holds.
    for (name, peer) in [("ghost-a", a.peer), ("ghost-b", b.peer)] {
        let record = format!(r#"{{"name":"{name}","peer":"{peer}","config":"stale","tunnels":{{"{tunnel}":1}}}}"#);
        assert_eq!(redis.cli(&["SET", &format!("tunnel:replica:{name}"), &record, "PX", "60000"]).0, "OK");
        redis.cli(&["PUBLISH", "tunnel:presence", name]);
    }
    b.sees("ghost-a", 1, 1);
    a.sees("ghost-b", 1, 1);
    let (status, body) = http_get(b.server.entrypoints[0], "app.example", "/");
    assert_eq!(status, 502, "every holder was tried, then 502: {body}");
    a.server.proc.wait_for("not forwarded again");
    assert!(!b.server.proc.logged("not forwarded again"), "the stream came back to B: {}", b.server.proc.output());
    let (status, _) = http_get(a.server.entrypoints[0], "app.example", "/");
    assert_eq!(status, 502, "and from A the same");
    assert_eq!(
        b.server.proc.output().matches("not forwarded again").count(),
        1,
        "B refused A's one forwarded stream, and forwarded nothing on: {}",
        b.server.proc.output()
    );
    let ready = b.readyz();
    assert_eq!(ready["cluster"]["configMismatch"], serde_json::json!(["ghost-a", "ghost-b"]), "{ready}");
    b.server.proc.wait_for("replica runs another configuration");
}

#[test]
fn without_redis_local_tunnels_keep_working_and_forwarding_resumes_when_it_is_back() {
    let mut setup = Setup::new();
    let (a, b) = (setup.replica(1, "a"), setup.replica(2, "b"));
    let _agent = setup.agent_on(&a);
    let redis = &mut setup.redis;
    b.sees("a", 1, 1);
    assert_eq!(http_get(b.server.entrypoints[0], "app.example", "/").0, 200);

    redis.stop();
    a.server.proc.wait_for("cluster: Redis lost");
    b.server.proc.wait_for("cluster: Redis lost");
    assert_eq!(http_get(a.server.entrypoints[0], "app.example", "/").0, 200, "A's own tunnel keeps working");
    let ready = a.readyz();
    assert_eq!((ready["ready"].as_bool(), ready["degraded"].as_bool()), (Some(true), Some(true)), "{ready}");
    assert_eq!(ready["cluster"]["state"], "degraded", "{ready}");
    let (code, metrics) = curl(&[&format!("http://{}/metrics", a.admin)]);
    assert_eq!(code, 0);
    assert!(metrics.contains("tunnel_cluster_redis_up 0"), "{metrics}");
    let (status, body) = http_get(b.server.entrypoints[0], "app.example", "/");
    assert_eq!(status, 502, "no forwarding on presence nobody can renew: {body}");
    assert!(body.contains("no agent connected"), "B sees no holder at all: {body}");

    redis.resume();
    a.server.proc.wait_for_nth("cluster: presence published", 2);
    b.server.proc.wait_for_nth("cluster: presence published", 2);
    b.sees("a", 1, 2);
    assert_eq!(http_get(b.server.entrypoints[0], "app.example", "/").0, 200, "forwarding resumed");
    assert_eq!(a.readyz()["cluster"]["state"], "ok");
}
