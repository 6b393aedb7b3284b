//! Malformed TLS handshakes on a `relay+tls://` port cost the log nothing: rustls warns of
//! each one through the `log` bridge, so a port scanner or a bot could fill a server's disk
//! (and bury what matters) with one line per connection.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rand::Rng;
use tunnel_tests::{agent, http_get, origin, read_until_close, tunnel_id, Server, Transport};

/// Connections of each attack.
const ATTEMPTS: usize = 200;

/// Lines the server may log for all of them.
const HANDFUL: usize = 5;

/// A TLS record holding a ClientHello with one server_name extension naming `name`.
fn client_hello(name: &[u8], rng: &mut impl Rng) -> Vec<u8> {
    let mut sni = vec![0u8]; // host_name
    sni.extend((name.len() as u16).to_be_bytes());
    sni.extend(name);
    let mut list = (sni.len() as u16).to_be_bytes().to_vec();
    list.extend(sni);
    let mut extensions = vec![0, 0]; // server_name
    extensions.extend((list.len() as u16).to_be_bytes());
    extensions.extend(list);
    let mut body = vec![3, 3];
    body.extend(rng.random::<[u8; 32]>());
    body.extend([0, 0, 2, 0x13, 0x01, 1, 0]); // no session ID, TLS_AES_128_GCM_SHA256, null compression
    body.extend((extensions.len() as u16).to_be_bytes());
    body.extend(extensions);
    let mut handshake = vec![1];
    handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![0x16, 3, 1];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// The `i`-th attack: ClientHellos with an IP address or an invalid name as SNI, a record
/// of application data where a ClientHello belongs, a truncated ClientHello, random bytes.
fn malformed(i: usize, rng: &mut impl Rng) -> Vec<u8> {
    match i % 5 {
        0 => client_hello(b"127.0.0.1", rng),
        1 => client_hello(b"bad_name!", rng),
        2 => b"\x17\x03\x03\x00\x05hello".to_vec(),
        3 => client_hello(b"relay.test", rng)[..40].to_vec(),
        _ => (0..300).map(|_| rng.random()).collect(),
    }
}

fn attack(relay: SocketAddr, i: usize, rng: &mut impl Rng) {
    let mut tcp = TcpStream::connect(relay).expect("connect to the relay port");
    let _ = tcp.write_all(&malformed(i, rng));
    let _ = tcp.shutdown(std::net::Shutdown::Write); // nothing more comes
    let (_, closed) = read_until_close(&mut tcp, Duration::from_secs(20));
    assert!(closed, "attempt {i}: the server did not close a malformed handshake");
}

#[test]
fn malformed_client_hellos_do_not_flood_the_log() {
    let id = tunnel_id();
    let url = format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=a.example:{id}");
    let server = Server::start_on(Transport::Tls, &["-L", &url], 1);
    let before = server.proc.output().lines().count();
    let mut rng = rand::rng();
    for i in 0..ATTEMPTS {
        attack(server.relay, i, &mut rng);
    }
    // An agent joining after the attack: once its join is logged, every line the attack
    // caused has been read from the server's output too.
    let _agent = agent(&server, &[&format!("rtcp://:0/{}", origin::http("a"))], &id, "", 1);
    assert_eq!(http_get(server.entrypoints[0], "a.example", "/").0, 200);
    let output = server.proc.output();
    let new: Vec<&str> = output.lines().skip(before).filter(|l| !l.contains("agent joined")).collect();
    assert!(new.len() <= HANDFUL, "{ATTEMPTS} malformed handshakes made {} log lines:\n{}", new.len(), new.join("\n"));
}
