//! IPv6: the relay, entrypoints, access listeners and targets on `[::1]` and `[::]` (dual
//! stack: IPv4 visitors too, logged as IPv4), with addresses printed in URL form.

use std::process::Command;

use tunnel_tests::{addr_in, curl, origin, tunnel_id, Proc, Server};

#[test]
fn a_tunnel_over_ipv6_with_a_dual_stack_entrypoint() {
    let id = tunnel_id();
    let (target, seen) = origin::http_counting_on("[::1]:0", "V6");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(
        &path,
        format!(
            "addr = \"[::1]:0\"\n[[entrypoints]]\naddr = \"[::]:0\"\n\
             [[ingress.rules]]\nhostname = \"a.example\"\nendpoint = \"{id}\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(&["-C", path.to_str().unwrap()], 1);
    assert!(server.relay.is_ipv6(), "{}", server.relay);
    assert!(server.proc.output().contains(&format!("addr={}", server.relay)), "printed as [::1]:PORT");
    let relay = format!("relay://{}?tunnel.id={id}", server.relay);
    let agent = Proc::start("tunnel-agent", &["-L", &format!("rtcp://:0/{target}"), "-F", &relay]);
    agent.wait_for("session established");
    server.proc.wait_for("agent joined");
    let port = server.entrypoints[0].port();

    for (host, path, xff, peer) in
        [("[::1]", "/six", "::1", "[::1]:"), ("127.0.0.1", "/four", "127.0.0.1", "127.0.0.1:")]
    {
        let url = format!("http://{host}:{port}{path}");
        let (code, body) = curl(&["-g", "-H", "Host: a.example", &url]);
        assert_eq!(code, 0, "{url}: {body}");
        assert!(body.contains("origin=V6 host=a.example"), "{url}: {body}");
        assert!(body.contains(&format!("xff={xff}\n")), "an IPv4 visitor is named as IPv4: {body}");
        let line = server.proc.wait_for(&format!("path={path}"));
        assert!(line.contains(&format!("peer={peer}")), "the access log names the visitor in URL form: {line}");
    }

    // An access client listening on [::1], reaching the same tunnel.
    let access = Proc::start("tunnel-access", &["-L", "tcp://[::1]:0/a.example", "-F", &relay]);
    let listening = addr_in(&access.wait_for("listening"));
    assert!(listening.is_ipv6(), "{listening}");
    let (code, body) = curl(&["-g", &format!("http://{listening}/via-access")]);
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("origin=V6") && body.contains("path=/via-access"), "{body}");
    assert!(seen.requests.load(std::sync::atomic::Ordering::SeqCst) >= 3);
}

#[test]
fn a_bad_ipv6_address_is_a_clear_error() {
    let out = Command::new(tunnel_tests::bin("tunnel-server"))
        .args(["-L", "relay://[::1:0?entryPoint=:0", "--check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[::1"), "the error names the address: {err}");
}
