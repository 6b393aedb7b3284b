//! The host a request is for: pure, decided once per request.
//!
//! The authority of an absolute-form target (any scheme case) or else the `Host` header,
//! canonicalised once; that same value is what routing sees and what the origin receives.
//! Ambiguous requests are refused: two `Host` headers, userinfo (`@`) in either place, a
//! `Host` that disagrees with the target's authority, or no host at all.

use hyper::header::HOST;
use hyper::{Method, Request};
use tunnel_proto::host;

/// Why a request names no single host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Neither an absolute-form target nor a `Host` header.
    #[error("no host in the request")]
    Missing,
    /// More than one `Host` header.
    #[error("more than one Host header")]
    DuplicateHost,
    /// `user@host` in the target or the `Host` header.
    #[error("userinfo in the request's host")]
    Userinfo,
    /// The `Host` header names another host than the absolute-form target.
    #[error("Host header disagrees with the request target")]
    Disagree,
    /// Not a hostname.
    #[error("bad host: {0}")]
    Bad(String),
    /// `CONNECT` is not served by a reverse tunnel.
    #[error("CONNECT is not served here")]
    Connect,
}

/// The canonical host of `req`; see the module documentation.
pub fn request_host<B>(req: &Request<B>) -> Result<String, TargetError> {
    if req.method() == Method::CONNECT {
        return Err(TargetError::Connect);
    }
    let mut headers = req.headers().get_all(HOST).iter();
    let header = headers.next();
    if headers.next().is_some() {
        return Err(TargetError::DuplicateHost);
    }
    let header = match header {
        Some(v) => Some(v.to_str().map_err(|_| TargetError::Bad("Host header is not ASCII".into()))?),
        None => None,
    };
    let authority = req.uri().authority().map(|a| a.as_str());
    let canonical = |raw: &str| {
        if raw.contains('@') {
            return Err(TargetError::Userinfo);
        }
        host::canonicalize(raw).map_err(|e| TargetError::Bad(e.to_string()))
    };
    match (authority, header) {
        (Some(a), Some(h)) => {
            let (a, h) = (canonical(a)?, canonical(h)?);
            if a != h {
                return Err(TargetError::Disagree);
            }
            Ok(a)
        }
        (Some(one), None) | (None, Some(one)) => canonical(one),
        (None, None) => Err(TargetError::Missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().uri(target);
        for h in hosts {
            b = b.header(HOST, *h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn origin_form_takes_the_host_header_canonicalised() {
        assert_eq!(request_host(&req("/x", &["WWW.Example.COM.:8080"])), Ok("www.example.com".into()));
    }

    #[test]
    fn absolute_form_takes_its_authority_in_any_scheme_case() {
        assert_eq!(request_host(&req("HTTP://A.example/x", &[])), Ok("a.example".into()));
        assert_eq!(request_host(&req("http://a.example/x", &["a.example:80"])), Ok("a.example".into()));
    }

    #[test]
    fn ambiguous_requests_are_refused() {
        assert_eq!(request_host(&req("http://internal.corp/", &["www.public"])), Err(TargetError::Disagree));
        assert_eq!(request_host(&req("/", &["internal.corp@www.public"])), Err(TargetError::Userinfo));
        assert_eq!(request_host(&req("http://internal.corp@www.public/", &[])), Err(TargetError::Userinfo));
        assert_eq!(request_host(&req("/", &["a.example", "b.example"])), Err(TargetError::DuplicateHost));
        assert_eq!(request_host(&req("/", &[])), Err(TargetError::Missing));
        assert!(matches!(request_host(&req("/", &["a b"])), Err(TargetError::Bad(_))));
    }
}
