//! Tokens: which credentials admit a session to a tunnel.
//!
//! A tunnel with tokens of its own accepts those (and the global token); any other tunnel
//! accepts the global token; with no tokens configured at all, everything is admitted and the
//! server says so loudly at start. Comparison is constant-time and every candidate is
//! compared, so the answer takes the same time whichever token matched.

use std::collections::HashMap;

use subtle::ConstantTimeEq;
use tunnel_runtime::Secret;
use uuid::Uuid;

/// The token table.
#[derive(Clone, Default)]
pub struct Auth {
    global: Vec<Vec<u8>>,
    per_tunnel: HashMap<Uuid, Vec<Vec<u8>>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("global", &self.global.len()).field("tunnels", &self.per_tunnel.len()).finish()
    }
}

impl Auth {
    /// Builds the table.
    pub fn new(global: &[Secret], per_tunnel: &HashMap<Uuid, Vec<Secret>>) -> Auth {
        let bytes = |v: &[Secret]| v.iter().map(|t| t.expose().as_bytes().to_vec()).collect::<Vec<_>>();
        Auth { global: bytes(global), per_tunnel: per_tunnel.iter().map(|(k, v)| (*k, bytes(v))).collect() }
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.global.is_empty() || !self.per_tunnel.is_empty()
    }

    /// Whether `token` admits a session to `tunnel`.
    pub fn admits(&self, tunnel: &Uuid, token: &[u8]) -> bool {
        let own = self.per_tunnel.get(tunnel).map(Vec::as_slice).unwrap_or(&[]);
        if own.is_empty() && self.global.is_empty() {
            return true;
        }
        let mut ok = subtle::Choice::from(0u8);
        for candidate in own.iter().chain(self.global.iter()) {
            ok |= candidate.as_slice().ct_eq(token);
        }
        ok.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let mut per = HashMap::new();
        per.insert(a, vec!["old".into(), "new".into()]);
        let auth = Auth::new(&[], &per);
        assert!(auth.admits(&a, b"old") && auth.admits(&a, b"new"));
        assert!(!auth.admits(&a, b"") && !auth.admits(&a, b"other"));
        assert!(auth.admits(&b, b""), "a tunnel without tokens is open when there is no global token");
        let auth = Auth::new(&["g".into()], &per);
        assert!(auth.admits(&a, b"g") && auth.admits(&b, b"g") && !auth.admits(&b, b""));
        assert!(!Auth::default().enabled());
    }
}
