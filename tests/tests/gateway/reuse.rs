//! `reuse = true`: two server processes started with one configuration share the relay, the
//! entrypoint and the gateway ports; the kernel spreads connections over both, and when one
//! stops the other serves everything.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};

use tunnel_tests::gateway::{rest_until_close, seal, SharedPort, CLIENT_WAIT};
use tunnel_tests::{origin, tunnel_id, Proc, Server};

use super::{echoed, SECRET};

/// Connections tried before concluding that one process gets none: with two processes the
/// chance that 200 connections all land on one is 2^-199.
const MAX_VISITS: usize = 200;
/// Sessions per agent (the most an agent opens): 16 sessions all on one process is 2^-15.
const SESSIONS: usize = 16;

/// Log lines of `server` containing `needle`, without those containing `unless` (if given).
fn count(server: &Server, needle: &str, unless: Option<&str>) -> usize {
    server.proc.output().lines().filter(|l| l.contains(needle) && !unless.is_some_and(|u| l.contains(u))).count()
}

/// A visitor of the raw entrypoint: `ping` comes back.
fn visit_entrypoint(addr: SocketAddr) {
    let mut tcp = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to entrypoint {addr}: {e}"));
    tcp.set_read_timeout(Some(CLIENT_WAIT)).unwrap();
    tcp.write_all(b"ping").unwrap();
    tcp.shutdown(Shutdown::Write).unwrap();
    assert_eq!(rest_until_close(&mut tcp), b"ping", "echo through the entrypoint {addr}");
}

#[test]
fn two_servers_with_reuse_share_their_ports_and_one_serves_alone_when_the_other_stops() {
    let (relay, entry, gw) = (SharedPort::new(), SharedPort::new(), SharedPort::new());
    let (id, echo) = (tunnel_id(), origin::echo());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(
        &path,
        format!(
            "addr = \"127.0.0.1:{}\"\nentryPoint = \"127.0.0.1:{}/echo.test\"\nreuse = true\n\
             [limits]\ngracePeriod = \"5s\"\n\
             [[ingress.rules]]\nhostname = \"echo.test\"\nendpoint = \"{id}\"\n\
             [[gateway]]\naddr = \"127.0.0.1:{}\"\nsecret = \"{SECRET}\"\nreuse = true\nallowAddresses = [\"{echo}\"]\n",
            relay.port, entry.port, gw.port
        ),
    )
    .unwrap();
    let args = ["-C", path.to_str().unwrap(), "--log-level", "tunnel_server=debug,info"];
    let mut first = Server::start(&args, 1);
    let second = Server::start(&args, 1);
    for s in [&first, &second] {
        assert_eq!((s.relay.port(), s.entrypoints[0].port()), (relay.port, entry.port));
        s.proc.wait_for(&format!("gateway listening addr=127.0.0.1:{}", gw.port));
    }

    // Agents until each server has at least one session of the tunnel.
    let relay_url = format!("relay://127.0.0.1:{}?tunnel.id={id}&sessions={SESSIONS}", relay.port);
    let target = format!("rtcp://:0/{echo}");
    let mut agents = Vec::new();
    while !(first.proc.logged("agent joined") && second.proc.logged("agent joined")) {
        assert!(agents.len() < 3, "{} agents of {SESSIONS} sessions all joined one server", agents.len());
        let agent = Proc::start("tunnel-agent", &["-L", &target, "-F", &relay_url]);
        agent.wait_for_nth("session established", SESSIONS);
        agents.push(agent);
    }

    let gateway = SocketAddr::from(([127, 0, 0, 1], gw.port));
    let entrypoint = SocketAddr::from(([127, 0, 0, 1], entry.port));
    let line = seal(SECRET, &echo.to_string(), &[]);
    const GW: &str = "gateway visitor connected";
    const EP: &str = "visitor connected";
    let mut visits = 0;
    while [&first, &second].iter().any(|s| count(s, GW, None) == 0 || count(s, EP, Some("gateway")) == 0) {
        assert!(
            visits < MAX_VISITS,
            "after {visits} visits of each, one server still served none: gateway {}/{}, entrypoint {}/{}",
            count(&first, GW, None),
            count(&second, GW, None),
            count(&first, EP, Some("gateway")),
            count(&second, EP, Some("gateway"))
        );
        assert_eq!(echoed(gateway, &line, b"", b"ping"), b"ping");
        visit_entrypoint(entrypoint);
        visits += 1;
    }
    eprintln!(
        "measured: {visits} visits until both served; gateway {}/{}, entrypoint {}/{}",
        count(&first, GW, None),
        count(&second, GW, None),
        count(&first, EP, Some("gateway")),
        count(&second, EP, Some("gateway"))
    );

    first.proc.signal("TERM");
    assert_eq!(first.proc.wait_exit(), Some(0), "the first server exits cleanly:\n{}", first.proc.output());
    let before = count(&second, EP, None);
    for _ in 0..20 {
        assert_eq!(echoed(gateway, &line, b"", b"ping"), b"ping", "the gateway port after one server stopped");
        visit_entrypoint(entrypoint);
    }
    // Each visit logged once by the server left, gateway and entrypoint alike.
    second.proc.wait_for_nth(EP, before + 40);
}
