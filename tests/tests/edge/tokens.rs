//! 3. Tunnels without a token are not open when others have tokens: a rogue agent with an
//!    empty token is refused, the server says at start which tunnel no token admits, and
//!    `--check` says so too.

use std::io::Write;

use tunnel_tests::{agent, bin, origin, tunnel_id, Proc, Server};

#[test]
fn a_tunnel_without_a_token_refuses_joins_once_tokens_are_configured() {
    const TOKEN: &str = "guarded-Secret-5b1e";
    let (guarded, bare) = (tunnel_id(), tunnel_id());
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    write!(
        file,
        r#"addr = "127.0.0.1:0"
entryPoint = ["127.0.0.1:0"]

[[ingress.rules]]
hostname = "guarded.example"
endpoint = "{guarded}"

[[ingress.rules]]
hostname = "bare.example"
endpoint = "{bare}"

[[tokens]]
tunnel = "{guarded}"
token = "{TOKEN}"
"#
    )
    .expect("write config");
    let path = file.path().to_str().unwrap().to_owned();

    let check = std::process::Command::new(bin("tunnel-server")).args(["-C", &path, "--check"]).output().unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success() && said.contains(&bare) && said.contains("no token"), "--check: {said}");
    assert!(!said.contains(&guarded), "the guarded tunnel is not named: {said}");

    let server = Server::start(&["-C", &path], 1);
    let warning = server.proc.wait_for("has no token");
    assert!(warning.contains(&bare), "{warning}");
    let _ok =
        agent(&server, &[&format!("rtcp://:0/{}", origin::http("guarded"))], &guarded, &format!("token={TOKEN}"), 1);
    let mut rogue = Proc::start(
        "tunnel-agent",
        &["-L", &format!("rtcp://:0/{}", origin::http("rogue")), "-F", &server.relay_url(&bare, "")],
    );
    let line = rogue.wait_for("cannot join tunnel");
    assert!(line.contains("401"), "the rogue agent is refused: {line}");
    assert!(rogue.is_running());
    let (status, body) = tunnel_tests::http_get(server.entrypoints[0], "bare.example", "/");
    assert_eq!(status, 502, "nobody serves the bare tunnel: {body}");
    assert!(!server.proc.output().contains(TOKEN), "the token is never logged");
}
