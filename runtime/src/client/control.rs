//! The client end of a session's control stream: keepalive pings and going-away.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tunnel_proto::channel::{Session, Stream};
use tunnel_proto::framed::{read_frame, write_frame, FrameError};
use tunnel_proto::wire::Frame;

/// How the control stream of a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEnd {
    /// The server sent going-away: open a replacement session now and let this one drain
    /// (the server closes it once its streams are done).
    ServerGoingAway,
    /// We said going-away (shutdown) and the server confirmed: it opens no new streams on
    /// this session; finish the ones in flight, then close it.
    ShutdownAcknowledged,
    /// The session is dead or broken, for the reason given; close it.
    Lost(String),
}

/// Runs the client end of the control stream: a ping every `interval`, the session declared
/// lost when a pong is more than `timeout` late. When `shutdown` fires, says going-away and
/// waits (at most `timeout`) for the server's confirmation. Never closes the session itself.
pub async fn run_control(
    session: &Arc<dyn Session>,
    mut control: Stream,
    interval: Duration,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> ControlEnd {
    let (mut rd, mut wr) = tokio::io::split(&mut control);
    let started = tokio::time::Instant::now();
    // Milliseconds since `started` at the last pong; read by the pinger, written by the reader.
    let last_pong = AtomicU64::new(0);
    let said_goaway = AtomicBool::new(false);
    let reader = async {
        loop {
            match read_frame(&mut rd).await {
                Ok(Frame::Pong(_)) => last_pong.store(started.elapsed().as_millis() as u64, Ordering::Relaxed),
                Ok(Frame::GoAway) if said_goaway.load(Ordering::Relaxed) => return ControlEnd::ShutdownAcknowledged,
                Ok(Frame::GoAway) => return ControlEnd::ServerGoingAway,
                Ok(other) => return ControlEnd::Lost(format!("unexpected {:?} on control stream", other.kind())),
                Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return ControlEnd::Lost("server closed the session".to_owned())
                }
                Err(err) => return ControlEnd::Lost(format!("control stream failed: {err}")),
            }
        }
    };
    let pinger = async {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq: u64 = 0;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            let since_pong = started.elapsed().saturating_sub(Duration::from_millis(last_pong.load(Ordering::Relaxed)));
            if since_pong > interval + timeout {
                return ControlEnd::Lost(format!("no keepalive answer within {timeout:?}"));
            }
            seq += 1;
            if let Err(err) = write_frame(&mut wr, &Frame::Ping(seq)).await {
                return ControlEnd::Lost(format!("control stream failed: {err}"));
            }
        }
        said_goaway.store(true, Ordering::Relaxed);
        if let Err(err) = write_frame(&mut wr, &Frame::GoAway).await {
            return ControlEnd::Lost(format!("control stream failed: {err}"));
        }
        tokio::time::sleep(timeout).await;
        ControlEnd::Lost(format!("no answer to going-away within {timeout:?}"))
    };
    tokio::select! {
        end = reader => end,
        end = pinger => end,
        _ = session.closed() => ControlEnd::Lost("session closed".to_owned()),
    }
}
