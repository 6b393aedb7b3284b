//! Properties of `tunnel_proto::wire`: round trips of every frame, decoding of arbitrary and
//! partial input, `read_frame` on streams, and decoding from non-contiguous buffers.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnel_proto::framed::{read_frame, write_frame, FrameError};
use tunnel_proto::wire::{
    DecodeError, Frame, Hello, Kind, Network, Networks, PeerChallenge, PeerHello, PeerStream, Reply, Role, Scope,
    Status, StreamHeader, Token, HEADER_LEN, MAX_BODY, MAX_HOSTNAME, MAX_MESSAGE, MAX_TOKEN,
};
use tunnel_proto::Uuid;

// Strategies

fn network() -> impl Strategy<Value = Network> {
    prop_oneof![Just(Network::Tcp), Just(Network::Udp)]
}

fn networks() -> impl Strategy<Value = Networks> {
    (any::<bool>(), any::<bool>()).prop_map(|(tcp, udp)| {
        let mut n = Networks::NONE;
        if tcp {
            n = n.with(Network::Tcp);
        }
        if udp {
            n = n.with(Network::Udp);
        }
        n
    })
}

fn hello() -> impl Strategy<Value = Hello> {
    let role = prop_oneof![Just(Role::Agent), Just(Role::Access)];
    let hostname = prop_oneof![Just(String::new()), "[a-z0-9-]{1,20}(\\.[a-z0-9-]{1,20}){0,3}"];
    (any::<u8>(), role, any::<[u8; 16]>(), networks(), any::<u8>(), vec(any::<u8>(), 0..=MAX_TOKEN), hostname).prop_map(
        |(version, role, id, networks, weight, token, hostname)| Hello {
            version,
            role,
            tunnel: Uuid::from_bytes(id),
            networks,
            weight,
            token: Token(Bytes::from(token)),
            hostname,
        },
    )
}

fn visitor() -> impl Strategy<Value = Option<SocketAddr>> {
    prop_oneof![
        Just(None),
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| Some(SocketAddr::new(Ipv4Addr::from(ip).into(), port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| Some(SocketAddr::new(Ipv6Addr::from(ip).into(), port))),
    ]
}

fn stream_header() -> impl Strategy<Value = StreamHeader> {
    let hostname = prop_oneof!["[a-z0-9.-]{0,253}", "[ -~]{0,253}"];
    (network(), hostname, visitor()).prop_map(|(network, hostname, visitor)| StreamHeader {
        network,
        hostname,
        visitor,
    })
}

/// Messages of up to [`MAX_MESSAGE`] bytes: ASCII up to the full length, or any characters.
fn reply() -> impl Strategy<Value = Reply> {
    let ascii = proptest::string::string_regex("[ -~]{0,512}").unwrap();
    let unicode = vec(any::<char>(), 0..=MAX_MESSAGE / 4).prop_map(|c| c.into_iter().collect::<String>());
    (any::<u16>(), prop_oneof![ascii, unicode]).prop_map(|(status, message)| Reply { status: Status(status), message })
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        hello().prop_map(Frame::Hello),
        reply().prop_map(Frame::HelloReply),
        stream_header().prop_map(Frame::StreamHeader),
        reply().prop_map(Frame::StreamReply),
        any::<u64>().prop_map(Frame::Ping),
        any::<u64>().prop_map(Frame::Pong),
        Just(Frame::GoAway),
        peer_frame(),
    ]
}

/// The frames between replicas, with names of 1 to 63 characters.
fn peer_frame() -> impl Strategy<Value = Frame> {
    let name = "[a-z0-9._-]{1,63}";
    let uuid = any::<u128>().prop_map(Uuid::from_u128);
    let scope = prop_oneof![Just(Scope::Public), any::<u128>().prop_map(|u| Scope::Private(Uuid::from_u128(u)))];
    prop_oneof![
        (any::<u8>(), any::<[u8; 32]>(), name).prop_map(|(version, nonce, name)| Frame::PeerHello(PeerHello {
            version,
            nonce,
            name
        })),
        (any::<[u8; 32]>(), any::<[u8; 32]>(), name)
            .prop_map(|(nonce, proof, name)| Frame::PeerChallenge(PeerChallenge { nonce, proof, name })),
        any::<[u8; 32]>().prop_map(Frame::PeerProof),
        (any::<u8>(), scope, uuid, stream_header())
            .prop_map(|(hop, scope, tunnel, header)| Frame::PeerStream(PeerStream { hop, scope, tunnel, header })),
    ]
}

/// Input for the decoder: raw bytes, a header with a random kind around the known ones and a
/// random body, or a valid frame with some bytes changed.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let framed = (0u8..=9, vec(any::<u8>(), 0..600), vec(any::<u8>(), 0..8)).prop_map(|(kind, body, tail)| {
        let mut v = vec![kind];
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend(body);
        v.extend(tail);
        v
    });
    let mutated = (frame(), vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)).prop_map(|(f, edits)| {
        let mut v = f.to_vec();
        for (i, b) in edits {
            let i = i.index(v.len());
            v[i] = b;
        }
        v
    });
    prop_oneof![vec(any::<u8>(), 0..2048), framed, mutated]
}

fn header(kind: u8, len: u16) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&len.to_be_bytes());
    v
}

// Round trips and partial input

proptest! {
    // No regression files: a failure prints its minimal input, which belongs in a named test.
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_frame_round_trips(frame in frame()) {
        let bytes = frame.to_vec();
        prop_assert!(bytes.len() - HEADER_LEN <= MAX_BODY);
        prop_assert_eq!(bytes[0], frame.kind() as u8);
        prop_assert_eq!(u16::from_be_bytes([bytes[1], bytes[2]]) as usize, bytes.len() - HEADER_LEN);

        let mut buf = &bytes[..];
        prop_assert_eq!(Frame::decode(&mut buf), Ok(Some(frame.clone())));
        prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());

        // Another frame behind it stays in the buffer.
        let mut two = bytes.clone();
        two.extend_from_slice(&Frame::GoAway.to_vec());
        let mut buf = &two[..];
        prop_assert_eq!(Frame::decode(&mut buf), Ok(Some(frame)));
        prop_assert_eq!(buf, &Frame::GoAway.to_vec()[..]);
    }

    #[test]
    fn strict_prefixes_need_more_and_consume_nothing(frame in frame()) {
        let bytes = frame.to_vec();
        for end in 0..bytes.len() {
            let mut buf = &bytes[..end];
            prop_assert_eq!(Frame::decode(&mut buf), Ok(None), "prefix of {} bytes", end);
            prop_assert_eq!(buf.len(), end, "prefix of {} bytes was consumed", end);
        }
    }

    #[test]
    fn decodes_across_chunk_boundaries(frame in frame(), cuts in any::<(prop::sample::Index, prop::sample::Index)>()) {
        let bytes = Bytes::from(frame.to_vec());
        let (a, b) = (cuts.0.index(bytes.len() + 1), cuts.1.index(bytes.len() + 1));
        let (a, b) = (a.min(b), a.max(b));
        let mut buf = bytes.slice(..a).chain(bytes.slice(a..b)).chain(bytes.slice(b..));
        prop_assert_eq!(Frame::decode(&mut buf), Ok(Some(frame)));
        prop_assert_eq!(buf.remaining(), 0);
    }

    #[test]
    fn decode_never_panics_and_consumes_only_whole_frames(bytes in hostile_bytes()) {
        let mut buf = &bytes[..];
        let result = Frame::decode(&mut buf);
        let consumed = bytes.len() - buf.len();
        let frame_len = (bytes.len() >= HEADER_LEN).then(|| HEADER_LEN + u16::from_be_bytes([bytes[1], bytes[2]]) as usize);
        match result {
            Ok(None) | Err(DecodeError::UnknownKind(_)) | Err(DecodeError::TooLong(_)) => prop_assert_eq!(consumed, 0),
            // A malformed body is only found once the whole frame is there; the decoder has
            // then consumed that frame, and nothing beyond it.
            Err(DecodeError::Malformed(kind, _)) => {
                prop_assert_eq!(kind as u8, bytes[0]);
                prop_assert_eq!(Some(consumed), frame_len);
            }
            Err(DecodeError::Unexpected(k)) => prop_assert!(false, "decode never expects a kind, got {:?}", k),
            Ok(Some(frame)) => {
                prop_assert_eq!(Some(consumed), frame_len);
                prop_assert_eq!(frame.kind() as u8, bytes[0]);
                // What was decoded encodes to a frame that decodes again.
                prop_assert!(matches!(Frame::decode(&mut &frame.to_vec()[..]), Ok(Some(_))));
            }
        }
    }

    #[test]
    fn oversized_length_fails_without_the_body(kind in 1u8..=7, len in (MAX_BODY as u16 + 1)..=u16::MAX, body in vec(any::<u8>(), 0..64)) {
        let mut bytes = header(kind, len);
        bytes.extend(body);
        let mut buf = &bytes[..];
        prop_assert_eq!(Frame::decode(&mut buf), Err(DecodeError::TooLong(len as usize)));
        prop_assert_eq!(buf.len(), bytes.len());
    }
}

#[test]
fn length_limit_is_inclusive() {
    let mut at_limit = header(Kind::GoAway as u8, MAX_BODY as u16);
    assert_eq!(Frame::decode(&mut &at_limit[..]), Ok(None), "1024 is allowed: wait for the body");
    at_limit.resize(HEADER_LEN + MAX_BODY, 0);
    assert_eq!(Frame::decode(&mut &at_limit[..]), Err(DecodeError::Malformed(Kind::GoAway, "body must be empty")));
    let over = header(Kind::GoAway as u8, MAX_BODY as u16 + 1);
    assert_eq!(Frame::decode(&mut &over[..]), Err(DecodeError::TooLong(MAX_BODY + 1)));
}

#[test]
fn unknown_kind_fails_on_the_header_alone() {
    for kind in [0x00, 0x0c, 0x7f, 0xff] {
        let bytes = header(kind, 4);
        let mut buf = &bytes[..];
        assert_eq!(Frame::decode(&mut buf), Err(DecodeError::UnknownKind(kind)));
        assert_eq!(buf.len(), 3);
    }
}

#[test]
fn malformed_bodies_are_rejected() {
    let bad = |kind: Kind, body: &[u8]| {
        let mut v = header(kind as u8, body.len() as u16);
        v.extend_from_slice(body);
        match Frame::decode(&mut &v[..]) {
            Err(DecodeError::Malformed(k, _)) => assert_eq!(k, kind),
            other => panic!("{kind:?} {body:02x?} decoded to {other:?}"),
        }
    };
    let mut hello = vec![1, 1];
    hello.extend_from_slice(&[0; 16]);
    hello.extend_from_slice(&[1, 1, 2, b'x']);
    bad(Kind::Hello, &hello); // token_len 2, one byte present
    bad(Kind::Hello, &hello[..20]); // shorter than the fixed part
    hello[1] = 3;
    bad(Kind::Hello, &hello); // unknown role
    bad(Kind::HelloReply, &[0]);
    bad(Kind::StreamReply, &[0; 2 + MAX_MESSAGE + 1]);
    bad(Kind::StreamHeader, &[1]);
    bad(Kind::StreamHeader, &[3, 0, 0]); // unknown network
    bad(Kind::StreamHeader, &[1, 0]); // no visitor byte
    bad(Kind::StreamHeader, &[1, 2, b'a']); // hostname cut short
    bad(Kind::StreamHeader, &[1, 1, 0xff, 0]); // hostname not UTF-8
    bad(Kind::StreamHeader, &[1, 0, 5]); // unknown address family
    bad(Kind::StreamHeader, &[1, 0, 4, 192, 0, 2, 1, 0]); // short IPv4 address
    bad(Kind::StreamHeader, &[1, 0, 6, 0, 0]); // short IPv6 address
    bad(Kind::StreamHeader, &[1, 0, 0, 0]); // trailing byte
    let mut long_host = vec![1, (MAX_HOSTNAME + 1) as u8];
    long_host.extend(std::iter::repeat_n(b'a', MAX_HOSTNAME + 1));
    long_host.push(0);
    bad(Kind::StreamHeader, &long_host);
    bad(Kind::Ping, &[0; 7]);
    bad(Kind::Pong, &[0; 9]);
    bad(Kind::GoAway, &[0]);
}

#[test]
fn lenient_fields_decode() {
    // Reserved networks bits are ignored; invalid UTF-8 in a message becomes U+FFFD.
    let mut body = vec![1, 1];
    body.extend_from_slice(&[0; 16]);
    body.extend_from_slice(&[0xff, 1, 0]);
    let mut bytes = header(Kind::Hello as u8, body.len() as u16);
    bytes.extend(body);
    let Ok(Some(Frame::Hello(h))) = Frame::decode(&mut &bytes[..]) else { panic!("hello did not decode") };
    assert_eq!(h.networks, Networks::TCP.with(Network::Udp));

    let bytes = [&header(Kind::StreamReply as u8, 4)[..], &[0x01, 0xf6, b'x', 0xff]].concat();
    assert_eq!(Frame::decode(&mut &bytes[..]), Ok(Some(Frame::StreamReply(Reply::new(Status(502), "x\u{fffd}")))));
}

#[test]
fn overlong_fields_are_cut_to_a_decodable_frame() {
    let hello = Frame::Hello(Hello {
        version: 1,
        role: Role::Agent,
        tunnel: Uuid::nil(),
        networks: Networks::TCP,
        weight: 1,
        token: Token(Bytes::from(vec![7u8; MAX_TOKEN + 40])),
        hostname: String::new(),
    });
    let Ok(Some(Frame::Hello(h))) = Frame::decode(&mut &hello.to_vec()[..]) else { panic!("hello did not decode") };
    assert_eq!(h.token.0, vec![7u8; MAX_TOKEN]);

    // A multi-byte character across the hostname limit is dropped whole.
    let hostname = format!("{}é.example", "a".repeat(MAX_HOSTNAME - 1));
    let sh = Frame::StreamHeader(StreamHeader { network: Network::Tcp, hostname, visitor: None });
    let Ok(Some(Frame::StreamHeader(h))) = Frame::decode(&mut &sh.to_vec()[..]) else {
        panic!("header did not decode")
    };
    assert_eq!(h.hostname, "a".repeat(MAX_HOSTNAME - 1));

    let message = format!("{}€ and more", "m".repeat(MAX_MESSAGE - 1));
    let reply = Frame::HelloReply(Reply { status: Status::BAD_REQUEST, message });
    let Ok(Some(Frame::HelloReply(r))) = Frame::decode(&mut &reply.to_vec()[..]) else {
        panic!("reply did not decode")
    };
    assert_eq!(r.message, "m".repeat(MAX_MESSAGE - 1));
}

#[test]
fn decodes_with_the_header_split_byte_by_byte() {
    let frame = Frame::StreamHeader(StreamHeader {
        network: Network::Udp,
        hostname: "dns.example".into(),
        visitor: Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 53)),
    });
    let bytes = Bytes::from(frame.to_vec());
    let head = || bytes.slice(0..1).chain(bytes.slice(1..2)).chain(bytes.slice(2..3));
    // The header alone, in three chunks: need more, consume nothing.
    let mut partial = head();
    assert_eq!(Frame::decode(&mut partial), Ok(None));
    assert_eq!(partial.remaining(), 3);
    let mut whole = head().chain(bytes.slice(3..10)).chain(bytes.slice(10..)).chain(Bytes::from_static(b"data"));
    assert_eq!(Frame::decode(&mut whole), Ok(Some(frame)));
    assert_eq!(whole.copy_to_bytes(whole.remaining()), "data");
}

#[test]
fn decodes_a_stream_fed_one_byte_at_a_time() {
    let frames =
        [Frame::Ping(7), Frame::HelloReply(Reply::new(Status::UNAVAILABLE, "no agent")), Frame::GoAway, Frame::Pong(7)];
    let wire: Vec<u8> = frames.iter().flat_map(Frame::to_vec).collect();
    let (mut buf, mut got) = (BytesMut::new(), Vec::new());
    for b in wire {
        buf.extend_from_slice(&[b]);
        while let Some(f) = Frame::decode(&mut buf).unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got, frames);
    assert!(buf.is_empty());
}

// read_frame

fn sample_header() -> Frame {
    Frame::StreamHeader(StreamHeader {
        network: Network::Tcp,
        hostname: "example.com".into(),
        visitor: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 54321)),
    })
}

#[tokio::test]
async fn read_frame_leaves_pipelined_data_unread() {
    let (mut opener, mut acceptor) = tokio::io::duplex(64);
    let data = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".repeat(20);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        let mut bytes = sample_header().to_vec();
        bytes.extend_from_slice(&sent);
        opener.write_all(&bytes).await.unwrap();
    });
    assert_eq!(read_frame(&mut acceptor).await.unwrap(), sample_header());
    let mut rest = Vec::new();
    acceptor.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, data);
    writer.await.unwrap();
}

#[tokio::test]
async fn read_frame_reads_consecutive_frames_from_a_slice() {
    let frames = [sample_header(), Frame::StreamReply(Reply::ok()), Frame::Ping(u64::MAX), Frame::GoAway];
    let mut wire: Vec<u8> = frames.iter().flat_map(Frame::to_vec).collect();
    wire.extend_from_slice(b"tail");
    let mut r = &wire[..];
    for f in &frames {
        assert_eq!(&read_frame(&mut r).await.unwrap(), f);
    }
    assert_eq!(r, b"tail");
}

#[tokio::test]
async fn write_frame_then_read_frame_through_a_small_pipe() {
    let (mut a, mut b) = tokio::io::duplex(7);
    let frame = Frame::HelloReply(Reply::new(Status::BAD_REQUEST, "v".repeat(MAX_MESSAGE)));
    let sent = frame.clone();
    let writer = tokio::spawn(async move { write_frame(&mut a, &sent).await });
    assert_eq!(read_frame(&mut b).await.unwrap(), frame);
    writer.await.unwrap().unwrap();
}

#[tokio::test]
async fn truncated_frame_is_unexpected_eof() {
    let bytes = sample_header().to_vec();
    for end in 0..bytes.len() {
        let mut r = &bytes[..end];
        match read_frame(&mut r).await {
            Err(FrameError::Io(e)) => assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "prefix of {end} bytes"),
            other => panic!("prefix of {end} bytes: {other:?}"),
        }
    }
}

#[tokio::test]
async fn read_frame_rejects_bad_frames() {
    // The writer stays open and sends no body: an oversized length fails on the header alone.
    let (mut w, mut r) = tokio::io::duplex(64);
    w.write_all(&header(Kind::Hello as u8, u16::MAX)).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut r)).await.expect("read_frame waited");
    assert!(matches!(result, Err(FrameError::Decode(DecodeError::TooLong(65535)))), "{result:?}");

    let mut slice = &header(Kind::Ping as u8, MAX_BODY as u16 + 1)[..];
    let result = read_frame(&mut slice).await;
    assert!(matches!(result, Err(FrameError::Decode(DecodeError::TooLong(1025)))), "{result:?}");

    let mut slice = &header(0x42, 0)[..];
    let result = read_frame(&mut slice).await;
    assert!(matches!(result, Err(FrameError::Decode(DecodeError::UnknownKind(0x42)))), "{result:?}");
    drop(w);

    let bytes = [&header(Kind::Ping as u8, 2)[..], &[0, 0]].concat();
    let result = read_frame(&mut &bytes[..]).await;
    assert!(matches!(result, Err(FrameError::Decode(DecodeError::Malformed(Kind::Ping, _)))), "{result:?}");
}
