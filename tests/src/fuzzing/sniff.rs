//! The HTTP `Host` and TLS SNI sniffers.
//!
//! Besides never panicking, a sniffer must decide the same way however the visitor's bytes
//! arrive: the server calls it again after every read, so a prefix of an input it accepts must
//! be "need more" (or the same answer), never an error; and what it returns is a canonical
//! hostname.

use tunnel_proto::host;
use tunnel_proto::sniff::{guess, http_host, sniff, tls_sni, Guess, Sniffed};

/// Most prefixes tried per input (the sniffers are re-run from the start on each).
const MAX_PREFIXES: usize = 48;

fn check_canonical(name: &str) {
    assert_eq!(host::canonicalize(name).as_deref(), Ok(name), "sniffed hostname {name:?} is not canonical");
}

/// Prefix lengths worth trying: around every line end (where HTTP heads change state) and
/// spread evenly otherwise, at most [`MAX_PREFIXES`].
fn prefix_lengths(data: &[u8], around: &[u8]) -> Vec<usize> {
    let mut lens: Vec<usize> = Vec::new();
    for (i, b) in data.iter().enumerate() {
        if around.contains(b) {
            lens.extend([i, i + 1]);
        }
    }
    let step = (data.len() / 16).max(1);
    lens.extend((0..data.len()).step_by(step));
    lens.push(data.len().saturating_sub(1));
    lens.sort_unstable();
    lens.dedup();
    lens.retain(|&l| l < data.len());
    if lens.len() > MAX_PREFIXES {
        let keep = lens.len().div_ceil(MAX_PREFIXES);
        lens = lens.into_iter().step_by(keep).collect();
    }
    lens
}

/// The HTTP sniffer on arbitrary bytes.
pub fn http_sniff(data: &[u8]) {
    let found = http_host(data);
    if let Ok(Some(name)) = &found {
        check_canonical(name);
        for len in prefix_lengths(data, b"\r\n") {
            match http_host(&data[..len]) {
                Ok(None) => {}
                Ok(Some(early)) => assert_eq!(&early, name, "prefix of {len} bytes names another host"),
                Err(err) => panic!("prefix of {len} bytes is an error ({err}), the whole names {name:?}"),
            }
        }
        // Bytes after a complete head are the body: they change nothing.
        let mut more = data.to_vec();
        more.extend_from_slice(b"\x00garbage\r\n\r\n");
        assert_eq!(http_host(&more).ok().flatten().as_ref(), Some(name), "bytes after the head changed the host");
    }
    if guess(data) == Some(Guess::Http) {
        let via_sniff = sniff(data);
        match (&found, &via_sniff) {
            (Ok(a), Ok(b)) => assert_eq!(a.as_deref(), b.as_ref().map(|s| s.hostname().expect("http has a host"))),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("http_host gave {a:?}, sniff gave {b:?}"),
        }
    }
}

/// Re-frames a ClientHello that sits in one handshake record into records of `size` bytes.
fn refragment(data: &[u8], size: usize) -> Option<Vec<u8>> {
    let (head, body) = data.split_at_checked(5)?;
    let len = u16::from_be_bytes([head[3], head[4]]) as usize;
    if head[0] != 0x16 || body.len() != len || len == 0 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 2);
    for piece in body.chunks(size) {
        out.extend_from_slice(&head[..3]);
        out.extend_from_slice(&(piece.len() as u16).to_be_bytes());
        out.extend_from_slice(piece);
    }
    Some(out)
}

/// The TLS sniffer on arbitrary bytes.
pub fn tls_sniff(data: &[u8]) {
    let found = tls_sni(data);
    if let Ok(Some(sni)) = &found {
        if let Some(name) = sni {
            check_canonical(name);
        }
        for len in prefix_lengths(data, &[0x16]) {
            match tls_sni(&data[..len]) {
                Ok(None) => {}
                Ok(Some(early)) => assert_eq!(&early, sni, "prefix of {len} bytes names another host"),
                Err(err) => panic!("prefix of {len} bytes is an error ({err}), the whole gives {sni:?}"),
            }
        }
        let size = 1 + data.get(5).copied().unwrap_or(0) as usize % 64;
        if let Some(split) = refragment(data, size) {
            let again = tls_sni(&split).ok().flatten();
            assert_eq!(again.as_ref(), Some(sni), "records of {size} bytes give another answer");
        }
    }
    if guess(data) == Some(Guess::Tls) {
        match (&found, sniff(data)) {
            (Ok(a), Ok(b)) => assert_eq!(a.clone().map(Sniffed::Tls), b),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("tls_sni gave {a:?}, sniff gave {b:?}"),
        }
    }
}
