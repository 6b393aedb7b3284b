//! UDP datagrams inside a stream: each datagram is `len: u16 (big endian) | payload[len]`.
//!
//! A UDP flow (one visitor address) is one stream; the stream keeps datagram boundaries, so a
//! datagram of up to 65535 bytes arrives whole, with no 1500-byte clipping. A zero-length
//! datagram is valid and travels as `00 00`.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// When a UDP flow last moved a datagram, in either direction, to end flows left idle.
#[derive(Debug)]
pub struct Activity {
    start: tokio::time::Instant,
    /// Milliseconds after `start` of the last datagram.
    last_ms: std::sync::atomic::AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity { start: tokio::time::Instant::now(), last_ms: std::sync::atomic::AtomicU64::new(0) }
    }
}

impl Activity {
    /// Records a datagram now.
    pub fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `ttl`, checking every `ttl / 2` (so an idle flow
    /// ends between one and one and a half `ttl` after its last datagram).
    pub async fn idle(&self, ttl: std::time::Duration) {
        loop {
            tokio::time::sleep(ttl / 2).await;
            let last = std::time::Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed));
            if self.start.elapsed().saturating_sub(last) >= ttl {
                return;
            }
        }
    }
}

/// Largest datagram payload a stream carries.
pub const MAX_DATAGRAM: usize = 65535;

/// Appends one framed datagram to `out`. Payloads longer than [`MAX_DATAGRAM`] are an error.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let len = u16::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "datagram longer than 65535 bytes"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Writes one datagram (one write call).
pub async fn write<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, payload: &[u8], scratch: &mut Vec<u8>) -> io::Result<()> {
    scratch.clear();
    encode(payload, scratch)?;
    w.write_all(scratch).await
}

/// Reads one datagram into `buf` (which must hold [`MAX_DATAGRAM`] bytes) and returns its
/// length, or `None` at a clean end of stream between datagrams.
pub async fn read<R: AsyncRead + Unpin + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<Option<usize>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut len[1..]).await?;
    let len = u16::from_be_bytes(len) as usize;
    if len > buf.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "datagram larger than the read buffer"));
    }
    r.read_exact(&mut buf[..len]).await?;
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_keeps_boundaries() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let mut scratch = Vec::new();
        let sizes = [0usize, 1, 1500, 8000, MAX_DATAGRAM];
        for &n in &sizes {
            write(&mut a, &vec![n as u8; n], &mut scratch).await.unwrap();
        }
        drop(a);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        for &n in &sizes {
            let got = read(&mut b, &mut buf).await.unwrap().unwrap();
            assert_eq!(got, n);
            assert!(buf[..n].iter().all(|&x| x == n as u8));
        }
        assert_eq!(read(&mut b, &mut buf).await.unwrap(), None);
        assert!(encode(&vec![0; MAX_DATAGRAM + 1], &mut Vec::new()).is_err());
    }

    #[tokio::test]
    async fn truncated_datagram_is_an_error() {
        let mut input: &[u8] = &[0x00, 0x05, 1, 2];
        let mut buf = vec![0u8; MAX_DATAGRAM];
        assert!(read(&mut input, &mut buf).await.is_err());
        let mut input: &[u8] = &[0x00];
        assert!(read(&mut input, &mut buf).await.is_err());
    }
}
