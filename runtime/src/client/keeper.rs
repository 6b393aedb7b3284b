//! The session keeper shared by the agent and the access client: keeps session number `index`
//! of a client alive for as long as the client runs.
//!
//! Life of a slot: resolve the configured servers into candidate addresses
//! ([`Dialer::candidates`]) and dial the one its [`Rotation`] picks (slot `index` starts on
//! candidate `index % n`, so sessions spread over replicas, whether listed or behind one name),
//! say hello, hand the session to its [`SessionUser`], run the control stream, and when it
//! ends:
//! - the server said going-away: drain the old session in the background (tracked, so a
//!   shutdown waits for it) and connect a replacement at once, to the next candidate;
//! - our own shutdown was acknowledged: let this session's streams finish (at most the grace
//!   period), close, stop;
//! - the session was lost: close it and reconnect to the next candidate.
//!
//! After a failed attempt or a lost session the slot moves on to the next candidate: at once
//! while this round has candidates not yet tried, after a backoff with jitter once every
//! candidate has failed in turn (see [`super::rotation`]). With one server address that is
//! the plain backoff after every failure.
//!
//! Reconnects never stop; each failed attempt is one warning that says why. A refusal that
//! only a configuration change ends ([`super::refusal`]) says its fix once, then each attempt
//! is one short line with its number, at the largest backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel_proto::channel::Session;

use super::rotation::Rotation;
use super::{refusal, run_control, Backoff, ConnectError, ControlEnd, Dialer};

/// Timings of a keeper.
#[derive(Debug, Clone, Copy)]
pub struct KeeperTimings {
    /// First reconnect delay.
    pub backoff_base: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Ping interval on the control stream.
    pub keepalive_interval: Duration,
    /// A pong later than this ends the session.
    pub keepalive_timeout: Duration,
    /// Time given to streams in flight when a session drains.
    pub grace_period: Duration,
}

impl KeeperTimings {
    /// The timings configured, each missing one at its default.
    pub fn or_defaults(
        backoff_base: Option<Duration>,
        backoff_max: Option<Duration>,
        keepalive_interval: Option<Duration>,
        keepalive_timeout: Option<Duration>,
        grace_period: Option<Duration>,
    ) -> KeeperTimings {
        use tunnel_proto::defaults;
        KeeperTimings {
            backoff_base: backoff_base.unwrap_or(defaults::BACKOFF_BASE),
            backoff_max: backoff_max.unwrap_or(defaults::BACKOFF_MAX),
            keepalive_interval: keepalive_interval.unwrap_or(defaults::KEEPALIVE_INTERVAL),
            keepalive_timeout: keepalive_timeout.unwrap_or(defaults::KEEPALIVE_TIMEOUT),
            grace_period: grace_period.unwrap_or(defaults::GRACE_PERIOD),
        }
    }
}

/// One established session as the keeper hands it out.
#[derive(Clone)]
pub struct Established {
    /// The keeper's slot number.
    pub id: usize,
    /// The session.
    pub session: Arc<dyn Session>,
    /// Streams served on this session; a shutdown waits for them before closing it.
    pub streams: TaskTracker,
    /// Cancelled when the keeper is done with this session (closed or drained), so tasks
    /// bound to it end with it.
    pub done: CancellationToken,
}

/// What a client does with its sessions.
pub trait SessionUser: Send + Sync + 'static {
    /// A session is up: start using it.
    fn up(&self, session: &Established);
    /// The session takes no new work from now on (lost, draining or shutting down).
    fn down(&self, session: &Established);
    /// An attempt failed or a session was lost; `reason` is one of `refused`, `unreachable`,
    /// `lost` and `going_away` (a bounded set, for metrics).
    fn reconnect(&self, reason: &'static str) {
        let _ = reason;
    }
}

/// Keeps one session slot alive until `shutdown`; see the module documentation.
pub async fn keep(
    dialer: Arc<Dialer>,
    index: usize,
    timings: KeeperTimings,
    user: Arc<dyn SessionUser>,
    shutdown: CancellationToken,
) {
    let tunnel = dialer.hello.tunnel;
    let mut backoff =
        Backoff::new(timings.backoff_base, timings.backoff_max, tunnel_proto::defaults::BACKOFF_RESET_AFTER);
    let drains = TaskTracker::new();
    let mut rotation = Rotation::new(index);
    loop {
        let candidates = dialer.candidates().await;
        let n = candidates.len();
        let candidate = &candidates[rotation.pick(n)];
        let target = candidate.addr.as_str();
        let connected = tokio::select! {
            r = dialer.connect_to(candidate) => r,
            _ = shutdown.cancelled() => break,
        };
        let c = match connected {
            Ok(c) => c,
            Err(err) => {
                user.reconnect(if err.status().is_some() { "refused" } else { "unreachable" });
                let round_failed = rotation.failed(n);
                let delay = failed(&dialer, index, target, &mut backoff, &err, round_failed);
                if sleep_or_shutdown(delay, &shutdown).await {
                    break;
                }
                continue;
            }
        };
        dialer.refusals.clear();
        let started = Instant::now();
        tracing::info!(%tunnel, server = %target, session = index, thread = crate::threads::index(), "session established");
        let here =
            Established { id: index, session: c.session, streams: TaskTracker::new(), done: CancellationToken::new() };
        user.up(&here);
        let end =
            run_control(&here.session, c.control, timings.keepalive_interval, timings.keepalive_timeout, &shutdown)
                .await;
        user.down(&here);
        if backoff.session_ended(started.elapsed()) {
            rotation.reset();
        }
        match end {
            ControlEnd::ServerGoingAway => {
                user.reconnect("going_away");
                rotation.moved_on(n);
                tracing::info!(%tunnel, server = %target, session = index, "server is going away: replacing the session while it drains");
                drains.spawn(drain(here, false, timings.grace_period));
            }
            ControlEnd::ShutdownAcknowledged => {
                drain(here, true, timings.grace_period).await;
                break;
            }
            ControlEnd::Lost(why) => {
                user.reconnect("lost");
                here.session.close();
                here.done.cancel();
                if shutdown.is_cancelled() {
                    break;
                }
                let delay = if rotation.failed(n) { backoff.next_delay() } else { Duration::ZERO };
                tracing::warn!(%tunnel, server = %target, session = index, retry_in = ?delay, reason = %why, "session lost; reconnecting");
                if sleep_or_shutdown(delay, &shutdown).await {
                    break;
                }
            }
        }
    }
    drains.close();
    drains.wait().await;
}

/// Logs a failed attempt of slot `index` and returns the delay before the next. A refusal
/// that only a configuration change ends is told with its fix once (across the slots), then
/// in one short line per attempt with its number, retried at the largest backoff; anything
/// else is one line with the reason, and the usual backoff once `round_failed` (none while
/// other candidates are still to be tried).
fn failed(
    dialer: &Dialer,
    index: usize,
    target: &str,
    backoff: &mut Backoff,
    err: &ConnectError,
    round_failed: bool,
) -> Duration {
    let tunnel = dialer.hello.tunnel;
    let Some(status) = err.status().filter(|s| refusal::is_lasting(*s)) else {
        let delay = if round_failed { backoff.next_delay() } else { Duration::ZERO };
        tracing::warn!(%tunnel, server = %target, session = index, retry_in = ?delay, error = %err, "cannot join tunnel");
        return delay;
    };
    let delay = backoff.max_delay();
    match dialer.refusals.record() {
        1 => {
            let fix = refusal::fix(status, dialer.hello.role, tunnel);
            tracing::warn!(%tunnel, server = %target, session = index, retry_in = ?delay, error = %err, fix = %fix, "cannot join tunnel; retrying at the largest backoff until the configuration changes");
        }
        attempt => {
            tracing::warn!(%tunnel, server = %target, session = index, attempt, status = status.0, retry_in = ?delay, "cannot join tunnel: still refused")
        }
    }
    delay
}

/// Sleeps for `delay`; true if shutdown came first.
async fn sleep_or_shutdown(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown.cancelled() => true,
    }
}

/// Lets a session that gets no new streams finish its work, then closes it. On our own
/// shutdown (`ours`) it waits for our streams; when the server is going away, for the server
/// to close the session. Either way at most `grace`.
async fn drain(here: Established, ours: bool, grace: Duration) {
    let done = async {
        if ours {
            here.streams.close();
            here.streams.wait().await;
        } else {
            here.session.closed().await;
        }
    };
    let _ = tokio::time::timeout(grace, done).await;
    here.session.close();
    here.done.cancel();
}
