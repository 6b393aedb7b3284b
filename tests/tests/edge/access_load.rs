//! 5. The access client under load: more concurrent connections than a session carries fail
//!    alone, cleanly; the session and every established connection survive.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tunnel_tests::{access, agent, origin, tunnel_id, Server};

/// Connections opened at once: more than the mux's 512 streams per session.
const CONNECTIONS: usize = 600;

fn echo_once(conn: &mut TcpStream, n: usize) -> bool {
    let msg = format!("ping {n}\n");
    if conn.write_all(msg.as_bytes()).is_err() {
        return false;
    }
    let mut got = vec![0u8; msg.len()];
    conn.read_exact(&mut got).is_ok() && got == msg.as_bytes()
}

#[test]
fn connections_beyond_the_session_limit_fail_alone() {
    let id = tunnel_id();
    let server = Server::start(&["-L", &format!("relay://127.0.0.1:0?tunnel=echo.local:{id}")], 0);
    let _agent = agent(&server, &[&format!("rtcp://:0/{}", origin::echo())], &id, "", 1);
    let (access, addrs) = access(&server, &["tcp://127.0.0.1:0/echo.local"], &id, "");
    let mut established: Vec<TcpStream> = Vec::new();
    for n in 0..50 {
        let mut c = TcpStream::connect(addrs[0]).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        assert!(echo_once(&mut c, n), "connection {n} echoes");
        established.push(c);
    }
    // The rest all at once; each holds its stream open while waiting for its echo.
    let mut crowd = Vec::new();
    for n in 50..CONNECTIONS {
        let mut c = TcpStream::connect(addrs[0]).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = c.write_all(format!("ping {n}\n").as_bytes());
        crowd.push(c);
    }
    let mut answered = 0;
    for c in &mut crowd {
        let mut buf = [0u8; 64];
        if matches!(c.read(&mut buf), Ok(n) if n > 0) {
            answered += 1;
        }
    }
    for (n, c) in established.iter_mut().enumerate() {
        assert!(echo_once(c, n), "established connection {n} survived the crowd");
    }
    assert!(answered >= 300, "most of the crowd is served: {answered} of {}", crowd.len());
    assert!(answered < crowd.len(), "the crowd is beyond the limit, so some are refused");
    assert!(!access.logged("session lost"), "the session survives:\n{}", access.output());
    drop(crowd);
    // And new connections work once the crowd's streams have ended.
    tunnel_tests::poll_until("a new connection is served after the crowd", || {
        let mut late = TcpStream::connect(addrs[0]).expect("connect");
        late.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        echo_once(&mut late, 9999)
    });
}
