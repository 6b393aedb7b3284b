//! HTTP for visitors: the answers given to those that cannot be routed, and what the HTTP
//! paths of the server and the access client share: a request's host and path
//! ([`target`]), IO wrappers ([`io`]) and the headers a proxy removes ([`proxy`]).

pub mod io;
pub mod proxy;
pub mod target;

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
