//! A userspace chaos proxy for the fault tests (this kernel has no `tc netem`): a TCP proxy on
//! 127.0.0.1:0 forwarding every connection to one target, with run-time controls:
//! - [`ChaosProxy::set_delay`]: every chunk is held that long after it was read before it is
//!   forwarded (a one-way delay in each direction; chunks are pipelined, so it adds latency
//!   without capping throughput at one chunk per delay);
//! - [`ChaosProxy::set_throttle`]: at most that many bytes per second per direction and
//!   connection;
//! - [`ChaosProxy::blackhole`]: nothing is forwarded in either direction and no new connection
//!   reaches the target, while every socket stays open (a half-open link: no FIN, no reset);
//! - [`ChaosProxy::resume`]: forwarding goes on where it stopped, byte-exact.
//!
//! Each direction of a connection is a reader thread and a writer thread joined by a bounded
//! queue, so the proxy buffers at most [`QUEUE_CHUNKS`] chunks per direction. Dropping the
//! proxy shuts every socket down and stops its threads.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Bytes read at once.
const CHUNK: usize = 64 * 1024;
/// Chunks queued per direction of a connection (bounds the proxy's buffering).
pub const QUEUE_CHUNKS: usize = 64;
/// Bytes written at once under a throttle, so the pace is smooth.
const THROTTLE_PIECE: usize = 16 * 1024;
/// Dialing the target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A running proxy; stopped when dropped.
pub struct ChaosProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    target: SocketAddr,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    delay: Duration,
    /// Bytes per second per direction, if throttled.
    rate: Option<u64>,
    blackhole: bool,
    closed: bool,
    accepted: usize,
    /// Every socket, to shut down when the proxy is dropped.
    sockets: Vec<TcpStream>,
}

enum Msg {
    Data(Instant, Vec<u8>),
    /// The source shut down its write half: pass the half-close on.
    Eof,
    /// The source failed: close both sockets.
    Failed,
}

impl ChaosProxy {
    /// Starts a proxy on 127.0.0.1:0 forwarding to `target`.
    pub fn start(target: SocketAddr) -> ChaosProxy {
        let (listener, addr) = crate::listener();
        let shared = Arc::new(Shared { target, state: Mutex::new(State::default()), changed: Condvar::new() });
        let accept_shared = shared.clone();
        thread::spawn(move || accept_loop(listener, accept_shared));
        ChaosProxy { addr, shared }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Holds every chunk `delay` after it was read before forwarding it (zero: no delay).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.update(|s| s.delay = delay);
    }

    /// Limits each direction of each connection to `bytes_per_sec` (`None`: unlimited).
    pub fn set_throttle(&self, bytes_per_sec: Option<u64>) {
        assert!(bytes_per_sec != Some(0), "a throttle of 0 bytes/s is a blackhole: use blackhole()");
        self.shared.update(|s| s.rate = bytes_per_sec);
    }

    /// Stops forwarding in both directions, silently: sockets stay open, bytes are held.
    pub fn blackhole(&self) {
        self.shared.update(|s| s.blackhole = true);
    }

    /// Forwards again, from where it stopped.
    pub fn resume(&self) {
        self.shared.update(|s| s.blackhole = false);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.state.lock().unwrap().accepted
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        let sockets = {
            let mut s = self.shared.state.lock().unwrap();
            s.closed = true;
            std::mem::take(&mut s.sockets)
        };
        self.shared.changed.notify_all();
        for s in sockets {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so it sees `closed` and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap());
        self.changed.notify_all();
    }

    /// Waits while blackholed; false once the proxy is closed.
    fn pass(&self) -> bool {
        let s = self.changed.wait_while(self.state.lock().unwrap(), |s| s.blackhole && !s.closed).unwrap();
        !s.closed
    }

    /// Registers a socket for shutdown on drop; false (and the socket shut) if already closed.
    fn track(&self, socket: &TcpStream) -> bool {
        let mut s = self.state.lock().unwrap();
        if s.closed {
            let _ = socket.shutdown(Shutdown::Both);
            return false;
        }
        if let Ok(clone) = socket.try_clone() {
            s.sockets.push(clone);
        }
        true
    }

    fn delay_and_rate(&self) -> (Duration, Option<u64>) {
        let s = self.state.lock().unwrap();
        (s.delay, s.rate)
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.state.lock().unwrap().closed {
            return;
        }
        let Ok(client) = conn else { continue };
        shared.state.lock().unwrap().accepted += 1;
        let shared = shared.clone();
        thread::spawn(move || connect_and_forward(client, shared));
    }
}

fn connect_and_forward(client: TcpStream, shared: Arc<Shared>) {
    if !shared.track(&client) || !shared.pass() {
        return;
    }
    let Ok(upstream) = TcpStream::connect_timeout(&shared.target, CONNECT_TIMEOUT) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    if !shared.track(&upstream) {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    for (from, to) in [(&client, &upstream), (&upstream, &client)] {
        let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
            return;
        };
        direction(from, to, &shared);
    }
}

/// Forwards `from` -> `to` through a reader thread, a bounded queue and a writer thread.
fn direction(from: TcpStream, to: TcpStream, shared: &Arc<Shared>) {
    let (tx, rx) = sync_channel(QUEUE_CHUNKS);
    let reader_shared = shared.clone();
    let reader_from = from.try_clone();
    thread::spawn(move || read_side(from, tx, reader_shared));
    let writer_shared = shared.clone();
    thread::spawn(move || write_side(rx, to, reader_from.ok(), writer_shared));
}

fn read_side(mut from: TcpStream, tx: SyncSender<Msg>, shared: Arc<Shared>) {
    loop {
        let mut buf = vec![0u8; CHUNK];
        let msg = match from.read(&mut buf) {
            Ok(0) => Msg::Eof,
            Ok(n) => {
                buf.truncate(n);
                // Nothing read during a blackhole moves on until it is lifted.
                if !shared.pass() {
                    return;
                }
                Msg::Data(Instant::now(), buf)
            }
            Err(_) => Msg::Failed,
        };
        let last = !matches!(msg, Msg::Data(..));
        if tx.send(msg).is_err() || last {
            return;
        }
    }
}

fn write_side(rx: Receiver<Msg>, mut to: TcpStream, from: Option<TcpStream>, shared: Arc<Shared>) {
    let mut next_slot = Instant::now();
    let fail = |to: &TcpStream| {
        let _ = to.shutdown(Shutdown::Both);
        if let Some(from) = &from {
            let _ = from.shutdown(Shutdown::Both);
        }
    };
    for msg in rx {
        let (read_at, data) = match msg {
            Msg::Data(read_at, data) => (read_at, data),
            Msg::Eof => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Msg::Failed => return fail(&to),
        };
        let (delay, _) = shared.delay_and_rate();
        sleep_until(read_at + delay);
        // A blackhole set while the chunk waited holds it too.
        if !shared.pass() {
            return;
        }
        for piece in data.chunks(THROTTLE_PIECE) {
            if let (_, Some(rate)) = shared.delay_and_rate() {
                next_slot = next_slot.max(Instant::now());
                sleep_until(next_slot);
                next_slot += Duration::from_secs_f64(piece.len() as f64 / rate as f64);
            }
            if to.write_all(piece).is_err() {
                return fail(&to);
            }
        }
    }
    // The reader stopped without a word: the proxy is closing.
    fail(&to);
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        thread::sleep(at - now);
    }
}
