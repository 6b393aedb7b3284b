//! Bad visitors on a public entrypoint: slowloris, oversized heads, garbage, HTTP without a
//! usable `Host`. Each gets an HTTP error when it spoke HTTP, or a bare close otherwise.

use std::io::Write;
use std::net::TcpStream;

use super::{assert_closed, random_bytes, World, FAST};

/// A server whose sniffer reads at most 1024 bytes.
fn world() -> World {
    World::start("", &format!("{FAST}&sniffMaxBytes=1024"), "")
}

fn connect_and_send(world: &World, bytes: &[u8]) -> TcpStream {
    let mut conn = TcpStream::connect(world.ep()).expect("connect to entrypoint");
    conn.write_all(bytes).expect("write");
    conn
}

#[test]
fn slowloris_visitor_gets_408_and_a_close() {
    let world = world();
    let mut slow: Vec<TcpStream> = (0..5).map(|_| connect_and_send(&world, b"GET / HTTP/1.1\r\nHost: a.exa")).collect();
    let prober = world.probe();
    for (i, conn) in slow.iter_mut().enumerate() {
        let answer = String::from_utf8_lossy(&assert_closed(conn, &format!("slowloris {i}"))).into_owned();
        assert!(answer.starts_with("HTTP/1.1 408"), "slowloris {i}: {answer:?}");
    }
    prober.finish();
    world.assert_healthy();
}

#[test]
fn head_larger_than_the_sniff_cap_gets_431() {
    let world = world();
    // A valid Host comes first, but the head never ends within the cap.
    let mut head = b"GET / HTTP/1.1\r\nHost: ok.example\r\nX-Padding: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 3000));
    let mut conn = connect_and_send(&world, &head);
    let prober = world.probe();
    let answer = String::from_utf8_lossy(&assert_closed(&mut conn, "oversized head")).into_owned();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    prober.finish();
    world.assert_healthy();
}

#[test]
fn http_without_a_usable_host_gets_400() {
    let world = world();
    let cases: [(&str, &[u8]); 3] = [
        ("no Host header", b"GET / HTTP/1.1\r\n\r\n"),
        ("two Host headers", b"GET / HTTP/1.1\r\nHost: ok.example\r\nHost: b.example\r\n\r\n"),
        ("invalid hostname", b"GET / HTTP/1.1\r\nHost: ok example\r\n\r\n"),
    ];
    let mut conns: Vec<(&str, TcpStream)> =
        cases.iter().map(|(what, bytes)| (*what, connect_and_send(&world, bytes))).collect();
    let prober = world.probe();
    for (what, conn) in &mut conns {
        let answer = String::from_utf8_lossy(&assert_closed(conn, what)).into_owned();
        assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer:?}");
    }
    prober.finish();
    world.assert_healthy();
}

#[test]
fn garbage_visitor_is_closed_without_an_answer() {
    let world = world();
    let mut conns = Vec::new();
    // First bytes that are neither an HTTP method nor a TLS handshake, and a fake TLS record.
    for (seed, first) in [(1u64, 0x00u8), (2, 0x80), (3, 0xff), (4, 0x16), (5, 0x16)] {
        let mut bytes = random_bytes(seed, 4096);
        bytes[0] = first;
        let mut conn = TcpStream::connect(world.ep()).expect("connect to entrypoint");
        // The server may close (or reset) before it has read everything.
        let _ = conn.write_all(&bytes);
        conns.push((format!("garbage starting with {first:#04x} (seed {seed})"), conn));
    }
    let prober = world.probe();
    for (what, conn) in &mut conns {
        let answer = assert_closed(conn, what);
        assert!(
            answer.is_empty(),
            "{what}: a non-HTTP visitor gets a bare close, got {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    prober.finish();
    world.assert_healthy();
}
