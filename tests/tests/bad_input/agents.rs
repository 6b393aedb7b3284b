//! Bad agents: invalid tunnel IDs on the command line, tunnels in no rule, wrong tokens. A
//! configuration error ends the process with one line naming the problem; a refusal by the
//! server is logged on every attempt and retried; tokens never appear in any output.

use std::io::Write;

use tunnel_tests::{http_get, origin, run_to_exit, tunnel_id, Proc, Server};

use super::{World, FAST};

/// Asserts a failed run that printed exactly one line containing every one of `needles`.
fn assert_one_line_error(name: &str, (ok, out): (bool, String), needles: &[&str]) {
    assert!(!ok, "{name} accepted bad input:\n{out}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{name} should print one line:\n{out}");
    for needle in needles {
        assert!(lines[0].contains(needle), "{name}: the error should name {needle:?}: {}", lines[0]);
    }
}

#[test]
fn invalid_tunnel_ids_are_rejected_with_one_line_naming_them() {
    let world = World::start("", FAST, "");
    let prober = world.probe();
    let origin = origin::http("never");
    let service = format!("rtcp://:0/{origin}");
    for bad in ["not-a-uuid", "4d21094e-b74c-4916-86c1-d9fa36ea677", "4d21094e-b74c-4916-86c1-d9fa36ea677bb"] {
        let relay = world.server.relay_url(bad, "");
        let run = run_to_exit("tunnel-agent", &["-L", &service, "-F", &relay]);
        assert_one_line_error("tunnel-agent", run, &["tunnel.id", bad]);
        let run = run_to_exit("tunnel-access", &["-L", "tcp://127.0.0.1:0/ok.example", "-F", &relay]);
        assert_one_line_error("tunnel-access", run, &["tunnel.id", bad]);
        let run = run_to_exit("tunnel-server", &["-L", &format!("relay://127.0.0.1:0?tunnel=a.example:{bad}")]);
        assert_one_line_error("tunnel-server", run, &["tunnel ID", bad]);
    }
    prober.finish();
    world.assert_healthy();
}

#[test]
fn agent_of_an_unregistered_tunnel_is_refused_and_keeps_trying() {
    let world = World::start("", FAST, "");
    let stray = tunnel_id();
    let origin = origin::http("stray");
    let prober = world.probe();
    let mut agent =
        Proc::start("tunnel-agent", &["-L", &format!("rtcp://:0/{origin}"), "-F", &world.server.relay_url(&stray, "")]);
    for n in [1, 2] {
        let line = agent.wait_for_nth("cannot join tunnel", n);
        assert!(
            line.contains("404") && line.contains(&stray),
            "attempt {n} should say 404 and name the tunnel: {line}"
        );
    }
    assert!(agent.is_running(), "the agent must keep trying:\n{}", agent.output());
    let refused = world.server.proc.wait_for("session refused");
    assert!(refused.contains("404") && refused.contains(&stray), "{refused}");
    prober.finish();
    world.assert_healthy();
    let out = world.server.proc.output();
    assert!(!out.lines().any(|l| l.contains("agent joined") && l.contains(&stray)), "{out}");
}

const RIGHT: &str = "right-Secret-5f1c9a";
const WRONG: &str = "wrong-Secret-0b7e42";

/// Asserts that none of `secrets` appears in the output of any of `procs`.
fn assert_no_secrets(procs: &[(&str, &Proc)], secrets: &[&str]) {
    for (name, p) in procs {
        let out = p.output();
        for secret in secrets {
            assert!(!out.contains(secret), "{name} logged the token {secret:?}:\n{out}");
        }
    }
}

#[test]
fn wrong_token_is_refused_and_retried_right_token_joins() {
    let other = tunnel_id();
    let world =
        World::start(&format!(",b.example:{other}"), &format!("{FAST}&token={RIGHT}"), &format!("token={RIGHT}"));
    let prober = world.probe();
    let origin_b = origin::http("b");
    let service = format!("rtcp://:0/{origin_b}");
    let mut wrong = Proc::start(
        "tunnel-agent",
        &["-L", &service, "-F", &world.server.relay_url(&other, &format!("token={WRONG}"))],
    );
    for n in [1, 2] {
        let line = wrong.wait_for_nth("cannot join tunnel", n);
        assert!(line.contains("401"), "attempt {n} should say 401: {line}");
    }
    assert!(wrong.is_running(), "the agent must keep trying:\n{}", wrong.output());
    assert!(world.server.proc.wait_for("session refused").contains("401"));
    let (status, body) = http_get(world.ep(), "b.example", "/");
    assert_eq!(status, 502, "no agent joined b.example yet: {body}");
    // The right token, from the environment.
    let right = Proc::start_with_env(
        "tunnel-agent",
        &["-L", &service, "-F", &world.server.relay_url(&other, "")],
        &[("TUNNEL_TOKEN", RIGHT)],
    );
    right.wait_for("session established");
    world.server.proc.wait_for_nth("agent joined", 2);
    let (status, body) = http_get(world.ep(), "b.example", "/");
    assert_eq!((status, body.starts_with("origin=b")), (200, true), "{body}");
    prober.finish();
    world.assert_healthy();
    assert_no_secrets(
        &[("server", &world.server.proc), ("agent", &world.agent), ("wrong agent", &wrong), ("env agent", &right)],
        &[RIGHT, WRONG],
    );
}

#[test]
fn per_tunnel_tokens_rotate_and_do_not_cross_tunnels() {
    const OK: &str = "ok-Secret-71aa03";
    const OLD: &str = "old-Secret-c0ffee";
    const NEW: &str = "new-Secret-beef42";
    let (ok, rotating) = (tunnel_id(), tunnel_id());
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    write!(
        file,
        r#"addr = "127.0.0.1:0"
entryPoint = ["127.0.0.1:0"]

[[ingress.rules]]
hostname = "ok.example"
endpoint = "{ok}"

[[ingress.rules]]
hostname = "r.example"
endpoint = "{rotating}"

[[tokens]]
tunnel = "{ok}"
token = "{OK}"

[[tokens]]
tunnel = "{rotating}"
token = "{OLD}"

[[tokens]]
tunnel = "{rotating}"
token = "{NEW}"

[limits]
sniffTimeout = "1s"
handshakeTimeout = "1s"
"#
    )
    .expect("write config");
    let path = file.path().to_str().expect("utf-8 path").to_owned();
    let world = World::with_server(Server::start(&["-C", &path], 1), ok, &format!("token={OK}"));
    let prober = world.probe();
    // Another tunnel's token does not admit.
    let origin_x = origin::http("cross");
    let mut cross = Proc::start(
        "tunnel-agent",
        &["-L", &format!("rtcp://:0/{origin_x}"), "-F", &world.server.relay_url(&rotating, &format!("token={OK}"))],
    );
    let line = cross.wait_for("cannot join tunnel");
    assert!(line.contains("401"), "{line}");
    assert!(cross.is_running());
    // Both of the rotating tunnel's tokens admit.
    let mut agents = Vec::new();
    for (n, (name, token)) in [("old", OLD), ("new", NEW)].into_iter().enumerate() {
        let origin = origin::http(name);
        let service = format!("rtcp://:0/{origin}");
        agents
            .push((name, tunnel_tests::agent(&world.server, &[&service], &rotating, &format!("token={token}"), n + 2)));
    }
    let mut seen = Vec::new();
    for _ in 0..8 {
        let (status, body) = http_get(world.ep(), "r.example", "/");
        assert_eq!(status, 200, "{body}");
        seen.push(body.split_whitespace().next().unwrap_or_default().to_owned());
    }
    assert!(seen.contains(&"origin=old".to_owned()) && seen.contains(&"origin=new".to_owned()), "{seen:?}");
    prober.finish();
    world.assert_healthy();
    let mut procs = vec![("server", &world.server.proc), ("agent", &world.agent), ("cross agent", &cross)];
    procs.extend(agents.iter().map(|(name, p)| (*name, p)));
    assert_no_secrets(&procs, &[OK, OLD, NEW]);
}

#[test]
fn rejected_urls_do_not_echo_their_token() {
    const SECRET: &str = "url-Secret-9e1d77";
    let world = World::start("", FAST, "");
    let prober = world.probe();
    let origin = origin::http("never");
    let service = format!("rtcp://:0/{origin}");
    let id = tunnel_id();
    for (extra, key) in [("colour=red", "colour"), ("weight=abc", "weight")] {
        let relay = world.server.relay_url(&id, &format!("token={SECRET}&{extra}"));
        for name in ["tunnel-agent", "tunnel-access"] {
            let listen =
                if name == "tunnel-agent" { service.clone() } else { "tcp://127.0.0.1:0/ok.example".to_owned() };
            let (ok, out) = run_to_exit(name, &["-L", &listen, "-F", &relay]);
            assert!(!out.contains(SECRET), "{name} printed the token:\n{out}");
            assert_one_line_error(name, (ok, out), &[key]);
        }
    }
    let (ok, out) = run_to_exit("tunnel-server", &["-L", &format!("relay://127.0.0.1:0?token={SECRET}&colour=red")]);
    assert!(!out.contains(SECRET), "tunnel-server printed the token:\n{out}");
    assert_one_line_error("tunnel-server", (ok, out), &["colour"]);
    prober.finish();
    world.assert_healthy();
}
