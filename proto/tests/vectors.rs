//! The hex test vectors of `docs/PROTOCOL.md`, checked against the encoder and the decoder.
//!
//! The vectors are read from the document itself (lines `vector <name>: <hex>` inside fenced
//! `text` blocks), so the document and the code cannot drift apart: a vector that is missing
//! from the document, unknown to this test, or different from the encoding fails the test.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use tunnel_proto::peer::{proof, Prover};
use tunnel_proto::wire::{
    Frame, Hello, Network, Networks, PeerChallenge, PeerHello, PeerStream, Reply, Role, Scope, Status, StreamHeader,
    Token, PEER_VERSION, VERSION,
};
use tunnel_proto::Uuid;

const PROTOCOL_MD: &str = include_str!("../../docs/PROTOCOL.md");
const TUNNEL: &str = "4d21094e-b74c-4916-86c1-d9fa36ea677b";
/// The peer handshake of the vectors: replica `a` dials `b` under this secret.
const PEER_SECRET: &[u8] = b"0123456789abcdef";
const DIALER_NONCE: [u8; 32] = [0x11; 32];
const LISTENER_NONCE: [u8; 32] = [0x22; 32];

/// The frame each vector name stands for.
fn expected() -> Vec<(&'static str, Frame)> {
    let tunnel = Uuid::parse_str(TUNNEL).unwrap();
    let header = |network, hostname: &str, visitor: Option<&str>| {
        Frame::StreamHeader(StreamHeader {
            network,
            hostname: hostname.to_owned(),
            visitor: visitor.map(|v| v.parse::<SocketAddr>().unwrap()),
        })
    };
    vec![
        (
            "agent-hello",
            Frame::Hello(Hello {
                version: VERSION,
                role: Role::Agent,
                tunnel,
                networks: Networks::TCP.with(Network::Udp),
                weight: 1,
                token: Token(Bytes::from_static(b"s3cret")),
                hostname: String::new(),
            }),
        ),
        (
            "access-hello",
            Frame::Hello(Hello {
                version: VERSION,
                role: Role::Access,
                tunnel,
                networks: Networks::NONE,
                weight: 0,
                token: Token::default(),
                hostname: String::new(),
            }),
        ),
        ("hello-reply-ok", Frame::HelloReply(Reply::ok())),
        ("hello-reply-unauthorized", Frame::HelloReply(Reply::new(Status::UNAUTHORIZED, "unauthorized"))),
        ("stream-header-tcp-ipv4", header(Network::Tcp, "example.com", Some("192.0.2.1:54321"))),
        ("stream-header-udp-ipv6", header(Network::Udp, "dns.srv-2.local", Some("[2001:db8::1]:53"))),
        ("stream-header-tcp-bare", header(Network::Tcp, "", None)),
        ("stream-reply-refused", Frame::StreamReply(Reply::new(Status::BAD_GATEWAY, "connection refused"))),
        ("ping-1", Frame::Ping(1)),
        ("pong-1", Frame::Pong(1)),
        ("goaway", Frame::GoAway),
        ("peer-hello", Frame::PeerHello(PeerHello { version: PEER_VERSION, nonce: DIALER_NONCE, name: "a".into() })),
        (
            "peer-challenge",
            Frame::PeerChallenge(PeerChallenge {
                nonce: LISTENER_NONCE,
                proof: proof(PEER_SECRET, Prover::Listener, &DIALER_NONCE, &LISTENER_NONCE, "a", "b"),
                name: "b".into(),
            }),
        ),
        ("peer-proof", Frame::PeerProof(proof(PEER_SECRET, Prover::Dialer, &LISTENER_NONCE, &DIALER_NONCE, "a", "b"))),
        (
            "peer-stream-public",
            Frame::PeerStream(PeerStream {
                hop: 1,
                scope: Scope::Public,
                tunnel,
                header: StreamHeader {
                    network: Network::Tcp,
                    hostname: "example.com".into(),
                    visitor: Some("192.0.2.1:54321".parse().unwrap()),
                },
            }),
        ),
        (
            "peer-stream-private",
            Frame::PeerStream(PeerStream {
                hop: 1,
                scope: Scope::Private(Uuid::parse_str("1c8d7f9e-0b6a-4d53-9a0e-3c2f5b7d8e61").unwrap()),
                tunnel,
                header: StreamHeader { network: Network::Udp, hostname: "dns.example".into(), visitor: None },
            }),
        ),
    ]
}

/// Every `vector <name>: <hex>` line inside a fenced `text` block of `doc`, by name. Spaces and
/// `|` inside the hex separate fields for the reader and are dropped.
fn parse_vectors(doc: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut vectors = BTreeMap::new();
    let mut fence: Option<&str> = None;
    for (i, line) in doc.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(info) = trimmed.strip_prefix("```") {
            fence = match fence {
                None => Some(info.trim()),
                Some(_) => None,
            };
            continue;
        }
        if fence != Some("text") {
            continue;
        }
        let Some(rest) = trimmed.strip_prefix("vector ") else { continue };
        let (name, hex_text) = rest.split_once(':').ok_or(format!("line {}: no ':' after the vector name", i + 1))?;
        let digits: String = hex_text.chars().filter(|c| !c.is_whitespace() && *c != '|').collect();
        let bytes = hex::decode(&digits).map_err(|e| format!("line {}: vector {name}: bad hex: {e}", i + 1))?;
        if vectors.insert(name.trim().to_owned(), bytes).is_some() {
            return Err(format!("line {}: vector {name} appears twice", i + 1));
        }
    }
    if fence.is_some() {
        return Err("unterminated code fence".to_owned());
    }
    Ok(vectors)
}

#[test]
fn document_vectors_match_the_codec() {
    let mut doc = parse_vectors(PROTOCOL_MD).expect("docs/PROTOCOL.md vectors parse");
    let mut failures = Vec::new();
    for (name, frame) in expected() {
        let Some(bytes) = doc.remove(name) else {
            failures.push(format!("{name}: missing from docs/PROTOCOL.md"));
            continue;
        };
        let encoded = frame.to_vec();
        if encoded != bytes {
            failures.push(format!(
                "{name}: document says {} but the encoder gives {}",
                hex::encode(&bytes),
                hex::encode(&encoded)
            ));
        }
        let mut buf = &bytes[..];
        match Frame::decode(&mut buf) {
            Ok(Some(decoded)) if decoded == frame && buf.is_empty() => {}
            Ok(Some(decoded)) if decoded == frame => {
                failures.push(format!("{name}: {} bytes left after the frame", buf.len()))
            }
            other => failures.push(format!("{name}: decodes to {other:?}, expected {frame:?}")),
        }
    }
    for name in doc.keys() {
        failures.push(format!("{name}: in docs/PROTOCOL.md but unknown to this test"));
    }
    assert!(failures.is_empty(), "test vectors disagree:\n{}", failures.join("\n"));
}

#[test]
fn every_kind_has_a_vector() {
    let kinds: Vec<_> = expected().iter().map(|(_, f)| f.kind()).collect();
    for frame in [
        Frame::Hello(Hello {
            version: VERSION,
            role: Role::Agent,
            tunnel: Uuid::nil(),
            networks: Networks::NONE,
            weight: 1,
            token: Token::default(),
            hostname: String::new(),
        }),
        Frame::HelloReply(Reply::ok()),
        Frame::StreamHeader(StreamHeader { network: Network::Tcp, hostname: String::new(), visitor: None }),
        Frame::StreamReply(Reply::ok()),
        Frame::Ping(0),
        Frame::Pong(0),
        Frame::GoAway,
        Frame::PeerHello(PeerHello { version: PEER_VERSION, nonce: [0; 32], name: "a".into() }),
        Frame::PeerChallenge(PeerChallenge { nonce: [0; 32], proof: [0; 32], name: "a".into() }),
        Frame::PeerProof([0; 32]),
        Frame::PeerStream(PeerStream {
            hop: 1,
            scope: Scope::Public,
            tunnel: Uuid::nil(),
            header: StreamHeader { network: Network::Tcp, hostname: String::new(), visitor: None },
        }),
    ] {
        assert!(kinds.contains(&frame.kind()), "no vector for {:?}", frame.kind());
    }
}

#[test]
fn parser_finds_only_fenced_text_vectors() {
    let doc = "vector outside: 00\n```rust\nvector rust: 01\n```\n```text\nvector a: 07 0000 |\n  vector b:02 0002|00c8\n```\n";
    let v = parse_vectors(doc).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v["a"], [7, 0, 0]);
    assert_eq!(v["b"], [2, 0, 2, 0, 0xc8]);
    assert!(parse_vectors("```text\nvector a: 00\nvector a: 00\n```\n").unwrap_err().contains("twice"));
    assert!(parse_vectors("```text\nvector a: 0g\n```\n").unwrap_err().contains("bad hex"));
    assert!(parse_vectors("```text\nvector a: 00\n").unwrap_err().contains("unterminated"));
}
