//! Bytes through the tunnel: large transfers byte-exact both ways, half-close, and a real
//! non-HTTP protocol (redis) published on a raw entrypoint and through tunnel-access.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tunnel_tests::payload::{random_sha256, source_on, write_random};
use tunnel_tests::{
    access, agent, agent_config, origin, read_until_close, send_and_shutdown, tunnel_id, Proc, Server, Transport, WAIT,
};

const BIG: usize = 64 << 20;
/// A generous bound on one read, so a stuck transfer fails instead of hanging.
/// Bytes read per call.
const CHUNK: usize = 64 << 10;
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads to EOF; returns the byte count and sha256. Panics on a read error or a stall.
fn read_hash(r: &mut TcpStream) -> (usize, String) {
    r.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return (total, hex::encode(hash.finalize())),
            Ok(n) => {
                hash.update(&buf[..n]);
                total += n;
            }
            Err(e) => panic!("read failed after {total} bytes: {e}"),
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// An origin that reads until the client's FIN, then answers `LEN SHA256\n` and closes: its
/// reply only exists after the half-close reached it.
fn sink() -> SocketAddr {
    let (l, addr) = tunnel_tests::listener();
    thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                let (n, hash) = read_hash(&mut conn);
                let _ = conn.write_all(format!("{n} {hash}\n").as_bytes());
            });
        }
    });
    addr
}

/// A server with raw entrypoints `blob.local` (echo), `sink.local` and `source.local`, all
/// served by one agent that picks the origin by host.
struct Fixture {
    server: Server,
    tunnel: String,
    _agent: (Proc, tempfile::TempDir),
}

const SOURCE_SEED: u64 = 0x5eed_da7a;

impl Fixture {
    fn start(t: Transport) -> Fixture {
        let tunnel = tunnel_id();
        let eps = "127.0.0.1:0/blob.local,127.0.0.1:0/sink.local,127.0.0.1:0/source.local";
        let rules = format!("blob.local:{tunnel},sink.local:{tunnel},source.local:{tunnel}");
        let server = Server::start_on(t, &["-L", &format!("relay://127.0.0.1:0?entryPoint={eps}&tunnel={rules}")], 3);
        let mut toml =
            format!("[relay]\naddr = \"{}\"\ntunnel.id = \"{tunnel}\"\n[[services]]\ntype = \"rtcp\"\n", server.relay);
        for (host, addr) in [
            ("blob.local", origin::echo()),
            ("sink.local", sink()),
            ("source.local", source_on("127.0.0.1:0", SOURCE_SEED, BIG)),
        ] {
            toml += &format!("[[services.forwarder.nodes]]\naddr = \"{addr}\"\nhost = \"{host}\"\n");
        }
        let agent = agent_config(&server, &toml, 1);
        Fixture { server, tunnel, _agent: agent }
    }
}

/// Sends `len` bytes to an echo through `addr` from a writer thread while reading them back.
fn echo_roundtrip(addr: SocketAddr, len: usize) {
    let mut conn = TcpStream::connect(addr).unwrap();
    let mut writer = conn.try_clone().unwrap();
    let sent = thread::spawn(move || {
        let hash = write_random(&mut writer, 42, len).expect("write through the tunnel");
        writer.shutdown(Shutdown::Write).unwrap();
        hash
    });
    let (got, got_hash) = read_hash(&mut conn);
    let sent_hash = sent.join().expect("writer thread");
    assert_eq!(got, len, "bytes echoed back");
    assert_eq!(got_hash, sent_hash, "echoed bytes differ from the bytes sent");
}

fn sixty_four_mib_echo_is_byte_exact_both_ways(t: Transport) {
    let f = Fixture::start(t);
    echo_roundtrip(f.server.entrypoints[0], BIG);
}

fn sixty_four_mib_upload_and_download_are_byte_exact(t: Transport) {
    let f = Fixture::start(t);
    // Upload: the sink hashes what arrived and answers after our FIN.
    let mut up = TcpStream::connect(f.server.entrypoints[1]).unwrap();
    let sent = write_random(&mut up, 7, BIG).unwrap();
    up.shutdown(Shutdown::Write).unwrap();
    let (reply, closed) = read_until_close(&mut up, READ_TIMEOUT);
    assert!(closed, "the sink's reply ends with a close");
    assert_eq!(String::from_utf8_lossy(&reply), format!("{BIG} {sent}\n"), "what the origin received");

    // Download: the source sends a known stream and closes.
    let want = random_sha256(SOURCE_SEED, BIG);
    let mut down = TcpStream::connect(f.server.entrypoints[2]).unwrap();
    let (got, hash) = read_hash(&mut down);
    assert_eq!(got, BIG, "bytes received from the source");
    assert_eq!(hash, want, "downloaded bytes differ from the origin's");
}

fn echo_through_access_is_byte_exact(t: Transport) {
    let f = Fixture::start(t);
    let (_access, addrs) = access(&f.server, &["tcp://127.0.0.1:0/blob.local"], &f.tunnel, "");
    echo_roundtrip(addrs[0], 16 << 20);
}

/// Writes a request, shuts down the write half, and expects `reply` then EOF.
fn half_close(addr: SocketAddr, request: &[u8], reply: &[u8]) {
    let mut conn = TcpStream::connect(addr).unwrap();
    send_and_shutdown(&mut conn, request);
    let (got, closed) = read_until_close(&mut conn, READ_TIMEOUT);
    assert_eq!(got.len(), reply.len(), "reply length after our FIN");
    assert!(got == reply, "reply after our FIN differs");
    assert!(closed, "EOF after the reply");
}

fn half_close_still_delivers_the_reply_then_eof(t: Transport) {
    let f = Fixture::start(t);
    let request: Vec<u8> = (0..48 * 1024).map(|i| (i % 251) as u8).collect();
    let digest = format!("{} {}\n", request.len(), sha256_hex(&request));
    let (_access, addrs) =
        access(&f.server, &["tcp://127.0.0.1:0/blob.local", "tcp://127.0.0.1:0/sink.local"], &f.tunnel, "");
    for (how, echo, sink) in
        [("raw entrypoint", f.server.entrypoints[0], f.server.entrypoints[1]), ("tunnel-access", addrs[0], addrs[1])]
    {
        eprintln!("half-close through {how}");
        half_close(echo, &request, &request);
        // The sink answers only once our FIN has reached it.
        half_close(sink, &request, digest.as_bytes());
        half_close(sink, b"", format!("0 {}\n", sha256_hex(b"")).as_bytes());
    }
}

/// `redis-cli` against `addr`.
fn redis_cli(addr: SocketAddr, args: &[&str]) -> (String, String) {
    tunnel_tests::redis::cli(&tunnel_tests::redis::Where::Tcp(addr), args)
}

#[test]
fn redis_works_through_a_raw_entrypoint_and_through_access() {
    let redis_server = tunnel_tests::redis::Redis::tcp();
    let tunnel_tests::redis::Where::Tcp(redis) = redis_server.at else { unreachable!() };
    let tunnel = tunnel_id();
    let server = Server::start(
        &["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0/redis.local&tunnel=redis.local:{tunnel}")],
        1,
    );
    let _agent = agent(&server, &[&format!("rtcp://:0/{redis}")], &tunnel, "", 1);
    let (_access, addrs) = access(&server, &["tcp://127.0.0.1:0/redis.local"], &tunnel, "");
    let (public, private) = (server.entrypoints[0], addrs[0]);
    let value = tunnel_id();

    assert_eq!(redis_cli(public, &["SET", "k", &value]), ("OK".to_owned(), String::new()), "SET via the entrypoint");
    assert_eq!(redis_cli(public, &["GET", "k"]).0, value, "GET via the entrypoint");
    assert_eq!(redis_cli(private, &["GET", "k"]).0, value, "GET via tunnel-access");
    assert_eq!(redis_cli(private, &["SET", "k2", "from-access"]).0, "OK", "SET via tunnel-access");
    assert_eq!(redis_cli(redis, &["GET", "k2"]).0, "from-access", "the write reached the real redis");
    assert_eq!(redis_cli(public, &["DBSIZE"]).0, "2");
    // A pipelined session: several commands on one connection, in order.
    let mut conn = TcpStream::connect(public).unwrap();
    send_and_shutdown(&mut conn, b"PING\r\nINCR n\r\nINCR n\r\nQUIT\r\n");
    let (got, closed) = read_until_close(&mut conn, WAIT);
    assert_eq!(String::from_utf8_lossy(&got), "+PONG\r\n:1\r\n:2\r\n+OK\r\n");
    assert!(closed);
}

tunnel_tests::over_transports!(
    sixty_four_mib_echo_is_byte_exact_both_ways,
    sixty_four_mib_upload_and_download_are_byte_exact,
    echo_through_access_is_byte_exact,
    half_close_still_delivers_the_reply_then_eof,
);
