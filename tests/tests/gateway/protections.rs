//! What a gateway visitor may reach: it carries no path and no credentials, so a host with
//! protected path rules (basicAuth or private) is refused to it whatever it sends after its
//! line; and it takes the same budgets as any public visitor (per source address, per tunnel)
//! and is counted in the metrics like one.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use socket2::{Domain, Protocol, Socket, Type};
use tunnel_tests::gateway::{ask, connect, rest_until_close, seal, status, CLIENT_WAIT};
use tunnel_tests::{
    addr_in, agent, curl, hash_password, metric_in, origin, poll_until, read_until_close, tunnel_id, Server,
};

use super::SECRET;

/// An HTTP/1.1 origin answering `ADMIN PAGE` under `/admin`, `INTERNAL PAGE` under
/// `/internal` and `PUBLIC PAGE` otherwise; counts the requests for the two protected pages.
fn pages() -> (SocketAddr, Arc<AtomicUsize>) {
    let (l, addr) = tunnel_tests::listener();
    let protected = Arc::new(AtomicUsize::new(0));
    let seen = protected.clone();
    thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            let seen = seen.clone();
            thread::spawn(move || serve_pages(conn, &seen));
        }
    });
    (addr, protected)
}

fn serve_pages(mut conn: TcpStream, protected: &AtomicUsize) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
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
        let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
        let body = if under("/admin") {
            "ADMIN PAGE\n"
        } else if under("/internal") {
            "INTERNAL PAGE\n"
        } else {
            "PUBLIC PAGE\n"
        };
        if body != "PUBLIC PAGE\n" {
            protected.fetch_add(1, Ordering::SeqCst);
        }
        let resp =
            format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        if conn.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// Sends `line`, `\n` and `after` in one write, shuts the write half, and returns everything
/// the gateway answers until it closes.
fn whole_answer(gateway: SocketAddr, line: &str, after: &[u8]) -> String {
    let mut tcp = connect(gateway);
    let mut out = format!("{line}\n").into_bytes();
    out.extend_from_slice(after);
    // A gateway that refuses may close before it read everything: only the answer matters.
    let _ = tcp.write_all(&out);
    let _ = tcp.shutdown(Shutdown::Write);
    String::from_utf8_lossy(&rest_until_close(&mut tcp)).into_owned()
}

#[test]
fn a_sealed_line_to_a_host_with_protected_paths_reaches_neither() {
    let id = tunnel_id();
    let (pages, protected) = pages();
    let alice = hash_password("correct horse");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(
        &path,
        format!(
            "addr = \"127.0.0.1:0\"\n\
             [[ingress.rules]]\nhostname = \"pub.e.test\"\nendpoint = \"{id}\"\n\
             [[ingress.rules]]\nhostname = \"pub.e.test\"\npath = \"/admin\"\nendpoint = \"{id}\"\nbasicAuth = [\"alice:{alice}\"]\n\
             [[ingress.rules]]\nhostname = \"pub.e.test\"\npath = \"/internal\"\nendpoint = \"${id}\"\n\
             [[ingress.rules]]\nhostname = \"plain.e.test\"\nendpoint = \"{id}\"\n\
             [[gateway]]\naddr = \"127.0.0.1:0\"\nsecret = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(&["-C", path.to_str().unwrap()], 0);
    let gateway = addr_in(&server.proc.wait_for("gateway listening"));
    let _agent = agent(&server, &[&format!("rtcp://:0/{pages}")], &id, "", 1);

    // The control: a host without protected paths is served through the gateway.
    let answer =
        whole_answer(gateway, &seal(SECRET, "plain.e.test", &[]), b"GET / HTTP/1.1\r\nHost: plain.e.test\r\n\r\n");
    assert!(answer.starts_with("200\nHTTP/1.1 200"), "a line for plain.e.test: {answer:?}");
    assert!(answer.contains("PUBLIC PAGE"), "a line for plain.e.test: {answer:?}");

    for target in ["pub.e.test", "pub.e.test:80"] {
        let line = seal(SECRET, target, &[]);
        for (request, page) in [
            ("GET /admin HTTP/1.1\r\nHost: pub.e.test\r\n\r\n", "ADMIN PAGE"),
            ("GET /internal HTTP/1.1\r\nHost: pub.e.test\r\n\r\n", "INTERNAL PAGE"),
        ] {
            let answer = whole_answer(gateway, &line, request.as_bytes());
            assert!(
                !answer.contains(page),
                "a line for {target} reached {page:?} without a path rule's check: {answer:?}"
            );
            assert_eq!(answer, "502\n", "a line for {target}, then {request:?}: exactly a 502 status line and a close");
        }
        // And with nothing after the line.
        assert_eq!(whole_answer(gateway, &line, b""), "502\n", "a bare line for {target}");
    }
    assert_eq!(protected.load(Ordering::SeqCst), 0, "the protected pages were never asked of the origin");

    // The host is named at start as one whose path rules refuse such visitors.
    let warning = server.proc.wait_for("protected path rules");
    assert!(warning.contains("pub.e.test"), "the warning names the host: {warning}");
    let warnings: Vec<String> =
        server.proc.output().lines().filter(|l| l.contains("protected path rules")).map(str::to_owned).collect();
    assert!(warnings.iter().all(|l| !l.contains("plain.e.test")), "plain.e.test has no protected path: {warnings:?}");
}

/// Connects to `gateway` from the loopback address `source` (127.0.0.x), with the client's
/// timeouts.
fn connect_from(source: Ipv4Addr, gateway: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap_or_else(|e| panic!("bind {source}: {e}"));
    socket.connect(&gateway.into()).unwrap_or_else(|e| panic!("connect to gateway {gateway} from {source}: {e}"));
    let tcp: TcpStream = socket.into();
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(CLIENT_WAIT)).unwrap();
    tcp.set_write_timeout(Some(CLIENT_WAIT)).unwrap();
    tcp
}

/// A visitor from `source` held open to an echo target: it got `200\n`, and a ping came back.
fn held(source: Ipv4Addr, gateway: SocketAddr, line: &str, what: &str) -> TcpStream {
    let mut tcp = connect_from(source, gateway);
    tcp.write_all(format!("{line}\n").as_bytes()).unwrap();
    assert_eq!(status(&mut tcp), "200\n", "{what}");
    tcp.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    tcp.read_exact(&mut pong).unwrap_or_else(|e| panic!("{what}: no echo: {e}"));
    assert_eq!(&pong, b"ping", "{what}");
    tcp
}

/// What a visitor from `source` gets for `line` (its write half shut after it), until the
/// gateway closes: a served one's echo target closes in turn. A refusal may be a bare close,
/// even before the line is read.
fn answer_from(source: Ipv4Addr, gateway: SocketAddr, line: &str) -> String {
    let mut tcp = connect_from(source, gateway);
    let _ = tcp.write_all(format!("{line}\n").as_bytes());
    let _ = tcp.shutdown(Shutdown::Write);
    let (got, closed) = read_until_close(&mut tcp, CLIENT_WAIT);
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(closed, "the gateway did not close within {CLIENT_WAIT:?}; it sent {got:?}");
    got
}

/// Asserts that a visitor from `source` is refused: anything but a 200, and nothing but a
/// status line before the close.
fn assert_refused(source: Ipv4Addr, gateway: SocketAddr, line: &str, what: &str) {
    let got = answer_from(source, gateway, line);
    assert!(!got.starts_with("200"), "{what}: the visitor was served ({got:?})");
    assert!(
        got.is_empty() || (got.len() == 4 && got.ends_with('\n')),
        "{what}: a refusal is a status line or a bare close, nothing else: {got:?}"
    );
}

/// Ends a held visitor: its write half closes, and the echo target's close comes back.
fn end(mut tcp: TcpStream) {
    tcp.shutdown(Shutdown::Write).unwrap();
    assert_eq!(rest_until_close(&mut tcp), b"", "nothing after the echo");
}

/// Every line of `/metrics` at `admin`.
fn metrics(admin: SocketAddr) -> String {
    let (code, text) = curl(&[&format!("http://{admin}/metrics")]);
    assert_eq!(code, 0, "curl /metrics: {text}");
    text
}

#[test]
fn gateway_visitors_take_the_visitor_and_tunnel_budgets_and_are_counted() {
    let (a, b) = (tunnel_id(), tunnel_id());
    let echo = origin::echo();
    let relay =
        format!("relay://127.0.0.1:0?tunnel=a.e.test:{a},b.e.test:{b}&maxVisitorsPerSource=2&maxStreamsPerTunnel=3");
    let gateway_url = format!("gateway://127.0.0.1:0?secret={SECRET}");
    let server = Server::start(&["-L", &relay, "--gateway", &gateway_url, "--admin", "127.0.0.1:0"], 0);
    let gateway = addr_in(&server.proc.wait_for("gateway listening"));
    let admin = addr_in(&server.proc.wait_for("admin listening"));
    let _agent_a = agent(&server, &[&format!("rtcp://:0/{echo}")], &a, "", 1);
    let _agent_b = agent(&server, &[&format!("rtcp://:0/{echo}")], &b, "", 2);
    let (to_a, to_b) = (seal(SECRET, "a.e.test", &[]), seal(SECRET, "b.e.test", &[]));
    let source = |n: u8| Ipv4Addr::new(127, 0, 0, n);

    // maxVisitorsPerSource = 2: a third visitor from the same address is refused, even to
    // another tunnel; another address is not.
    let h1 = held(source(1), gateway, &to_a, "the first visitor from 127.0.0.1");
    let h2 = held(source(1), gateway, &to_a, "the second visitor from 127.0.0.1");
    assert_refused(source(1), gateway, &to_b, "a third visitor from 127.0.0.1 (maxVisitorsPerSource = 2)");
    let g1 = held(source(2), gateway, &to_b, "a visitor from 127.0.0.2");

    // maxStreamsPerTunnel = 3: a fourth visitor of tunnel a is refused, from an address that
    // holds nothing; the other tunnel is not.
    let h3 = held(source(2), gateway, &to_a, "the third visitor of tunnel a");
    assert_refused(source(3), gateway, &to_a, "a fourth visitor of tunnel a (maxStreamsPerTunnel = 3)");
    let g2 = held(source(3), gateway, &to_b, "a visitor of tunnel b from 127.0.0.3");

    // Once they end, their places come back (when the server has seen them end).
    for tcp in [h1, h2, h3, g1, g2] {
        end(tcp);
    }
    for (n, what) in [(1, "a visitor from 127.0.0.1 after the held ones ended"), (3, "a visitor of tunnel a again")] {
        poll_until(what, || {
            let got = answer_from(source(n), gateway, &to_a);
            got.starts_with("200\n")
        });
    }

    // One visitor's bytes, both ways, are counted for its tunnel once it is done, and the
    // visitor is counted as served by the gateway.
    const LEN: usize = 256 << 10;
    let before = metrics(admin);
    let bytes = |direction: &str| format!("tunnel_bytes_total{{tunnel=\"{a}\",direction=\"{direction}\"}}");
    let (in_before, out_before) = (metric_in(&before, &bytes("in")), metric_in(&before, &bytes("out")));
    let (s, mut tcp) = ask(gateway, &to_a, &[]);
    assert_eq!(s, "200\n", "the counted visitor");
    let mut writer = tcp.try_clone().unwrap();
    let sender = thread::spawn(move || {
        writer.write_all(&vec![0x5a; LEN]).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let echoed = rest_until_close(&mut tcp);
    sender.join().unwrap();
    assert_eq!(echoed.len(), LEN, "the echo of the counted visitor");
    let mut shown = String::new();
    poll_until("the gateway visitor's bytes in tunnel_bytes_total and the visitor in tunnel_visitors_total", || {
        let last = metrics(admin);
        // What the test looks at, printed when it changes: the output of a failure shows it.
        let relevant: String = last
            .lines()
            .filter(|l| l.starts_with("tunnel_visitors_total{") || l.starts_with("tunnel_bytes_total{"))
            .map(|l| format!("{l}\n"))
            .collect();
        if relevant != shown {
            eprintln!("metrics now:\n{relevant}");
            shown = relevant;
        }
        let served = last.lines().any(|l| {
            l.starts_with("tunnel_visitors_total{")
                && l.contains("gateway")
                && l.contains("outcome=\"served\"")
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v >= 1.0)
        });
        served
            && metric_in(&last, &bytes("in")) >= in_before + LEN as f64
            && metric_in(&last, &bytes("out")) >= out_before + LEN as f64
    });
}
