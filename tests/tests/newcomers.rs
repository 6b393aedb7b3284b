//! What a newcomer met on a first day, each now caught or said plainly: a hostname ruled to two
//! tunnels, a raw entrypoint that no rule serves, a tunnel ID whose `$4` a shell ate, an agent
//! refused for good, a visitor shown one status while the log said another, `--help` without
//! UDP, `--version` without the commit.

use std::process::Command;

use tunnel_tests::{http_get, origin, run_to_exit, tunnel_id, Proc, Server};

#[test]
fn check_refuses_a_hostname_ruled_to_two_tunnels_naming_both_rules() {
    let (a, b) = (tunnel_id(), tunnel_id());
    let url = format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=www.example:{a},WWW.example:{b}");
    for args in [vec!["-L", url.as_str(), "--check"], vec!["-L", url.as_str()]] {
        let (ok, out) = run_to_exit("tunnel-server", &args);
        assert!(!ok, "a hostname ruled to two tunnels was accepted:\n{out}");
        let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line:\n{out}");
        for needle in ["ingress.rules[1].hostname", "ingress.rules[0]", "WWW.example", &a] {
            assert!(lines[0].contains(needle), "the error should name {needle:?}: {}", lines[0]);
        }
    }
}

#[test]
fn a_raw_entrypoint_no_rule_serves_is_a_warning_at_check_and_at_start() {
    let id = tunnel_id();
    let url = format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0,127.0.0.1:0/iperf.local&tunnel=www.example:{id}");
    let (ok, out) = run_to_exit("tunnel-server", &["-L", &url, "--check"]);
    assert!(ok, "a warning is not an error:\n{out}");
    let warning = out.lines().find(|l| l.contains("iperf.local")).unwrap_or_else(|| panic!("no warning:\n{out}"));
    assert!(warning.contains("warning") && warning.contains("no ingress rule"), "{warning}");
    assert!(warning.contains("hostname = \"iperf.local\""), "the warning names the rule to add: {warning}");
    let server = Server::start(&["-L", &url], 2);
    let line = server.proc.wait_for("iperf.local: no ingress rule");
    assert!(line.contains("WARN"), "{line}");
    // With the rule, no warning.
    let url = format!("{url},iperf.local:{id}");
    let (ok, out) = run_to_exit("tunnel-server", &["-L", &url, "--check"]);
    assert!(ok && !out.contains("iperf.local"), "{out}");
}

#[test]
fn a_tunnel_id_whose_dollar_a_shell_ate_gets_the_single_quotes_hint() {
    // "HOST:$4d21094e-..." in double quotes: the shell replaces $4 with nothing.
    let eaten = "d21094e-b74c-4916-86c1-d9fa36ea677b";
    let (ok, out) = run_to_exit("tunnel-server", &["-L", &format!("relay://127.0.0.1:0?tunnel=a.example:{eaten}")]);
    assert!(!ok && out.contains(eaten) && out.contains("single quotes"), "{out}");
    let relay = format!("relay://127.0.0.1:1?tunnel.id={eaten}");
    let (ok, out) = run_to_exit("tunnel-agent", &["-L", "rtcp://:0/127.0.0.1:1", "-F", &relay]);
    assert!(!ok && out.contains("single quotes"), "{out}");
    // Another wrong ID gets no such guess.
    let (ok, out) = run_to_exit("tunnel-server", &["-L", "relay://127.0.0.1:0?tunnel=a.example:not-a-uuid"]);
    assert!(!ok && !out.contains("single quotes"), "{out}");
}

/// An agent that `server` refuses with `status`, retrying fast (`backoffMax`) so that a few
/// attempts come within the test; returns its "cannot join tunnel" lines once there are `n`.
fn refused_lines(server: &Server, tunnel: &str, token: &str, status: &str, n: usize) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("agent.toml");
    let origin = origin::http("refused");
    let toml = format!(
        "[relay]\naddr = \"{}\"\ntunnel.id = \"{tunnel}\"\n{token}\n[[services]]\ntype = \"rtcp\"\n\
         [[services.forwarder.nodes]]\naddr = \"{origin}\"\n[limits]\nbackoffBase = \"50ms\"\nbackoffMax = \"200ms\"\n",
        server.relay
    );
    std::fs::write(&path, toml).expect("write agent.toml");
    let mut agent = Proc::start("tunnel-agent", &["-C", path.to_str().expect("utf-8 path")]);
    agent.wait_for_nth("cannot join tunnel", n);
    assert!(agent.is_running(), "the agent keeps trying:\n{}", agent.output());
    let out = agent.output();
    let warnings: Vec<String> = out.lines().filter(|l| l.contains("WARN")).map(str::to_owned).collect();
    let lines: Vec<String> = warnings.iter().filter(|l| l.contains("cannot join tunnel")).cloned().collect();
    assert_eq!(warnings.len(), lines.len(), "no other warning than one line per attempt:\n{out}");
    for line in &lines {
        assert!(line.contains(status) && line.contains(tunnel), "each line says {status} and the tunnel: {line}");
    }
    lines
}

#[test]
fn an_agent_refused_for_good_says_the_fix_once_then_one_short_line_per_attempt() {
    let server = Server::start(&["-L", &format!("relay://127.0.0.1:0?tunnel=a.example:{}", tunnel_id())], 0);
    let stray = tunnel_id();
    let lines = refused_lines(&server, &stray, "", "404", 5);
    let with_fix: Vec<&String> = lines.iter().filter(|l| l.contains("fix=")).collect();
    assert_eq!(with_fix.len(), 1, "the fix is said once:\n{}", lines.join("\n"));
    assert!(lines[0].contains("fix=") && lines[0].contains("[[ingress.rules]]"), "{}", lines[0]);
    for (i, line) in lines.iter().enumerate().skip(1) {
        let attempt = format!("attempt={}", i + 1);
        assert!(line.contains("still refused") && line.contains(&attempt), "{attempt} expected: {line}");
    }

    let token_server =
        Server::start(&["-L", &format!("relay://127.0.0.1:0?tunnel=b.example:{stray}&token=right-token-1")], 0);
    let lines = refused_lines(&token_server, &stray, "token = \"wrong-token-1\"", "401", 3);
    assert!(lines[0].contains("fix=") && lines[0].contains("TUNNEL_TOKEN"), "{}", lines[0]);
    assert!(lines[1..].iter().all(|l| l.contains("still refused") && !l.contains("fix=")), "{}", lines.join("\n"));
}

#[test]
fn the_visitor_and_the_server_log_give_the_same_status() {
    let id = tunnel_id();
    let server = Server::start(
        &["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=www.example:{id},x.example:{id}")],
        1,
    );
    let (status, body) = http_get(server.entrypoints[0], "www.example", "/");
    assert_eq!(status, 502, "no agent has joined: {body}");
    let line = server.proc.wait_for("visitor refused");
    assert!(line.contains("status=502") && line.contains("no agent"), "the log says what the visitor saw: {line}");
}

#[test]
fn help_shows_the_udp_schemes_and_version_the_commit_and_build_date() {
    for (name, schemes) in [("tunnel-agent", ["rtcp://", "rudp://"]), ("tunnel-access", ["tcp://", "udp://"])] {
        let (ok, help) = run_to_exit(name, &["--help"]);
        assert!(ok, "{help}");
        for scheme in schemes {
            assert!(help.contains(scheme), "{name} --help should show {scheme}:\n{help}");
        }
    }
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    for name in ["tunnel-server", "tunnel-agent", "tunnel-access"] {
        let (ok, version) = run_to_exit(name, &["--version"]);
        assert!(ok, "{version}");
        let version = version.trim();
        let commit = version.split("(commit ").nth(1).and_then(|r| r.split(',').next()).unwrap_or_default();
        match &head {
            Some(head) => assert_eq!(commit, head, "{name} --version: {version}"),
            None => assert!(!commit.is_empty(), "{name} --version: {version}"),
        }
        let date = version.split("built ").nth(1).unwrap_or_default().trim_end_matches(')');
        let digits = date.split('-').map(|p| p.len()).collect::<Vec<_>>();
        assert!(
            digits == [4, 2, 2] && date.replace('-', "").bytes().all(|b| b.is_ascii_digit()),
            "{name} --version should end with the build date: {version}"
        );
    }
}
