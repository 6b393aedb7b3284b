//! One shutdown shape for the three binaries.
//!
//! A [`Lifecycle`] has a root token (cancelled when the process starts to stop: listeners
//! stop accepting, sessions say going-away), a hard-stop token (the grace period is over:
//! whatever is still open is cut), and a tracker of every task that must finish before the
//! process exits. Children of the root stop parts early (an access client's listeners before
//! its session); each session gets a token of its own under the hard stop, so one session
//! can be ended without touching the others.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The tokens and tasks of one running component. Clones share them.
#[derive(Clone, Default)]
pub struct Lifecycle {
    root: CancellationToken,
    hard: CancellationToken,
    tasks: TaskTracker,
}

impl Lifecycle {
    /// A running lifecycle.
    pub fn new() -> Lifecycle {
        Lifecycle::default()
    }

    /// Cancelled when stopping begins.
    pub fn stopping(&self) -> &CancellationToken {
        &self.root
    }

    /// Cancelled when the grace period is over.
    pub fn hard_stop(&self) -> &CancellationToken {
        &self.hard
    }

    /// A token that stops with the root but can be cancelled earlier on its own.
    pub fn child(&self) -> CancellationToken {
        self.root.child_token()
    }

    /// A token for one session: cancelled by the hard stop, or on its own to end that
    /// session alone.
    pub fn session_token(&self) -> CancellationToken {
        self.hard.child_token()
    }

    /// The tasks waited for on shutdown.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Starts stopping: cancels the root.
    pub fn begin_stop(&self) {
        self.root.cancel();
    }

    /// Takes no more tasks and waits for the tracked ones for at most `grace`. Returns whether
    /// everything finished within it; what is left runs on (see [`Lifecycle::drain`]).
    pub async fn settle(&self, grace: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }

    /// Waits for the tracked tasks for at most `grace`, then cuts what is left (hard stop)
    /// and waits for it to go. Returns whether everything finished within the grace period.
    pub async fn drain(&self, grace: Duration) -> bool {
        let in_time = self.settle(grace).await;
        self.hard.cancel();
        self.tasks.wait().await;
        in_time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_then_cuts() {
        let life = Lifecycle::new();
        let hard = life.hard_stop().clone();
        life.tasks().spawn(async move { hard.cancelled().await });
        let quick = life.clone();
        life.tasks().spawn(async move { quick.stopping().cancelled().await });
        life.begin_stop();
        assert!(!life.drain(Duration::from_millis(20)).await, "one task only ends at the hard stop");
        let session = life.session_token();
        assert!(session.is_cancelled(), "the hard stop ends every session");
    }

    #[test]
    fn a_session_ends_alone() {
        let life = Lifecycle::new();
        let (a, b) = (life.session_token(), life.session_token());
        a.cancel();
        assert!(!b.is_cancelled() && !life.stopping().is_cancelled());
        let early = life.child();
        early.cancel();
        assert!(!life.stopping().is_cancelled());
        life.begin_stop();
        assert!(life.child().is_cancelled());
    }
}
