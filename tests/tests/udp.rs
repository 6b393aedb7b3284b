//! UDP through tunnels: `udp://` access listeners -> server -> `rudp` agents, with real `dig`
//! against `dnsmasq` and real `iperf3`.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use tunnel_tests::dns::{dig, free_tcp_udp_port, Dnsmasq};
use tunnel_tests::{access, agent, origin, poll_until, tunnel_id, External, Proc, Server, Transport};

fn server_for(t: Transport, rules: &str) -> Server {
    Server::start_on(t, &["-L", &format!("relay://127.0.0.1:0?tunnel={rules}")], 0)
}

/// A UDP socket talking to `to`, with a generous read timeout.
fn client(to: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn ask(s: &UdpSocket, payload: &[u8]) -> Vec<u8> {
    s.send(payload).unwrap();
    let mut buf = vec![0u8; 65535];
    let n = s.recv(&mut buf).unwrap_or_else(|e| panic!("no answer through the tunnel: {e}"));
    buf.truncate(n);
    buf
}

fn dig_through_the_tunnel_answers_every_query(t: Transport) {
    let dns = Dnsmasq::start(&[("dns.test", "192.0.2.7")]);
    let id = tunnel_id();
    let server = server_for(t, &format!("dns.srv-2.local:${id}"));
    let _agent = agent(&server, &[&format!("rudp://:0/127.0.0.1:{}", dns.port)], &id, "", 1);
    let (_access, addrs) = access(&server, &["udp://127.0.0.1:0/dns.srv-2.local"], &id, "");
    let answered = (0..100).filter(|_| dig(addrs[0].port(), "dns.test") == "192.0.2.7").count();
    assert_eq!(answered, 100, "every query through the tunnel is answered");
}

fn datagrams_keep_their_size_up_to_read_buffer_size(t: Transport) {
    let echo = origin::udp_echo();
    let id = tunnel_id();
    let server = server_for(t, &format!("echo.local:{id}"));
    let _agent = agent(&server, &[&format!("rudp://:0/{echo}")], &id, "", 1);
    let listeners = ["udp://127.0.0.1:0/echo.local?readBufferSize=10000", "udp://127.0.0.1:0/echo.local"];
    let (_access, addrs) = access(&server, &listeners, &id, "");
    let big: Vec<u8> = (0..8000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(ask(&client(addrs[0]), &big), big, "8000 bytes arrive whole with readBufferSize=10000");
    let cut = ask(&client(addrs[1]), &big);
    assert_eq!(cut.len(), 4096, "the default readBufferSize truncates to 4096");
    assert_eq!(cut, big[..4096]);
    let max: Vec<u8> = vec![7; 65000];
    let (_a, wide) = access(&server, &["udp://127.0.0.1:0/echo.local?readBufferSize=65535"], &id, "");
    assert_eq!(ask(&client(wide[0]), &max).len(), 65000, "no 1500-byte clipping");
}

fn without_keepalive_a_flow_ends_after_its_first_answer(t: Transport) {
    let ports = origin::udp_source_port();
    let id = tunnel_id();
    let server = server_for(t, &format!("p.local:{id}"));
    let _agent = agent(&server, &[&format!("rudp://:0/{ports}")], &id, "", 1);
    let listeners = ["udp://127.0.0.1:0/p.local", "udp://127.0.0.1:0/p.local?keepalive=true&ttl=30s"];
    let (_access, addrs) = access(&server, &listeners, &id, "");
    let once = client(addrs[0]);
    let (a, b) = (ask(&once, b"1"), ask(&once, b"2"));
    assert_ne!(a, b, "each datagram after an answer starts a new flow (a new agent socket)");
    let kept = client(addrs[1]);
    let (a, b, c) = (ask(&kept, b"1"), ask(&kept, b"2"), ask(&kept, b"3"));
    assert!(a == b && b == c, "with keepalive the flow (and its agent socket) stays: {a:?} {b:?} {c:?}");
}

#[test]
fn keepalive_flow_ends_after_ttl_idle() {
    let t = Transport::Tcp;
    let ports = origin::udp_source_port();
    let id = tunnel_id();
    let server = server_for(t, &format!("p.local:{id}"));
    let _agent = agent(&server, &[&format!("rudp://:0/{ports}")], &id, "", 1);
    let relay = server.relay_url(&id, "");
    let access = Proc::start(
        "tunnel-access",
        &[
            "-L",
            "udp://127.0.0.1:0/p.local?keepalive=true&ttl=1s",
            "-F",
            &relay,
            "--log-level",
            "info,tunnel_access=debug,tunnel_runtime=debug",
        ],
    );
    let addr = tunnel_tests::addr_in(&access.wait_for("listening"));
    access.wait_for("session established");
    let c = client(addr);
    let first = ask(&c, b"1");
    access.wait_for("reason=idle for 1s");
    assert_ne!(ask(&c, b"2"), first, "after ttl of silence a new flow starts");
}

fn tcp_and_udp_share_a_tunnel_but_reach_only_agents_serving_them(t: Transport) {
    let (echo_tcp, echo_udp) = (origin::echo(), origin::udp_echo());
    let id = tunnel_id();
    let server = server_for(t, &format!("both.local:{id}"));
    // One agent serves only TCP, the other only UDP: every flow must pick the right one.
    let _tcp_agent = agent(&server, &[&format!("rtcp://:0/{echo_tcp}")], &id, "", 1);
    let _udp_agent = agent(&server, &[&format!("rudp://:0/{echo_udp}")], &id, "", 2);
    let (_access, addrs) = access(&server, &["tcp://127.0.0.1:0/both.local", "udp://127.0.0.1:0/both.local"], &id, "");
    for i in 0..20u8 {
        assert_eq!(ask(&client(addrs[1]), &[i; 100]), vec![i; 100]);
        let mut t = std::net::TcpStream::connect(addrs[0]).unwrap();
        tunnel_tests::send_and_shutdown(&mut t, &[i; 100]);
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut t, &mut back).unwrap();
        assert_eq!(back, vec![i; 100]);
    }
}

#[test]
fn iperf3_tcp_and_udp_through_one_tunnel() {
    let t = Transport::Tcp;
    let iperf_port = free_tcp_udp_port();
    let _iperf = External::start({
        let mut c = Command::new("iperf3");
        c.args(["-s", "-B", "127.0.0.1", "-p", &iperf_port.to_string()]);
        c
    });
    poll_until("iperf3 server", || std::net::TcpStream::connect(("127.0.0.1", iperf_port)).is_ok());
    let id = tunnel_id();
    let server = server_for(t, &format!("iperf.local:{id}"));
    let target = format!("127.0.0.1:{iperf_port}");
    let _agent = agent(&server, &[&format!("rtcp://:0/{target}"), &format!("rudp://:0/{target}")], &id, "", 1);
    let port = free_tcp_udp_port();
    let listeners =
        [format!("tcp://127.0.0.1:{port}/iperf.local"), format!("udp://127.0.0.1:{port}/iperf.local?keepalive=true")];
    let (_access, _) = access(&server, &[&listeners[0], &listeners[1]], &id, "");
    for udp in [false, true] {
        let mut cmd = Command::new("timeout");
        cmd.args(["60", "iperf3", "-c", "127.0.0.1", "-p", &port.to_string(), "-t", "2", "-J"]);
        if udp {
            cmd.args(["-u", "-b", "50M"]);
        }
        let out = cmd.output().expect("iperf3 must be installed");
        let json = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "iperf3 (udp={udp}) failed: {json}{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            json.contains("\"sum_received\"") || json.contains("\"sum\""),
            "iperf3 (udp={udp}) reported no result: {json}"
        );
    }
}

tunnel_tests::over_transports!(
    dig_through_the_tunnel_answers_every_query,
    datagrams_keep_their_size_up_to_read_buffer_size,
    without_keepalive_a_flow_ends_after_its_first_answer,
    tcp_and_udp_share_a_tunnel_but_reach_only_agents_serving_them,
);
