//! The TOML twins of the seed's examples under `deploy/examples/`: every file validates with
//! its binary, and the scenarios run end to end with their addresses moved to loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use tunnel_tests::{addr_in, bin, http_get, origin, Proc};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
}

fn binary_for(file: &str) -> &'static str {
    match file.split('-').next() {
        Some("server") => "tunnel-server",
        Some("agent") => "tunnel-agent",
        Some("access") => "tunnel-access",
        _ => panic!("example {file} must start with server-, agent- or access-"),
    }
}

#[test]
fn every_example_validates() {
    let mut count = 0;
    for entry in std::fs::read_dir(examples_dir()).expect("deploy/examples") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".toml") {
            continue;
        }
        let out = Command::new(bin(binary_for(&name))).arg("-C").arg(&path).arg("--check").output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        count += 1;
    }
    assert!(count >= 12, "expected the seed's examples, found {count}");
}

/// Writes a copy of an example with each `(from, to)` replaced; every `from` must occur.
fn example(dir: &tempfile::TempDir, name: &str, edits: &[(&str, String)]) -> String {
    let mut text = std::fs::read_to_string(examples_dir().join(name)).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{name} has no {from:?}");
        text = text.replace(from, to);
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
    let mut edits = vec![("addr = \":8443\"", "addr = \"127.0.0.1:0\"".to_owned())];
    let has_entrypoint = std::fs::read_to_string(examples_dir().join(name)).unwrap().contains("entryPoint = \":80\"");
    if has_entrypoint {
        edits.push(("entryPoint = \":80\"", "entryPoint = \"127.0.0.1:0\"".to_owned()));
    }
    let server = Proc::start("tunnel-server", &["-C", &example(dir, name, &edits)]);
    let relay = addr_in(&server.wait_for("relay listening"));
    let entrypoint = has_entrypoint.then(|| addr_in(&server.wait_for("entrypoint listening")));
    Running { server, relay, entrypoint }
}

fn run_client(dir: &tempfile::TempDir, name: &str, relay: SocketAddr, edits: &[(&str, String)]) -> Proc {
    let mut all = vec![("addr = \":8443\"", format!("addr = \"{relay}\""))];
    all.extend(edits.iter().cloned());
    let p = Proc::start(binary_for(name), &["-C", &example(dir, name, &all)]);
    p.wait_for("session established");
    p
}

#[test]
fn ingress_and_agent_side_routing() {
    let dir = tempfile::tempdir().unwrap();
    let (o1, o2, fallback) = (origin::http("one"), origin::http("two"), origin::http("fallback"));
    let s = run_server(&dir, "server-ingress.toml");
    let edits = [
        ("192.168.1.1:80", o1.to_string()),
        ("192.168.1.2:80", o2.to_string()),
        ("192.168.2.1:80", fallback.to_string()),
    ];
    let _agent = run_client(&dir, "agent-sniffing.toml", s.relay, &edits);
    s.server.wait_for("agent joined");
    let ep = s.entrypoint.unwrap();
    for (host, want) in [("example.com", "one"), ("sub.example.com", "two"), ("abc.example.com", "fallback")] {
        let (status, body) = http_get(ep, host, "/");
        assert_eq!(status, 200, "{host}: {body}");
        assert!(body.starts_with(&format!("origin={want} ")), "{host}: {body}");
    }
    let (status, body) = http_get(ep, "example.org", "/");
    assert_eq!(status, 502, "example.org's tunnel has no agent: {body}");
}

#[test]
fn private_web_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let web = origin::http("private");
    let s = run_server(&dir, "server-private.toml");
    let _agent = run_client(&dir, "agent-private-web.toml", s.relay, &[("192.168.2.1:80", web.to_string())]);
    s.server.wait_for("agent joined");
    let access =
        run_client(&dir, "access-sniffing.toml", s.relay, &[("addr = \":8000\"", "addr = \"127.0.0.1:0\"".to_owned())]);
    let local = addr_in(&access.wait_for("listening"));
    let (status, body) = http_get(local, "srv-2.local", "/");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("origin=private"), "{body}");
    let ep = s.entrypoint.unwrap();
    assert_eq!(http_get(ep, "srv-2.local", "/").0, 404, "a private rule is not public");
    assert_eq!(http_get(ep, "srv-3.local", "/").0, 200, "the same tunnel is public under srv-3.local");
}

fn echo_roundtrip(addr: SocketAddr) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"ping through the tunnel").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"ping through the tunnel");
}

#[test]
fn tcp_services_by_hostname() {
    let dir = tempfile::tempdir().unwrap();
    let (ssh, redis) = (origin::echo(), origin::echo());
    let s = run_server(&dir, "server-private.toml");
    let edits = [("192.168.2.1:22", ssh.to_string()), ("192.168.2.2:6379", redis.to_string())];
    let _agent = run_client(&dir, "agent-tcp-services.toml", s.relay, &edits);
    s.server.wait_for("agent joined");
    let access =
        run_client(&dir, "access-ssh.toml", s.relay, &[("addr = \":2222\"", "addr = \"127.0.0.1:0\"".to_owned())]);
    echo_roundtrip(addr_in(&access.wait_for("listening")));
    assert!(s.server.logged("access client connected"));
}

#[test]
fn direct_routing() {
    let dir = tempfile::tempdir().unwrap();
    let iperf = origin::echo();
    let s = run_server(&dir, "server-direct.toml");
    let _agent = run_client(&dir, "agent-iperf.toml", s.relay, &[("addr = \":5201\"", format!("addr = \"{iperf}\""))]);
    s.server.wait_for("agent joined");
    let access =
        run_client(&dir, "access-iperf.toml", s.relay, &[("addr = \":15201\"", "addr = \"127.0.0.1:0\"".to_owned())]);
    echo_roundtrip(addr_in(&access.wait_for("listening")));
}
