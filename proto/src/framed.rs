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

/// Why a stream's first frame was not the header it must start with.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// Nothing (or not all of it) came in time; nothing was answered.
    #[error("no stream header within {0:?}")]
    Silent(std::time::Duration),
    /// Another frame came first; answered 400.
    #[error("expected a stream header, got {0:?}")]
    Unexpected(crate::wire::Kind),
    /// The bytes were no frame, or the stream failed; answered 400 when it could be.
    #[error("malformed stream header: {0}")]
    Malformed(#[from] FrameError),
}

/// Reads the header a stream starts with: its first frame, which `pick` accepts (or gives
/// back), within `timeout`. Another frame or a malformed one is answered `400` with the reason
/// before the error is returned; a silent stream gets no answer.
pub async fn read_stream_header<S, T>(
    stream: &mut S,
    timeout: std::time::Duration,
    pick: impl FnOnce(Frame) -> Result<T, Frame>,
) -> Result<T, HeaderError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let err = match tokio::time::timeout(timeout, read_frame(stream)).await {
        Err(_) => return Err(HeaderError::Silent(timeout)),
        Ok(Ok(frame)) => match pick(frame) {
            Ok(header) => return Ok(header),
            Err(other) => HeaderError::Unexpected(other.kind()),
        },
        Ok(Err(err)) => HeaderError::Malformed(err),
    };
    refuse(stream, Reply::new(Status::BAD_REQUEST, err.to_string())).await;
    Err(err)
}

/// Answers a stream with a refusal and closes its write half; a stream that is gone already
/// is not an error here.
pub async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, reply: Reply) {
    let _ = write_frame(w, &Frame::StreamReply(reply)).await;
    let _ = w.shutdown().await;
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
