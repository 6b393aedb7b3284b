//! Public UDP entrypoints (`entryPoint=udp://...`): visitors from the internet -> server ->
//! `rudp` agents, with real `dig` against `dnsmasq`; routing by public rules only; budgets per
//! source address.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use tunnel_tests::dns::{dig, Dnsmasq};
use tunnel_tests::{addr_in, agent, curl, origin, tunnel_id, Server, Transport};

/// A UDP socket on 127.0.0.1 talking to `to`, with a generous read timeout.
fn client(to: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn recv(s: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 65535];
    let n = s.recv(&mut buf).unwrap_or_else(|e| panic!("no datagram: {e}"));
    buf.truncate(n);
    buf
}

/// A server with the `-L` query `query` and `n` entrypoints (TCP ones first, then UDP ones),
/// logging every refusal and flow.
fn start_server(t: Transport, query: &str, n: usize) -> Server {
    let url = format!("relay://127.0.0.1:0?{query}");
    Server::start_on(t, &["-L", &url, "--log-level", "info,tunnel_runtime=debug", "--admin", "127.0.0.1:0"], n)
}

/// The server's count of visitors of UDP entrypoint `ep` with `outcome`.
fn visitors(server: &Server, ep: SocketAddr, outcome: &str) -> u64 {
    let admin = addr_in(&server.proc.wait_for("admin listening"));
    let (_, text) = curl(&["-s", "--max-time", "10", &format!("http://{admin}/metrics")]);
    let prefix = format!("tunnel_visitors_total{{entrypoint=\"udp://{ep}\",outcome=\"{outcome}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.parse().unwrap())
}

fn dig_through_a_public_udp_entrypoint(t: Transport) {
    let dns = Dnsmasq::start(&[("dns.test", "192.0.2.7")]);
    let id = tunnel_id();
    // A TCP entrypoint beside it: the UDP one is the second in the log.
    let server =
        start_server(t, &format!("entryPoint=127.0.0.1:0,udp://127.0.0.1:0/dns.example&tunnel=dns.example:{id}"), 2);
    let _agent = agent(&server, &[&format!("rudp://:0/127.0.0.1:{}", dns.port)], &id, "", 1);
    let port = server.entrypoints[1].port();
    let answered = (0..30).filter(|_| dig(port, "dns.test") == "192.0.2.7").count();
    assert_eq!(answered, 30, "every query through the public UDP entrypoint is answered");
}

#[test]
fn concurrent_visitors_each_get_their_own_answers() {
    let names: Vec<(String, String)> = (1..=8).map(|i| (format!("host{i}.test"), format!("192.0.2.{i}"))).collect();
    let records: Vec<(&str, &str)> = names.iter().map(|(n, a)| (n.as_str(), a.as_str())).collect();
    let dns = Dnsmasq::start(&records);
    let id = tunnel_id();
    let server =
        start_server(Transport::Tcp, &format!("entryPoint=udp://127.0.0.1:0/dns.example&tunnel=dns.example:{id}"), 1);
    let _agent = agent(&server, &[&format!("rudp://:0/127.0.0.1:{}", dns.port)], &id, "", 1);
    let port = server.entrypoints[0].port();
    std::thread::scope(|s| {
        let askers: Vec<_> =
            names.iter().map(|(name, addr)| s.spawn(move || (0..5).all(|_| dig(port, name) == *addr))).collect();
        for (asker, (name, _)) in askers.into_iter().zip(&names) {
            assert!(asker.join().unwrap(), "{name}: every answer is its own");
        }
    });
    // Raw visitors, each a socket of its own, all waiting at once: each gets its own echo.
    let echo = origin::udp_echo();
    let server =
        start_server(Transport::Tcp, &format!("entryPoint=udp://127.0.0.1:0/echo.example&tunnel=echo.example:{id}"), 1);
    let _agent = agent(&server, &[&format!("rudp://:0/{echo}")], &id, "", 1);
    let visitors: Vec<UdpSocket> = (0..16).map(|_| client(server.entrypoints[0])).collect();
    for (i, v) in visitors.iter().enumerate() {
        v.send(format!("visitor {i} port {}", v.local_addr().unwrap().port()).as_bytes()).unwrap();
    }
    for (i, v) in visitors.iter().enumerate() {
        let want = format!("visitor {i} port {}", v.local_addr().unwrap().port());
        assert_eq!(String::from_utf8(recv(v)).unwrap(), want);
    }
}

#[test]
fn datagrams_sent_before_the_agent_answers_all_arrive() {
    let echo = origin::udp_echo();
    let id = tunnel_id();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    let toml = format!(
        "addr = \"127.0.0.1:0\"\n[[entrypoints]]\naddr = \"udp://127.0.0.1:0/echo.example\"\nkeepalive = true\nttl = \"30s\"\n\n[[ingress.rules]]\nhostname = \"echo.example\"\nendpoint = \"{id}\"\n"
    );
    std::fs::write(&path, toml).unwrap();
    let server = Server::start(&["-C", path.to_str().unwrap()], 1);
    let _agent = agent(&server, &[&format!("rudp://:0/{echo}")], &id, "", 1);
    let v = client(server.entrypoints[0]);
    // Twenty datagrams at once: the first opens the flow, the others wait in its queue.
    for i in 0..20u8 {
        v.send(&[i; 100]).unwrap();
    }
    let mut got: Vec<u8> = (0..20).map(|_| recv(&v)[0]).collect();
    got.sort();
    assert_eq!(got, (0..20).collect::<Vec<u8>>(), "none lost while the stream was being opened");
}

/// The test's own origin: a UDP socket that receives without answering.
fn silent_origin() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// What reached `origin` so far, without waiting.
fn pending(origin: &UdpSocket) -> Vec<Vec<u8>> {
    origin.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = origin.recv_from(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    origin.set_nonblocking(false).unwrap();
    got
}

#[test]
fn only_public_rules_route_a_udp_entrypoint() {
    let origin = silent_origin();
    let id = tunnel_id();
    let eps = "udp://127.0.0.1:0/nowhere.example,udp://127.0.0.1:0/private.example,udp://127.0.0.1:0/public.example";
    let server =
        start_server(Transport::Tcp, &format!("entryPoint={eps}&tunnel=private.example:${id},public.example:{id}"), 3);
    for host in ["nowhere.example", "private.example"] {
        server.proc.wait_for(&format!("entryPoint udp://127.0.0.1:0/{host}: "));
    }
    // One agent serves every hostname of the tunnel: only routing keeps a datagram out.
    let _agent = agent(&server, &[&format!("rudp://:0/{}", origin.local_addr().unwrap())], &id, "", 1);
    for (ep, host) in [(server.entrypoints[0], "nowhere.example"), (server.entrypoints[1], "private.example")] {
        client(ep).send(format!("to {host}").as_bytes()).unwrap();
        let line = server.proc.wait_for(&format!("host=\"{host}\""));
        assert!(line.contains("visitor refused") && line.contains("status=404"), "{line}");
    }
    assert!(pending(&origin).is_empty(), "no refused datagram reached the origin");
    client(server.entrypoints[2]).send(b"to public.example").unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = origin.recv_from(&mut buf).expect("the public rule's datagram arrives");
    assert_eq!(&buf[..n], b"to public.example", "and it is the first the origin ever saw");
    let eps = &server.entrypoints;
    assert_eq!([visitors(&server, eps[0], "refused"), visitors(&server, eps[1], "refused")], [1, 1]);
    assert_eq!([visitors(&server, eps[2], "served"), visitors(&server, eps[2], "refused")], [1, 0]);
}

#[test]
fn flows_per_source_are_capped_and_given_back() {
    let origin = silent_origin();
    let id = tunnel_id();
    let query = format!("entryPoint=udp://127.0.0.1:0/cap.example&tunnel=cap.example:{id}&maxUdpFlowsPerSource=2");
    let server = start_server(Transport::Tcp, &query, 1);
    let _agent = agent(&server, &[&format!("rudp://:0/{}", origin.local_addr().unwrap())], &id, "", 1);
    let ep = server.entrypoints[0];
    let (a, b, c) = (client(ep), client(ep), client(ep));
    let mut buf = [0u8; 2048];
    let mut agent_sockets = Vec::new();
    for (v, msg) in [(&a, b"a"), (&b, b"b")] {
        v.send(msg).unwrap();
        let (n, from) = origin.recv_from(&mut buf).expect("a flow under the cap is opened");
        assert_eq!(&buf[..n], msg);
        agent_sockets.push(from);
    }
    c.send(b"c").unwrap();
    server.proc.wait_for("too many UDP flows from this address");
    // The refused flow is forgotten after its refusal is logged; until then a datagram of c
    // would still go to it.
    server.proc.wait_for("reason=cap.example: too many UDP flows");
    assert!(pending(&origin).is_empty(), "the third flow of one address is refused");
    // An answer ends a's flow (no keepalive), which gives its place back.
    origin.send_to(b"for a", agent_sockets[0]).unwrap();
    assert_eq!(recv(&a), b"for a");
    server.proc.wait_for("reason=answered");
    c.send(b"c again").unwrap();
    let (n, _) = origin.recv_from(&mut buf).expect("a place given back is taken again");
    assert_eq!(&buf[..n], b"c again");
}

tunnel_tests::over_transports!(dig_through_a_public_udp_entrypoint);
