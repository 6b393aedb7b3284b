//! The `tunnel-access` command line.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tunnel-access")).args(args).output().expect("run tunnel-access");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn seed_command_lines_are_valid() {
    for listener in [
        "tcp://:8000?sniffing=true",
        "tcp://:2222/ssh.srv-2.local",
        "tcp://:6379/redis.srv-3.local",
        "tcp://:8000-8003/srv-2.local",
    ] {
        let (ok, out) =
            run(&["-L", listener, "-F", "relay://:8443?tunnel.id=aede1f6a-762b-45da-b937-b6632356555a", "--check"]);
        assert!(ok, "{listener}: {out}");
    }
}

#[test]
fn bad_input_is_named() {
    let (ok, out) = run(&["-L", "tcp://:2222/a.local", "-F", "relay://:8443?tunnel.id=1234", "--check"]);
    assert!(!ok && out.contains("1234"), "{out}");
    let (ok, out) = run(&[
        "-L",
        "tcp://:9-1/a.local",
        "-F",
        "relay://:8443?tunnel.id=aede1f6a-762b-45da-b937-b6632356555a",
        "--check",
    ]);
    assert!(!ok && out.contains("reversed"), "{out}");
}
