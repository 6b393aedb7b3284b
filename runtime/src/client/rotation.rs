//! Which candidate address a session slot dials next, and when it must wait first.
//!
//! Slot `i` starts on candidate `i % n`, so the slots of a client spread over the servers'
//! addresses. Every failure (a dial or hello that failed, a session lost) moves the slot on
//! to the next candidate, so a dead replica is left at once instead of being retried with a
//! growing delay. Failures come in *rounds* of `n`: within a round the next candidate is tried
//! without delay; once a whole round has failed, the slot waits the backoff (which grows per
//! round, not per attempt). With one candidate every failure ends a round: the plain backoff.
//!
//! The round is forgotten only when a session lived long enough to reset the backoff (a
//! minute): a replica that accepts sessions and drops them at once gets one attempt per backoff
//! delay, never a tight loop. A server going away moves the slot on too, without counting a
//! failure.

/// The rotation state of one session slot.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The candidate to dial next (modulo their number).
    next: usize,
    /// Failures in the current round.
    streak: usize,
}

impl Rotation {
    /// The state of slot number `slot`, whose first attempt goes to candidate `slot % n`.
    pub fn new(slot: usize) -> Rotation {
        Rotation { next: slot, streak: 0 }
    }

    /// The candidate to dial now, among `n` (at least one).
    pub fn pick(&self, n: usize) -> usize {
        self.next % n.max(1)
    }

    /// The attempt on the candidate picked among `n` failed, or its session was lost: moves
    /// on to the next. Returns whether a whole round has failed, so the slot waits the backoff
    /// before the next attempt.
    pub fn failed(&mut self, n: usize) -> bool {
        self.moved_on(n);
        self.streak += 1;
        let round_failed = self.streak >= n;
        if round_failed {
            self.streak = 0;
        }
        round_failed
    }

    /// Moves on to the next of `n` candidates without counting a failure (the server is
    /// going away).
    pub fn moved_on(&mut self, n: usize) {
        self.next = self.pick(n) + 1;
    }

    /// A session lived long enough to forget earlier failures: a new round starts.
    pub fn reset(&mut self) {
        self.streak = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_start_spread_and_rotate_on_failure() {
        let starts: Vec<usize> = (0..5).map(|slot| Rotation::new(slot).pick(3)).collect();
        assert_eq!(starts, [0, 1, 2, 0, 1]);
        let mut r = Rotation::new(1);
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(r.pick(3));
            r.failed(3);
        }
        assert_eq!(seen, [1, 2, 0, 1]);
    }

    #[test]
    fn backoff_comes_once_per_round_of_failures() {
        let mut r = Rotation::new(0);
        let waits: Vec<bool> = (0..6).map(|_| r.failed(3)).collect();
        assert_eq!(waits, [false, false, true, false, false, true]);
        let mut one = Rotation::new(4);
        assert!((0..3).all(|_| one.failed(1) && one.pick(1) == 0), "one candidate: always the backoff");
    }

    #[test]
    fn a_long_session_starts_a_new_round_a_going_away_is_no_failure() {
        let mut r = Rotation::new(0);
        assert!(!r.failed(2));
        r.reset();
        assert!(!r.failed(2), "the round started again");
        assert!(r.failed(2));
        let before = r.pick(2);
        r.moved_on(2);
        assert_ne!(r.pick(2), before);
        assert!(!r.failed(2), "moving on is not a failure");
    }

    #[test]
    fn a_shorter_list_wraps() {
        let mut r = Rotation::new(5);
        assert_eq!(r.pick(2), 1);
        r.failed(2);
        assert_eq!(r.pick(2), 0);
        r.failed(4);
        assert_eq!(r.pick(4), 3, "from candidate 2 of 4 (where 0 of 2 left it) on to 3");
    }
}
