//! Refusals that waiting will not cure: the server answered the hello with 400, 401, 403 or
//! 404 (an unknown tunnel, a wrong token, a version or service it does not take). Only a
//! change of configuration, here or on the server, ends them, so the client says what to
//! change once, then retries at the largest backoff with one short line per attempt. The count
//! is shared by all the session slots of a client and starts again once a session is up.

use std::sync::atomic::{AtomicU64, Ordering};

use tunnel_proto::wire::{Role, Status};
use uuid::Uuid;

/// Lasting refusals of one client since its last established session.
#[derive(Debug, Default)]
pub struct Refusals {
    attempts: AtomicU64,
}

impl Refusals {
    /// Counts a refused attempt; returns its number (1 for the first since the last session).
    pub fn record(&self) -> u64 {
        self.attempts.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A session was established: the next refusal is a new story and says its fix again.
    pub fn clear(&self) {
        self.attempts.store(0, Ordering::Relaxed);
    }
}

/// Whether a hello refused with `status` will be refused again until someone changes a
/// configuration.
pub fn is_lasting(status: Status) -> bool {
    matches!(status.0, 400 | 401 | 403 | 404)
}

/// What to change so that a `role` client of `tunnel` refused with `status` gets in.
pub fn fix(status: Status, role: Role, tunnel: Uuid) -> String {
    let who = if role == Role::Agent { "agent" } else { "access client" };
    match status.0 {
        401 | 403 => format!(
            "the server does not accept this {who}'s token for tunnel {tunnel}, or does not know the \
             tunnel (it gives one answer for both): check the token (token / tokenFile in -F or [relay], \
             --token, TUNNEL_TOKEN) against the server's token or its [[tokens]] for this tunnel, and \
             the tunnel ID against the server's rules"
        ),
        404 => format!(
            "the server has no ingress rule for tunnel {tunnel} and direct routing is off: add a rule \
             on the server (tunnel=HOST:{tunnel} in -L, or [[ingress.rules]] endpoint = \"{tunnel}\"), \
             or correct tunnel.id here"
        ),
        _ => "the server does not take this hello (see its message): upgrade the older side, or give the \
              agent an rtcp or rudp service"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lasting_refusals_are_counted_across_slots_until_a_session_is_up() {
        let refusals = Refusals::default();
        assert_eq!((refusals.record(), refusals.record(), refusals.record()), (1, 2, 3));
        refusals.clear();
        assert_eq!(refusals.record(), 1);
        assert!(is_lasting(Status::UNAUTHORIZED) && is_lasting(Status::NOT_FOUND));
        assert!(!is_lasting(Status::UNAVAILABLE), "a full tunnel or server may have room later");
    }

    #[test]
    fn each_fix_names_what_to_change() {
        let id = Uuid::nil();
        assert!(fix(Status::NOT_FOUND, Role::Agent, id).contains("[[ingress.rules]]"));
        assert!(fix(Status::UNAUTHORIZED, Role::Access, id).contains("access client's token"));
    }
}
