//! The `tunnel-agent` command line.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tunnel-agent")).args(args).output().expect("run tunnel-agent");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn seed_command_lines_are_valid() {
    let (ok, out) = run(&[
        "-L",
        "rtcp://:0/192.168.1.1:80",
        "-F",
        "relay://:8443?tunnel.id=4d21094e-b74c-4916-86c1-d9fa36ea677b",
        "--check",
    ]);
    assert!(ok, "{out}");
    let (ok, out) =
        run(&["-L", "rtcp://:0/:22", "-F", "relay://:8443?tunnelID=aede1f6a-762b-45da-b937-b6632356555a", "--check"]);
    assert!(ok, "{out}");
}

#[test]
fn bad_input_is_named() {
    let (ok, out) = run(&["-L", "rtcp://:0/:80", "-F", "relay://:8443?tunnel.id=xyz", "--check"]);
    assert!(!ok && out.contains("tunnel.id") && out.contains("xyz"), "{out}");
    let (ok, out) = run(&["-L", "rtcp://:0/:80", "-F", "relay://:8443", "--check"]);
    assert!(!ok && out.contains("tunnel.id"), "{out}");
    let (ok, out) = run(&[
        "-L",
        "rtcp://:0/:80",
        "-F",
        "relay://:8443?tunnel.id=4d21094e-b74c-4916-86c1-d9fa36ea677b&tunel=1",
        "--check",
    ]);
    assert!(!ok && out.contains("\"tunel\""), "{out}");
    let (ok, out) = run(&["--help"]);
    assert!(ok && out.contains("rtcp://:0/192.168.1.1:80"), "{out}");
}
