//! Plain-HTTP visitors served request by request: each request routed by its own target,
//! origin connections reused over tunnel streams, `X-Forwarded-*`, the access log; and
//! upgraded (WebSocket) connections: byte pumps, counted, and waited for by a drain.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;

use tunnel_tests::{agent, curl, metric, origin, read_until_close, tunnel_id, Server, WAIT};

/// Sends `requests` on one connection and reads the answers until the server closes it.
fn raw_exchange(ep: SocketAddr, requests: &str) -> String {
    let mut c = TcpStream::connect(ep).expect("connect");
    c.write_all(requests.as_bytes()).unwrap();
    let (out, closed) = read_until_close(&mut c, WAIT);
    assert!(closed, "the server closes after the last answer: {}", String::from_utf8_lossy(&out));
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn each_request_on_a_connection_is_routed_by_its_own_host() {
    let (a, b, private) = (tunnel_id(), tunnel_id(), tunnel_id());
    let (origin_a, seen_a) = origin::http_counting("A");
    let (origin_b, seen_b) = origin::http_counting("B");
    let (origin_p, seen_p) = origin::http_counting("P");
    let rules = format!("a.example:{a},b.example:{b},p.example:${private}");
    let server = Server::start(&["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel={rules}")], 1);
    let _agent_a = agent(&server, &[&format!("rtcp://:0/{origin_a}")], &a, "", 1);
    let _agent_b = agent(&server, &[&format!("rtcp://:0/{origin_b}")], &b, "", 2);
    let _agent_p = agent(&server, &[&format!("rtcp://:0/{origin_p}")], &private, "", 3);
    let ep = server.entrypoints[0];
    let out = raw_exchange(
        ep,
        "GET /one HTTP/1.1\r\nHost: a.example\r\n\r\n\
         GET /two HTTP/1.1\r\nHost: B.Example:8080\r\n\r\n\
         GET /three HTTP/1.1\r\nHost: p.example\r\n\r\n",
    );
    assert!(out.contains("origin=A host=a.example path=/one"), "{out}");
    assert!(out.contains("origin=B host=b.example path=/two"), "the origin gets the canonical host: {out}");
    let third = out.rsplit("HTTP/1.1 ").next().unwrap();
    assert!(third.starts_with("404"), "a private rule is not reachable from a public entrypoint: {out}");
    assert!(third.contains("p.example"), "the 404 names the host: {third}");
    assert_eq!(seen_a.requests.load(Ordering::SeqCst), 1);
    assert_eq!(seen_b.requests.load(Ordering::SeqCst), 1);
    assert_eq!(seen_p.connections.load(Ordering::SeqCst), 0, "the private origin is never reached");
}

#[test]
fn ambiguous_targets_get_400() {
    let id = tunnel_id();
    let (origin, seen) = origin::http_counting("A");
    let rules = format!("www.public:{id},internal.corp:{id}");
    let server = Server::start(&["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel={rules}")], 1);
    let _agent = agent(&server, &[&format!("rtcp://:0/{origin}")], &id, "", 1);
    let ep = server.entrypoints[0];
    for request in [
        "GET HTTP://internal.corp/ HTTP/1.1\r\nHost: www.public\r\n\r\n",
        "GET http://internal.corp/ HTTP/1.1\r\nHost: www.public\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: internal.corp@www.public\r\n\r\n",
        "GET http://internal.corp@www.public/ HTTP/1.1\r\nHost: www.public\r\n\r\n",
    ] {
        let out = raw_exchange(ep, request);
        assert!(out.starts_with("HTTP/1.1 400"), "{request:?}: {out}");
    }
    assert_eq!(seen.requests.load(Ordering::SeqCst), 0, "no ambiguous request reaches the origin");
    // An absolute-form target, any scheme case, with a Host that agrees, is served in origin form.
    let out = raw_exchange(ep, "GET HTTP://WWW.Public/x HTTP/1.1\r\nHost: www.public:80\r\nConnection: close\r\n\r\n");
    assert!(out.contains("origin=A host=www.public path=/x"), "{out}");
}

#[test]
fn closing_visitors_reuse_origin_connections() {
    let id = tunnel_id();
    let (origin, seen) = origin::http_counting("A");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    let toml = format!(
        "addr = \"127.0.0.1:0\"\n[[entrypoints]]\naddr = \"127.0.0.1:0\"\n[[ingress.rules]]\nhostname = \"a.example\"\nendpoint = \"{id}\"\n"
    );
    std::fs::write(&path, toml).unwrap();
    let server = Server::start(&["-C", path.to_str().unwrap()], 1);
    let _agent = agent(&server, &[&format!("rtcp://:0/{origin}")], &id, "", 1);
    let ep = server.entrypoints[0];
    for n in 0..200 {
        let out = raw_exchange(ep, &format!("GET /{n} HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n"));
        assert!(out.contains(&format!("path=/{n} ")), "{out}");
    }
    assert_eq!(seen.requests.load(Ordering::SeqCst), 200);
    let connections = seen.connections.load(Ordering::SeqCst);
    assert!(connections <= 20, "200 closing visitors opened {connections} origin connections");
}

#[test]
fn forwarded_for_is_appended_only_from_trusted_proxies() {
    let id = tunnel_id();
    let (origin, _) = origin::http_counting("A");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(
        &path,
        format!(
            r#"addr = "127.0.0.1:0"

[[entrypoints]]
addr = "127.0.0.1:0"
trustedProxies = ["127.0.0.0/8"]

[[entrypoints]]
addr = "127.0.0.1:0"
accessLog = false

[[ingress.rules]]
hostname = "a.example"
endpoint = "{id}"
"#
        ),
    )
    .unwrap();
    let server = Server::start(&["-C", path.to_str().unwrap()], 2);
    let _agent = agent(&server, &[&format!("rtcp://:0/{origin}")], &id, "", 1);
    let get = |ep: SocketAddr, extra: &[&str]| {
        let url = format!("http://{ep}/p");
        let mut args = vec!["-H", "Host: a.example"];
        args.extend_from_slice(extra);
        args.push(&url);
        let (code, body) = curl(&args);
        assert_eq!(code, 0, "{body}");
        body
    };
    let (trusting, plain) = (server.entrypoints[0], server.entrypoints[1]);
    assert!(get(trusting, &[]).contains("xff=127.0.0.1\n"));
    assert!(get(trusting, &["-H", "X-Forwarded-For: 2.2.2.2"]).contains("xff=2.2.2.2, 127.0.0.1\n"));
    assert!(get(plain, &["-H", "X-Forwarded-For: 2.2.2.2"]).contains("xff=127.0.0.1\n"));
    // One access line per request, on the entrypoint that keeps an access log only.
    server.proc.wait_for_nth("method=GET", 2);
    let lines: Vec<String> =
        server.proc.output().lines().filter(|l| l.contains("method=GET")).map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("status=200") && lines[0].contains("host=a.example") && lines[0].contains("path=/p"));
    let mut c = TcpStream::connect(trusting).unwrap();
    let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: nowhere.example\r\n\r\n");
    let _ = c.read_to_end(&mut Vec::new());
    server.proc.wait_for("status=404");
}

/// An origin that switches every connection to a byte echo after a 101, and shuts its write
/// half when the client shuts its own.
fn upgrading_origin() -> SocketAddr {
    let (l, addr) = tunnel_tests::listener();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                if origin::read_head(&mut conn).is_none() {
                    return;
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                );
                origin::echo_until_closed(conn);
            });
        }
    });
    addr
}

const WS_CLIENT: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port))
s.sendall(b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(1)
    if not chunk:
        sys.exit("closed during the handshake: %r" % head)
    head += chunk
if not head.startswith(b"HTTP/1.1 101"):
    sys.exit("no 101: %r" % head)
frame = bytes([0x81, 0x85, 1, 2, 3, 4]) + bytes(b ^ [1, 2, 3, 4][i % 4] for i, b in enumerate(b"hello"))
s.sendall(frame)
s.shutdown(socket.SHUT_WR)
echoed = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    echoed += chunk
if echoed != frame:
    sys.exit("echo %r != %r" % (echoed, frame))
print("echoed")
"#;

#[test]
fn a_websocket_upgrade_becomes_a_byte_pump_with_half_close() {
    let id = tunnel_id();
    let origin = upgrading_origin();
    let server =
        Server::start(&["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=ws.example:{id}")], 1);
    let _agent = agent(&server, &[&format!("rtcp://:0/{origin}")], &id, "", 1);
    let ep = server.entrypoints[0];
    let out = std::process::Command::new("python3")
        .args(["-c", WS_CLIENT, &ep.ip().to_string(), &ep.port().to_string()])
        .output()
        .expect("run python3");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("echoed"), "{stdout}{stderr}");
}

#[test]
fn an_access_clients_sniffing_listener_routes_each_request_by_its_own_host() {
    let (mine, other) = (tunnel_id(), tunnel_id());
    let (origin_mine, seen_mine) = origin::http_counting("M");
    let (origin_other, seen_other) = origin::http_counting("O");
    let rules = format!("mine.local:${mine},also.local:${mine},other.local:${other}");
    let server = Server::start(&["-L", &format!("relay://127.0.0.1:0?tunnel={rules}")], 0);
    let _agent_m = agent(&server, &[&format!("rtcp://:0/{origin_mine}")], &mine, "", 1);
    let _agent_o = agent(&server, &[&format!("rtcp://:0/{origin_other}")], &other, "", 2);
    let (_access, addrs) = tunnel_tests::access(&server, &["tcp://127.0.0.1:0?sniffing=true"], &mine, "");
    let out = raw_exchange(
        addrs[0],
        "GET /one HTTP/1.1\r\nHost: mine.local\r\n\r\n\
         GET /two HTTP/1.1\r\nHost: also.local\r\n\r\n\
         GET /three HTTP/1.1\r\nHost: other.local\r\nConnection: close\r\n\r\n",
    );
    assert!(out.contains("origin=M host=mine.local path=/one"), "{out}");
    assert!(out.contains("origin=M host=also.local path=/two"), "each request names its own host: {out}");
    let third = out.rsplit("HTTP/1.1 ").next().unwrap();
    assert!(third.starts_with("404"), "another tunnel's host is refused by the server: {out}");
    assert_eq!(seen_mine.requests.load(Ordering::SeqCst), 2);
    assert_eq!(seen_other.connections.load(Ordering::SeqCst), 0, "the other tunnel's origin is never reached");
    for request in [
        "GET http://other.local/ HTTP/1.1\r\nHost: mine.local\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: other.local@mine.local\r\n\r\n",
    ] {
        let out = raw_exchange(addrs[0], request);
        assert!(out.starts_with("HTTP/1.1 400"), "{request:?}: {out}");
    }
    assert_eq!(seen_other.connections.load(Ordering::SeqCst), 0);
}

/// A masked binary frame (FIN) carrying `payload`, as a WebSocket client sends it.
fn ws_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x82];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Opens a WebSocket upgrade to `ws.example` through `ep`; returns the connection after its 101.
fn ws_upgrade(ep: SocketAddr) -> TcpStream {
    let mut ws = TcpStream::connect(ep).expect("connect");
    ws.set_read_timeout(Some(WAIT)).unwrap();
    ws.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match ws.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("closed during the handshake ({other:?}): {:?}", String::from_utf8_lossy(&head)),
        }
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "no 101: {:?}", String::from_utf8_lossy(&head));
    ws
}

/// Sends `frame` on an upgraded connection and reads back as many bytes: the echo.
fn ws_exchange(ws: &mut TcpStream, frame: &[u8]) -> std::io::Result<Vec<u8>> {
    ws.write_all(frame)?;
    let mut echo = vec![0u8; frame.len()];
    ws.read_exact(&mut echo)?;
    Ok(echo)
}

#[test]
fn a_sigterm_waits_for_an_open_websocket_within_the_grace_period() {
    let id = tunnel_id();
    let origin = upgrading_origin();
    let url = format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=ws.example:{id}&gracePeriod=20s");
    let mut server = Server::start(&["-L", &url, "--admin", "127.0.0.1:0"], 1);
    let admin = tunnel_tests::addr_in(&server.proc.wait_for("admin listening"));
    let _agent = agent(&server, &[&format!("rtcp://:0/{origin}")], &id, "", 1);
    let ep = server.entrypoints[0];

    // A whole conversation: what crosses the upgraded connection counts for the tunnel, both
    // ways, once it ends.
    let bytes = |direction: &str| format!("tunnel_bytes_total{{tunnel=\"{id}\",direction=\"{direction}\"}}");
    let (in_before, out_before) = (metric(admin, &bytes("in")), metric(admin, &bytes("out")));
    let frame = ws_frame(&vec![0x5a; 64 << 10]);
    let mut ws = ws_upgrade(ep);
    let mut writer = ws.try_clone().unwrap();
    let sent = frame.clone();
    let sender = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let (echoed, closed) = read_until_close(&mut ws, WAIT);
    sender.join().unwrap();
    assert!(closed && echoed == frame, "the echo of {} bytes, then a close: got {} bytes", frame.len(), echoed.len());
    let len = frame.len() as f64;
    tunnel_tests::poll_until("the upgraded bytes in tunnel_bytes_total, both ways", || {
        metric(admin, &bytes("in")) >= in_before + len && metric(admin, &bytes("out")) >= out_before + len
    });

    // A conversation open across a SIGTERM: the drain waits for it.
    let mut ws = ws_upgrade(ep);
    let hello = ws_frame(b"hello");
    assert_eq!(ws_exchange(&mut ws, &hello).expect("the first message's echo"), hello);
    server.proc.signal("TERM");
    server.proc.wait_for("shutting down: listeners closed, draining sessions");
    let again = ws_frame(b"still there?");
    match ws_exchange(&mut ws, &again) {
        Ok(echo) => assert_eq!(echo, again, "the second message's echo"),
        Err(err) => panic!(
            "the open WebSocket was cut by the drain ({err}); the server is running: {}; its output:\n{}",
            server.proc.is_running(),
            server.proc.output()
        ),
    }
    assert!(server.proc.is_running(), "the server waits for the open conversation:\n{}", server.proc.output());
    ws.shutdown(std::net::Shutdown::Write).unwrap();
    let (rest, closed) = read_until_close(&mut ws, WAIT);
    assert!(closed && rest.is_empty(), "the origin's close comes back, nothing else: {rest:?}");
    assert_eq!(server.proc.wait_exit(), Some(0), "a clean exit once the conversation ended:\n{}", server.proc.output());
    let out = server.proc.output();
    assert!(!out.contains("streams still open after the grace period are cut"), "nothing was cut:\n{out}");
}

/// An origin that keeps each request's head as received, reads a chunked body (the framing a
/// strict origin takes from a head ending in `chunked`), and answers with the body it read.
fn recording_origin() -> (SocketAddr, std::sync::mpsc::Receiver<String>) {
    let (l, addr) = tunnel_tests::listener();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let Some(buf) = origin::read_head(&mut conn) else { return };
                let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                let mut byte = [0u8; 1];
                let mut body = Vec::new();
                if head.contains("transfer-encoding") {
                    while !body.ends_with(b"0\r\n\r\n") {
                        if conn.read(&mut byte).unwrap_or(0) == 0 {
                            break;
                        }
                        body.push(byte[0]);
                    }
                }
                let _ = tx.send(head);
                let answer = unchunk(&String::from_utf8_lossy(&body));
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            });
        }
    });
    (addr, rx)
}

/// A chunked body, decoded.
fn unchunk(mut raw: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = raw.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        raw = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    out
}

#[test]
fn a_transfer_encoding_list_goes_to_the_origin_as_the_server_decoded_it() {
    let id = tunnel_id();
    let (origin, heads) = recording_origin();
    let server =
        Server::start(&["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=te.example:{id}")], 1);
    let _agent = agent(&server, &[&format!("rtcp://:0/{origin}")], &id, "", 1);
    let ep = server.entrypoints[0];
    let out = raw_exchange(
        ep,
        "POST /upload HTTP/1.1\r\nHost: te.example\r\nTransfer-Encoding: identity, chunked\r\nConnection: close\r\n\r\n\
         5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    let head = heads.recv_timeout(WAIT).expect("the origin got the request");
    assert!(!head.contains("identity"), "the origin got the list as written: {head}");
    let framings = head.lines().filter(|l| l.starts_with("transfer-encoding") || l.starts_with("content-length"));
    assert_eq!(framings.count(), 1, "one framing header: {head}");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("hello world"), "the body the server decoded, framed anew: {out}");
}

/// An origin that reads each request's whole body (by `Content-Length`, or chunked) before it
/// answers `got N`.
fn reading_origin() -> SocketAddr {
    let (l, addr) = tunnel_tests::listener();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let Some(buf) = origin::read_head(&mut conn) else { return };
                let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                let mut byte = [0u8; 1];
                let length =
                    head.lines().find_map(|l| l.strip_prefix("content-length:")).map(|v| v.trim().parse().unwrap_or(0));
                let mut body = Vec::new();
                match length {
                    Some(n) => {
                        body.resize(n, 0);
                        if conn.read_exact(&mut body).is_err() {
                            return;
                        }
                    }
                    None => {
                        while !body.ends_with(b"0\r\n\r\n") {
                            if conn.read(&mut byte).unwrap_or(0) == 0 {
                                return;
                            }
                            body.push(byte[0]);
                        }
                    }
                }
                let answer = format!("got {}", body.len());
                let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}", answer.len());
            });
        }
    });
    addr
}

#[test]
fn a_request_body_that_trickles_is_cut_with_408() {
    let id = tunnel_id();
    let origin = reading_origin();
    let url = format!(
        "relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=up.example:{id}&requestBodyGrace=1s&requestBodyMinRate=200"
    );
    let server = Server::start(&["-L", &url], 1);
    let _agent = agent(&server, &[&format!("rtcp://:0/{origin}")], &id, "", 1);
    let ep = server.entrypoints[0];
    // An upload at a normal pace goes through whole.
    let out = raw_exchange(
        ep,
        &format!(
            "POST /ok HTTP/1.1\r\nHost: up.example\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n{}",
            "x".repeat(5000)
        ),
    );
    assert!(out.starts_with("HTTP/1.1 200") && out.ends_with("got 5000"), "{out}");
    for framing in ["Content-Length: 1000000", "Transfer-Encoding: chunked"] {
        let mut c = TcpStream::connect(ep).unwrap();
        c.write_all(format!("POST /slow HTTP/1.1\r\nHost: up.example\r\n{framing}\r\n\r\n").as_bytes()).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_millis(250))).unwrap();
        let chunked = framing.contains("chunked");
        let mut answer = Vec::new();
        // One byte every 250 ms (4 bytes a second, far below the floor), 400 bytes at most:
        // the answer must come while the visitor is still trickling.
        for _ in 0..400 {
            let sent = if chunked { c.write_all(b"1\r\nx\r\n") } else { c.write_all(b"x") };
            let mut buf = [0u8; 1024];
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
            if sent.is_err() {
                break;
            }
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{framing}: a trickling body must be cut with 408: {answer:?}");
    }
    server.proc.wait_for("the request body came slower than 200 bytes a second");
}
