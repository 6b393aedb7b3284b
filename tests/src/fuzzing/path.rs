//! Request paths: the normaliser that routes and the comparison that protects.

use tunnel_proto::host::HostPattern;
use tunnel_runtime::http::target::{normalize_path, protection_key};
use tunnel_server::ingress::{path_covers, Credential, Ingress, Rule};
use uuid::Uuid;

/// `normalize_path` of any text: a path it accepts is absolute, ASCII, without empty, `.` or
/// `..` segments, and normalises to itself; its protection key is absolute, lower-case, and
/// has no `;` parameters, empty segments, dot segments or segments ending in a dot or a space.
pub fn path_normalize(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let Ok(path) = normalize_path(raw) else { return };
    assert!(path.starts_with('/') && path.is_ascii(), "{raw:?} -> {path:?}");
    let inner = path.trim_end_matches('/');
    assert!(
        inner.is_empty() || inner[1..].split('/').all(|s| !s.is_empty() && s != "." && s != ".."),
        "{raw:?} -> {path:?} keeps an empty or dot segment"
    );
    assert_eq!(normalize_path(&path).as_deref(), Ok(path.as_str()), "{raw:?} -> {path:?} is not a fixed point");
    let key = protection_key(&path);
    assert!(key.starts_with('/'), "{path:?} -> key {key:?}");
    assert!(!key.bytes().any(|b| b.is_ascii_uppercase()), "{path:?} -> key {key:?} keeps upper case");
    if key != "/" {
        for seg in key[1..].split('/') {
            assert!(!seg.is_empty() && seg != "." && seg != "..", "{path:?} -> key {key:?}: segment {seg:?}");
            assert!(!seg.contains(';'), "{path:?} -> key {key:?} keeps a parameter");
            assert!(!seg.ends_with('.') && !seg.ends_with(' '), "{path:?} -> key {key:?}: segment {seg:?}");
        }
    }
}

/// A rule path (the first line) and a request path (the rest) under the protection
/// comparison: a host with a public fallback and a protected rule at that path. Whatever the
/// request, when the path it routes by is covered by the protected rule, or the path a lax
/// origin reads (upper case, parameters, trailing dots, escapes) is, the request is held to
/// the protected rule; and its upper-case spelling is held to it as well.
pub fn path_protection(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some((rule_path, request)) = text.split_once('\n') else { return };
    let valid_rule = rule_path.starts_with('/')
        && !rule_path.contains("//")
        && !rule_path.chars().any(|c| matches!(c, '?' | '#' | '%' | '\\') || c.is_whitespace() || c.is_control())
        && !rule_path.split('/').any(|s| s == "." || s == "..");
    if !valid_rule {
        return;
    }
    let rule_path = match rule_path.trim_end_matches('/') {
        "" => "/",
        p => p,
    };
    let Ok(path) = normalize_path(request) else { return };
    let host = HostPattern::parse("a.example").expect("a host");
    let (public, guarded) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let fallback = Rule::new(host.clone(), public, false);
    let protected = Rule {
        path: Some(rule_path.to_owned()),
        basic_auth: vec![Credential { user: "u".into(), hash: "h".into() }],
        ..Rule::new(host, guarded, false)
    };
    let ingress = Ingress::new(vec![fallback, protected]);
    let held = |p: &str| ingress.lookup_request("a.example", p).is_some_and(|r| r.tunnel == guarded);
    if path_covers(rule_path, &path) {
        assert!(held(&path), "{path:?} routes by {rule_path:?} but is not held to it");
    }
    let (rule_key, key) = (protection_key(rule_path), protection_key(&path));
    if path_covers(&rule_key, &key) {
        assert!(held(&path), "{path:?} reads as {key:?}, under {rule_path:?}, but is not held to it");
        if let Ok(upper) = normalize_path(&request.to_ascii_uppercase()) {
            assert!(held(&upper), "{upper:?} (upper case of {path:?}) is not held to {rule_path:?}");
        }
    }
}
