//! Upstream proxies for tests: tinyproxy (HTTP CONNECT with basic credentials) on a free
//! port of 127.0.0.1, started in the foreground and stopped with its [`Proc`].

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use crate::{origin, Proc};

/// Starts tinyproxy with `user`/`pass` as its only credentials, its config in `dir`; waits
/// until it accepts connections.
pub fn tinyproxy(dir: &Path, user: &str, pass: &str) -> (Proc, SocketAddr) {
    let addr = origin::closed_port();
    let cfg = format!(
        "Port {}\nListen 127.0.0.1\nTimeout 60\nMaxClients 50\nAllow 127.0.0.1\nBasicAuth {user} {pass}\nLogLevel Info\n",
        addr.port()
    );
    let path = dir.join("tinyproxy.conf");
    std::fs::write(&path, cfg).unwrap();
    let mut cmd = Command::new("tinyproxy");
    cmd.arg("-d").arg("-c").arg(&path);
    let proc = Proc::start_command("tinyproxy (needs the tinyproxy package; CI installs it)", cmd);
    proc.wait_for("Accepting connections");
    (proc, addr)
}
