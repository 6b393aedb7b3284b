//! A real `redis-server` for tests (Debian's package), on a free loopback port or on a Unix
//! socket in a directory of the test's, killed when dropped; and `redis-cli` against it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{origin, poll_until, External};

/// Where a test's Redis listens.
#[derive(Debug, Clone)]
pub enum Where {
    /// A loopback TCP port.
    Tcp(SocketAddr),
    /// A Unix socket (no port to pick, none to collide).
    Unix(PathBuf),
}

/// A running `redis-server`.
pub struct Redis {
    /// Where it listens.
    pub at: Where,
    proc: Option<External>,
}

impl Redis {
    /// On a free loopback port.
    pub fn tcp() -> Redis {
        Redis::start(Where::Tcp(origin::closed_port()))
    }

    /// On `dir/redis.sock`.
    pub fn unix(dir: &Path) -> Redis {
        Redis::start(Where::Unix(dir.join("redis.sock")))
    }

    fn start(at: Where) -> Redis {
        let mut redis = Redis { at, proc: None };
        redis.resume();
        redis
    }

    /// Kills the server (its data goes with it).
    pub fn stop(&mut self) {
        self.proc = None;
    }

    /// Starts the server again where it listened.
    pub fn resume(&mut self) {
        let mut cmd = Command::new("redis-server");
        match &self.at {
            Where::Tcp(addr) => cmd.args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1"]),
            Where::Unix(path) => cmd.args(["--port", "0", "--unixsocket", path.to_str().expect("utf-8 path")]),
        };
        cmd.args(["--save", "", "--appendonly", "no", "--daemonize", "no"]);
        let mut proc = External::start(cmd);
        poll_until("redis-server", || {
            proc.assert_running();
            self.cli(&["PING"]).0 == "PONG"
        });
        self.proc = Some(proc);
    }

    /// The URL a server's `[cluster]` table takes.
    pub fn url(&self) -> String {
        match &self.at {
            Where::Tcp(addr) => format!("redis://{addr}/0"),
            Where::Unix(path) => format!("unix://{}", path.display()),
        }
    }

    /// Runs `redis-cli` against it (bounded by coreutils `timeout`); returns trimmed stdout
    /// and stderr.
    pub fn cli(&self, args: &[&str]) -> (String, String) {
        cli(&self.at, args)
    }
}

/// Runs `redis-cli` against `at`; see [`Redis::cli`].
pub fn cli(at: &Where, args: &[&str]) -> (String, String) {
    let mut cmd = Command::new("timeout");
    cmd.args(["20", "redis-cli"]);
    match at {
        Where::Tcp(addr) => cmd.args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()]),
        Where::Unix(path) => cmd.args(["-s", path.to_str().expect("utf-8 path")]),
    };
    let out = cmd.args(args).output().expect("run timeout redis-cli");
    if out.status.code() == Some(127) {
        panic!("redis-cli not found: this test needs redis-tools installed (CI installs it)");
    }
    (String::from_utf8_lossy(&out.stdout).trim().to_owned(), String::from_utf8_lossy(&out.stderr).trim().to_owned())
}
