//! The seed's GOST YAML files as written (`deploy/examples/gost/`, one per YAML block of the
//! relay-tunnel tutorial): each validates with its binary, and each runs end to end with
//! `-C file.yaml`, its addresses moved to loopback in a temporary copy.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tunnel_tests::{addr_in, bin, http_get, origin, Proc};

fn gost_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/gost")
}

fn binary_for(file: &str) -> &'static str {
    match file.split('-').next() {
        Some("server") => "tunnel-server",
        Some("agent") => "tunnel-agent",
        Some("access") => "tunnel-access",
        _ => panic!("GOST example {file} must start with server-, agent- or access-"),
    }
}

#[test]
fn every_gost_file_validates_with_its_binary_only() {
    let mut count = 0;
    for entry in std::fs::read_dir(gost_dir()).expect("deploy/examples/gost") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(".yaml"), "{name}: the GOST examples are .yaml files");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Seed 000 "), "{name}: the first line names the seed's section");
        let own = binary_for(&name);
        let out = Command::new(bin(own)).arg("-C").arg(&path).arg("--check").output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        for other in ["tunnel-server", "tunnel-agent", "tunnel-access"].into_iter().filter(|b| *b != own) {
            let out = Command::new(bin(other)).arg("-C").arg(&path).arg("--check").output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{other} accepted {name}");
            assert!(err.contains(&format!("run this file with `{own} -C FILE`")), "{other} on {name}: {err}");
        }
        count += 1;
    }
    assert_eq!(count, 14, "the tutorial has 14 YAML blocks");
}

/// A temporary copy of a GOST example with each `(from, to)` applied in turn, each to the
/// first occurrence left (so a repeated address can go to different places).
fn example(dir: &tempfile::TempDir, name: &str, edits: &[(&str, String)]) -> String {
    let mut text = std::fs::read_to_string(gost_dir().join(name)).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{name} has no {from:?} left");
        text = text.replacen(from, to, 1);
    }
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

struct Running {
    server: Proc,
    relay: SocketAddr,
    entrypoint: Option<SocketAddr>,
}

fn run_server(dir: &tempfile::TempDir, name: &str) -> Running {
    let mut edits = vec![("addr: :8443", "addr: 127.0.0.1:0".to_owned())];
    let has_entrypoint = std::fs::read_to_string(gost_dir().join(name)).unwrap().contains("entryPoint: \":80\"");
    if has_entrypoint {
        edits.push(("entryPoint: \":80\"", "entryPoint: \"127.0.0.1:0\"".to_owned()));
    }
    let server = Proc::start("tunnel-server", &["-C", &example(dir, name, &edits)]);
    let relay = addr_in(&server.wait_for("relay listening"));
    let entrypoint = has_entrypoint.then(|| addr_in(&server.wait_for("entrypoint listening")));
    Running { server, relay, entrypoint }
}

/// Starts an agent with its targets moved by `edits` and waits until the server has it.
fn run_agent(dir: &tempfile::TempDir, s: &Running, name: &str, edits: &[(&str, String)]) -> Proc {
    let mut all = vec![("addr: :8443", format!("addr: {}", s.relay))];
    all.extend(edits.iter().cloned());
    let agent = Proc::start("tunnel-agent", &["-C", &example(dir, name, &all)]);
    agent.wait_for("session established");
    s.server.wait_for("agent joined");
    agent
}

/// Starts an access client listening on free loopback ports instead of `listens`; returns
/// it with its listeners' log lines (`listening addr=... network=...`).
fn run_access(dir: &tempfile::TempDir, s: &Running, name: &str, listens: &[&str]) -> (Proc, Vec<String>) {
    let mut edits = vec![("addr: :8443", format!("addr: {}", s.relay))];
    edits.extend(listens.iter().map(|l| (*l, "addr: 127.0.0.1:0".to_owned())));
    let access = Proc::start("tunnel-access", &["-C", &example(dir, name, &edits)]);
    let lines = (1..=listens.len()).map(|n| access.wait_for_nth("listening", n)).collect();
    access.wait_for("session established");
    (access, lines)
}

/// The address of the listener of `network` among `lines`.
fn listener_of(lines: &[String], network: &str) -> SocketAddr {
    let line = lines
        .iter()
        .find(|l| l.contains(&format!("network=\"{network}\"")))
        .unwrap_or_else(|| panic!("no {network} listener in {lines:?}"));
    addr_in(line)
}

fn get_ok(addr: SocketAddr, host: &str, want: &str) {
    let (status, body) = http_get(addr, host, "/");
    assert_eq!(status, 200, "{host} through {addr}: {body}");
    assert!(body.starts_with(&format!("origin={want} ")), "{host} through {addr}: {body}");
}

fn udp_roundtrip(to: SocketAddr, payload: &[u8]) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.connect(to).unwrap();
    s.send(payload).unwrap();
    let mut buf = [0u8; 2048];
    let n = s.recv(&mut buf).unwrap_or_else(|e| panic!("no UDP answer through {to}: {e}"));
    assert_eq!(&buf[..n], payload);
}

#[test]
fn remote_tcp_port_forwarding() {
    let dir = tempfile::tempdir().unwrap();
    let web = origin::http("web");
    let s = run_server(&dir, "server-ingress.yaml");
    let _agent = run_agent(&dir, &s, "agent-rtcp.yaml", &[("192.168.1.1:80", web.to_string())]);
    let ep = s.entrypoint.unwrap();
    get_ok(ep, "example.com", "web");
    get_ok(ep, "any.example.com", "web");
    let (status, body) = http_get(ep, "example.org", "/");
    assert_eq!(status, 502, "example.org's tunnel has no agent: {body}");
    assert_eq!(http_get(ep, "example.net", "/").0, 404, "no rule for example.net");
}

#[test]
fn client_side_routing() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two, fallback) = (origin::http("one"), origin::http("two"), origin::http("fallback"));
    let s = run_server(&dir, "server-ingress.yaml");
    let edits = [
        ("192.168.1.1:80", one.to_string()),
        ("192.168.1.2:80", two.to_string()),
        ("192.168.2.1:80", fallback.to_string()),
    ];
    let _agent = run_agent(&dir, &s, "agent-sniffing.yaml", &edits);
    let ep = s.entrypoint.unwrap();
    for (host, want) in [("example.com", "one"), ("sub.example.com", "two"), ("abc.example.com", "fallback")] {
        get_ok(ep, host, want);
    }
}

#[test]
fn web_private_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let web = origin::http("private");
    let s = run_server(&dir, "server-private.yaml");
    let _agent = run_agent(&dir, &s, "agent-private-web.yaml", &[("192.168.2.1:80", web.to_string())]);
    let (_access, local) = run_access(&dir, &s, "access-sniffing.yaml", &["addr: :8000"]);
    get_ok(listener_of(&local, "tcp"), "srv-2.local", "private");
    let ep = s.entrypoint.unwrap();
    assert_eq!(http_get(ep, "srv-2.local", "/").0, 404, "a private rule is not public");
    get_ok(ep, "srv-3.local", "private");
}

#[test]
fn tcp_tunnel_by_hostname() {
    let dir = tempfile::tempdir().unwrap();
    let (ssh, redis) = (origin::http("ssh"), origin::http("redis"));
    let s = run_server(&dir, "server-private.yaml");
    let edits = [("192.168.2.1:22", ssh.to_string()), ("192.168.2.2:6379", redis.to_string())];
    let _agent = run_agent(&dir, &s, "agent-tcp-services.yaml", &edits);
    let (_access, local) = run_access(&dir, &s, "access-ssh.yaml", &["addr: :2222"]);
    // The listener's fixed hostname (ssh.srv-2.local) decides, whatever the visitor says.
    get_ok(listener_of(&local, "tcp"), "redis.srv-3.local", "ssh");
    assert!(s.server.logged("access client connected"));
}

#[test]
fn udp_tunnel_by_hostname() {
    let dir = tempfile::tempdir().unwrap();
    let (dns1, dns2) = (origin::udp_echo(), origin::udp_source_port());
    let s = run_server(&dir, "server-private.yaml");
    let edits = [("192.168.2.1:53", dns1.to_string()), ("192.168.2.2:53", dns2.to_string())];
    let _agent = run_agent(&dir, &s, "agent-udp-dns.yaml", &edits);
    let (_access, local) = run_access(&dir, &s, "access-udp-dns.yaml", &["addr: :1053"]);
    udp_roundtrip(listener_of(&local, "udp"), b"a DNS query for dns.srv-2.local");
}

/// TCP and UDP sharing one tunnel, as the iperf example does, with the server in `server`.
fn iperf(server: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (tcp, udp) = (origin::http("iperf"), origin::udp_echo());
    let s = run_server(&dir, server);
    let edits = [("addr: :5201", format!("addr: {tcp}")), ("addr: :5201", format!("addr: {udp}"))];
    let _agent = run_agent(&dir, &s, "agent-iperf.yaml", &edits);
    let (_access, local) = run_access(&dir, &s, "access-iperf.yaml", &["addr: :15201", "addr: :15201"]);
    get_ok(listener_of(&local, "tcp"), "iperf.local", "iperf");
    for i in 0..3 {
        udp_roundtrip(listener_of(&local, "udp"), format!("datagram {i}").as_bytes());
    }
}

#[test]
fn iperf_through_an_ingress() {
    iperf("server-iperf.yaml");
}

#[test]
fn iperf_by_direct_routing() {
    iperf("server-direct.yaml");
}

/// A server from `server-ingress.yaml` on `listener` (tls or quic), its certificate made in
/// a temporary state directory.
fn encrypted_server(dir: &tempfile::TempDir, listener: &str) -> (Running, String) {
    let edits = [
        ("addr: :8443", "addr: 127.0.0.1:0".to_owned()),
        ("entryPoint: \":80\"", "entryPoint: \"127.0.0.1:0\"".to_owned()),
        ("  listener:\n    type: tcp", format!("  listener:\n    type: {listener}")),
    ];
    let path = example(dir, "server-ingress.yaml", &edits);
    let state = dir.path().join("state");
    let server =
        Proc::start_with_env("tunnel-server", &["-C", &path], &[("TUNNEL_STATE_DIR", state.to_str().unwrap())]);
    let line = server.wait_for("relay listening");
    assert!(
        line.contains(&format!("transport={listener}")) || line.contains(&format!("transport=\"{listener}\"")),
        "{line}"
    );
    let start = line.find("fingerprint=").expect("a fingerprint") + "fingerprint=".len();
    let pin = line[start..].split_whitespace().next().unwrap().trim_matches('"').to_owned();
    let relay = addr_in(&line);
    let entrypoint = Some(addr_in(&server.wait_for("entrypoint listening")));
    (Running { server, relay, entrypoint }, pin)
}

/// A chain of two hops as GOST writes it: tinyproxy (HTTP CONNECT with credentials), then
/// the server over TLS with its certificate pinned; the proxy resolves the server's name.
#[test]
fn tls_relay_through_an_http_proxy_hop() {
    let dir = tempfile::tempdir().unwrap();
    let web = origin::http("proxied");
    let (s, pin) = encrypted_server(&dir, "tls");
    let (proxy, proxy_addr) = tunnel_tests::proxies::tinyproxy(dir.path(), "gost", "s3cret");
    let hop = format!(
        "  hops:\n  - name: proxy\n    nodes:\n    - name: tinyproxy\n      addr: {proxy_addr}\n      connector:\n        \
         type: http\n        auth:\n          username: gost\n          password: s3cret\n  - name: hop-0\n"
    );
    let edits = [
        ("addr: :8443", format!("addr: localhost:{}", s.relay.port())),
        ("192.168.1.1:80", web.to_string()),
        ("  hops:\n  - name: hop-0\n", hop),
        (
            "      dialer:\n        type: tcp",
            format!("      dialer:\n        type: tls\n        metadata:\n          pin: {pin}"),
        ),
    ];
    let agent = Proc::start("tunnel-agent", &["-C", &example(&dir, "agent-rtcp.yaml", &edits)]);
    agent.wait_for("session established");
    s.server.wait_for("agent joined");
    proxy.wait_for(&format!("CONNECT localhost:{}", s.relay.port()));
    get_ok(s.entrypoint.unwrap(), "example.com", "proxied");
}

/// The QUIC dialer, with the certificate check off as GOST's `secure: false` says.
#[test]
fn quic_relay_with_secure_false() {
    let dir = tempfile::tempdir().unwrap();
    let web = origin::http("quic");
    let (s, _) = encrypted_server(&dir, "quic");
    let edits = [
        ("addr: :8443", format!("addr: {}", s.relay)),
        ("192.168.1.1:80", web.to_string()),
        (
            "      dialer:\n        type: tcp",
            "      dialer:\n        type: quic\n        tls:\n          secure: false".into(),
        ),
    ];
    let agent = Proc::start("tunnel-agent", &["-C", &example(&dir, "agent-rtcp.yaml", &edits)]);
    agent.wait_for("session established");
    s.server.wait_for("agent joined");
    get_ok(s.entrypoint.unwrap(), "example.com", "quic");
}

/// SIGHUP re-reads the YAML file: a new rule is served, and a bad file is refused naming its
/// YAML key while the rules in force stay.
#[test]
fn a_yaml_file_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let web = origin::http("web");
    let s = run_server(&dir, "server-ingress.yaml");
    let _agent = run_agent(&dir, &s, "agent-rtcp.yaml", &[("192.168.1.1:80", web.to_string())]);
    let ep = s.entrypoint.unwrap();
    assert_eq!(http_get(ep, "extra.test", "/").0, 404);
    let path = dir.path().join("server-ingress.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let rule = "  - hostname: \"extra.test\"\n    endpoint: 4d21094e-b74c-4916-86c1-d9fa36ea677b\n";
    std::fs::write(&path, format!("{text}{rule}")).unwrap();
    s.server.signal("HUP");
    s.server.wait_for("configuration reloaded");
    get_ok(ep, "extra.test", "web");
    std::fs::write(&path, format!("{text}{}", rule.replace("4d21094e", "zz21094e"))).unwrap();
    s.server.signal("HUP");
    let line = s.server.wait_for("reload refused");
    assert!(line.contains("ingresses[0].rules[2].endpoint"), "{line}");
    get_ok(ep, "extra.test", "web");
}
