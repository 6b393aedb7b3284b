//! 7. Log injection: a stream header whose hostname holds a newline and an escape sequence
//!    never reaches the server log raw.

use tokio::io::AsyncWriteExt;
use tunnel_proto::framed::{read_frame, write_frame};
use tunnel_proto::wire::{self, Frame, Hello, Network, Networks, Role, StreamHeader, Token};
use tunnel_proto::Uuid;
use tunnel_tests::{tunnel_id, Server};

use super::{assert_clean_log, runtime, session};

#[test]
fn peer_supplied_hostnames_are_logged_escaped() {
    let id = tunnel_id();
    let server = Server::start(&["-L", &format!("relay://127.0.0.1:0?tunnel=ok.example:{id}")], 0);
    let forged = "x.example\n2026-12-01T00:00:00.000000Z  INFO agent joined tunnel=forged\u{1b}[2K";
    runtime().block_on(async {
        let (s, mut control) = session(server.relay).await;
        let hello = Hello {
            version: wire::VERSION,
            role: Role::Access,
            tunnel: Uuid::parse_str(&id).unwrap(),
            networks: Networks::NONE,
            weight: 0,
            token: Token::default(),
        };
        write_frame(&mut control, &Frame::Hello(hello)).await.unwrap();
        assert!(matches!(read_frame(&mut control).await, Ok(Frame::HelloReply(r)) if r.status.is_ok()));
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
