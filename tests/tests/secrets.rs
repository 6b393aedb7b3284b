//! Secrets in configuration: no error of any binary echoes a token (a TOML syntax error on the
//! token's line, a bad command-line URL).

use tunnel_tests::{run_to_exit, tunnel_id};

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
