//! Tokens: which credentials admit a session to a tunnel.
//!
//! A tunnel with tokens of its own accepts those (and the global token); any other tunnel
//! accepts the global token. Once any token is configured, a tunnel with no token of its own
//! and no global token admits nobody (it is not left open by omission); with no tokens
//! configured at all, everything is admitted and the server says so loudly at start. Comparison is constant-time and every candidate is
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
    /// Tunnels of the store: the digests of their secrets, and when a rotated one stops
    /// admitting. A stored tunnel always asks for a secret, whatever the file says.
    stored: HashMap<Uuid, Vec<StoredSecret>>,
}

/// A stored secret's digest, and when it stops admitting (seconds since the epoch), if ever.
pub type StoredSecret = ([u8; 32], Option<u64>);

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("global", &self.global.len()).field("tunnels", &self.per_tunnel.len()).finish()
    }
}

impl Auth {
    /// Builds the table.
    pub fn new(global: &[Secret], per_tunnel: &HashMap<Uuid, Vec<Secret>>) -> Auth {
        let bytes = |v: &[Secret]| v.iter().map(|t| t.expose().as_bytes().to_vec()).collect::<Vec<_>>();
        Auth {
            global: bytes(global),
            per_tunnel: per_tunnel.iter().map(|(k, v)| (*k, bytes(v))).collect(),
            stored: HashMap::new(),
        }
    }

    /// Adds a stored tunnel and the digests of its secrets.
    pub fn add_stored(&mut self, tunnel: Uuid, secrets: Vec<StoredSecret>) {
        self.stored.insert(tunnel, secrets);
    }

    /// The stored tunnels.
    pub fn stored_tunnels(&self) -> impl Iterator<Item = &Uuid> {
        self.stored.keys()
    }

    /// Whether `tunnel` is a stored one.
    pub fn is_stored(&self, tunnel: &Uuid) -> bool {
        self.stored.contains_key(tunnel)
    }

    /// Whether a stored secret stopped admitting after `since` and by `now` (seconds since
    /// the epoch).
    pub fn expired_between(&self, since: u64, now: u64) -> bool {
        self.stored.values().flatten().filter_map(|(_, e)| *e).any(|e| e > since && e <= now)
    }

    /// A digest of every token (sorted), for replicas to compare configurations without
    /// showing them.
    pub fn fingerprint(&self) -> Vec<u8> {
        use sha2::Digest;
        let mut all: Vec<String> =
            self.global.iter().map(|t| format!("*={}", hex::encode(sha2::Sha256::digest(t)))).collect();
        for (tunnel, tokens) in &self.per_tunnel {
            all.extend(tokens.iter().map(|t| format!("{tunnel}={}", hex::encode(sha2::Sha256::digest(t)))));
        }
        all.sort();
        sha2::Sha256::digest(all.join(";").as_bytes()).to_vec()
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.global.is_empty() || !self.per_tunnel.is_empty()
    }

    /// Whether any token admits sessions to `tunnel`: false when tokens are configured, but
    /// none for this tunnel and no global one.
    pub fn reachable(&self, tunnel: &Uuid) -> bool {
        !self.enabled() || !self.global.is_empty() || self.per_tunnel.get(tunnel).is_some_and(|t| !t.is_empty())
    }

    /// Whether `token` admits a session to `tunnel`.
    pub fn admits(&self, tunnel: &Uuid, token: &[u8]) -> bool {
        if let Some(secrets) = self.stored.get(tunnel) {
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let digest = crate::store::digest(token);
            let mut ok = subtle::Choice::from(0u8);
            for (candidate, expires) in secrets {
                let live = subtle::Choice::from(u8::from(expires.is_none_or(|e| e > now)));
                ok |= candidate.as_slice().ct_eq(&digest) & live;
            }
            for candidate in &self.global {
                ok |= candidate.as_slice().ct_eq(token);
            }
            return ok.into();
        }
        if !self.enabled() {
            return true;
        }
        let own = self.per_tunnel.get(tunnel).map(Vec::as_slice).unwrap_or(&[]);
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
        assert!(!auth.admits(&b, b""), "once tokens are configured, a tunnel without one is closed");
        assert!(!auth.admits(&b, b"old") && !auth.reachable(&b) && auth.reachable(&a));
        assert!(Auth::default().admits(&b, b"") && Auth::default().reachable(&b), "no tokens at all: open");
        let auth = Auth::new(&["g".into()], &per);
        assert!(auth.admits(&a, b"g") && auth.admits(&b, b"g") && !auth.admits(&b, b""));
        assert!(!Auth::default().enabled());
    }
}
