//! 7. Log injection: a stream header whose hostname holds a newline and an escape sequence
//!    never reaches the server log raw.

use tokio::io::AsyncWriteExt;
use tunnel_proto::framed::{read_frame, write_frame};
use tunnel_proto::wire::{Frame, Network, StreamHeader};
use tunnel_tests::{tunnel_id, Server};

use super::{access_session, assert_clean_log, runtime};

#[test]
fn peer_supplied_hostnames_are_logged_escaped() {
    let id = tunnel_id();
    let server = Server::start(&["-L", &format!("relay://127.0.0.1:0?tunnel=ok.example:{id}")], 0);
    let forged = "x.example\n2026-12-01T00:00:00.000000Z  INFO agent joined tunnel=forged\u{1b}[2K";
    runtime().block_on(async {
        let (s, _control) = access_session(server.relay, &id).await.expect("admitted");
        for network in [Network::Tcp, Network::Udp] {
            let mut stream = s.open_stream().await.unwrap();
            let header = StreamHeader { network, hostname: forged.to_owned(), visitor: None };
            write_frame(&mut stream, &Frame::StreamHeader(header)).await.unwrap();
            stream.flush().await.unwrap();
            let reply = read_frame(&mut stream).await;
            assert!(matches!(&reply, Ok(Frame::StreamReply(r)) if r.status.0 == 400), "{reply:?}");
        }
        s.close();
    });
    server.proc.wait_for("private stream refused");
    let out = server.proc.output();
    assert!(!out.lines().any(|l| l.starts_with("2026-12-01T00:00:00.000000Z")), "a forged line:\n{out}");
    assert_clean_log(&server);
}

/// 10. Log floods: a burst of refused visitors costs a few log lines, with a count of the rest.
#[test]
fn a_burst_of_refused_visitors_costs_a_few_log_lines() {
    use std::io::{Read, Write};

    const VISITORS: usize = 500;
    let id = tunnel_id();
    let server =
        Server::start(&["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=ok.example:{id}")], 1);
    let before = server.proc.output().lines().count();
    for n in 0..VISITORS {
        let mut c = std::net::TcpStream::connect(server.entrypoints[0]).expect("connect");
        let _ = write!(c, "GET / HTTP/1.1\r\nHost: unknown-{n}.example\r\n\r\n");
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer);
        assert!(answer.starts_with(b"HTTP/1.1 404"), "visitor {n} gets its answer");
    }
    // One more refusal after a pause long enough for the budget to let a line through: it
    // reports how many were held back.
    tunnel_tests::poll_until("a refusal line with a count", || {
        let mut c = std::net::TcpStream::connect(server.entrypoints[0]).expect("connect");
        let _ = write!(c, "GET / HTTP/1.1\r\nHost: last.example\r\n\r\n");
        let _ = c.read_to_end(&mut Vec::new());
        server.proc.output().lines().any(|l| l.contains("visitor refused") && l.contains("last.example"))
    });
    let out = server.proc.output();
    let added = out.lines().count() - before;
    assert!(added < 50, "{VISITORS} refused visitors wrote {added} log lines");
    let last = out.lines().rev().find(|l| l.contains("last.example")).unwrap();
    assert!(last.contains("suppressed="), "the line counts what was held back: {last}");
}
