//! Agents and access clients configured with several servers (replicas that share a tunnel), end to end with the
//! real binaries and curl: sessions spread over the list, and a slot whose server dies (kill
//! -9) or cannot be reached moves on to the next server at once, without a backoff.
//!
//! The servers are independent processes with the same ingress rule for the tunnel, each on
//! port 0 with its own public entrypoint; a visitor is served by the server it reached, so a
//! 200 through a server's entrypoint shows that the agent has a session there. Over TLS and
//! QUIC, each server of a list is verified under its own address.

use std::net::SocketAddr;
use std::path::Path;

use tunnel_tests::{http_get, openssl, origin, tunnel_id, Proc, Server, Transport};

/// A server with the rule `app.local` -> `id` and one public entrypoint.
fn server(id: &str) -> Server {
    Server::start(&["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=app.local:{id}")], 1)
}

/// Starts an agent from `toml`; keep the directory alive as long as the agent.
fn toml_agent(toml: &str) -> (Proc, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, toml).expect("write agent.toml");
    (Proc::start("tunnel-agent", &["-C", path.to_str().expect("utf-8 path")]), dir)
}

/// An agent file for tunnel `id` serving `origin`, with `servers` in `[relay] addr`.
fn agent_toml(servers: &[SocketAddr], id: &str, sessions: usize, origin: SocketAddr) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[relay]\naddr = [{}]\ntunnel.id = \"{id}\"\nsessions = {sessions}\n\
         [[services]]\ntype = \"rtcp\"\n[[services.forwarder.nodes]]\naddr = \"{origin}\"\n",
        list.join(", ")
    )
}

/// A request for `app.local` through `entrypoint` is served by the agent's origin `A`.
fn served_through(entrypoint: SocketAddr) -> bool {
    let (status, body) = http_get(entrypoint, "app.local", "/");
    status == 200 && body.starts_with("origin=A")
}

#[test]
fn two_sessions_over_two_servers_one_on_each() {
    let id = tunnel_id();
    let (s1, s2) = (server(&id), server(&id));
    let relay = format!("relay://{},{}?tunnel.id={id}&sessions=2", s1.relay, s2.relay);
    let target = format!("rtcp://:0/{}", origin::http("A"));
    let agent = Proc::start("tunnel-agent", &["-L", &target, "-F", &relay]);
    let first = agent.wait_for_nth("session established", 1);
    let second = agent.wait_for_nth("session established", 2);
    s1.proc.wait_for("agent joined");
    s2.proc.wait_for("agent joined");
    let on = |s: &Server| format!("server={}", s.relay);
    assert!(
        (first.contains(&on(&s1)) && second.contains(&on(&s2)))
            || (first.contains(&on(&s2)) && second.contains(&on(&s1))),
        "one session on each server:\n{first}\n{second}"
    );
    assert!(served_through(s1.entrypoints[0]), "a visitor of the first server reaches the agent");
    assert!(served_through(s2.entrypoints[0]), "a visitor of the second server reaches the agent");
}

#[test]
fn a_session_on_a_killed_server_moves_to_the_next_at_once() {
    let id = tunnel_id();
    let (mut s1, s2) = (server(&id), server(&id));
    let (agent, _dir) = toml_agent(&agent_toml(&[s1.relay, s2.relay], &id, 1, origin::http("A")));
    let up = agent.wait_for("session established");
    assert!(up.contains(&format!("server={}", s1.relay)), "the only slot starts on the first server: {up}");
    s1.proc.wait_for("agent joined");
    assert!(served_through(s1.entrypoints[0]));
    assert!(!served_through(s2.entrypoints[0]), "the second server has no session of the agent yet");

    s1.proc.signal("KILL");
    assert_eq!(s1.proc.wait_exit(), None, "the first server was killed by a signal");
    let lost = agent.wait_for("session lost");
    assert!(lost.contains("retry_in=0ns"), "a lost session moves on to the next server without a backoff: {lost}");
    let moved = agent.wait_for_nth("session established", 2);
    assert!(moved.contains(&format!("server={}", s2.relay)), "the slot moved to the second server: {moved}");
    s2.proc.wait_for("agent joined");
    assert!(served_through(s2.entrypoints[0]), "the second server now serves the tunnel");
}

#[test]
fn an_unreachable_first_server_is_passed_over_at_once() {
    let id = tunnel_id();
    let s2 = server(&id);
    let dead = origin::closed_port();
    let (agent, _dir) = toml_agent(&agent_toml(&[dead, s2.relay], &id, 1, origin::http("A")));
    let failed = agent.wait_for("cannot join tunnel");
    assert!(
        failed.contains(&format!("server={dead}")) && failed.contains("retry_in=0ns"),
        "the dead server is tried first and left without a backoff: {failed}"
    );
    let up = agent.wait_for("session established");
    assert!(up.contains(&format!("server={}", s2.relay)), "{up}");
    s2.proc.wait_for("agent joined");
    assert!(served_through(s2.entrypoints[0]));
}

#[test]
fn an_access_client_fails_over_to_the_next_server() {
    let id = tunnel_id();
    let (mut s1, s2) = (server(&id), server(&id));
    let servers = format!("{},{}", s1.relay, s2.relay);
    let target = format!("rtcp://:0/{}", origin::http("A"));
    let agent = Proc::start("tunnel-agent", &["-L", &target, "-F", &format!("relay://{servers}?tunnel.id={id}")]);
    agent.wait_for_nth("session established", 2);
    s2.proc.wait_for("agent joined");
    let relay = format!("relay://{servers}?tunnel.id={id}");
    let access = Proc::start("tunnel-access", &["-L", "tcp://127.0.0.1:0/app.local", "-F", &relay]);
    let listener = tunnel_tests::addr_in(&access.wait_for("listening"));
    let up = access.wait_for("session established");
    assert!(up.contains(&format!("server={}", s1.relay)), "the access client starts on the first server: {up}");
    assert!(served_through(listener));

    s1.proc.signal("KILL");
    assert_eq!(s1.proc.wait_exit(), None, "the first server was killed by a signal");
    let lost = access.wait_for("session lost");
    assert!(lost.contains("retry_in=0ns"), "{lost}");
    let moved = access.wait_for_nth("session established", 2);
    assert!(moved.contains(&format!("server={}", s2.relay)), "the access client moved to the second server: {moved}");
    assert!(served_through(listener), "visitors of the access client are served through the second server");
}

/// A CA (`ca.pem`) and, for each `n` of 1 and 2, a certificate it signed for `IP:127.0.0.n`
/// only (`sN.pem`, `sN.key`).
fn make_certs(dir: &Path) {
    #[rustfmt::skip]
    openssl(dir, &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", "/CN=Servers List Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-days", "2", "-keyout", "ca.key", "-out", "ca.pem"]);
    for n in 1..=2 {
        let (key, csr, ext, pem) = (format!("s{n}.key"), format!("s{n}.csr"), format!("s{n}.ext"), format!("s{n}.pem"));
        #[rustfmt::skip]
        openssl(dir, &["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", &format!("/CN=127.0.0.{n}"), "-keyout", &key, "-out", &csr]);
        std::fs::write(
            dir.join(&ext),
            format!(
                "subjectAltName=IP:127.0.0.{n}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .expect("write the extensions file");
        #[rustfmt::skip]
        openssl(dir, &["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", &ext, "-out", &pem]);
    }
}

/// Two servers over `t` whose certificates name only their own address (127.0.0.1 and
/// 127.0.0.2): an agent listing both is verified by each under its own address, so both of
/// its sessions come up.
fn each_server_is_verified_under_its_own_address(t: Transport) {
    let dir = tempfile::tempdir().expect("temp dir");
    make_certs(dir.path());
    let p = |f: &str| dir.path().join(f).display().to_string();
    let id = tunnel_id();
    let start = |n: u8| {
        let url = format!(
            "relay://127.0.0.{n}:0?entryPoint=127.0.0.1:0&tunnel=app.local:{id}&certFile={}&keyFile={}",
            p(&format!("s{n}.pem")),
            p(&format!("s{n}.key"))
        );
        Server::start_on(t, &["-L", &url], 1)
    };
    let (s1, s2) = (start(1), start(2));
    let relay = format!("{}://{},{}?tunnel.id={id}&sessions=2&caFile={}", t.scheme(), s1.relay, s2.relay, p("ca.pem"));
    let target = format!("rtcp://:0/{}", origin::http("A"));
    let agent = Proc::start("tunnel-agent", &["-L", &target, "-F", &relay]);
    agent.wait_for_nth("session established", 2);
    s1.proc.wait_for("agent joined");
    s2.proc.wait_for("agent joined");
    assert!(!agent.logged("cannot join tunnel"), "no server refused:\n{}", agent.output());
    assert!(served_through(s1.entrypoints[0]) && served_through(s2.entrypoints[0]));
}

#[test]
fn tls_each_server_is_verified_under_its_own_address() {
    each_server_is_verified_under_its_own_address(Transport::Tls);
}

#[test]
fn quic_each_server_is_verified_under_its_own_address() {
    each_server_is_verified_under_its_own_address(Transport::Quic);
}
