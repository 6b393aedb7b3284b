//! Known pseudo-random payloads for byte-exact transfer tests: a writer that hashes what it
//! sends, and an origin that serves such a payload.

use std::io::Write;
use std::net::SocketAddr;
use std::thread;

use sha2::{Digest, Sha256};

/// Bytes written per call.
const CHUNK: usize = 64 << 10;

/// Deterministic pseudo-random bytes (xorshift64*), cheap enough for 64 MiB in a debug build.
struct Prng(u64);

impl Prng {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Writes `len` pseudo-random bytes from `seed` to `w`; returns their sha256.
pub fn write_random(w: &mut impl Write, seed: u64, len: usize) -> std::io::Result<String> {
    let mut rng = Prng(seed);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK);
        rng.fill(&mut buf[..n]);
        hash.update(&buf[..n]);
        w.write_all(&buf[..n])?;
        left -= n;
    }
    Ok(hex::encode(hash.finalize()))
}

/// The sha256 of what [`write_random`] writes.
pub fn random_sha256(seed: u64, len: usize) -> String {
    write_random(&mut std::io::sink(), seed, len).unwrap()
}

/// An origin on `bind` (e.g. `127.0.0.1:0`) that sends `len` pseudo-random bytes from `seed`
/// to every client, then closes.
pub fn source_on(bind: &str, seed: u64, len: usize) -> SocketAddr {
    let l = std::net::TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                let _ = write_random(&mut conn, seed, len);
            });
        }
    });
    addr
}

/// The sha256 of `data`, in hex (as [`write_random`] returns it).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
