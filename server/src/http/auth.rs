//! Basic authentication on ingress rules.
//!
//! A rule's users are `user:PHC` entries, the hash an argon2 PHC string. The credentials of a
//! request are read from the same parsed request that was routed (its one `Authorization`
//! header), never from a second source. Verifying an argon2 hash costs tens of milliseconds of
//! one core by design, so:
//! - a verified pair (the header's bytes and the hash they matched) is remembered for
//!   [`REMEMBER`], so a keep-alive client pays once, not per request; at most
//!   [`MAX_REMEMBERED`] pairs are kept, keyed by a SHA-256 of the two, never the password;
//! - verifications run on the blocking pool, one at a time per rule and at most one per core
//!   in all: a flood of guesses at one tenant's rule waits on that rule's own slot, so it
//!   never delays another tenant's logins (nor requests that carry remembered credentials); a
//!   request that finds no slot within [`WAIT`] gets 503;
//! - each source address may make [`GUESS_BURST`] verifications at a rule, then one every
//!   [`GUESS_PERIOD`] (a `governor` keyed GCRA); beyond that it gets 429 with `Retry-After`
//!   before any hash is computed. A right password is remembered, so only guesses count;
//! - an unknown user is verified against a stand-in hash of the same cost, so a wrong user
//!   and a wrong password take the same time (user names cannot be told apart by timing).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
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
/// Verifications at once per rule.
pub const MAX_VERIFYING_PER_RULE: usize = 1;
/// Verifications a source address may make at one rule before the pace holds.
pub const GUESS_BURST: u32 = 10;
/// Then one more each this long.
pub const GUESS_PERIOD: Duration = Duration::from_secs(6);
/// Keys (source, rule) the guess limiter keeps before forgetting those back at a full burst.
const MAX_GUESSERS: usize = 65536;
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
    /// Too many guesses from this address at this rule: 429, retry after this long.
    TooMany(Duration),
}

/// Checks credentials; one per server.
pub struct Verifier {
    remembered: Mutex<HashMap<[u8; 32], Instant>>,
    /// Verifications at once in all: one per core.
    slots: Arc<Semaphore>,
    /// One slot per rule (by its label), so rules wait only on themselves.
    per_rule: dashmap::DashMap<String, Arc<Semaphore>>,
    /// Verifications per (source address, rule).
    guesses: DefaultKeyedRateLimiter<(IpAddr, String)>,
}

impl Default for Verifier {
    fn default() -> Verifier {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let burst = NonZeroU32::new(GUESS_BURST).expect("a burst of at least one");
        let quota = Quota::with_period(GUESS_PERIOD).expect("a period above zero").allow_burst(burst);
        Verifier {
            remembered: Mutex::default(),
            slots: Arc::new(Semaphore::new(cores)),
            per_rule: dashmap::DashMap::new(),
            guesses: RateLimiter::keyed(quota),
        }
    }
}

/// A hash of the crate's default cost, made once, that an unknown user's password is checked
/// against (and never matches: its password is random and never kept).
fn stand_in() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let mut random = [0u8; 24];
        argon2::password_hash::rand_core::RngCore::fill_bytes(
            &mut argon2::password_hash::rand_core::OsRng,
            &mut random,
        );
        hash_password(&hex::encode(random)).unwrap_or_default()
    })
}

fn pair_key(header: &[u8], hash: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((header.len() as u64).to_be_bytes());
    h.update(header);
    h.update(hash.as_bytes());
    h.finalize().into()
}

impl Verifier {
    /// Whether `headers` from `source` carry the credentials of one of `users`, the users of
    /// the rule labelled `rule`.
    pub async fn check(&self, rule: &str, source: IpAddr, users: &[Credential], headers: &HeaderMap) -> Outcome {
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
        let user = users.iter().find(|u| u.user == basic.username());
        let now = Instant::now();
        if let Some(user) = user {
            let key = pair_key(value.as_bytes(), &user.hash);
            let remembered = self.remembered.lock().expect("auth cache lock");
            if remembered.get(&key).is_some_and(|t| now.duration_since(*t) < REMEMBER) {
                return Outcome::Allowed(user.user.clone());
            }
        }
        // A guess: counted against this address at this rule before any hash is computed.
        if self.guesses.len() >= MAX_GUESSERS {
            self.guesses.retain_recent();
        }
        if let Err(not_until) = self.guesses.check_key(&(source, rule.to_owned())) {
            return Outcome::TooMany(not_until.wait_time_from(DefaultClock::default().now()));
        }
        let rule_slot = self
            .per_rule
            .entry(rule.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_VERIFYING_PER_RULE)))
            .clone();
        let slots = async {
            let rule_slot = rule_slot.acquire_owned().await.ok()?;
            let slot = self.slots.clone().acquire_owned().await.ok()?;
            Some((rule_slot, slot))
        };
        let Ok(Some(slots)) = tokio::time::timeout(WAIT, slots).await else {
            return Outcome::Busy;
        };
        // An unknown user costs what a known one does: its password is checked against a
        // stand-in hash of the same cost.
        let hash = user.map_or_else(|| stand_in().to_owned(), |u| u.hash.clone());
        let password = basic.password().to_owned();
        let verified = tokio::task::spawn_blocking(move || {
            let _slots = slots;
            PasswordHash::new(&hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        })
        .await
        .unwrap_or(false);
        let Some(user) = user.filter(|_| verified) else {
            return Outcome::Denied(if user.is_some() { "wrong password" } else { "unknown user" });
        };
        let key = pair_key(value.as_bytes(), &user.hash);
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

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

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
        assert_eq!(
            v.check("a.example/admin", LOCAL, &users, &headers(&[&basic("alice", "s3cret")])).await,
            Outcome::Allowed("alice".into())
        );
        assert_eq!(
            v.check("a.example/admin", LOCAL, &users, &headers(&[&basic("alice", "s3cret")])).await,
            Outcome::Allowed("alice".into())
        );
        assert_eq!(
            v.check("a.example/admin", LOCAL, &users, &headers(&[&basic("alice", "wrong")])).await,
            Outcome::Denied("wrong password")
        );
        assert_eq!(
            v.check("a.example/admin", LOCAL, &users, &headers(&[&basic("bob", "s3cret")])).await,
            Outcome::Denied("unknown user")
        );
        assert_eq!(v.check("a.example/admin", LOCAL, &users, &headers(&[])).await, Outcome::Denied("no credentials"));
        assert_eq!(
            v.check("a.example/admin", LOCAL, &users, &headers(&["Bearer x"])).await,
            Outcome::Denied("not basic credentials")
        );
        let two = headers(&[&basic("alice", "s3cret"), &basic("bob", "x")]);
        assert_eq!(v.check("a.example/admin", LOCAL, &users, &two).await, Outcome::Ambiguous);
    }

    #[test]
    fn entries_that_are_not_user_and_argon2_hash_are_refused() {
        assert!(parse_credential("alice").is_err());
        assert!(parse_credential("alice:plaintext").unwrap_err().contains("PHC"));
        assert!(parse_credential(":$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA").is_err());
    }

    #[tokio::test]
    async fn guesses_are_limited_per_source_and_rule() {
        let users = vec![parse_credential(&format!("alice:{}", hash_password("s3cret").unwrap())).unwrap()];
        let v = Verifier::default();
        let wrong = headers(&[&format!("Basic {}", base64_encode("alice:wrong"))]);
        for _ in 0..GUESS_BURST {
            assert_eq!(v.check("r", LOCAL, &users, &wrong).await, Outcome::Denied("wrong password"));
        }
        assert!(matches!(v.check("r", LOCAL, &users, &wrong).await, Outcome::TooMany(_)), "the burst is spent");
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(v.check("r", other, &users, &wrong).await, Outcome::Denied("wrong password"), "another address");
        assert_eq!(v.check("s", LOCAL, &users, &wrong).await, Outcome::Denied("wrong password"), "another rule");
        // An unknown user takes the same way as a wrong password (a verification, a guess).
        let stranger = headers(&[&format!("Basic {}", base64_encode("mallory:x"))]);
        let third: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..GUESS_BURST {
            assert_eq!(v.check("r", third, &users, &stranger).await, Outcome::Denied("unknown user"));
        }
        assert!(matches!(v.check("r", third, &users, &stranger).await, Outcome::TooMany(_)));
    }

    fn base64_encode(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    }
}
