//! The `tunnel-server` command line: help, validation errors that name the key.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tunnel-server")).args(args).output().expect("run tunnel-server");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn help_shows_an_example() {
    let (ok, out) = run(&["--help"]);
    assert!(ok);
    assert!(out.contains("relay://:8443?entryPoint=:80&tunnel="), "{out}");
}

#[test]
fn version() {
    let (ok, out) = run(&["--version"]);
    assert!(ok && out.contains(env!("CARGO_PKG_VERSION")), "{out}");
}

#[test]
fn bad_input_is_named() {
    let (ok, out) = run(&["-L", "relay://:8443?tunnel=a.example:not-a-uuid", "--check"]);
    assert!(!ok);
    assert!(out.contains("not-a-uuid") && out.contains("endpoint"), "{out}");
    let (ok, out) = run(&["-L", "relay://:8443?entrypoint=:80&colour=red", "--check"]);
    assert!(!ok && out.contains("unknown option \"colour\""), "{out}");
    let (ok, out) = run(&["-C", "/nonexistent/server.toml", "--check"]);
    assert!(!ok && out.contains("/nonexistent/server.toml"), "{out}");
    let (ok, out) = run(&[]);
    assert!(!ok && out.contains("-L"), "{out}");
}

#[test]
fn seed_command_lines_are_valid() {
    for url in [
        "relay://:8443?entryPoint=:80&tunnel=.example.com:4d21094e-b74c-4916-86c1-d9fa36ea677b,example.org:ac74d9dd-3125-442a-a7c1-f9e49e05faca",
        "relay://:8443?tunnel.direct=true",
        "relay://:8443?tunnel=iperf.local:22f43305-42f7-4232-bbbc-aa6c042e3bc3",
        "relay://:8443?entryPoint=:80,:5201/iperf.local&tunnel=iperf.local:$22f43305-42f7-4232-bbbc-aa6c042e3bc3",
    ] {
        let (ok, out) = run(&["-L", url, "--check"]);
        assert!(ok, "{url}: {out}");
    }
}
