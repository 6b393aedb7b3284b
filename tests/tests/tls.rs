//! TLS through the public entrypoint: routed by SNI and passed through, never terminated, to
//! a real TLS origin (`openssl s_server`); unknown, missing and private SNI get a close.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use tunnel_tests::{access, agent, curl, openssl, origin, poll_until, tunnel_id, External, Proc, Server};

/// A self-signed certificate for `secure.example.com` and an `openssl s_server -www` using it.
struct TlsOrigin {
    _server: External,
    addr: SocketAddr,
    cert: PathBuf,
    _dir: tempfile::TempDir,
}

fn tls_origin() -> TlsOrigin {
    let dir = tempfile::tempdir().expect("temp dir");
    openssl(
        dir.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=secure.example.com",
            "-addext",
            "subjectAltName=DNS:secure.example.com",
            "-days",
            "1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ],
    );
    let addr = origin::closed_port();
    let mut cmd = Command::new("openssl");
    cmd.args(["s_server", "-accept", &addr.to_string(), "-cert", "cert.pem", "-key", "key.pem", "-www"]);
    cmd.current_dir(dir.path());
    let mut server = External::start(cmd);
    poll_until("openssl s_server", || {
        server.assert_running();
        TcpStream::connect(addr).is_ok()
    });
    TlsOrigin { _server: server, addr, cert: dir.path().join("cert.pem"), _dir: dir }
}

/// A tunnel server with one sniffing entrypoint, `secure.example.com` public and
/// `hidden.example.com` private, each with an agent in front of the TLS origin.
struct Fixture {
    tls: TlsOrigin,
    server: Server,
    hidden: String,
    _agents: Vec<Proc>,
}

fn fixture() -> Fixture {
    let tls = tls_origin();
    let (public, hidden) = (tunnel_id(), tunnel_id());
    let rules = format!("secure.example.com:{public},hidden.example.com:${hidden}");
    // Refusals past the first in a second are logged at debug.
    let url = format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel={rules}");
    let server = Server::start(&["-L", &url, "--log-level", "info,tunnel_runtime=debug"], 1);
    let target = format!("rtcp://:0/{}", tls.addr);
    let agents = vec![agent(&server, &[&target], &public, "", 1), agent(&server, &[&target], &hidden, "", 2)];
    Fixture { tls, server, hidden, _agents: agents }
}

/// `curl https://HOST:PORT/` with HOST resolved to `addr`; extra args first.
fn https(addr: SocketAddr, host: &str, extra: &[&str]) -> (i32, String) {
    let resolve = format!("{host}:{}:127.0.0.1", addr.port());
    let url = format!("https://{host}:{}/", addr.port());
    let mut args = extra.to_vec();
    args.extend(["--resolve", &resolve, &url]);
    curl(&args)
}

/// The base64 body of a PEM file, for comparison with what curl saw.
fn pem_body(path: &Path) -> String {
    let pem = std::fs::read_to_string(path).expect("read cert.pem");
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

fn assert_origin_cert(out: &str, cert: &Path) {
    assert!(out.contains("s_server"), "the page comes from openssl s_server: {out}");
    assert!(
        out.contains("CN = secure.example.com") || out.contains("CN=secure.example.com"),
        "the origin's certificate subject: {out}"
    );
    let seen: String = out.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    assert!(seen.contains(&pem_body(cert)), "curl saw exactly the origin's certificate: {out}");
}

/// curl failed because the connection was closed, not because it timed out.
fn assert_closed(code: i32, what: &str) {
    assert_ne!(code, 0, "{what}: curl should fail");
    assert_ne!(code, 28, "{what}: the connection should be closed, not left hanging");
}

#[test]
fn tls_is_passed_through_by_sni() {
    let f = fixture();
    let ep = f.server.entrypoints[0];
    // The origin's certificate, verified against our own CA file: nobody in between
    // terminated TLS.
    let cacert = f.tls.cert.to_str().unwrap();
    let (code, out) = https(ep, "secure.example.com", &["--cacert", cacert, "-w", "%{certs}"]);
    assert_eq!(code, 0, "curl through the entrypoint failed: {out}");
    assert_origin_cert(&out, &f.tls.cert);
    // The SNI is matched case-insensitively.
    let (code, out) = https(ep, "SECURE.example.COM", &["-k", "-w", "%{certs}"]);
    assert_eq!(code, 0, "{out}");
    assert_origin_cert(&out, &f.tls.cert);
}

#[test]
fn unknown_missing_and_private_sni_are_closed() {
    let f = fixture();
    let ep = f.server.entrypoints[0];

    let (code, out) = https(ep, "unknown.example.net", &["-k"]);
    assert_closed(code, "unknown SNI");
    assert!(!out.contains("s_server"), "{out}");
    f.server.proc.wait_for("no route for host unknown.example.net");

    let (code, out) = https(ep, "hidden.example.com", &["-k"]);
    assert_closed(code, "SNI of a private rule");
    assert!(!out.contains("s_server"), "{out}");
    f.server.proc.wait_for("host hidden.example.com has only a private rule");

    // curl sends no SNI for an IP address.
    let (code, _) = curl(&["-k", &format!("https://{ep}/")]);
    assert_closed(code, "ClientHello without SNI");
    f.server.proc.wait_for("ClientHello without SNI");

    // The public rule still works after the refusals.
    let (code, out) = https(ep, "secure.example.com", &["-k", "-w", "%{certs}"]);
    assert_eq!(code, 0, "{out}");
    assert_origin_cert(&out, &f.tls.cert);
}

#[test]
fn private_tls_is_reachable_through_a_sniffing_access_client() {
    let f = fixture();
    let (_access, addrs) = access(&f.server, &["tcp://127.0.0.1:0?sniffing=true"], &f.hidden, "");
    let (code, out) = https(addrs[0], "hidden.example.com", &["-k", "-w", "%{certs}"]);
    assert_eq!(code, 0, "curl through tunnel-access failed: {out}");
    assert_origin_cert(&out, &f.tls.cert);
    // Another SNI is not routed to this tunnel: closed.
    let (code, _) = https(addrs[0], "secure.example.com", &["-k"]);
    assert_closed(code, "SNI of another tunnel's rule");
}

#[test]
fn an_agent_and_https_and_http_visitors_share_the_relay_port() {
    let tls = tls_origin();
    let (secure, web) = (tunnel_id(), tunnel_id());
    let (web_origin, seen) = origin::http_counting("W");
    let rules = format!("secure.example.com:{secure},web.example:{web}");
    let url = format!("relay+tls://127.0.0.1:0?sharePort=true&tunnel={rules}");
    let server = Server::start_on(tunnel_tests::Transport::Tls, &["-L", &url], 0);
    let port = server.relay;
    // Both agents' sessions come in on the one port (their ClientHello offers the relay's ALPN).
    let _agents = [
        agent(&server, &[&format!("rtcp://:0/{}", tls.addr)], &secure, "", 1),
        agent(&server, &[&format!("rtcp://:0/{web_origin}")], &web, "", 2),
    ];
    // A browser's TLS to another name is passed through to its origin, untouched.
    let cacert = tls.cert.to_str().unwrap();
    let (code, out) = https(port, "secure.example.com", &["--cacert", cacert, "-w", "%{certs}"]);
    assert_eq!(code, 0, "HTTPS on the relay port: {out}");
    assert_origin_cert(&out, &tls.cert);
    // Plain HTTP on the same port is a sniffing entrypoint's visitor too.
    let (status, body) = tunnel_tests::http_get(port, "web.example", "/plain");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("origin=W host=web.example path=/plain"), "{body}");
    assert_eq!(seen.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A TLS visitor for a name no rule routes is closed, as on any entrypoint.
    let (code, _) = https(port, "unknown.example.net", &["-k"]);
    assert_closed(code, "unknown SNI on the shared port");
}

#[test]
fn share_port_needs_the_tls_listener() {
    let out = Command::new(tunnel_tests::bin("tunnel-server"))
        .args(["-L", "relay://127.0.0.1:0?sharePort=true", "--check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sharePort") && err.contains("tls"), "{err}");
}
