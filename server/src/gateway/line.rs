//! Reading a gateway visitor's first line under a byte cap and a deadline.
//!
//! The line ends at `\n` (a `\r` before it is dropped). Whatever came after it in the same
//! reads is kept, to be sent to the target once it is reached.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes read per call while looking for the end of the line.
const CHUNK: usize = 2048;

/// Why no line was read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// No newline within the deadline.
    #[error("no line within {0:?}")]
    Timeout(Duration),
    /// No newline within the byte cap.
    #[error("line longer than {0} bytes")]
    TooLong(usize),
    /// The visitor closed its side before the newline.
    #[error("connection closed before the end of the line")]
    Closed,
    /// The connection failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The line without its ending, and the bytes read after it.
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    /// The line.
    pub line: Vec<u8>,
    /// Bytes that followed the newline.
    pub rest: Vec<u8>,
}

/// Reads one line of at most `max` bytes (ending excluded) within `deadline`.
pub async fn read_line<R: AsyncRead + Unpin>(r: &mut R, max: usize, deadline: Duration) -> Result<Line, LineError> {
    match tokio::time::timeout(deadline, read(r, max)).await {
        Ok(result) => result,
        Err(_) => Err(LineError::Timeout(deadline)),
    }
}

async fn read<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Line, LineError> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; CHUNK];
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Err(LineError::Closed);
        }
        let searched = buf.len();
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf[searched..].iter().position(|&b| b == b'\n') {
            let end = searched + at;
            let rest = buf.split_off(end + 1);
            buf.truncate(end);
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            if buf.len() > max {
                return Err(LineError::TooLong(max));
            }
            return Ok(Line { line: buf, rest });
        }
        // `\r` may still be followed by the newline: allow one byte more.
        if buf.len() > max + 1 {
            return Err(LineError::TooLong(max));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const SECOND: Duration = Duration::from_secs(1);

    async fn line_of(input: &[u8], max: usize) -> Result<Line, LineError> {
        let mut r = input;
        read_line(&mut r, max, SECOND).await
    }

    #[tokio::test]
    async fn lines_and_what_follows() {
        let got = line_of(b"abc\nrest of it", 8).await.unwrap();
        assert_eq!(got, Line { line: b"abc".to_vec(), rest: b"rest of it".to_vec() });
        let got = line_of(b"abc\r\n", 3).await.unwrap();
        assert_eq!(got, Line { line: b"abc".to_vec(), rest: vec![] });
        let got = line_of(b"\n", 3).await.unwrap();
        assert!(got.line.is_empty());
        assert!(matches!(line_of(b"abcd\n", 3).await, Err(LineError::TooLong(3))));
        assert!(matches!(line_of(b"abc", 3).await, Err(LineError::Closed)));
        assert!(matches!(line_of(&[b'x'; 10_000], 100).await, Err(LineError::TooLong(100))));
    }

    #[tokio::test]
    async fn every_split_of_the_input_reads_the_same() {
        let input = b"U2FsdGVkX19KIJ9OQJKT/yHGMrS+5SsBAAjetomptQ0=\r\nhello";
        for cut in 0..input.len() {
            let (mut client, mut server) = tokio::io::duplex(64);
            let (a, b) = input.split_at(cut);
            let (a, b) = (a.to_vec(), b.to_vec());
            let writer = tokio::spawn(async move {
                client.write_all(&a).await.unwrap();
                tokio::task::yield_now().await;
                client.write_all(&b).await.unwrap();
                client
            });
            let got = read_line(&mut server, 64, SECOND).await.unwrap();
            let _client = writer.await.unwrap();
            assert_eq!(got.line, input[..input.len() - 7], "cut at {cut}");
            // What follows may arrive with the line or after it.
            assert!(b"hello".starts_with(&got.rest), "cut at {cut}: {:?}", got.rest);
        }
    }

    #[tokio::test]
    async fn a_slow_line_times_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"U2Fsd").await.unwrap();
        let short = Duration::from_millis(100);
        let got = read_line(&mut server, 64, short).await;
        assert!(matches!(got, Err(LineError::Timeout(d)) if d == short), "{got:?}");
    }
}
