//! HTTP for visitors: the answers given to those that cannot be routed, and what the HTTP
//! paths of the server and the access client share: a request's host and path
//! ([`target`]), IO wrappers ([`io`]) and the headers a proxy removes ([`proxy`]).

pub mod io;
pub mod proxy;
pub mod target;

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;

/// Concurrent requests of one HTTP/2 visitor connection.
pub const MAX_H2_STREAMS: u32 = 100;
/// How often an HTTP/2 visitor is pinged, and how long its answer may take.
pub const H2_PING: Duration = Duration::from_secs(20);

/// The HTTP server for visitors: HTTP/1.1, and HTTP/2 with prior knowledge (told apart by
/// the connection preface), with the limits a visitor controls: the head read within
/// `head_timeout` (which also bounds the idle time between requests), at most `max_head`
/// bytes of it and 100 headers (hyper's cap, the sniffer's too); [`MAX_H2_STREAMS`]
/// streams at once, pinged every [`H2_PING`].
pub fn visitor_server(head_timeout: Duration, max_head: usize) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(head_timeout).max_buf_size(max_head.max(8192));
    // hyper's own cap on the headers of a request is 100, the sniffer's
    // (`tunnel_proto::sniff::MAX_HTTP_HEADERS`); setting it explicitly would only make every
    // parse allocate and fill its header table.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_H2_STREAMS)
        .max_header_list_size(max_head.max(8192) as u32)
        .keep_alive_interval(H2_PING)
        .keep_alive_timeout(H2_PING);
    builder
}

use tunnel_proto::wire::Status;

/// The HTTP status a relay status becomes for a visitor. "No agent" is a 502 (bad gateway),
/// as the visitor cares that the upstream is missing, not why.
pub fn http_status(status: Status) -> (u16, &'static str) {
    match status.0 {
        400 => (400, "Bad Request"),
        401 => (401, "Unauthorized"),
        403 => (403, "Forbidden"),
        404 => (404, "Not Found"),
        408 => (408, "Request Timeout"),
        421 => (421, "Misdirected Request"),
        429 => (429, "Too Many Requests"),
        431 => (431, "Request Header Fields Too Large"),
        503 => (502, "Bad Gateway"),
        504 => (504, "Gateway Timeout"),
        _ => (502, "Bad Gateway"),
    }
}

/// The HTTP status code, reason and one-line plain-text body of an error answer.
pub fn error_body(status: Status, message: &str) -> (u16, &'static str, String) {
    let (code, reason) = http_status(status);
    (code, reason, format!("{code} {reason}: {message}\n"))
}

/// The body type of the responses a proxy of hyper's gives visitors.
pub type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, hyper::Error>;

/// An error answer as a hyper response: `status`, `Connection: close`, and a one-line
/// plain-text body; returns the code and the body's length too (for the access log).
pub fn error_reply(status: Status, message: &str) -> (hyper::Response<Body>, u16, u64) {
    use http_body_util::BodyExt;
    use hyper::header::{CONNECTION, CONTENT_TYPE};
    let (code, _, body) = error_body(status, message);
    let len = body.len() as u64;
    let response = hyper::Response::builder()
        .status(code)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(CONNECTION, "close")
        .header("server", "tunnel")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)).map_err(|never| match never {}).boxed_unsync())
        .expect("a well-formed error response");
    (response, code, len)
}

/// A complete `Connection: close` response with a one-line plain-text body.
pub fn error_response(status: Status, message: &str) -> Vec<u8> {
    let (code, reason, body) = error_body(status, message);
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nServer: tunnel\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_is_well_formed() {
        let r = String::from_utf8(error_response(Status::NOT_FOUND, "no route for host a.example")).unwrap();
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"));
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(body.contains("a.example"));
        assert!(error_response(Status::UNAVAILABLE, "x").starts_with(b"HTTP/1.1 502"));
    }
}
