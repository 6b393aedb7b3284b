//! What a reverse proxy does to requests on their way to an origin: origin form, the routed
//! host in `Host`, HTTP/1.1, no hop-by-hop headers; and which upgrades it takes up.

use hyper::header::{HeaderMap, HeaderValue, CONNECTION, HOST, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Uri, Version};
use hyper_util::rt::TokioIo;

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
const HOP_BY_HOP: [&str; 5] = ["keep-alive", "proxy-connection", "te", "trailer", "proxy-authenticate"];

/// Removes hop-by-hop headers, and those `Connection` names; an upgrade keeps `Connection`
/// and `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrading: bool) {
    // Most messages carry none: one pass over the names they have instead of a lookup of each
    // name that could be there.
    let hop = |name: &hyper::header::HeaderName| {
        HOP_BY_HOP.contains(&name.as_str()) || (!upgrading && (name == CONNECTION || name == UPGRADE))
    };
    if !headers.keys().any(hop) {
        return;
    }
    if !upgrading {
        let named: Vec<String> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
            .filter(|s| !s.is_empty())
            .collect();
        for name in named {
            headers.remove(name.as_str());
        }
        headers.remove(CONNECTION);
        headers.remove(UPGRADE);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Pumps bytes between the two sides of an accepted upgrade (the visitor's and the origin's),
/// half-close kept; `hold` (the origin connection's budget, say) lives as long as the pump.
pub async fn pump_upgraded<T>(visitor: OnUpgrade, origin: OnUpgrade, hold: T) {
    let (visitor, origin) = match (visitor.await, origin.await) {
        (Ok(v), Ok(o)) => (v, o),
        _ => return,
    };
    let (mut visitor, mut origin) = (TokioIo::new(visitor), TokioIo::new(origin));
    if let Err(err) = tokio::io::copy_bidirectional(&mut visitor, &mut origin).await {
        tracing::debug!(%err, "upgraded connection failed");
    }
    drop(hold);
}
