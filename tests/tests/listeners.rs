//! The access client's listeners are for the machine it runs on, as `ssh -L` forwards are:
//! `:PORT` binds loopback only; another interface must be written out, and then the access
//! client warns that other machines can reach the tunnel through it.

use tunnel_tests::{access, run_to_exit, tunnel_id, Server};

const EXPOSED: &str = "listener reachable from other machines";

#[test]
fn listeners_without_a_host_bind_loopback() {
    let id = tunnel_id();
    let server = Server::start(&["-L", &format!("relay://127.0.0.1:0?tunnel=a.example:{id}")], 0);
    let (client, addrs) =
        access(&server, &["tcp://:0/a.example", "udp://:0/a.example", "tcp://:0?sniffing=true"], &id, "");
    for addr in &addrs {
        assert!(addr.ip().is_loopback(), "{addr} is not loopback:\n{}", client.output());
    }
    assert!(!client.logged(EXPOSED), "{}", client.output());
}

#[test]
fn other_interfaces_are_named_and_warned_about() {
    let id = tunnel_id();
    let relay = format!("relay://127.0.0.1:1?tunnel.id={id}");
    // --check validates without binding: the test opens nothing beyond loopback.
    let listeners = ["tcp://0.0.0.0:0/a.example", "tcp://127.0.0.1:0/b.example", "udp://:0/c.example"];
    let mut args = Vec::new();
    for l in listeners {
        args.extend(["-L", l]);
    }
    args.extend(["-F", &relay, "--check"]);
    let (ok, out) = run_to_exit("tunnel-access", &args);
    assert!(ok, "{out}");
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains(EXPOSED)).collect();
    assert_eq!(warnings.len(), 1, "one warning, for the 0.0.0.0 listener:\n{out}");
    assert!(warnings[0].contains("WARN") && warnings[0].contains("tcp://0.0.0.0:0/a.example"), "{out}");

    // A range on every IPv6 interface is one listener, warned about once.
    let (ok, out) = run_to_exit("tunnel-access", &["-L", "tcp://[::]:40000-40003/a.example", "-F", &relay, "--check"]);
    assert!(ok, "{out}");
    assert_eq!(out.matches(EXPOSED).count(), 1, "{out}");
}
