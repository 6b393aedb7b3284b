//! IO wrappers of the HTTP path: a visitor connection that replays its sniffed bytes first
//! ([`Prefixed`], from the protocol crate), and bodies that count their bytes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

pub use tunnel_proto::rewind::Prefixed;

/// A body streamed through unchanged (never buffered) that counts its data bytes.
pub struct Counted {
    inner: Option<Incoming>,
    count: Arc<AtomicU64>,
}

impl Counted {
    /// Counts `inner`'s data bytes into `count`.
    pub fn new(inner: Incoming, count: Arc<AtomicU64>) -> Counted {
        Counted { inner: Some(inner), count }
    }

    /// An empty body (a bodiless request sent again).
    pub fn empty(count: Arc<AtomicU64>) -> Counted {
        Counted { inner: None, count }
    }
}

/// How slowly a request body may arrive: after `grace`, at least `min_rate` bytes a second on
/// average since it began (0: no floor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPace {
    /// Time before the rate counts.
    pub grace: Duration,
    /// Bytes a second, on average since the body began.
    pub min_rate: u64,
}

/// Why a request body did not reach the origin whole.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// The visitor's connection failed.
    #[error(transparent)]
    Visitor(#[from] hyper::Error),
    /// The body fell behind its pace.
    #[error("the request body came slower than {0} bytes a second")]
    TooSlow(u64),
}

/// A request body on its way to the origin: counted, and cut when it falls behind its
/// [`BodyPace`] (the flag given to [`RequestBody::paced`] says so, for a 408).
pub struct RequestBody {
    inner: Counted,
    pace: Option<Pace>,
}

struct Pace {
    rate: u64,
    /// When the body may have arrived with no more bytes than it has.
    start: tokio::time::Instant,
    grace: Duration,
    received: u64,
    timer: Pin<Box<tokio::time::Sleep>>,
    slow: Arc<AtomicBool>,
}

impl Pace {
    fn deadline(&self) -> tokio::time::Instant {
        self.start + self.grace + Duration::from_secs_f64(self.received as f64 / self.rate as f64)
    }
}

impl RequestBody {
    /// `inner` held to `pace`; `slow` is set when it is cut for falling behind.
    pub fn paced(inner: Counted, pace: BodyPace, slow: Arc<AtomicBool>) -> RequestBody {
        if pace.min_rate == 0 || inner.is_end_stream() {
            return RequestBody { inner, pace: None };
        }
        let start = tokio::time::Instant::now();
        let timer = Box::pin(tokio::time::sleep_until(start + pace.grace));
        let pace = Pace { rate: pace.min_rate, start, grace: pace.grace, received: 0, timer, slow };
        RequestBody { inner, pace: Some(pace) }
    }

    /// `inner` with no pace (a bodiless request sent again).
    pub fn unpaced(inner: Counted) -> RequestBody {
        RequestBody { inner, pace: None }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(pace), Some(data)) = (this.pace.as_mut(), frame.data_ref()) {
                    pace.received += data.len() as u64;
                    let deadline = pace.deadline();
                    pace.timer.as_mut().reset(deadline);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => {
                this.pace = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let Some(pace) = this.pace.as_mut() else { return Poll::Pending };
                if pace.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                pace.slow.store(true, Ordering::Relaxed);
                let rate = pace.rate;
                this.pace = None;
                this.inner = Counted::empty(Arc::new(AtomicU64::new(0)));
                Poll::Ready(Some(Err(RequestBodyError::TooSlow(rate))))
            }
        }
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(|b| b.size_hint()).unwrap_or_else(|| SizeHint::with_exact(0))
    }
}
