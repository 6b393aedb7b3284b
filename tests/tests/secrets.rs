//! Secrets in configuration: no error of any binary echoes a token (a TOML syntax error on the
//! token's line, a bad command-line URL); tokens come from files (`tokenFile`) so they stay
//! out of `ps`; token and key files readable by other users are refused, as ssh refuses such
//! keys.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tunnel_tests::{access, agent, agent_config, http_get, openssl, origin, run_to_exit, tunnel_id, Proc, Server};

/// Writes `content` to `dir/name` with permission bits `mode`; returns the path.
fn secret_file(dir: &Path, name: &str, content: &str, mode: u32) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path.to_str().expect("utf-8 path").to_owned()
}

/// Asserts a failed run whose output names every one of `needles` and none of `secrets`.
fn assert_refused(name: &str, (ok, out): (bool, String), needles: &[&str], secrets: &[&str]) {
    assert!(!ok, "{name} accepted bad input:\n{out}");
    for needle in needles {
        assert!(out.contains(needle), "{name}: the error should name {needle:?}:\n{out}");
    }
    for secret in secrets {
        assert!(!out.contains(secret), "{name} printed the secret {secret:?}:\n{out}");
    }
}

#[test]
fn toml_errors_never_echo_the_token() {
    const SECRET: &str = "toml-Secret-4b8e21";
    let dir = tempfile::tempdir().unwrap();
    let id = tunnel_id();
    let server = |token_line: &str| format!("addr = \"127.0.0.1:0\"\n{token_line}\n");
    let client = |token_line: &str, services: &str| {
        format!("[relay]\naddr = \"127.0.0.1:1\"\ntunnel.id = \"{id}\"\n{token_line}\n{services}")
    };
    let agent_services = "[[services]]\ntype = \"rtcp\"\n[[services.forwarder.nodes]]\naddr = \"127.0.0.1:1\"\n";
    let access_services = "[[services]]\ntype = \"tcp\"\naddr = \"127.0.0.1:0\"\n";
    let broken_lines = [
        format!("token = \"{SECRET}"),         // unterminated string
        format!("token = \"{SECRET}\" extra"), // garbage after the value
        format!("token = '{SECRET}\\'' "),     // a quote too many
        "token = 86753094217".to_owned(),      // a numeric token without quotes
    ];
    for (i, line) in broken_lines.iter().enumerate() {
        let secret = if i == 3 { "86753094217" } else { SECRET };
        for (name, text, line_no) in [
            ("tunnel-server", server(line), "line 2"),
            ("tunnel-agent", client(line, agent_services), "line 4"),
            ("tunnel-access", client(line, access_services), "line 4"),
        ] {
            let path = dir.path().join(format!("{name}-{i}.toml"));
            std::fs::write(&path, text).unwrap();
            let path = path.to_str().unwrap();
            assert_refused(name, run_to_exit(name, &["-C", path, "--check"]), &[path, line_no], &[secret]);
        }
    }
}

#[test]
fn url_errors_never_echo_the_token() {
    const SECRET: &str = "url-Secret-1c0f5a";
    let id = tunnel_id();
    let relay = format!("relay://127.0.0.1:1?tunnel.id={id}&token={SECRET}");
    // A listener URL is no place for a token, but a pasted one is still not printed back.
    for listen in [format!("tcp://:99999/a.example?token={SECRET}"), format!("tcp://:1-x/a.example?token={SECRET}")] {
        let run = run_to_exit("tunnel-access", &["-L", &listen, "-F", &relay]);
        assert_refused("tunnel-access", run, &["tcp://"], &[SECRET]);
    }
    let long = "x".repeat(300);
    let relay = format!("relay://127.0.0.1:1?tunnel.id={id}&token={long}");
    let run = run_to_exit("tunnel-agent", &["-L", "rtcp://:0/127.0.0.1:1", "-F", &relay]);
    assert_refused("tunnel-agent", run, &["relay.token", "1 to 255 bytes"], &[&long]);
    let run = run_to_exit("tunnel-server", &["-L", &format!("relay://127.0.0.1:0?token={long}")]);
    assert_refused("tunnel-server", run, &["token", "1 to 255 bytes"], &[&long]);
}

#[test]
fn tokens_from_files_admit_and_stay_off_the_command_line() {
    const GLOBAL: &str = "global-Secret-77d2c0";
    const OWN: &str = "own-Secret-e5a913";
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (tunnel_id(), tunnel_id());
    let global = secret_file(dir.path(), "global.token", &format!("{GLOBAL}\n"), 0o600);
    let own = secret_file(dir.path(), "own.token", &format!("{OWN}\r\n"), 0o400);
    let wrong = secret_file(dir.path(), "wrong.token", "wrong-Secret\n", 0o600);
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "addr = \"127.0.0.1:0\"\nentryPoint = \"127.0.0.1:0\"\ntokenFile = \"{global}\"\n\
             [[ingress.rules]]\nhostname = \"a.example\"\nendpoint = \"{a}\"\n\
             [[ingress.rules]]\nhostname = \"b.example\"\nendpoint = \"{b}\"\n\
             [[tokens]]\ntunnel = \"{b}\"\ntokenFile = \"{own}\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(&["-C", config.to_str().unwrap()], 1);
    let ep = server.entrypoints[0];

    // The global token from a file, on the -F URL of an agent and an access client.
    let agent_a = agent(&server, &[&format!("rtcp://:0/{}", origin::http("a"))], &a, &format!("tokenFile={global}"), 1);
    assert_eq!(http_get(ep, "a.example", "/").0, 200);
    let (access_a, listeners) = access(&server, &["tcp://127.0.0.1:0/a.example"], &a, &format!("tokenFile={global}"));
    let (status, body) = http_get(listeners[0], "a.example", "/");
    assert_eq!((status, body.starts_with("origin=a")), (200, true), "{body}");

    // A tunnel's own token from a file, in the [relay] table of an agent's file.
    let toml = format!(
        "[relay]\naddr = \"{}\"\ntunnel.id = \"{b}\"\ntokenFile = \"{own}\"\n\
         [[services]]\ntype = \"rtcp\"\n[[services.forwarder.nodes]]\naddr = \"{}\"\n",
        server.relay,
        origin::http("b")
    );
    let (agent_b, _agent_dir) = agent_config(&server, &toml, 3);
    let (status, body) = http_get(ep, "b.example", "/");
    assert_eq!((status, body.starts_with("origin=b")), (200, true), "{body}");

    // The file's token is the one in force: another file's token is refused.
    let refused = Proc::start(
        "tunnel-agent",
        &["-L", "rtcp://:0/127.0.0.1:1", "-F", &server.relay_url(&b, &format!("tokenFile={wrong}"))],
    );
    assert!(refused.wait_for("cannot join tunnel").contains("401"), "{}", refused.output());

    for (name, p) in [("server", &server.proc), ("agent", &agent_a), ("access", &access_a), ("file agent", &agent_b)] {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", p.pid())).expect("cmdline");
        let cmdline = String::from_utf8_lossy(&cmdline);
        let out = p.output();
        for secret in [GLOBAL, OWN] {
            assert!(!cmdline.contains(secret), "{name}'s command line holds a token: {cmdline}");
            assert!(!out.contains(secret), "{name} logged a token:\n{out}");
        }
    }
}

#[test]
fn bad_token_files_are_refused_naming_the_file() {
    const SECRET: &str = "file-Secret-38ab9d";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let id = tunnel_id();
    let good = secret_file(d, "good.token", &format!("{SECRET}\n"), 0o600);
    let empty = secret_file(d, "empty.token", "\n", 0o600);
    let open = secret_file(d, "open.token", &format!("{SECRET}\n"), 0o644);
    let group = secret_file(d, "group.token", &format!("{SECRET}\n"), 0o640);
    let missing = d.join("missing.token").to_str().unwrap().to_owned();
    let chmod_open = format!("chmod 600 {open}");
    let chmod_group = format!("chmod 600 {group}");
    let cases: [(String, Vec<&str>); 5] = [
        (format!("tokenFile={good}&token={SECRET}"), vec!["token", "tokenFile", "not both"]),
        (format!("tokenFile={empty}"), vec!["tokenFile", &empty, "empty"]),
        (format!("tokenFile={missing}"), vec!["tokenFile", &missing]),
        (format!("tokenFile={open}"), vec!["tokenFile", &open, &chmod_open]),
        (format!("tokenFile={group}"), vec!["tokenFile", &group, &chmod_group]),
    ];
    for (query, needles) in &cases {
        let relay = format!("relay://127.0.0.1:1?tunnel.id={id}&{query}");
        let run = run_to_exit("tunnel-agent", &["-L", "rtcp://:0/127.0.0.1:1", "-F", &relay, "--check"]);
        assert_refused("tunnel-agent", run, needles, &[SECRET]);
        let run = run_to_exit("tunnel-access", &["-L", "tcp://127.0.0.1:0/a.example", "-F", &relay, "--check"]);
        assert_refused("tunnel-access", run, needles, &[SECRET]);
        let run = run_to_exit("tunnel-server", &["-L", &format!("relay://127.0.0.1:0?{query}"), "--check"]);
        assert_refused("tunnel-server", run, needles, &[SECRET]);
    }
    // The same in files: the server's [[tokens]] and a client's [relay] table.
    let server_toml = |entry: &str| format!("addr = \"127.0.0.1:0\"\n[[tokens]]\ntunnel = \"{id}\"\n{entry}\n");
    let agent_toml = |entry: &str| {
        format!(
            "[relay]\naddr = \"127.0.0.1:1\"\ntunnel.id = \"{id}\"\n{entry}\n\
             [[services]]\ntype = \"rtcp\"\n[[services.forwarder.nodes]]\naddr = \"127.0.0.1:1\"\n"
        )
    };
    let file_cases = [
        (format!("tokenFile = \"{good}\"\ntoken = \"{SECRET}\""), vec!["token", "tokenFile", "not both"]),
        (format!("tokenFile = \"{open}\""), vec!["tokenFile", &open, &chmod_open]),
        (format!("tokenFile = \"{empty}\""), vec!["tokenFile", &empty, "empty"]),
    ];
    for (i, (entry, needles)) in file_cases.iter().enumerate() {
        for (name, text, key) in
            [("tunnel-server", server_toml(entry), "tokens[0]"), ("tunnel-agent", agent_toml(entry), "relay.tokenFile")]
        {
            let path = d.join(format!("{name}-{i}.toml"));
            std::fs::write(&path, text).unwrap();
            let mut needles = needles.clone();
            needles.push(key);
            assert_refused(name, run_to_exit(name, &["-C", path.to_str().unwrap(), "--check"]), &needles, &[SECRET]);
        }
    }
    let path = d.join("no-token.toml");
    std::fs::write(&path, server_toml("")).unwrap();
    let run = run_to_exit("tunnel-server", &["-C", path.to_str().unwrap(), "--check"]);
    assert_refused("tunnel-server", run, &["tokens[0]", "token or tokenFile"], &[]);
}

#[test]
fn key_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    #[rustfmt::skip]
    openssl(dir.path(), &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", "/CN=relay.test", "-days", "1", "-keyout", "key.pem", "-out", "cert.pem"]);
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    let (cert, key) = (p("cert.pem"), p("key.pem"));
    let url = format!("relay+tls://127.0.0.1:0?certFile={cert}&keyFile={key}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = run_to_exit("tunnel-server", &["-L", &url, "--check"]);
    assert_refused("tunnel-server", run, &["keyFile", &format!("chmod 600 {key}")], &["PRIVATE KEY"]);

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = Proc::start("tunnel-server", &["-L", &url]);
    assert!(server.wait_for("relay listening").contains("transport=tls"));
}
