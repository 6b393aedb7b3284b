//! Reconnect delays: exponential backoff with jitter.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with jitter between reconnect attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    reset_after: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `base`, capped at `max`, forgotten after a session that lived
    /// `reset_after`.
    pub fn new(base: Duration, max: Duration, reset_after: Duration) -> Backoff {
        Backoff { base, max, reset_after, failures: 0 }
    }

    /// The delay before the next attempt: `base * 2^failures`, capped, with the upper half
    /// randomised so that many clients do not retry in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.failures.min(16));
        let cap = exp.min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = cap / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    /// The largest delay, with the same jitter: for failures that a retry soon will not cure.
    pub fn max_delay(&self) -> Duration {
        let half = self.max / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    /// Records that a session lasted `lived`; a long enough one resets the backoff (and the
    /// answer is whether it did).
    pub fn session_ended(&mut self, lived: Duration) -> bool {
        let reset = lived >= self.reset_after;
        if reset {
            self.failures = 0;
        }
        reset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), Duration::from_secs(60));
        let d: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400));
        assert!(d.iter().all(|x| *x <= Duration::from_secs(2)));
        b.session_ended(Duration::from_secs(61));
        assert!(b.next_delay() <= Duration::from_millis(100));
        assert!((0..20).all(|_| (Duration::from_secs(1)..=Duration::from_secs(2)).contains(&b.max_delay())));
    }
}
