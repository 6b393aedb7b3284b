//! Helpers shared by the high-availability tests: known pseudo-random payloads, a curl load
//! thread that records every outcome, agents from TOML, and log timestamps.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tunnel_tests::{agent_config, Proc, Server, WAIT};

pub const BIG: usize = 64 << 20;
/// A generous bound on one read, so a stuck transfer fails instead of hanging.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on one curl of the load thread.
const CURL_MAX_TIME: &str = "10";

pub use tunnel_tests::payload::{random_sha256, source_on};

/// Bytes read per call.
const CHUNK: usize = 64 << 10;

/// A download in progress: bytes read so far and their running hash.
pub struct Download {
    conn: TcpStream,
    hash: Sha256,
    pub got: usize,
}

/// How a download ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// EOF: bytes received and their sha256.
    Eof(usize, String),
    /// A read error (e.g. a reset) after this many bytes.
    Failed(usize, String),
    /// Nothing for [`READ_TIMEOUT`]: a hang.
    Stalled(usize),
}

impl Download {
    /// Connects to `addr` (a raw entrypoint of a source origin).
    pub fn start(addr: SocketAddr) -> Download {
        let conn = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        conn.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        Download { conn, hash: Sha256::new(), got: 0 }
    }

    /// Reads until at least `n` bytes have arrived in all; panics on EOF, error or stall.
    pub fn read_at_least(&mut self, n: usize) {
        let mut buf = vec![0u8; CHUNK];
        while self.got < n {
            let k = match self.conn.read(&mut buf) {
                Ok(0) => panic!("download ended after {} bytes, expected more than {n}", self.got),
                Ok(k) => k,
                Err(e) => panic!("download failed after {} bytes: {e}", self.got),
            };
            self.hash.update(&buf[..k]);
            self.got += k;
        }
    }

    /// Reads to the end, however it comes.
    pub fn finish(mut self) -> End {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match self.conn.read(&mut buf) {
                Ok(0) => return End::Eof(self.got, hex::encode(self.hash.finalize())),
                Ok(k) => {
                    self.hash.update(&buf[..k]);
                    self.got += k;
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return End::Stalled(self.got)
                }
                Err(e) => return End::Failed(self.got, e.to_string()),
            }
        }
    }
}

/// `curl http://ADDR/` with `Host: host`, bounded by curl's own `--max-time`; the body of a 200,
/// or what went wrong.
pub fn fetch(addr: SocketAddr, host: &str) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", CURL_MAX_TIME, "-w", "\n%{http_code}", "-H", &format!("Host: {host}")])
        .arg(format!("http://{addr}/"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("curl exit {:?}: {}", out.status.code(), err.trim()));
    }
    match text.rsplit_once('\n') {
        Some((body, "200")) => Ok(body.to_owned()),
        Some((body, status)) => Err(format!("HTTP {status}: {}", body.trim())),
        None => Err(format!("no status in {text:?}")),
    }
}

/// Which origin answered: the `origin=NAME` of the body.
pub fn origin_name(body: &str) -> &str {
    body.split_whitespace().find_map(|w| w.strip_prefix("origin=")).unwrap_or("?")
}

/// `n` sequential requests; counts of the origins that answered. Panics on any failure.
pub fn origins_of(addr: SocketAddr, host: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for i in 0..n {
        let body = fetch(addr, host).unwrap_or_else(|e| panic!("request {i} of {n} to {host} failed: {e}"));
        *seen.entry(origin_name(&body).to_owned()).or_insert(0) += 1;
    }
    seen
}

/// One request of a [`Load`].
#[derive(Debug)]
pub struct Outcome {
    pub started: Instant,
    pub result: Result<String, String>,
}

/// A thread doing sequential curls until it has done `max` or is stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    done: Receiver<()>,
    count: usize,
    handle: JoinHandle<Vec<Outcome>>,
}

impl Load {
    pub fn start(addr: SocketAddr, host: &str, max: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, done) = channel();
        let (host, flag) = (host.to_owned(), stop.clone());
        let handle = thread::spawn(move || {
            let mut outcomes = Vec::new();
            while outcomes.len() < max && !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                outcomes.push(Outcome { started, result: fetch(addr, &host) });
                let _ = tx.send(());
            }
            outcomes
        });
        Load { stop, done, count: 0, handle }
    }

    /// Waits until `n` requests have completed in all.
    pub fn wait_done(&mut self, n: usize) {
        while self.count < n {
            self.done.recv_timeout(WAIT).unwrap_or_else(|_| panic!("the load did not reach {n} requests"));
            self.count += 1;
        }
    }

    /// Waits for `more` requests beyond those completed so far.
    pub fn wait_more(&mut self, more: usize) {
        self.wait_done(self.count + more);
    }

    /// Stops after the request in flight and returns every outcome.
    pub fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        self.finish()
    }

    /// Waits until all requests are done and returns every outcome.
    pub fn finish(self) -> Vec<Outcome> {
        self.handle.join().expect("load thread")
    }
}

/// A failed outcome's description, for messages.
pub fn failures(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.result.as_ref().err().map(|e| format!("request {i}: {e}")))
        .collect()
}

/// An agent's TOML: `relay` is the address it dials (the server, or a proxy in front of it);
/// `limits` is the body of its `[limits]` table; each target is `(host pattern, addr)`, an
/// empty host making a fallback.
pub fn agent_toml(relay: SocketAddr, tunnel: &str, limits: &str, targets: &[(&str, SocketAddr)]) -> String {
    let mut toml = format!("[relay]\naddr = \"{relay}\"\ntunnel.id = \"{tunnel}\"\n[limits]\n{limits}\n");
    toml += "[[services]]\ntype = \"rtcp\"\n";
    for (host, addr) in targets {
        toml += &format!("[[services.forwarder.nodes]]\naddr = \"{addr}\"\n");
        if !host.is_empty() {
            toml += &format!("host = \"{host}\"\n");
        }
    }
    toml
}

/// Starts an agent from `toml` and waits until both of its sessions are established and the
/// server has logged `agent joined` `joined_n` times.
pub fn toml_agent(server: &Server, toml: &str, joined_n: usize) -> (Proc, tempfile::TempDir) {
    let (p, dir) = agent_config(server, toml, joined_n);
    p.wait_for_nth("session established", 2);
    (p, dir)
}

/// The timestamp that starts a log line (`2026-01-02T03:04:05.678901Z ...`, UTC).
pub fn log_time(line: &str) -> SystemTime {
    let stamp = line.split_whitespace().next().unwrap_or_default();
    let parse = || -> Option<SystemTime> {
        let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
        let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
        let (y, m, day) = (d.next()??, d.next()??, d.next()??);
        let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
        let mut t = hms.split(':').map(|p| p.parse::<u64>().ok());
        let (h, min, s) = (t.next()??, t.next()??, t.next()??);
        let nanos: u32 = format!("{frac:0<9}")[..9].parse().ok()?;
        // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
        let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
        let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + min * 60 + s;
        Some(UNIX_EPOCH + Duration::new(secs, nanos))
    };
    parse().unwrap_or_else(|| panic!("no timestamp at the start of {line:?}"))
}

/// Prints how long something took, from two log timestamps (for the record; never asserted).
pub fn report(what: &str, from: SystemTime, to: SystemTime) {
    match to.duration_since(from) {
        Ok(d) => eprintln!("measured: {what}: {d:?}"),
        Err(e) => eprintln!("measured: {what}: -{:?}", e.duration()),
    }
}
