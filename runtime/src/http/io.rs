//! IO wrappers of the HTTP path: a visitor connection that replays its sniffed bytes first
//! ([`Prefixed`], from the protocol crate), and bodies that count their bytes.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

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
