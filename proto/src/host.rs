//! Hostnames and hostname patterns.
//!
//! A hostname is canonicalised once, where it enters (sniffer, CLI, stream header): lowercase
//! ASCII, no port, no trailing dot. Patterns follow the ingress rules of the spec:
//! `example.org` matches exactly; `.example.com` matches `example.com` and every subdomain;
//! `*.example.com` matches every subdomain but not `example.com`.

use std::fmt;

/// Why a hostname or pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Empty after canonicalisation.
    #[error("empty hostname")]
    Empty,
    /// Longer than 253 bytes.
    #[error("hostname longer than 253 bytes")]
    TooLong,
    /// A character that cannot appear in a hostname.
    #[error("invalid character {0:?} in hostname")]
    BadChar(char),
}

/// Canonical form of a hostname: lowercase, port and trailing dot removed, IPv6 brackets kept.
pub fn canonicalize(raw: &str) -> Result<String, HostError> {
    let raw = raw.trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // [v6]:port or [v6]
        match rest.find(']') {
            Some(end) => &raw[..end + 2],
            None => raw,
        }
    } else if raw.matches(':').count() == 1 {
        raw.split(':').next().unwrap_or("")
    } else {
        raw
    };
    // All trailing dots, so the result never ends in one (stripping one left `a.` of `a..`).
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    if host.len() > 253 {
        return Err(HostError::TooLong);
    }
    if let Some(c) =
        host.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '[' | ']' | '*')))
    {
        return Err(HostError::BadChar(c));
    }
    Ok(host.to_ascii_lowercase())
}

/// A hostname pattern of an ingress rule or an agent target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `example.org`: this name only.
    Exact(String),
    /// `.example.com`: the name and all its subdomains (stored without the dot).
    Domain(String),
    /// `*.example.com`: all subdomains, not the name (stored without `*.`).
    Subdomains(String),
}

impl HostPattern {
    /// Parses and canonicalises a pattern.
    pub fn parse(raw: &str) -> Result<HostPattern, HostError> {
        let raw = raw.trim();
        if let Some(rest) = raw.strip_prefix("*.") {
            Ok(HostPattern::Subdomains(canonicalize(rest)?))
        } else if let Some(rest) = raw.strip_prefix('.') {
            Ok(HostPattern::Domain(canonicalize(rest)?))
        } else {
            let host = canonicalize(raw)?;
            if host.contains('*') {
                return Err(HostError::BadChar('*'));
            }
            Ok(HostPattern::Exact(host))
        }
    }

    /// How well the pattern matches a canonical hostname: `None` for no match, otherwise a
    /// rank where higher is better (exact beats any wildcard; a longer suffix beats a shorter).
    pub fn rank(&self, host: &str) -> Option<usize> {
        match self {
            HostPattern::Exact(h) => (h == host).then_some(usize::MAX),
            HostPattern::Domain(d) => (host == d || is_subdomain(host, d)).then_some(d.len()),
            HostPattern::Subdomains(d) => is_subdomain(host, d).then_some(d.len()),
        }
    }

    /// Whether the pattern matches a canonical hostname.
    pub fn matches(&self, host: &str) -> bool {
        self.rank(host).is_some()
    }
}

fn is_subdomain(host: &str, domain: &str) -> bool {
    host.len() > domain.len() + 1 && host.ends_with(domain) && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => write!(f, "{h}"),
            HostPattern::Domain(d) => write!(f, ".{d}"),
            HostPattern::Subdomains(d) => write!(f, "*.{d}"),
        }
    }
}

/// Picks the best-matching item for `host` among `(pattern, item)` pairs: the highest rank,
/// the first one among equals.
pub fn best_match<'a, T>(items: impl IntoIterator<Item = (&'a HostPattern, T)>, host: &str) -> Option<T> {
    let mut best: Option<(usize, T)> = None;
    for (pattern, item) in items {
        if let Some(rank) = pattern.rank(host) {
            if best.as_ref().is_none_or(|(r, _)| rank > *r) {
                best = Some((rank, item));
            }
        }
    }
    best.map(|(_, item)| item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert_eq!(canonicalize("Example.COM").unwrap(), "example.com");
        assert_eq!(canonicalize("example.com:8080").unwrap(), "example.com");
        assert_eq!(canonicalize("example.com.").unwrap(), "example.com");
        assert_eq!(canonicalize("[::1]:80").unwrap(), "[::1]");
        assert_eq!(canonicalize(""), Err(HostError::Empty));
        assert_eq!(canonicalize("a b"), Err(HostError::BadChar(' ')));
        assert!(canonicalize(&"a".repeat(254)).is_err());
    }

    #[test]
    fn patterns() {
        let dot = HostPattern::parse(".example.com").unwrap();
        assert!(dot.matches("example.com"));
        assert!(dot.matches("abc.example.com"));
        assert!(!dot.matches("badexample.com"));
        let star = HostPattern::parse("*.example.com").unwrap();
        assert!(!star.matches("example.com"));
        assert!(star.matches("a.b.example.com"));
        let exact = HostPattern::parse("Example.ORG.").unwrap();
        assert!(exact.matches("example.org"));
        assert!(!exact.matches("a.example.org"));
        assert!(HostPattern::parse("a*.b").is_err());
    }

    #[test]
    fn exact_beats_wildcard_and_longest_suffix_wins() {
        let rules = [
            (HostPattern::parse(".example.com").unwrap(), 1),
            (HostPattern::parse("*.api.example.com").unwrap(), 2),
            (HostPattern::parse("x.api.example.com").unwrap(), 3),
        ];
        let pick = |h: &str| best_match(rules.iter().map(|(p, v)| (p, *v)), h);
        assert_eq!(pick("x.api.example.com"), Some(3));
        assert_eq!(pick("y.api.example.com"), Some(2));
        assert_eq!(pick("example.com"), Some(1));
        assert_eq!(pick("example.net"), None);
    }
}
