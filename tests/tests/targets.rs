//! Agent targets end to end: a dead target skipped after `maxFails` and back after
//! `failTimeout`, streams retried on the next target, and the PROXY protocol toward real
//! haproxy (v1 and v2, plain HTTP and TLS passthrough).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Instant;

use tunnel_tests::{agent, agent_config, origin, poll_until, tunnel_id, External, Server, WAIT};

/// One `GET /` with `Host: host` on a fresh connection; returns the status line's code and the
/// body (read by its Content-Length: the test origin keeps connections open). In-process, so a
/// test may ask many times without starting a program each time.
fn get(addr: SocketAddr, host: &str) -> (u16, String) {
    let mut conn = TcpStream::connect(addr).expect("connect to the entrypoint");
    conn.set_read_timeout(Some(WAIT)).unwrap();
    write!(conn, "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.trim().parse::<usize>().unwrap_or(0))
            });
            if len.is_some_and(|n| body.len() >= n) {
                let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                return (status, body.to_owned());
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) => {
                let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                return (status, text);
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading the answer from {addr}: {e}; so far: {text}"),
        }
    }
}

/// A server with rules sending `hosts` to tunnel `id`, and entrypoints: the sniffing one
/// first, then a raw one (`addr/host`) for each of `raw`. Through a raw entrypoint every
/// visitor connection is a stream of its own; HTTP visitors of a sniffing one share origin
/// connections, which would hide which target a request went to.
fn server_for(hosts: &[&str], raw: &[&str], id: &str) -> Server {
    let rules: Vec<String> = hosts.iter().map(|h| format!("{h}:{id}")).collect();
    let mut entrypoints = vec!["127.0.0.1:0".to_owned()];
    entrypoints.extend(raw.iter().map(|h| format!("127.0.0.1:0/{h}")));
    let url = format!("relay://127.0.0.1:0?entryPoint={}&tunnel={}", entrypoints.join(","), rules.join(","));
    Server::start(&["-L", &url], entrypoints.len())
}

#[test]
fn a_dead_fallback_target_is_skipped_after_max_fails_and_streams_retried() {
    let id = tunnel_id();
    let (live, dead) = (origin::http("live"), origin::closed_port());
    let server = server_for(&["app.example"], &["app.example"], &id);
    // The dead target is first, so round-robin would give it every other stream.
    let agent = agent(&server, &[&format!("rtcp://:0/{dead},{live}?maxFails=1&failTimeout=1h")], &id, "", 1);
    let ep = server.entrypoints[1];
    for i in 0..20 {
        let (status, body) = get(ep, "app.example");
        assert_eq!(status, 200, "request {i}: {body}");
        assert!(body.starts_with("origin=live"), "request {i} is served by the live target: {body}");
    }
    agent.wait_for("target marked down");
    let dials = agent.output().lines().filter(|l| l.contains("target dial failed")).count();
    assert_eq!(dials, 1, "the dead target is dialed once, then skipped:\n{}", agent.output());
}

#[test]
fn a_revived_target_is_back_in_rotation_after_fail_timeout() {
    let id = tunnel_id();
    let live = origin::http("live");
    let revived = origin::closed_port();
    let server = server_for(&["app.example"], &["app.example"], &id);
    let toml = format!(
        r#"[relay]
addr = "{relay}"
tunnel.id = "{id}"
[[services]]
type = "rtcp"
[services.forwarder.selector]
strategy = "round"
maxFails = 1
failTimeout = "1s"
[[services.forwarder.nodes]]
name = "revived"
addr = "{revived}"
host = "app.example"
[[services.forwarder.nodes]]
name = "live"
addr = "{live}"
host = "app.example"
"#,
        relay = server.relay
    );
    let (agent, _dir) = agent_config(&server, &toml, 1);
    let ep = server.entrypoints[1];
    let (status, body) = get(ep, "app.example");
    assert_eq!((status, body.starts_with("origin=live")), (200, true), "retried on the live target: {body}");
    agent.wait_for("target marked down target=revived");

    // The target comes back on its port; once its failTimeout is over, a stream reaches it.
    let l = TcpListener::bind(revived).unwrap_or_else(|e| panic!("cannot bind {revived} again: {e}"));
    origin::http_on(l, "revived");
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = get(ep, "app.example");
        assert_eq!(status, 200, "{body}");
        if body.starts_with("origin=revived") {
            break;
        }
        assert!(Instant::now() < deadline, "the revived target got no stream within {WAIT:?}:\n{}", agent.output());
    }
    agent.wait_for("target back in rotation target=revived");
    let seen: HashSet<String> =
        (0..10).map(|_| get(ep, "app.example").1.split_whitespace().next().unwrap_or_default().to_owned()).collect();
    assert_eq!(seen, HashSet::from(["origin=live".to_owned(), "origin=revived".to_owned()]), "both take turns again");
}

#[test]
fn an_http_health_check_takes_a_target_out_before_any_visitor_and_puts_it_back() {
    let id = tunnel_id();
    let live = origin::http("live");
    let revived = origin::closed_port();
    let server = server_for(&["app.example"], &["app.example"], &id);
    // failTimeout is long: only the check can bring the target back within the test.
    let service = format!(
        "rtcp://:0/{revived},{live}?healthCheck=/healthz&healthCheckInterval=100ms&healthCheckTimeout=5s&failTimeout=1h"
    );
    let agent = agent(&server, &[&service], &id, "", 1);
    agent.wait_for("target marked down by its health check target=target-0");
    let ep = server.entrypoints[1];
    for i in 0..20 {
        let (status, body) = get(ep, "app.example");
        assert_eq!((status, body.starts_with("origin=live")), (200, true), "request {i}: {body}");
    }
    assert!(!agent.logged("target dial failed"), "no stream was sent to the dead target:\n{}", agent.output());

    let l = TcpListener::bind(revived).unwrap_or_else(|e| panic!("cannot bind {revived} again: {e}"));
    origin::http_on(l, "revived");
    agent.wait_for("target back in rotation target=target-0");
    let seen: HashSet<String> =
        (0..10).map(|_| get(ep, "app.example").1.split_whitespace().next().unwrap_or_default().to_owned()).collect();
    assert_eq!(seen, HashSet::from(["origin=live".to_owned(), "origin=revived".to_owned()]), "both take turns again");
}

/// haproxy accepting the PROXY protocol on a plain and a TLS port, answering every request
/// with the client address it was told: `src=IP:PORT`.
struct Haproxy {
    _proc: External,
    _dir: tempfile::TempDir,
    http: SocketAddr,
    https: SocketAddr,
}

fn free_port() -> SocketAddr {
    origin::closed_port()
}

fn haproxy() -> Haproxy {
    let dir = tempfile::tempdir().unwrap();
    tunnel_tests::self_signed(dir.path(), "tls.example", &[]);
    let pem = dir.path().join("both.pem");
    let both = [dir.path().join("cert.pem"), dir.path().join("key.pem")].map(|p| std::fs::read_to_string(p).unwrap());
    std::fs::write(&pem, both.concat()).unwrap();
    let (http, https) = (free_port(), free_port());
    let cfg = format!(
        "defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend plain\n  bind {http} accept-proxy\n  http-request return status 200 content-type text/plain lf-string \"src=%[src]:%[src_port]\\n\"\n\
         frontend tls\n  bind {https} accept-proxy ssl crt {pem}\n  http-request return status 200 content-type text/plain lf-string \"src=%[src]:%[src_port]\\n\"\n",
        pem = pem.display()
    );
    let cfg_path = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let check = Command::new("haproxy").arg("-c").arg("-f").arg(&cfg_path).output();
    let check =
        check.unwrap_or_else(|e| panic!("cannot run haproxy: {e}; this test needs haproxy installed (CI installs it)"));
    assert!(check.status.success(), "haproxy rejects its config: {}", String::from_utf8_lossy(&check.stderr));
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(&cfg_path);
    let mut proc = External::start(cmd);
    for addr in [http, https] {
        poll_until("haproxy", || TcpStream::connect(addr).is_ok());
    }
    proc.assert_running();
    Haproxy { _proc: proc, _dir: dir, http, https }
}

/// curl from 127.0.0.2 (so the visitor's address is not the agent's); returns what the
/// origin said and the visitor's own address as curl saw it.
fn visit(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--interface", "127.0.0.2", "-w", "\n%{local_ip}:%{local_port}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "curl {args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
    let (body, local) = text.rsplit_once('\n').expect("curl's -w line");
    (body.trim().to_owned(), local.trim().to_owned())
}

#[test]
fn haproxy_behind_the_agent_sees_the_visitor_address_with_proxy_protocol_v1_and_v2() {
    let id = tunnel_id();
    let hp = haproxy();
    let server =
        server_for(&["v1.example", "v2.example", "tls.example", "tls1.example"], &["v1.example", "v2.example"], &id);
    let node = |host: &str, addr: SocketAddr, v: u8| {
        format!("[[services.forwarder.nodes]]\naddr = \"{addr}\"\nhost = \"{host}\"\nproxyProtocol = {v}\n")
    };
    let toml = format!(
        "[relay]\naddr = \"{}\"\ntunnel.id = \"{id}\"\n[[services]]\ntype = \"rtcp\"\n{}{}{}{}",
        server.relay,
        node("v1.example", hp.http, 1),
        node("v2.example", hp.http, 2),
        node("tls.example", hp.https, 2),
        node("tls1.example", hp.https, 1),
    );
    let (_agent, _dir) = agent_config(&server, &toml, 1);
    let ep = server.entrypoints[0];
    for (host, raw) in [("v1.example", server.entrypoints[1]), ("v2.example", server.entrypoints[2])] {
        let (body, visitor) = visit(&["-H", &format!("Host: {host}"), &format!("http://{raw}/")]);
        assert!(visitor.starts_with("127.0.0.2:"), "{visitor}");
        assert_eq!(body, format!("src={visitor}"), "{host}: haproxy sees the visitor's address");
    }
    for host in ["tls.example", "tls1.example"] {
        let resolve = format!("{host}:{}:127.0.0.1", ep.port());
        let (body, visitor) = visit(&["-k", "--resolve", &resolve, &format!("https://{host}:{}/", ep.port())]);
        assert_eq!(body, format!("src={visitor}"), "{host}: TLS passthrough, haproxy sees the visitor's address");
    }
}

#[test]
fn without_proxy_protocol_haproxy_refuses_the_agent() {
    // The control: the same haproxy port, a target without proxyProtocol, gets no answer.
    let id = tunnel_id();
    let hp = haproxy();
    let server = server_for(&["plain.example"], &[], &id);
    let _agent = agent(&server, &[&format!("rtcp://:0/{}", hp.http)], &id, "", 1);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-H", "Host: plain.example", &format!("http://{}/", server.entrypoints[0])])
        .output()
        .expect("run curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(!body.contains("src="), "haproxy answered a connection without a PROXY header: {body}");
}

#[test]
fn http_visitors_from_two_addresses_never_share_an_origin_connection_that_names_one_of_them() {
    // Through the sniffing entrypoint, HTTP origin connections are reused; each must carry
    // only requests of the address its PROXY header named.
    let id = tunnel_id();
    let hp = haproxy();
    let server = server_for(&["pp.example"], &[], &id);
    let toml = format!(
        "[relay]\naddr = \"{}\"\ntunnel.id = \"{id}\"\n[[services]]\ntype = \"rtcp\"\n\
         [[services.forwarder.nodes]]\naddr = \"{}\"\nhost = \"pp.example\"\nproxyProtocol = 1\n",
        server.relay, hp.http
    );
    let (_agent, _dir) = agent_config(&server, &toml, 1);
    let url = format!("http://{}/", server.entrypoints[0]);
    for round in 0..3 {
        for source in ["127.0.0.2", "127.0.0.3"] {
            let out = Command::new("curl")
                .args(["-sS", "--max-time", "20", "--interface", source, "-H", "Host: pp.example", &url])
                .output()
                .expect("run curl");
            let body = String::from_utf8_lossy(&out.stdout);
            assert!(body.starts_with(&format!("src={source}:")), "round {round}, visitor {source}: {body}");
        }
    }
}
