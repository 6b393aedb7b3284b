//! What a reverse proxy does to requests on their way to an origin: origin form, the routed
//! host in `Host`, HTTP/1.1, no hop-by-hop headers; and which upgrades it takes up.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, PROXY_AUTHENTICATE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Whether `req` asks for an upgrade that is passed to the origin (a WebSocket, say): an
/// HTTP/1.1 `Upgrade` other than `h2c`. `Upgrade: h2c` is not taken up (RFC 9113 deprecates
/// it); the request is answered over HTTP/1.1, as the upgrade allows.
pub fn takes_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().get(UPGRADE).is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"h2c"))
}

/// Makes `req` what its origin receives: origin form (the path and query only), `Host` set
/// to the routed `host`, HTTP/1.1 (HTTP/2 visitors included), hop-by-hop headers removed
/// (an upgrade keeps `Connection` and `Upgrade`).
pub fn to_origin<B>(req: &mut Request<B>, host: &HeaderValue, upgrading: bool) {
    // An origin-form target is kept as it is; an absolute one loses its scheme and authority.
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let origin_form = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        *req.uri_mut() = Uri::try_from(origin_form).unwrap_or_else(|_| Uri::from_static("/"));
    }
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers, upgrading);
    headers.insert(HOST, host.clone());
}

/// Hop-by-hop headers, never forwarded (an upgrade keeps `Connection` and `Upgrade`).
/// `Transfer-Encoding` is one: the body goes on as hyper decoded it, framed anew for the next
/// hop, so a lax origin never sees a list such as `identity, chunked` that it could frame
/// differently than the server did.
const HOP_BY_HOP: [HeaderName; 6] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    PROXY_AUTHENTICATE,
];

/// Removes hop-by-hop headers, and those `Connection` names; an upgrade keeps `Connection`
/// and `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrading: bool) {
    // Most messages carry none, or only `Connection: keep-alive`: one pass over the names
    // they have, and nothing allocated unless `Connection` names another header.
    let hop = |name: &HeaderName| HOP_BY_HOP.contains(name) || (!upgrading && (name == CONNECTION || name == UPGRADE));
    if !headers.keys().any(hop) {
        return;
    }
    if !upgrading {
        let mut named = Vec::new();
        for value in headers.get_all(CONNECTION) {
            let Ok(value) = value.to_str() else { continue };
            for token in value.split(',').map(str::trim) {
                if token.is_empty() || token.eq_ignore_ascii_case("close") || token.eq_ignore_ascii_case("keep-alive") {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(name);
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
        headers.remove(UPGRADE);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Pumps bytes between the two sides of an accepted upgrade (the visitor's and the origin's),
/// half-close kept; `hold` (the origin connection's budget, say) lives as long as the pump.
/// Returns the bytes carried from the visitor and to it (as far as they went when the
/// connection failed).
pub async fn pump_upgraded<T>(visitor: OnUpgrade, origin: OnUpgrade, hold: T) -> (u64, u64) {
    let (visitor, origin) = match (visitor.await, origin.await) {
        (Ok(v), Ok(o)) => (v, o),
        _ => return (0, 0),
    };
    let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut visitor = Counting { inner: TokioIo::new(visitor), read: up.clone() };
    let mut origin = Counting { inner: TokioIo::new(origin), read: down.clone() };
    if let Err(err) = tokio::io::copy_bidirectional(&mut visitor, &mut origin).await {
        tracing::debug!(%err, "upgraded connection failed");
    }
    drop(hold);
    (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed))
}

/// An upgraded connection that counts the bytes read from it, so a pump that fails part way
/// still reports what it carried.
struct Counting<T> {
    inner: T,
    read: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counting<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counting<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let all = [
            ("Connection", "keep-alive, X-Secret"),
            ("connection", "Close"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "Expires"),
            ("Upgrade", "foo"),
            ("X-Other", "2"),
        ];
        let mut h = headers(&all);
        strip_hop_by_hop(&mut h, false);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-other"]);
        // An upgrade keeps Connection and Upgrade.
        let mut h = headers(&all);
        strip_hop_by_hop(&mut h, true);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["connection", "upgrade", "x-other", "x-secret"]);
        // A message without any is left as it is.
        let mut h = headers(&[("Content-Length", "3"), ("X-Other", "2")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2);
    }
}
