//! Basic authentication on ingress rules.
//!
//! A rule's users are `user:PHC` entries, the hash an argon2 PHC string. The credentials of a
//! request are read from the same parsed request that was routed (its one `Authorization`
//! header), never from a second source. Verifying an argon2 hash costs tens of milliseconds of
//! one core by design, so:
//! - a verified pair (the header's bytes and the hash they matched) is remembered for
//!   [`REMEMBER`], so a keep-alive client pays once, not per request; at most
//!   [`MAX_REMEMBERED`] pairs are kept, keyed by a SHA-256 of the two, never the password;
//! - at most [`MAX_VERIFYING`] verifications run at once, on the blocking pool; a request
//!   that finds no slot within [`WAIT`] gets 503, so a flood of guesses costs the server one
//!   core at most and never delays requests that carry remembered credentials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use headers::authorization::Basic;
use headers::{Authorization, Header};
use hyper::header::{HeaderMap, AUTHORIZATION};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::ingress::Credential;

/// How long a verified pair is remembered.
pub const REMEMBER: Duration = Duration::from_secs(300);
/// Verified pairs remembered at most.
pub const MAX_REMEMBERED: usize = 4096;
/// Verifications at once.
pub const MAX_VERIFYING: usize = 1;
/// How long a request waits for a verification slot.
pub const WAIT: Duration = Duration::from_secs(2);

/// `user:PHC` as written in a rule's `basicAuth`.
pub fn parse_credential(entry: &str) -> Result<Credential, String> {
    let Some((user, hash)) = entry.split_once(':') else {
        return Err("expected user:HASH (make the hash with tunnel-server --hash-password)".into());
    };
    if user.is_empty() || user.chars().any(|c| c.is_control()) {
        return Err("the user name is empty or has control characters".into());
    }
    let parsed = PasswordHash::new(hash).map_err(|e| {
        format!("user {user:?}: the hash is not a PHC string ({e}); make one with tunnel-server --hash-password")
    })?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!("user {user:?}: hash algorithm {} is not argon2", parsed.algorithm));
    }
    Ok(Credential { user: user.to_owned(), hash: hash.to_owned() })
}

/// An argon2id PHC string of `password` with a fresh salt and the crate's default cost.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// What a request's credentials are worth against a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// One of the rule's users.
    Allowed(String),
    /// No (usable) `Authorization: Basic` header, or a wrong user or password: 401.
    Denied(&'static str),
    /// More than one `Authorization` header: 400.
    Ambiguous,
    /// No verification slot in time: 503.
    Busy,
}

/// Checks credentials; one per server.
pub struct Verifier {
    remembered: Mutex<HashMap<[u8; 32], Instant>>,
    slots: Arc<Semaphore>,
}

impl Default for Verifier {
    fn default() -> Verifier {
        Verifier { remembered: Mutex::default(), slots: Arc::new(Semaphore::new(MAX_VERIFYING)) }
    }
}

fn pair_key(header: &[u8], hash: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((header.len() as u64).to_be_bytes());
    h.update(header);
    h.update(hash.as_bytes());
    h.finalize().into()
}

impl Verifier {
    /// Whether `headers` carry the credentials of one of `users`.
    pub async fn check(&self, users: &[Credential], headers: &HeaderMap) -> Outcome {
        let mut all = headers.get_all(AUTHORIZATION).iter();
        let (Some(value), None) = (all.next(), all.next()) else {
            return match headers.contains_key(AUTHORIZATION) {
                true => Outcome::Ambiguous,
                false => Outcome::Denied("no credentials"),
            };
        };
        let Ok(Authorization(basic)) = <Authorization<Basic> as Header>::decode(&mut std::iter::once(value)) else {
            return Outcome::Denied("not basic credentials");
        };
        let Some(user) = users.iter().find(|u| u.user == basic.username()) else {
            return Outcome::Denied("unknown user");
        };
        let key = pair_key(value.as_bytes(), &user.hash);
        let now = Instant::now();
        if self.remembered.lock().expect("auth cache lock").get(&key).is_some_and(|t| now.duration_since(*t) < REMEMBER)
        {
            return Outcome::Allowed(user.user.clone());
        }
        let Ok(Ok(slot)) = tokio::time::timeout(WAIT, self.slots.clone().acquire_owned()).await else {
            return Outcome::Busy;
        };
        let (hash, password) = (user.hash.clone(), basic.password().to_owned());
        let verified = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            PasswordHash::new(&hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        })
        .await
        .unwrap_or(false);
        if !verified {
            return Outcome::Denied("wrong password");
        }
        let mut remembered = self.remembered.lock().expect("auth cache lock");
        if remembered.len() >= MAX_REMEMBERED {
            remembered.retain(|_, t| now.duration_since(*t) < REMEMBER);
            if remembered.len() >= MAX_REMEMBERED {
                remembered.clear();
            }
        }
        remembered.insert(key, now);
        Outcome::Allowed(user.user.clone())
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[tokio::test]
    async fn a_hashed_password_lets_its_user_in_and_nothing_else() {
        let users = vec![parse_credential(&format!("alice:{}", hash_password("s3cret").unwrap())).unwrap()];
        let v = Verifier::default();
        let basic = |u: &str, p: &str| format!("Basic {}", base64_encode(&format!("{u}:{p}")));
        assert_eq!(v.check(&users, &headers(&[&basic("alice", "s3cret")])).await, Outcome::Allowed("alice".into()));
        assert_eq!(v.check(&users, &headers(&[&basic("alice", "s3cret")])).await, Outcome::Allowed("alice".into()));
        assert_eq!(v.check(&users, &headers(&[&basic("alice", "wrong")])).await, Outcome::Denied("wrong password"));
        assert_eq!(v.check(&users, &headers(&[&basic("bob", "s3cret")])).await, Outcome::Denied("unknown user"));
        assert_eq!(v.check(&users, &headers(&[])).await, Outcome::Denied("no credentials"));
        assert_eq!(v.check(&users, &headers(&["Bearer x"])).await, Outcome::Denied("not basic credentials"));
        let two = headers(&[&basic("alice", "s3cret"), &basic("bob", "x")]);
        assert_eq!(v.check(&users, &two).await, Outcome::Ambiguous);
    }

    #[test]
    fn entries_that_are_not_user_and_argon2_hash_are_refused() {
        assert!(parse_credential("alice").is_err());
        assert!(parse_credential("alice:plaintext").unwrap_err().contains("PHC"));
        assert!(parse_credential(":$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA").is_err());
    }

    fn base64_encode(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    }
}
