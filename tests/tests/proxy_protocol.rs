//! The PROXY protocol in front of an entrypoint: haproxy (`send-proxy`, `send-proxy-v2`)
//! from a trusted address names the real visitor, whom the server logs and forwards in
//! `X-Forwarded-For`; a header from anywhere else, or none from the balancer, is refused.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::Ordering;

use tunnel_tests::{
    agent, bin, curl, listener, origin, poll_until, read_until_close, tunnel_id, External, Server, WAIT,
};

/// The balancer's own address, the one the entrypoint trusts.
const BALANCER: &str = "127.0.0.3";
/// Where the visitors come from.
const VISITOR: &str = "127.0.0.5";

fn free_port() -> u16 {
    listener().1.port()
}

/// haproxy in TCP mode: one frontend per PROXY protocol version, toward `ep`, connecting from
/// [`BALANCER`].
fn haproxy(dir: &std::path::Path, ep: SocketAddr) -> (External, u16, u16) {
    let (v1, v2) = (free_port(), free_port());
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend v1\n  bind 127.0.0.1:{v1}\n  default_backend b1\n\
             frontend v2\n  bind 127.0.0.1:{v2}\n  default_backend b2\n\
             backend b1\n  server s {ep} send-proxy source {BALANCER}\n\
             backend b2\n  server s {ep} send-proxy-v2 source {BALANCER}\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("haproxy");
    cmd.args(["-db", "-f", cfg.to_str().unwrap()]);
    let mut proxy = External::start(cmd);
    for port in [v1, v2] {
        poll_until("haproxy listening", || TcpStream::connect(("127.0.0.1", port)).is_ok());
    }
    proxy.assert_running();
    (proxy, v1, v2)
}

#[test]
fn haproxy_names_the_visitor_with_proxy_protocol_v1_and_v2_and_nobody_else_can() {
    let id = tunnel_id();
    let (origin, seen) = origin::http_counting("A");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(
        &path,
        format!(
            "addr = \"127.0.0.1:0\"\n[[entrypoints]]\naddr = \"127.0.0.1:0\"\ntrustedProxies = [\"{BALANCER}\"]\n\
             proxyProtocol = true\n[[ingress.rules]]\nhostname = \"a.example\"\nendpoint = \"{id}\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(&["-C", path.to_str().unwrap()], 1);
    let _agent = agent(&server, &[&format!("rtcp://:0/{origin}")], &id, "", 1);
    let ep = server.entrypoints[0];
    let (_haproxy, v1, v2) = haproxy(dir.path(), ep);

    for (version, port) in [("v1", v1), ("v2", v2)] {
        let url = format!("http://127.0.0.1:{port}/{version}");
        let (code, body) = curl(&["--interface", VISITOR, "-H", "Host: a.example", &url]);
        assert_eq!(code, 0, "{version}: {body}");
        assert!(
            body.contains(&format!("path=/{version} xff={VISITOR}\n")),
            "{version}: the origin sees the visitor: {body}"
        );
        let line = server.proc.wait_for(&format!("path=/{version}"));
        assert!(line.contains(&format!("peer={VISITOR}:")), "{version}: the access log names the visitor: {line}");
    }
    let served = seen.requests.load(Ordering::SeqCst);

    // A visitor that is not a trusted balancer cannot name anyone: its PROXY line is no HTTP.
    let mut forged = TcpStream::connect(ep).unwrap();
    forged
        .write_all(b"PROXY TCP4 6.6.6.6 127.0.0.1 1234 80\r\nGET /forged HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .unwrap();
    let (out, closed) = read_until_close(&mut forged, WAIT);
    let out = String::from_utf8_lossy(&out);
    assert!(closed && out.starts_with("HTTP/1.1 400"), "{out}");
    // The balancer's address without a header is closed unanswered.
    let url = format!("http://{ep}/bare");
    let (code, body) = curl(&["--interface", BALANCER, "-H", "Host: a.example", &url]);
    assert_ne!(code, 0, "a trusted balancer must send the header: {body}");
    assert_eq!(seen.requests.load(Ordering::SeqCst), served, "neither reaches the origin");
}

#[test]
fn proxy_protocol_without_trusted_proxies_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(&path, "addr = \"127.0.0.1:0\"\n[[entrypoints]]\naddr = \"127.0.0.1:0\"\nproxyProtocol = true\n")
        .unwrap();
    let out = Command::new(bin("tunnel-server")).args(["-C", path.to_str().unwrap(), "--check"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("entrypoints.proxyProtocol") && err.contains("trustedProxies"), "{err}");
}
