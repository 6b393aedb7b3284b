//! Small origins for tests, each on 127.0.0.1:0 in its own threads: an HTTP server that says
//! who it is, and a TCP echo server. They run until the test process exits.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

/// Starts an HTTP/1.1 origin answering every request with `origin=NAME host=HOST path=PATH`.
/// Each connection serves requests until the client closes (keep-alive).
pub fn http(name: &str) -> SocketAddr {
    let (l, addr) = crate::listener();
    http_on(l, name);
    addr
}

/// As [`http`], on a listener the test bound (for an origin that comes back on a known port).
pub fn http_on(l: std::net::TcpListener, name: &str) {
    let name = name.to_owned();
    thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            let name = name.clone();
            thread::spawn(move || serve_http(conn, &name, None));
        }
    });
}

/// As [`http_counting`], listening on `bind` (`[::1]:0`, say).
pub fn http_counting_on(bind: &str, name: &str) -> (SocketAddr, Arc<Counts>) {
    let l = std::net::TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
    let addr = l.local_addr().unwrap();
    let name = name.to_owned();
    let counts = Arc::new(Counts::default());
    let seen = counts.clone();
    thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            seen.connections.fetch_add(1, Ordering::SeqCst);
            let (name, seen) = (name.clone(), seen.clone());
            thread::spawn(move || serve_http(conn, &name, Some(&seen)));
        }
    });
    (addr, counts)
}

/// What a counting origin has seen.
#[derive(Debug, Default)]
pub struct Counts {
    /// Connections accepted.
    pub connections: AtomicUsize,
    /// Requests answered.
    pub requests: AtomicUsize,
}

/// As [`http`], counting connections and requests, and answering
/// `origin=NAME host=HOST path=PATH xff=X-FORWARDED-FOR` (the header as received) and a
/// second line `auth=present|none` (whether an `Authorization` header came).
pub fn http_counting(name: &str) -> (SocketAddr, Arc<Counts>) {
    http_counting_on("127.0.0.1:0", name)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

fn serve_http(mut conn: TcpStream, name: &str, counts: Option<&Counts>) {
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = find(&buf, b"\r\n\r\n") else {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    continue;
                }
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let host = head
            .lines()
            .find_map(|l| {
                l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("host")).map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_default();
        let body = match counts {
            None => format!("origin={name} host={host} path={path}\n"),
            Some(counts) => {
                counts.requests.fetch_add(1, Ordering::SeqCst);
                let xff = header(&head, "x-forwarded-for").unwrap_or("");
                let auth = if header(&head, "authorization").is_some() { "present" } else { "none" };
                let proto = header(&head, "x-forwarded-proto").unwrap_or("");
                format!("origin={name} host={host} path={path} xff={xff}\nauth={auth} proto={proto}\n")
            }
        };
        let resp =
            format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        if conn.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Writes back every byte read from `conn` until the peer shuts its write half, then shuts
/// its own (half-close travels back).
pub fn echo_until_closed(mut conn: TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = conn.shutdown(std::net::Shutdown::Write);
}

/// Starts a TCP echo server: every byte read is written back; the write half is shut down
/// when the client shuts down its own (half-close travels back).
pub fn echo() -> SocketAddr {
    let (l, addr) = crate::listener();
    thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            thread::spawn(move || echo_until_closed(conn));
        }
    });
    addr
}

/// An address where nothing listens (a port bound and released).
pub fn closed_port() -> SocketAddr {
    let (l, addr) = crate::listener();
    drop(l);
    addr
}

/// Starts a UDP echo server: every datagram goes back to its sender unchanged.
pub fn udp_echo() -> SocketAddr {
    udp_server(|data, _| data.to_vec())
}

/// Starts a UDP server that answers every datagram with `port=N`, the sender's port: a new
/// flow through the tunnel shows up as a new port.
pub fn udp_source_port() -> SocketAddr {
    udp_server(|_, from| format!("port={}", from.port()).into_bytes())
}

fn udp_server(answer: impl Fn(&[u8], SocketAddr) -> Vec<u8> + Send + 'static) -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let addr = socket.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65535];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&answer(&buf[..n], from), from);
        }
    });
    addr
}

/// Reads a request head byte by byte, up to and with its blank line, so nothing after it is
/// consumed; `None` when the connection ends first.
pub fn read_head(conn: &mut impl Read) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).unwrap_or(0) == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(head)
}
