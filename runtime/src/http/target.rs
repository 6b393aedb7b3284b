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
    /// A path whose meaning an origin might read differently than the server routed it.
    #[error("ambiguous path: {0}")]
    Path(&'static str),
}

/// The path a request is routed by when its host has path rules, and the one its origin
/// then receives: percent-escapes of unreserved characters decoded (`%61` is `a`), repeated
/// slashes merged, `.` and `..` segments removed. An escaped slash or backslash (`%2F`,
/// `%5C`) and a raw backslash are refused: origins disagree on what they mean.
pub fn normalize_path(raw: &str) -> Result<String, TargetError> {
    if raw.contains('\\') {
        return Err(TargetError::Path("backslash in the path"));
    }
    if !raw.is_ascii() {
        return Err(TargetError::Path("a byte outside ASCII"));
    }
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                return Err(TargetError::Path("a bad percent-escape"));
            };
            match byte {
                b'/' | b'\\' => return Err(TargetError::Path("an escaped slash or backslash")),
                b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => decoded.push(b as char),
                b => decoded.push_str(&format!("%{b:02X}")),
            }
            i += 3;
        } else {
            decoded.push(bytes[i] as char);
            i += 1;
        }
    }
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out = String::with_capacity(decoded.len());
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() || (trailing && !segments.is_empty()) {
        out.push('/');
    }
    Ok(out)
}

/// The key a path is compared by when deciding whether a protected rule covers it: the way
/// the loosest common origin reads a path. From a normalised path ([`normalize_path`]), each
/// remaining percent-escape is decoded (`%3B` is `;`, `%20` a space), each segment loses its
/// `;` parameters (Tomcat, Spring, Jetty) and its trailing dots and spaces (IIS, Windows file
/// names), ASCII letters are lower-cased (Express, IIS, case-insensitive file systems), and
/// the dot segments this uncovers are removed again (`/x/..;/admin` is `/admin`). A request
/// is protected by a rule when this key is covered by the rule's key; it is routed by the
/// exact normalised path ("protection matches loosely, publication strictly").
pub fn protection_key(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    let mut segments: Vec<Vec<u8>> = Vec::new();
    for raw in decoded.split(|b| *b == b'/' || *b == b'\\') {
        let mut seg = match raw.iter().position(|b| *b == b';') {
            Some(at) => &raw[..at],
            None => raw,
        };
        if seg != b"." && seg != b".." {
            while let [rest @ .., b'.' | b' '] = seg {
                seg = rest;
            }
        }
        match seg {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s.to_ascii_lowercase()),
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &segments {
        out.push('/');
        out.push_str(&String::from_utf8_lossy(seg));
    }
    if out.is_empty() {
        out.push('/');
    }
    out
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
    fn paths_are_normalised_once_and_ambiguous_ones_refused() {
        assert_eq!(normalize_path("/api/x").unwrap(), "/api/x");
        assert_eq!(normalize_path("/").unwrap(), "/");
        assert_eq!(normalize_path("//admin").unwrap(), "/admin");
        assert_eq!(normalize_path("/public/../admin").unwrap(), "/admin");
        assert_eq!(normalize_path("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(normalize_path("/%61dmin/").unwrap(), "/admin/");
        assert_eq!(normalize_path("/../../x").unwrap(), "/x");
        assert_eq!(normalize_path("/a/./b/.").unwrap(), "/a/b/");
        assert_eq!(normalize_path("/a%20b").unwrap(), "/a%20b");
        assert_eq!(normalize_path("/a%2fb"), Err(TargetError::Path("an escaped slash or backslash")));
        assert_eq!(normalize_path("/a%5Cb"), Err(TargetError::Path("an escaped slash or backslash")));
        assert_eq!(normalize_path("/a\\b"), Err(TargetError::Path("backslash in the path")));
        assert_eq!(normalize_path("/a%zz"), Err(TargetError::Path("a bad percent-escape")));
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

    #[test]
    fn the_protection_key_reads_a_path_as_the_loosest_origin_would() {
        for (path, key) in [
            ("/admin", "/admin"),
            ("/ADMIN", "/admin"),
            ("/Admin/Users", "/admin/users"),
            ("/admin;x", "/admin"),
            ("/admin%3Bx", "/admin"),
            ("/admin%3bjsessionid=1/x", "/admin/x"),
            ("/x/..;/admin", "/admin"),
            ("/x/..%3B/admin", "/admin"),
            ("/admin.", "/admin"),
            ("/admin..", "/admin"),
            ("/admin%20", "/admin"),
            ("/admin%20.%20", "/admin"),
            ("/adminx", "/adminx"),
            ("/", "/"),
            ("/..;", "/"),
            ("/a/%2e%2e;/b", "/b"),
        ] {
            assert_eq!(protection_key(path), key, "{path}");
        }
    }
}
