//! Security of the encrypted data channels (`relay+tls://`, `relay+quic://`): certificate
//! verification by system roots, pin and CA file (with server names), a self-signed
//! certificate whose fingerprint survives restarts, a real TLS 1.3 handshake seen by
//! `openssl s_client`, and garbage datagrams that leave live QUIC sessions alone.

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;

use rand::Rng;
use tunnel_tests::{agent, http_get, openssl, origin, tunnel_id, Proc, Server, Transport};

/// One `#[test]` per encrypted transport (modules `tls` and `quic`) for each scenario.
macro_rules! over_encrypted {
    ($($name:ident),* $(,)?) => {
        mod tls { $( #[test] fn $name() { super::$name(tunnel_tests::Transport::Tls) } )* }
        mod quic { $( #[test] fn $name() { super::$name(tunnel_tests::Transport::Quic) } )* }
    };
}

over_encrypted!(
    system_roots_refuse_a_self_signed_server,
    wrong_pin_is_refused,
    right_pin_joins_and_serves,
    ca_file_verifies_and_server_name_is_checked,
    fingerprint_is_stable_across_restarts,
    insecure_joins_with_a_warning,
);

/// A server over `t` with one public entrypoint routing `a.example` to tunnel `id`; `extra`
/// is appended to its relay URL's query.
fn server(t: Transport, id: &str, extra: &str) -> Server {
    let url = format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=a.example:{id}{extra}");
    let server = Server::start_on(t, &["-L", &url], 1);
    assert_eq!(server.transport, t);
    server
}

/// Starts an agent for `id` forwarding to `target` with `-F server.relay_url(id, extra)`,
/// without waiting for anything.
fn spawn_agent(server: &Server, id: &str, extra: &str, target: std::net::SocketAddr) -> Proc {
    spawn_agent_url(&server.relay_url(id, extra), target)
}

/// As [`spawn_agent`], with the `-F` URL as given.
fn spawn_agent_url(relay: &str, target: std::net::SocketAddr) -> Proc {
    let service = format!("rtcp://:0/{target}");
    Proc::start("tunnel-agent", &["-L", &service, "-F", relay])
}

/// The `-F` URL for `id` with no `caFile=`, `pin=` or `insecure=`: system roots.
fn system_roots_url(server: &Server, id: &str, extra: &str) -> String {
    format!("{}://{}?tunnel.id={id}{extra}", server.transport.scheme(), server.relay)
}

/// The agent is refused twice with `reason`, keeps retrying, and never joins (the server has
/// logged `agent joined` only for the `joined` other agents); returns the second refusal.
fn assert_refused(server: &Server, joined: usize, mut agent: Proc, reason: &str) -> String {
    let mut line = String::new();
    for n in 1..=2 {
        line = agent.wait_for_nth("cannot join tunnel", n);
        assert!(line.contains("certificate verification failed"), "attempt {n}: {line}");
        assert!(line.contains(reason), "attempt {n} should say {reason:?}: {line}");
    }
    assert!(agent.is_running(), "the agent keeps retrying: {}", agent.output());
    assert!(!agent.logged("session established"), "{}", agent.output());
    let server_log = server.proc.output();
    // Each agent that did join holds the default two sessions.
    assert_eq!(server_log.matches("agent joined").count(), 2 * joined, "{server_log}");
    line
}

/// The entrypoint answers `a.example` from the origin named `name`.
fn assert_serves(server: &Server, name: &str) {
    let (status, body) = http_get(server.entrypoints[0], "a.example", "/check");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with(&format!("origin={name}")), "{body}");
}

fn system_roots_refuse_a_self_signed_server(t: Transport) {
    let id = tunnel_id();
    let server = server(t, &id, "");
    // No caFile, pin or insecure: the system roots, which do not know the self-signed issuer.
    let agent = spawn_agent_url(&system_roots_url(&server, &id, ""), origin::http("a"));
    assert_refused(&server, 0, agent, "unknown issuer");
}

fn wrong_pin_is_refused(t: Transport) {
    let id = tunnel_id();
    let server = server(t, &id, "");
    let fp = server.fingerprint.clone().expect("fingerprint in the relay listening line");
    let agent = spawn_agent(&server, &id, &format!("pin=sha256:{}", "0".repeat(64)), origin::http("a"));
    let line = assert_refused(&server, 0, agent, "pin mismatch");
    // The message names what the server actually presented.
    assert!(line.contains(&format!("the server presented {fp}")), "{line}");
}

fn right_pin_joins_and_serves(t: Transport) {
    let id = tunnel_id();
    let server = server(t, &id, "");
    let fp = server.fingerprint.clone().expect("fingerprint in the relay listening line");
    assert!(fp.starts_with("sha256:") && fp.len() == 7 + 64, "{fp}");
    let _agent = agent(&server, &[&format!("rtcp://:0/{}", origin::http("a"))], &id, &format!("pin={fp}"), 1);
    assert_serves(&server, "a");
}

/// A CA (`ca.pem`) and a server certificate it signed (`server.pem`, `server.key`) for
/// `DNS:relay.test,IP:127.0.0.1`.
fn make_ca(dir: &Path) {
    tunnel_tests::ca_signed(dir, &["relay.test", "127.0.0.1"]);
}

fn ca_file_verifies_and_server_name_is_checked(t: Transport) {
    let dir = tempfile::tempdir().expect("temp dir");
    make_ca(dir.path());
    let p = |f: &str| dir.path().join(f).display().to_string();
    let id = tunnel_id();
    let server = server(t, &id, &format!("&certFile={}&keyFile={}", p("server.pem"), p("server.key")));
    let der = openssl(dir.path(), &["x509", "-in", "server.pem", "-noout", "-fingerprint", "-sha256"]);
    let want = der.trim().rsplit('=').next().unwrap().replace(':', "").to_lowercase();
    assert_eq!(server.fingerprint.as_deref(), Some(format!("sha256:{want}").as_str()), "the configured certificate");

    let ca = format!("caFile={}", p("ca.pem"));
    let target = format!("rtcp://:0/{}", origin::http("a"));
    // 127.0.0.1 matches the IP SAN.
    let by_ip = agent(&server, &[&target], &id, &ca, 1);
    assert_serves(&server, "a");
    drop(by_ip);

    let other = spawn_agent(&server, &id, &format!("{ca}&serverName=other.test"), origin::http("a"));
    assert_refused(&server, 1, other, "name mismatch");

    let _by_name = agent(&server, &[&target], &id, &format!("{ca}&serverName=relay.test"), 2);
    assert_serves(&server, "a");
    // Without the CA file, the same certificate is from an unknown issuer.
    let roots = spawn_agent_url(&system_roots_url(&server, &id, "&serverName=relay.test"), origin::http("a"));
    assert_refused(&server, 2, roots, "unknown issuer");
}

fn fingerprint_is_stable_across_restarts(t: Transport) {
    let state = tempfile::tempdir().expect("state dir");
    let id = tunnel_id();
    let url = format!(
        "{}://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=a.example:{id}&stateDir={}",
        t.scheme(),
        state.path().display()
    );
    // `Server::start` leaves an encrypted URL alone (it only rewrites `relay://`).
    let first = Server::start(&["-L", &url], 1);
    let fp = first.fingerprint.clone().expect("fingerprint in the relay listening line");
    for f in ["server-cert.pem", "server-key.pem"] {
        assert!(state.path().join(f).is_file(), "{f} kept in the state directory");
    }
    drop(first);

    let mut second = Server::start(&["-L", &url], 1);
    assert_eq!(second.fingerprint.as_deref(), Some(fp.as_str()), "same certificate after a restart");
    // `Server::start` records no transport; `relay_url` needs it for the agent's scheme.
    second.transport = t;
    let _agent = agent(&second, &[&format!("rtcp://:0/{}", origin::http("a"))], &id, &format!("pin={fp}"), 1);
    assert_serves(&second, "a");

    // A different state directory means a different certificate.
    let third = server(t, &tunnel_id(), "");
    assert_ne!(third.fingerprint.as_deref(), Some(fp.as_str()));
}

fn insecure_joins_with_a_warning(t: Transport) {
    let id = tunnel_id();
    let server = server(t, &id, "");
    let joined = agent(&server, &[&format!("rtcp://:0/{}", origin::http("a"))], &id, "insecure=true", 1);
    let warning = joined.wait_for("insecure");
    assert!(warning.contains("WARN"), "a warning: {warning}");
    assert!(warning.contains("not verified"), "{warning}");
    assert_serves(&server, "a");
}

#[test]
fn openssl_s_client_completes_a_tls13_handshake() {
    let server = server(Transport::Tls, &tunnel_id(), "");
    let fp = server.fingerprint.clone().expect("fingerprint");
    let out = Command::new("timeout")
        .args(["20", "openssl", "s_client", "-connect", &server.relay.to_string(), "-tls1_3"])
        .args(["-servername", "localhost", "-alpn", "tunnel/1", "-showcerts"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run timeout openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "s_client failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("New, TLSv1.3") || text.contains("Protocol  : TLSv1.3"), "{text}");
    assert!(text.contains("ALPN protocol: tunnel/1"), "{text}");
    // The certificate it saw is the one whose fingerprint the server logged.
    let begin = text.find("-----BEGIN CERTIFICATE-----").expect("certificate in the output");
    let end = text[begin..].find("-----END CERTIFICATE-----").expect("end of certificate") + begin + 25;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("seen.pem"), &text[begin..end]).expect("write seen.pem");
    let seen = openssl(dir.path(), &["x509", "-in", "seen.pem", "-noout", "-fingerprint", "-sha256"]);
    let seen = seen.trim().rsplit('=').next().unwrap().replace(':', "").to_lowercase();
    assert_eq!(format!("sha256:{seen}"), fp);
}

#[test]
fn garbage_datagrams_do_not_disturb_a_quic_session() {
    let id = tunnel_id();
    let server = server(Transport::Quic, &id, "");
    let first = agent(&server, &[&format!("rtcp://:0/{}", origin::http("a"))], &id, "", 1);
    assert_serves(&server, "a");

    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
    let mut rng = rand::rng();
    let mut buf = [0u8; 1400];
    for i in 0..3000 {
        let len = match i % 4 {
            0 => 1200 + rng.random_range(0..=200),
            1 => rng.random_range(1..64),
            _ => rng.random_range(1..=1400),
        };
        rng.fill(&mut buf[..len]);
        if i % 2 == 0 {
            // A QUIC long header (fixed bit set), version 1 or a random one.
            buf[0] = 0xC0 | (buf[0] & 0x3F);
            if len >= 5 && i % 4 == 0 {
                buf[1..5].copy_from_slice(&1u32.to_be_bytes());
            }
        }
        socket.send_to(&buf[..len], server.relay).expect("send garbage");
        if i % 500 == 0 {
            assert_serves(&server, "a");
        }
    }
    for _ in 0..5 {
        assert_serves(&server, "a");
    }
    assert!(!first.logged("session lost"), "{}", first.output());
    assert!(!first.logged("cannot join"), "{}", first.output());
    assert!(!server.proc.logged("panicked"), "{}", server.proc.output());
    // A new agent can still join the garbage-fed endpoint.
    let _second = agent(&server, &[&format!("rtcp://:0/{}", origin::http("a"))], &id, "", 2);
    assert_serves(&server, "a");
}
