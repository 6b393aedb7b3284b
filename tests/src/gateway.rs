//! Helpers for the gateway tests: sealed lines made by the real `openssl enc`, a client that
//! reads the status line, a target that never answers, and ports shared with `SO_REUSEPORT`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// How long a client waits for a status line or an echo: far above any timeout configured.
pub const CLIENT_WAIT: Duration = Duration::from_secs(30);

/// `echo -n PLAINTEXT | openssl enc -e -aes-256-cbc -a -salt -k SECRET EXTRA...`, its
/// base64 lines joined into one (openssl wraps at 64 characters).
pub fn seal(secret: &str, plaintext: &str, extra: &[&str]) -> String {
    let mut child = Command::new("openssl")
        .args(["enc", "-e", "-aes-256-cbc", "-a", "-salt", "-k", secret])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}; this test needs openssl installed (CI installs it)"));
    child.stdin.take().expect("stdin").write_all(plaintext.as_bytes()).expect("write to openssl");
    let out = child.wait_with_output().expect("openssl output");
    assert!(out.status.success(), "openssl enc {extra:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let line: String = String::from_utf8(out.stdout).expect("base64 is ASCII").split_whitespace().collect();
    assert!(line.starts_with("U2FsdGVkX1"), "openssl did not write a salted header: {line}");
    line
}

/// Connects to a gateway with the client's timeouts set.
pub fn connect(gateway: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(gateway).unwrap_or_else(|e| panic!("connect to gateway {gateway}: {e}"));
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(CLIENT_WAIT)).unwrap();
    tcp.set_write_timeout(Some(CLIENT_WAIT)).unwrap();
    tcp
}

/// Reads the status line: at most 8 bytes up to and including `\n`. Panics on anything else.
pub fn status(tcp: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 8 {
        match tcp.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    return String::from_utf8_lossy(&line).into_owned();
                }
            }
            Err(e) => panic!("no status line from the gateway within {CLIENT_WAIT:?}: {e} (read {line:?})"),
        }
    }
    panic!("not a status line: {:?}", String::from_utf8_lossy(&line))
}

/// Sends `line` and `\n` (and `after`, in the same write) and returns the status line with
/// the connection.
pub fn ask(gateway: SocketAddr, line: &str, after: &[u8]) -> (String, TcpStream) {
    let mut tcp = connect(gateway);
    let mut out = format!("{line}\n").into_bytes();
    out.extend_from_slice(after);
    tcp.write_all(&out).expect("send the line");
    let s = status(&mut tcp);
    (s, tcp)
}

/// Reads everything until the gateway closes (bounded by [`CLIENT_WAIT`]).
pub fn rest_until_close(tcp: &mut TcpStream) -> Vec<u8> {
    let (got, closed) = crate::read_until_close(tcp, CLIENT_WAIT);
    assert!(closed, "the gateway did not close within {CLIENT_WAIT:?}");
    got
}

/// A loopback address whose listener never completes a handshake: its accept queue (of
/// length one) is full and never read, so the kernel drops every further SYN, as a filtered
/// port does. Keep the returned value alive as long as the address is used.
pub struct Blackhole {
    /// The address.
    pub addr: SocketAddr,
    _listener: Socket,
    _filler: TcpStream,
}

impl Blackhole {
    /// Makes one and checks that a connection to it indeed gets no answer.
    pub fn new() -> Blackhole {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind");
        listener.listen(0).expect("listen");
        let addr = listener.local_addr().expect("local addr").as_socket().expect("inet address");
        let filler = TcpStream::connect(addr).expect("the first connection fills the queue");
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            other => panic!("the full listener at {addr} answered a second connection: {other:?}"),
        }
        Blackhole { addr, _listener: listener, _filler: filler }
    }
}

impl Default for Blackhole {
    fn default() -> Self {
        Blackhole::new()
    }
}

/// A loopback port held with `SO_REUSEPORT` but not listening: processes started with
/// `reuse` can bind it, and no one else can take it meanwhile. Nothing is accepted on it
/// until they do.
pub struct SharedPort {
    /// The port.
    pub port: u16,
    _socket: Socket,
}

impl SharedPort {
    /// Reserves a port.
    pub fn new() -> SharedPort {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        socket.set_reuse_port(true).expect("SO_REUSEPORT");
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind");
        let port = socket.local_addr().expect("local addr").as_socket().expect("inet address").port();
        SharedPort { port, _socket: socket }
    }
}

impl Default for SharedPort {
    fn default() -> Self {
        SharedPort::new()
    }
}
