//! Frames on a stream: reading and writing one [`Frame`] at a time, and waiting for a stream's
//! final reply. The layouts themselves are in [`crate::wire`], which does no IO; this is the
//! only place that reads frames from a socket or stream.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wire::{decode_body, decode_head, DecodeError, Frame, Reply, Status, HEADER_LEN};

/// Errors reading or writing frames on a stream.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The bytes were not a valid frame.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The stream failed or ended early.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads exactly one frame from `r`, never reading past its end (stream data may follow).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Frame, FrameError> {
    let mut head = [0u8; HEADER_LEN];
    r.read_exact(&mut head).await?;
    let (kind, len) = decode_head(head)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(decode_body(kind, Bytes::from(body))?)
}

/// Writes one frame (a single write call, so it leaves in one mux frame).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> std::io::Result<()> {
    w.write_all(&frame.to_vec()).await
}

/// Why no final stream reply was read.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// Not even a provisional reply within the acknowledgement timeout: the peer is presumed
    /// dead (a half-open session), so the stream may be retried elsewhere.
    #[error("no acknowledgement within {0:?}")]
    Silent(std::time::Duration),
    /// Acknowledged, but no final reply in time.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The stream failed or carried something else.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Reads a stream's final reply, skipping provisional (100) ones: the first reply of any kind
/// must come within `ack_timeout`, the final one within `reply_timeout` of the start.
pub async fn read_reply<R: AsyncRead + Unpin>(
    r: &mut R,
    ack_timeout: std::time::Duration,
    reply_timeout: std::time::Duration,
) -> Result<Reply, ReplyError> {
    let deadline = tokio::time::Instant::now() + reply_timeout;
    let mut first = true;
    loop {
        let limit = if first {
            ack_timeout.min(reply_timeout)
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        let frame = match tokio::time::timeout(limit, read_frame(r)).await {
            Ok(frame) => frame?,
            Err(_) if first => return Err(ReplyError::Silent(limit)),
            Err(_) => return Err(ReplyError::Timeout(reply_timeout)),
        };
        match frame {
            Frame::StreamReply(reply) if reply.status == Status::CONTINUE => first = false,
            Frame::StreamReply(reply) => return Ok(reply),
            other => return Err(FrameError::Decode(DecodeError::Unexpected(other.kind())).into()),
        }
    }
}

/// How long the far side of a new stream has to acknowledge it, and to answer it.
#[derive(Debug, Clone, Copy)]
pub struct ReplyTimeouts {
    /// First (provisional or final) reply: a live peer sends it at once.
    pub ack: std::time::Duration,
    /// Final reply: the agent's dial to its target, for instance.
    pub reply: std::time::Duration,
}

/// Opens a stream on `session`, writes `message` (a stream header and any bytes pipelined
/// behind it) and reads the final reply. Returns the stream with the reply, whatever its
/// status; the caller decides what a refusal means.
pub async fn exchange(
    session: &dyn crate::channel::Session,
    message: &[u8],
    timeouts: ReplyTimeouts,
) -> Result<(crate::channel::Stream, Reply), ReplyError> {
    let io = |e: std::io::Error| ReplyError::Frame(e.into());
    let mut stream = session.open_stream().await.map_err(io)?;
    stream.write_all(message).await.map_err(io)?;
    let reply = read_reply(&mut stream, timeouts.ack, timeouts.reply).await?;
    Ok((stream, reply))
}
