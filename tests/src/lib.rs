//! Harness for the end-to-end tests: start the real `tunnel-server`, `tunnel-agent` and
//! `tunnel-access` binaries on port 0, learn their bound addresses from their log lines, and
//! stop them by PID when the test ends, pass or fail.
//!
//! Synchronisation is by log line (`relay listening addr=...`, `session established`), never
//! by sleeping. Every wait has a generous deadline so a broken build fails instead of hanging.
//!
//! [`fuzzing`] holds the bodies of the fuzz targets, shared by `fuzz/` and the corpus replay.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub mod fuzzing;
pub mod origin;
pub mod payload;
pub mod proxies;

/// How long to wait for a process to log what a test expects.
pub const WAIT: Duration = Duration::from_secs(30);

/// Path of one of the workspace's binaries. `cargo test --workspace` builds them before any
/// test runs (each binary crate has integration tests of its own, which makes cargo build the
/// binary); `TUNNEL_BIN_DIR` overrides the directory.
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("TUNNEL_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("test executable path");
            exe.parent().and_then(|deps| deps.parent()).expect("target directory").to_path_buf()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo test --workspace` (or `cargo build --workspace`) first",
        path.display()
    );
    path
}

type Lines = Arc<(Mutex<Vec<String>>, Condvar)>;

/// A running binary whose output is collected line by line.
pub struct Proc {
    name: String,
    child: Child,
    lines: Lines,
}

impl Proc {
    /// Starts `name` (e.g. `tunnel-server`) with `args`.
    pub fn start(name: &str, args: &[&str]) -> Proc {
        Proc::start_with_env(name, args, &[])
    }

    /// Starts `name` with `args` and extra environment variables.
    pub fn start_with_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(bin(name));
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.env_remove("RUST_LOG").env_remove("TUNNEL_TOKEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let lines: Lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        collect(out, lines.clone());
        collect(err, lines.clone());
        Proc { name: name.to_owned(), child, lines }
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `n` lines contain `needle` and returns the `n`-th (1-based).
    pub fn wait_for_nth(&self, needle: &str, n: usize) -> String {
        let deadline = Instant::now() + WAIT;
        let (lock, cv) = &*self.lines;
        let mut lines = lock.lock().unwrap();
        loop {
            let found: Vec<&String> = lines.iter().filter(|l| l.contains(needle)).collect();
            if found.len() >= n {
                return found[n - 1].clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "{} did not log {needle:?} ({n} times) within {WAIT:?}; its output:\n{}",
                    self.name,
                    lines.join("\n")
                );
            }
            lines = cv.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Waits for a line containing `needle`.
    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_for_nth(needle, 1)
    }

    /// Whether any line so far contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.lines.0.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Everything logged so far.
    pub fn output(&self) -> String {
        self.lines.0.lock().unwrap().join("\n")
    }

    /// Waits for the process to exit by itself and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "{} did not exit within {WAIT:?}", self.name);
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (e.g. "TERM", "KILL", "STOP") to the process.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status();
    }
}

/// Makes the child get SIGKILL when the thread that started it ends, so a test binary that
/// is itself killed (a timeout, Ctrl-C) leaves no server or agent running: `Drop` does not run
/// then. Every `Proc` is started and dropped by its test's own thread.
#[allow(unsafe_code)] // the one unsafe block of the harness, explained below
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the hook runs in the child between fork and exec and calls only prctl,
        // which is async-signal-safe and allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(stream: impl Read + Send + 'static, lines: Lines) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let (lock, cv) = &*lines;
            lock.lock().unwrap().push(line);
            cv.notify_all();
        }
    });
}

/// Runs `name` to its exit (killing it after [`WAIT`]) with backtraces off, as a user sees
/// it; returns whether it succeeded and everything it printed.
pub fn run_to_exit(name: &str, args: &[&str]) -> (bool, String) {
    let child = Command::new(bin(name))
        .args(args)
        .env_remove("TUNNEL_TOKEN")
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(out) => {
            let out = out.expect("wait for output");
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            (out.status.success(), text)
        }
        Err(_) => {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            panic!("{name} {args:?} did not exit within {WAIT:?}");
        }
    }
}

/// Extracts `addr=HOST:PORT` from a log line.
pub fn addr_in(line: &str) -> SocketAddr {
    let start = line.find("addr=").unwrap_or_else(|| panic!("no addr= in {line:?}")) + 5;
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    rest[..end].trim_matches('"').parse().unwrap_or_else(|e| panic!("bad addr in {line:?}: {e}"))
}

/// The data-channel transports, to run the same scenario over each.
pub use tunnel_proto::channel::Transport;

/// Generates one `#[test]` per transport (modules `tcp`, `tls`, `quic`) for each named
/// scenario function taking a [`Transport`].
#[macro_export]
macro_rules! over_transports {
    ($($name:ident),* $(,)?) => {
        mod tcp { $( #[test] fn $name() { super::$name($crate::Transport::Tcp) } )* }
        mod tls { $( #[test] fn $name() { super::$name($crate::Transport::Tls) } )* }
        mod quic { $( #[test] fn $name() { super::$name($crate::Transport::Quic) } )* }
    };
}

/// A server started with `-L url` (which should listen on 127.0.0.1:0), with its addresses.
pub struct Server {
    /// The process.
    pub proc: Proc,
    /// Relay listener.
    pub relay: SocketAddr,
    /// Entrypoints in configuration order, TCP ones first, then UDP ones (the server logs
    /// them in that order).
    pub entrypoints: Vec<SocketAddr>,
    /// The data-channel transport.
    pub transport: Transport,
    /// `sha256:...` of the server certificate, for the encrypted transports.
    pub fingerprint: Option<String>,
    _state: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts `tunnel-server` with `args` and waits for its relay and `entrypoints` listeners.
    pub fn start(args: &[&str], entrypoints: usize) -> Server {
        Server::start_with_env(args, entrypoints, &[])
    }

    /// As [`Server::start`], with environment variables.
    pub fn start_with_env(args: &[&str], entrypoints: usize, env: &[(&str, &str)]) -> Server {
        Server::launch(Transport::Tcp, args, entrypoints, env)
    }

    /// As [`Server::start`], over `transport`: a `relay://` URL in `args` gets that
    /// transport's scheme and a fresh state directory for its self-signed certificate.
    pub fn start_on(transport: Transport, args: &[&str], entrypoints: usize) -> Server {
        Server::launch(transport, args, entrypoints, &[])
    }

    /// Starts `tunnel-server -C FILE`, `toml` being the file's text (its `addr` on port 0),
    /// and waits for its relay and `entrypoints` TCP listeners. The file's directory lives as
    /// long as the server.
    pub fn start_file(toml: &str, entrypoints: usize) -> Server {
        let dir = tempfile::tempdir().expect("config dir");
        let path = dir.path().join("server.toml");
        std::fs::write(&path, toml).expect("write server.toml");
        let proc = Proc::start("tunnel-server", &["-C", path.to_str().expect("utf-8 path")]);
        let line = proc.wait_for("relay listening");
        let relay = addr_in(&line);
        let fingerprint = line.split_whitespace().find_map(|w| w.strip_prefix("fingerprint=")).map(str::to_owned);
        let entrypoints = (1..=entrypoints).map(|n| addr_in(&proc.wait_for_nth("entrypoint listening", n))).collect();
        let transport = match line.split_whitespace().find_map(|w| w.strip_prefix("transport=")) {
            Some("relay+quic") | Some("quic") => Transport::Quic,
            Some("relay+tls") | Some("tls") => Transport::Tls,
            _ => Transport::Tcp,
        };
        Server { proc, relay, entrypoints, transport, fingerprint, _state: Some(dir) }
    }

    fn launch(transport: Transport, args: &[&str], entrypoints: usize, env: &[(&str, &str)]) -> Server {
        let state = (transport != Transport::Tcp).then(|| tempfile::tempdir().expect("state dir"));
        let args: Vec<String> = args
            .iter()
            .map(|a| match (a.strip_prefix("relay://"), &state) {
                (Some(rest), Some(dir)) => {
                    let sep = if rest.contains('?') { '&' } else { '?' };
                    format!("{}://{rest}{sep}stateDir={}", transport.scheme(), dir.path().display())
                }
                _ => (*a).to_owned(),
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::start_with_env("tunnel-server", &args, env);
        let line = proc.wait_for("relay listening");
        let relay = addr_in(&line);
        let fingerprint = line.split_whitespace().find_map(|w| w.strip_prefix("fingerprint=")).map(str::to_owned);
        let entrypoints = (1..=entrypoints).map(|n| addr_in(&proc.wait_for_nth("entrypoint listening", n))).collect();
        Server { proc, relay, entrypoints, transport, fingerprint, _state: state }
    }

    /// The `-F` URL for `tunnel` plus extra query; encrypted transports pin the server's
    /// certificate unless `extra` sets its own verification.
    pub fn relay_url(&self, tunnel: &str, extra: &str) -> String {
        let mut query = format!("tunnel.id={tunnel}");
        let own_verify = ["pin=", "caFile=", "insecure="].iter().any(|k| extra.contains(k));
        if let (Some(fp), false) = (&self.fingerprint, own_verify) {
            query.push_str(&format!("&pin={fp}"));
        }
        if !extra.is_empty() {
            query.push('&');
            query.push_str(extra);
        }
        format!("{}://{}?{query}", self.transport.scheme(), self.relay)
    }
}

/// Starts an agent and waits until it has joined (the server logs `agent joined`
/// `n`-th time).
pub fn agent(server: &Server, services: &[&str], tunnel: &str, extra: &str, joined_n: usize) -> Proc {
    let relay = server.relay_url(tunnel, extra);
    let mut args = Vec::new();
    for s in services {
        args.push("-L");
        args.push(s);
    }
    args.push("-F");
    args.push(&relay);
    let p = Proc::start("tunnel-agent", &args);
    // Every session of the agent's pool (default 2) is registered before it logs this.
    let sessions = extra
        .split('&')
        .find_map(|kv| kv.strip_prefix("sessions="))
        .map(|n| n.parse().expect("sessions=N"))
        .unwrap_or(2);
    p.wait_for_nth("session established", sessions);
    server.proc.wait_for_nth("agent joined", joined_n);
    p
}

/// Starts an access client and waits for its listeners and its session; returns it and the
/// listeners' addresses.
pub fn access(server: &Server, listeners: &[&str], tunnel: &str, extra: &str) -> (Proc, Vec<SocketAddr>) {
    let relay = server.relay_url(tunnel, extra);
    let mut args = Vec::new();
    for s in listeners {
        args.push("-L");
        args.push(s);
    }
    args.push("-F");
    args.push(&relay);
    let p = Proc::start("tunnel-access", &args);
    let addrs = (1..=listeners.len()).map(|n| addr_in(&p.wait_for_nth("listening", n))).collect();
    p.wait_for("session established");
    (p, addrs)
}

/// Runs `curl` with `args` and returns (exit code, stdout).
pub fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl").args(["-sS", "--max-time", "20"]).args(args).output().expect("run curl");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `curl` of `http://ADDR/path` with a Host header; returns (HTTP status, body).
pub fn http_get(addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let url = format!("http://{addr}{path}");
    let header = format!("Host: {host}");
    let (code, out) = curl(&["-w", "\n%{http_code}", "-H", &header, &url]);
    assert_eq!(code, 0, "curl {url} (Host: {host}) failed with exit code {code}: {out}");
    let (body, status) = out.rsplit_once('\n').expect("status line");
    (status.trim().parse().expect("HTTP status"), body.to_owned())
}

/// A fresh random tunnel ID.
pub fn tunnel_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Reads until EOF or `deadline`, returning what was read and whether EOF (or a reset) came.
pub fn read_until_close(stream: &mut TcpStream, deadline: Duration) -> (Vec<u8>, bool) {
    stream.set_read_timeout(Some(deadline)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return (out, false)
            }
            Err(_) => return (out, true),
        }
    }
}

/// Binds a loopback listener on port 0.
pub fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().unwrap();
    (l, a)
}

/// Writes all of `data` then shuts down the write half.
pub fn send_and_shutdown(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
}

/// Starts an agent with `-C FILE`, `toml` being the file's text, and waits until it has joined
/// (the server logs `agent joined` the `joined_n`-th time). Keep the directory alive as long
/// as the agent.
pub fn agent_config(server: &Server, toml: &str, joined_n: usize) -> (Proc, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("agent.toml");
    // The server's transport and certificate pin go into the `[relay]` table.
    let toml = match (&server.fingerprint, server.transport) {
        (Some(fp), t) => {
            toml.replacen("[relay]\n", &format!("[relay]\ndialer = \"{}\"\npin = \"{fp}\"\n", t.scheme()), 1)
        }
        (None, _) => toml.to_owned(),
    };
    std::fs::write(&path, toml).expect("write agent.toml");
    let p = Proc::start("tunnel-agent", &["-C", path.to_str().expect("utf-8 path")]);
    p.wait_for("session established");
    server.proc.wait_for_nth("agent joined", joined_n);
    (p, dir)
}

/// An external program (redis-server, openssl s_server, ...) killed by PID when dropped.
pub struct External {
    name: String,
    child: Child,
}

impl External {
    /// Starts `cmd`; panics with a clear message when the program is missing, so a test that
    /// needs it fails instead of skipping.
    pub fn start(mut cmd: Command) -> External {
        let name = cmd.get_program().to_string_lossy().into_owned();
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}; this test needs {name} installed (CI installs it)"));
        External { name, child }
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics if the program has already exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("{} exited early: {status}", self.name);
        }
    }
}

impl Drop for External {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `ready` until it returns true, panicking after [`WAIT`]. Only for external servers
/// that say nothing when they are ready; our own binaries are awaited by log line.
pub fn poll_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ready() {
        assert!(Instant::now() < deadline, "{what} was not ready within {WAIT:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

impl Proc {
    /// Whether the process is still running (has not exited, by itself or otherwise).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

pub mod chaos;
pub mod dns;
pub mod gateway;
pub mod pebble;
pub mod redis;

impl Proc {
    /// Starts a prepared command (e.g. `ip netns exec NS tunnel-agent ...`; `bin` gives the
    /// binary's path) with its output collected as [`Proc::start`] does; `name` is for
    /// messages. The command must exec the process it names, so its PID is the one signalled.
    pub fn start_command(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.env_remove("RUST_LOG").env_remove("TUNNEL_TOKEN");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let lines: Lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        collect(child.stdout.take().expect("stdout"), lines.clone());
        collect(child.stderr.take().expect("stderr"), lines.clone());
        Proc { name: name.to_owned(), child, lines }
    }
}

impl Server {
    /// As [`Server::start_on`], with the server run by the command `wrap` makes from the
    /// binary's path (e.g. `ip netns exec NS PATH`, which execs it in place).
    pub fn start_wrapped(
        transport: Transport,
        args: &[&str],
        entrypoints: usize,
        wrap: impl FnOnce(&std::path::Path) -> Command,
    ) -> Server {
        let state = (transport != Transport::Tcp).then(|| tempfile::tempdir().expect("state dir"));
        let mut cmd = wrap(&bin("tunnel-server"));
        for a in args {
            match (a.strip_prefix("relay://"), &state) {
                (Some(rest), Some(dir)) => {
                    let sep = if rest.contains('?') { '&' } else { '?' };
                    cmd.arg(format!("{}://{rest}{sep}stateDir={}", transport.scheme(), dir.path().display()))
                }
                _ => cmd.arg(a),
            };
        }
        let proc = Proc::start_command("tunnel-server", cmd);
        let line = proc.wait_for("relay listening");
        let relay = addr_in(&line);
        let fingerprint = line.split_whitespace().find_map(|w| w.strip_prefix("fingerprint=")).map(str::to_owned);
        let entrypoints = (1..=entrypoints).map(|n| addr_in(&proc.wait_for_nth("entrypoint listening", n))).collect();
        Server { proc, relay, entrypoints, transport, fingerprint, _state: state }
    }
}

/// A self-signed P-256 certificate for `cn` (and `extra` openssl arguments, e.g. `-addext
/// subjectAltName=...`) valid two days, written to `dir/cert.pem` with its key in
/// `dir/key.pem` (mode 0600); returns both paths.
pub fn self_signed(dir: &Path, cn: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let subject = format!("/CN={cn}");
    let mut args = vec!["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    args.extend(["-keyout", "key.pem", "-out", "cert.pem", "-subj", &subject, "-days", "2"]);
    args.extend(extra);
    openssl(dir, &args);
    let key = dir.join("key.pem");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod key.pem");
    (dir.join("cert.pem"), key)
}

/// A test CA (`dir/ca.pem`, `ca.key`) and a P-256 server certificate it signed for `names`
/// (the first is the subject; addresses become IP names) in `dir/server.pem` with its key in
/// `dir/server.key` (mode 0600). Unlike [`self_signed`], the leaf is no CA: what rustls
/// verifies against `ca.pem`.
pub fn ca_signed(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    #[rustfmt::skip]
    openssl(dir, &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", "/CN=Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-days", "2", "-keyout", "ca.key", "-out", "ca.pem"]);
    let subject = format!("/CN={}", names[0]);
    #[rustfmt::skip]
    openssl(dir, &["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", &subject, "-keyout", "server.key", "-out", "server.csr"]);
    let sans: Vec<String> = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(_) => format!("IP:{n}"),
            Err(_) => format!("DNS:{n}"),
        })
        .collect();
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
            sans.join(",")
        ),
    )
    .expect("write server.ext");
    #[rustfmt::skip]
    openssl(dir, &["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "1", "-extfile", "server.ext", "-out", "server.pem"]);
    let key = dir.join("server.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod server.key");
    (dir.join("ca.pem"), dir.join("server.pem"), key)
}

/// The headless Chromium of the machine (`chromium` or `chromium-browser`); panics when
/// there is none (tests/run installs it).
pub fn chromium() -> &'static str {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new("sh")
                .args(["-c", &format!("command -v {c}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .expect("this test needs chromium (tests/run installs it)")
}

/// The arguments of a headless Chromium run with its profile under `profile`, giving a page
/// five seconds of virtual time to load and run its scripts.
pub fn chromium_args(profile: &Path) -> Vec<String> {
    vec![
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        format!("--user-data-dir={}", profile.join("p").display()),
        "--virtual-time-budget=5000".to_owned(),
        "--window-size=1200,600".to_owned(),
    ]
}

/// The DOM of `url` once a headless Chromium has run its scripts.
pub fn browser_dom(url: &str) -> String {
    let profile = tempfile::tempdir().expect("browser profile");
    let out = Command::new(chromium())
        .args(chromium_args(profile.path()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("run chromium");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `openssl ARGS` in `dir` and returns its standard output; panics with openssl's error
/// output if it fails.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}; this test needs openssl installed (CI installs it)"));
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An argon2id hash of `password` from the server binary's own helper
/// (`tunnel-server --hash-password`), for `basicAuth` entries.
pub fn hash_password(password: &str) -> String {
    let mut child = Command::new(bin("tunnel-server"))
        .arg("--hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tunnel-server --hash-password");
    child.stdin.take().expect("stdin").write_all(format!("{password}\n").as_bytes()).expect("write the password");
    let out = child.wait_with_output().expect("tunnel-server --hash-password");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hash = String::from_utf8(out.stdout).expect("a UTF-8 hash").trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

/// The value of the first line of a Prometheus exposition `text` that starts with `prefix`
/// (name and labels), or 0.
pub fn metric_in(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// As [`metric_in`], on the `/metrics` of the admin listener at `admin`.
pub fn metric(admin: SocketAddr, prefix: &str) -> f64 {
    let (code, text) = curl(&["-s", &format!("http://{admin}/metrics")]);
    assert_eq!(code, 0, "curl /metrics: {text}");
    metric_in(&text, prefix)
}
