//! 4. Public answers carry the status and the host only: no tunnel ID, target name or address,
//!    whichever way the visitor fails.

use tunnel_tests::{agent, http_get, origin, tunnel_id, Server};

/// Whether `text` holds anything shaped like a UUID.
fn has_uuid(text: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '-')).any(|w| tunnel_proto::Uuid::parse_str(w).is_ok())
}

#[test]
fn public_answers_name_no_tunnel_and_no_target() {
    let (down, refusing, healthy) = (tunnel_id(), tunnel_id(), tunnel_id());
    let url = format!(
        "relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=down.example:{down},refused.example:{refusing},ok.example:{healthy}"
    );
    let server = Server::start(&["-L", &url], 1);
    let dead = origin::closed_port();
    let _refusing = agent(&server, &[&format!("rtcp://:0/{dead}")], &refusing, "", 1);
    let _ok = agent(&server, &[&format!("rtcp://:0/{}", origin::http("ok"))], &healthy, "", 2);
    let ep = server.entrypoints[0];
    for (host, want) in [("down.example", 502), ("refused.example", 502), ("nowhere.example", 404)] {
        let (status, body) = http_get(ep, host, "/");
        assert_eq!(status, want, "{host}: {body}");
        assert!(body.contains(host), "the answer names the host: {body}");
        assert!(!has_uuid(&body), "{host}: the answer names a tunnel: {body}");
        assert!(!body.contains(&dead.port().to_string()) && !body.contains("target-"), "{host}: a target: {body}");
    }
    assert_eq!(http_get(ep, "ok.example", "/").0, 200);
    // The server's log keeps the details.
    assert!(server.proc.output().contains(&down), "the log names the tunnel");
}
