//! Relay frames: the decoder fed whole, split in two at every point and byte by byte, the
//! stream reader, and the hello and stream header bodies both ways.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tunnel_proto::framed::{read_frame, FrameError};
use tunnel_proto::wire::{
    DecodeError, Frame, Hello, Kind, Network, Networks, Role, StreamHeader, Token, HEADER_LEN, MAX_BODY, MAX_HOSTNAME,
    MAX_TOKEN,
};
use tunnel_proto::Uuid;

/// How a run of decodes over a buffer ended.
#[derive(Debug, PartialEq)]
enum End {
    /// `Ok(None)` with this many bytes left unconsumed.
    NeedMore(usize),
    /// An error.
    Error(DecodeError),
}

/// The frames decoded from a buffer, in order, and how decoding stopped (`None`: it was
/// stopped after as many frames as asked for).
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Frame>,
    end: Option<End>,
}

/// The declared length of the frame at the front of `rest`, if its header is there.
fn declared_len(rest: &[u8]) -> Option<usize> {
    (rest.len() >= HEADER_LEN).then(|| u16::from_be_bytes([rest[1], rest[2]]) as usize)
}

/// Decodes at most `limit` frames from `buf`, stopping early when it needs more bytes or
/// fails. `buf` holds the last bytes of `data`, which is there to check each step against what
/// the header says. With `reencode`, each frame is also checked to survive a re-encode (once
/// per input is enough: the other decodes must give the same frames).
fn decode_all(buf: &mut impl Buf, data: &[u8], limit: usize, reencode: bool) -> Outcome {
    let mut frames = Vec::new();
    while frames.len() < limit {
        let before = buf.remaining();
        let rest = &data[data.len() - before..];
        match Frame::decode(buf) {
            Ok(Some(frame)) => {
                let len = declared_len(rest).expect("a frame was decoded without a whole header");
                assert_eq!(before - buf.remaining(), HEADER_LEN + len, "a frame consumed other than its length");
                if reencode {
                    check_reencodes(&frame);
                }
                frames.push(frame);
            }
            Ok(None) => {
                assert_eq!(buf.remaining(), before, "Ok(None) consumed bytes");
                if let Some(len) = declared_len(rest) {
                    assert!(before < HEADER_LEN + len, "Ok(None) with the whole frame present");
                }
                return Outcome { frames, end: Some(End::NeedMore(before)) };
            }
            Err(err) => return Outcome { frames, end: Some(End::Error(err)) },
        }
    }
    Outcome { frames, end: None }
}

/// A decoded frame, encoded again, decodes to itself and to nothing more.
fn check_reencodes(frame: &Frame) {
    let bytes = frame.to_vec();
    assert!(bytes.len() <= HEADER_LEN + MAX_BODY, "encoded {frame:?} is longer than a frame may be");
    let mut buf = &bytes[..];
    let again = Frame::decode(&mut buf).unwrap_or_else(|e| panic!("re-encoded {frame:?} fails to decode: {e}"));
    assert_eq!(again.as_ref(), Some(frame), "re-encoded frame decodes differently");
    assert!(buf.is_empty(), "re-encoded {frame:?} leaves bytes behind");
}

/// Decodes after every appended byte, as a reader that grows its buffer would.
fn decode_incrementally(data: &[u8]) -> Outcome {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for &byte in data {
        buf.put_u8(byte);
        loop {
            let before = buf.len();
            match Frame::decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                    break;
                }
                // Later bytes cannot change an error about bytes already there.
                Err(err) => return Outcome { frames, end: Some(End::Error(err)) },
            }
        }
    }
    Outcome { frames, end: Some(End::NeedMore(buf.len())) }
}

/// Polls a future once; the readers here are byte slices, which never wait.
fn poll_ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a read from a byte slice is pending"),
    }
}

/// The stream reader agrees with the decoder about the first frame.
fn check_read_frame(data: &[u8], whole: &Outcome) {
    let mut reader = data;
    let read = poll_ready(read_frame(&mut reader));
    match (read, whole.frames.first(), &whole.end) {
        (Ok(frame), Some(first), _) => assert_eq!(&frame, first, "read_frame and decode disagree"),
        (Err(FrameError::Decode(err)), None, Some(End::Error(want))) => assert_eq!(&err, want, "different errors"),
        (Err(FrameError::Io(err)), None, Some(End::NeedMore(_))) => {
            assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "short input: {err}")
        }
        (read, first, end) => panic!("read_frame gave {read:?}, decode gave {first:?} then {end:?}"),
    }
}

/// The frame decoder on arbitrary bytes: whole, as two chained chunks split at every index,
/// and appended byte by byte, the same frames and the same end come out.
///
/// For a split at `i`, decoding starts at the frame that holds byte `i` (or at the bytes left
/// after the last whole frame): the frames before it lie wholly in the first chunk, and after
/// decoding them a chain of slices is in exactly the state of a chain that starts there. Two
/// frames are decoded from it: the one split in two and the next, read once the first chunk is
/// used up. This keeps each input linear in its length instead of quadratic.
pub fn frame(data: &[u8]) {
    let whole = decode_all(&mut &data[..], data, usize::MAX, true);
    let mut starts = vec![0];
    for _ in &whole.frames {
        let at = *starts.last().expect("starts at 0");
        starts.push(at + HEADER_LEN + declared_len(&data[at..]).expect("a decoded frame has a header"));
    }
    let mut k = 0;
    for split in 0..=data.len() {
        while k + 1 < starts.len() && starts[k + 1] <= split {
            k += 1;
        }
        let (a, b) = (&data[starts[k]..split], &data[split..]);
        let chained = decode_all(&mut a.chain(b), data, 2, false);
        let want = &whole.frames[k..whole.frames.len().min(k + 2)];
        assert_eq!(chained.frames, want, "split at {split} decodes other frames");
        if chained.end.is_some() || want.len() < 2 {
            assert_eq!(chained.end, whole.end, "split at {split} ends differently");
        }
    }
    assert_eq!(decode_incrementally(data), whole, "byte-by-byte decode differs");
    check_read_frame(data, &whole);
}

/// `data` as the body of a frame of `kind`, cut to the largest body allowed.
fn framed(kind: Kind, data: &[u8]) -> Vec<u8> {
    let body = &data[..data.len().min(MAX_BODY)];
    let mut out = vec![kind as u8];
    out.put_u16(body.len() as u16);
    out.extend_from_slice(body);
    out
}

/// The hello both ways: arbitrary bytes as a hello body decode to a hello that re-encodes to
/// the same body (bar the unused network bits), or to an error; and a hello built from
/// arbitrary fields (a token of any length) encodes to a frame that decodes to it, the token
/// cut to [`MAX_TOKEN`].
pub fn hello(data: &[u8]) {
    let bytes = framed(Kind::Hello, data);
    match Frame::decode(&mut &bytes[..]) {
        Ok(Some(Frame::Hello(h))) => {
            assert!(h.token.0.len() <= MAX_TOKEN);
            let mut want = bytes.clone();
            want[HEADER_LEN + 18] &= 0b11;
            assert_eq!(Frame::Hello(h).to_vec(), want, "hello does not re-encode to its body");
        }
        Ok(other) => panic!("a whole hello frame decoded to {other:?}"),
        Err(DecodeError::Malformed(Kind::Hello, _)) => {}
        Err(err) => panic!("unexpected error for a hello body: {err}"),
    }
    if data.len() < 20 {
        return;
    }
    let hello = Hello {
        version: data[0],
        role: if data[1] & 1 == 0 { Role::Agent } else { Role::Access },
        tunnel: Uuid::from_bytes(data[2..18].try_into().expect("16 bytes")),
        networks: [Network::Tcp, Network::Udp]
            .into_iter()
            .enumerate()
            .filter(|(i, _)| data[18] & (1 << i) != 0)
            .fold(Networks::NONE, |n, (_, net)| n.with(net)),
        weight: data[19],
        token: Token(Bytes::copy_from_slice(&data[20..])),
        hostname: String::new(),
    };
    let encoded = Frame::Hello(hello.clone()).to_vec();
    let decoded = Frame::decode(&mut &encoded[..]).expect("an encoded hello decodes");
    let cut = Hello { token: Token(hello.token.0.slice(..hello.token.0.len().min(MAX_TOKEN))), ..hello };
    assert_eq!(decoded, Some(Frame::Hello(cut)), "encoded hello decodes differently");
}

/// The stream header both ways: arbitrary bytes as a header body decode to a header that
/// re-encodes to the same body, or to an error; and a header built from arbitrary fields (a
/// hostname of any length, any address) encodes to a frame that decodes to it, the hostname
/// cut to [`MAX_HOSTNAME`] bytes on a character boundary.
pub fn stream_header(data: &[u8]) {
    let bytes = framed(Kind::StreamHeader, data);
    match Frame::decode(&mut &bytes[..]) {
        Ok(Some(Frame::StreamHeader(h))) => {
            assert!(h.hostname.len() <= MAX_HOSTNAME);
            assert_eq!(Frame::StreamHeader(h).to_vec(), bytes, "stream header does not re-encode to its body");
        }
        Ok(other) => panic!("a whole stream header frame decoded to {other:?}"),
        Err(DecodeError::Malformed(Kind::StreamHeader, _)) => {}
        Err(err) => panic!("unexpected error for a stream header body: {err}"),
    }
    let Some((&first, rest)) = data.split_first() else { return };
    let network = if first & 1 == 0 { Network::Tcp } else { Network::Udp };
    let (addr, name) = rest.split_at(rest.len().min(18));
    let visitor = match (first >> 1) % 3 {
        0 => None,
        1 if addr.len() >= 6 => {
            let ip = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([addr[4], addr[5]])))
        }
        2 if addr.len() >= 18 => {
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&addr[..16]).expect("16 bytes"));
            Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be_bytes([addr[16], addr[17]])))
        }
        _ => None,
    };
    let hostname = String::from_utf8_lossy(name).into_owned();
    let header = StreamHeader { network, hostname, visitor };
    let encoded = Frame::StreamHeader(header.clone()).to_vec();
    let decoded = match Frame::decode(&mut &encoded[..]) {
        Ok(Some(Frame::StreamHeader(h))) => h,
        other => panic!("encoded {header:?} decodes to {other:?}"),
    };
    if header.hostname.len() <= MAX_HOSTNAME {
        assert_eq!(decoded.hostname, header.hostname);
    } else {
        // Cut at the last character boundary at or before the limit: at most 3 bytes before it.
        assert!(header.hostname.starts_with(&decoded.hostname), "the hostname was not cut at its end");
        assert!((MAX_HOSTNAME - 3..=MAX_HOSTNAME).contains(&decoded.hostname.len()), "hostname cut too short");
    }
    assert_eq!((decoded.network, decoded.visitor), (header.network, header.visitor));
}
