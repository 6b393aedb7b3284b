//! Which targets serve a stream, in the order to try them.
//!
//! Targets are grouped: every target of one network with the same `host` pattern is one
//! *group* (the fallbacks, targets without `host`, are the group of their network). A stream
//! goes to the group whose pattern best matches its hostname, else to the fallback group.
//! Within a group the selector of seed `003_*` applies: a target that failed to dial
//! `maxFails` times in a row is skipped for `failTimeout` (then tried again; a success puts it
//! back in rotation); the group's `strategy` (`round`, `random`, `fifo`, `hash` of the
//! visitor's IP) picks the first target among the others, and the rest follow in turn, so a
//! stream whose dial fails is retried on the next. When every target of a group is skipped,
//! all are tried anyway: a dial that may succeed beats a certain 502. A target with an active
//! health check ([`crate::health`]) is also out from a failed check until one passes.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use tunnel_proto::host::{self, best_match, HostPattern};
use tunnel_proto::wire::{Network, StreamHeader};

use crate::proxy_protocol::ProxyVersion;

/// How a group picks the first target to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// In turn (the default).
    #[default]
    Round,
    /// At random.
    Random,
    /// The first available in configuration order (active/standby).
    Fifo,
    /// By a hash of the visitor's IP address: one visitor keeps its target while it is up.
    Hash,
}

impl Strategy {
    /// The names accepted in files and URLs.
    pub const NAMES: &'static str = "round, random, fifo, hash";

    /// Parses `round`, `random`, `fifo` or `hash` (`rr` and `roundrobin` are `round`).
    pub fn parse(raw: &str) -> Result<Strategy, String> {
        match raw.to_ascii_lowercase().as_str() {
            "round" | "rr" | "roundrobin" => Ok(Strategy::Round),
            "random" | "rand" => Ok(Strategy::Random),
            "fifo" | "ha" => Ok(Strategy::Fifo),
            "hash" => Ok(Strategy::Hash),
            other => Err(format!("unknown strategy {other:?}, expected one of: {}", Strategy::NAMES)),
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Strategy::Round => "round",
            Strategy::Random => "random",
            Strategy::Fifo => "fifo",
            Strategy::Hash => "hash",
        })
    }
}

/// The selector settings of a target, from its service's `forwarder.selector`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selector {
    /// How its group picks.
    pub strategy: Strategy,
    /// Failed dials in a row after which the target is skipped (at least 1).
    pub max_fails: u32,
    /// How long it is skipped (zero: never).
    pub fail_timeout: Duration,
}

impl Default for Selector {
    fn default() -> Self {
        Selector { strategy: Strategy::Round, max_fails: DEFAULT_MAX_FAILS, fail_timeout: DEFAULT_FAIL_TIMEOUT }
    }
}

/// GOST's default: one failed dial takes a target out.
pub const DEFAULT_MAX_FAILS: u32 = 1;
/// GOST's default: a failed target is tried again after 10 s.
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// The check's default period.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// The check's default time limit: a local service answers a probe in milliseconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connect.
    Tcp,
    /// `GET path` over HTTP/1.1, wanting 2xx or 3xx.
    Http(String),
}

/// A target's active check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// What to do.
    pub probe: Probe,
    /// How often.
    pub interval: Duration,
    /// Time limit of one check.
    pub timeout: Duration,
}

impl Probe {
    /// `tcp` or an absolute HTTP path (`/healthz`).
    pub fn parse(raw: &str) -> Result<Probe, String> {
        match raw {
            "tcp" => Ok(Probe::Tcp),
            p if p.starts_with('/') && p.bytes().all(|b| b.is_ascii_graphic()) => Ok(Probe::Http(p.to_owned())),
            other => Err(format!("{other:?} is neither \"tcp\" nor an HTTP path such as \"/healthz\"")),
        }
    }
}

/// A validated target.
#[derive(Debug, Clone)]
pub struct Target {
    /// Name for logs.
    pub name: String,
    /// TCP or UDP.
    pub network: Network,
    /// Dialable `host:port`.
    pub addr: String,
    /// Hostnames served; `None` for a fallback.
    pub host: Option<HostPattern>,
    /// UDP: idle time after which a flow ends.
    pub udp_ttl: Duration,
    /// UDP: bytes read per datagram from the target.
    pub read_buffer_size: usize,
    /// Balancing and fail-over settings (its group's strategy, its own `maxFails` and
    /// `failTimeout`).
    pub selector: Selector,
    /// PROXY protocol header to write first, if any.
    pub proxy_protocol: Option<ProxyVersion>,
    /// Active health check, if any.
    pub health_check: Option<HealthCheck>,
    /// TLS toward the target (an `https://` or `tls://` address), if any.
    pub tls: Option<TargetTls>,
}

/// How the agent speaks TLS to a target that only speaks TLS.
#[derive(Clone)]
pub struct TargetTls {
    /// The client configuration (verification as configured).
    pub connector: tokio_rustls::TlsConnector,
    /// The name sent as SNI and verified.
    pub server_name: rustls::pki_types::ServerName<'static>,
    /// How the certificate is verified, for logs.
    pub verify: tunnel_proto::tls::Verify,
}

impl std::fmt::Debug for TargetTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetTls").field("server_name", &self.server_name).field("verify", &self.verify).finish()
    }
}

/// The targets with the state of their groups and their health.
#[derive(Debug)]
pub struct Targets {
    targets: Vec<Target>,
    health: Vec<Mutex<Health>>,
    groups: Vec<Group>,
}

#[derive(Debug)]
struct Group {
    network: Network,
    host: Option<HostPattern>,
    strategy: Strategy,
    members: Vec<usize>,
    next: AtomicUsize,
}

#[derive(Debug, Default)]
struct Health {
    fails: u32,
    last_fail: Option<Instant>,
    /// The last active check failed: down until one passes.
    check_failed: bool,
}

impl Health {
    fn down(&self, selector: &Selector, now: Instant) -> bool {
        self.check_failed
            || (self.fails >= selector.max_fails
                && self.last_fail.is_some_and(|t| now.saturating_duration_since(t) < selector.fail_timeout))
    }
}

/// One target to try for a stream; report how the dial went with [`Candidate::failed`] or
/// [`Candidate::succeeded`].
pub struct Candidate<'a> {
    /// The target.
    pub target: &'a Target,
    health: &'a Mutex<Health>,
}

impl Candidate<'_> {
    /// The dial failed: one more failure in a row; at `maxFails` the target is skipped for
    /// `failTimeout`.
    pub fn failed(&self) {
        let t = self.target;
        let mut h = self.health.lock().expect("target health lock");
        h.fails = h.fails.saturating_add(1);
        h.last_fail = Some(Instant::now());
        if h.fails == t.selector.max_fails && !t.selector.fail_timeout.is_zero() {
            let fail_timeout = humantime::format_duration(t.selector.fail_timeout).to_string();
            tracing::info!(target = %t.name, addr = %t.addr, fails = h.fails, fail_timeout, "target marked down");
        }
    }

    /// The dial succeeded: the failures are forgotten.
    pub fn succeeded(&self) {
        let t = self.target;
        let mut h = self.health.lock().expect("target health lock");
        if h.fails >= t.selector.max_fails && !h.check_failed {
            tracing::info!(target = %t.name, addr = %t.addr, "target back in rotation");
        }
        h.fails = 0;
        h.last_fail = None;
    }

    /// An active check's outcome: a failed check takes the target out until a check passes;
    /// a passing one also forgets the failed dials.
    pub fn checked(&self, passed: bool, why: &str) {
        let t = self.target;
        let mut h = self.health.lock().expect("target health lock");
        let was_down = h.down(&t.selector, Instant::now());
        if passed {
            *h = Health::default();
            if was_down {
                tracing::info!(target = %t.name, addr = %t.addr, "target back in rotation");
            }
        } else {
            h.check_failed = true;
            if !was_down {
                tracing::info!(target = %t.name, addr = %t.addr, why, "target marked down by its health check");
            }
        }
    }
}

impl Targets {
    /// The targets of the configuration, grouped by network and `host` pattern (the
    /// configuration checked that a group's targets agree on the strategy).
    pub fn new(targets: Vec<Target>) -> Targets {
        let mut groups: Vec<Group> = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            match groups.iter_mut().find(|g| g.network == t.network && g.host == t.host) {
                Some(g) => g.members.push(i),
                None => groups.push(Group {
                    network: t.network,
                    host: t.host.clone(),
                    strategy: t.selector.strategy,
                    members: vec![i],
                    next: AtomicUsize::new(0),
                }),
            }
        }
        let health = targets.iter().map(|_| Mutex::new(Health::default())).collect();
        Targets { targets, health, groups }
    }

    /// Every target.
    pub fn all(&self) -> &[Target] {
        &self.targets
    }

    /// Target `i` of [`Targets::all`], for its active health check.
    pub fn candidate(&self, i: usize) -> Candidate<'_> {
        Candidate { target: &self.targets[i], health: &self.health[i] }
    }

    /// Whether target `i` of [`Targets::all`] is being skipped now.
    pub fn is_down(&self, i: usize) -> bool {
        self.health[i].lock().expect("target health lock").down(&self.targets[i].selector, Instant::now())
    }

    /// The targets to try for a stream, best first; empty when no target serves it.
    pub fn select(&self, header: &StreamHeader) -> Vec<Candidate<'_>> {
        let Some(group) = self.group_for(header) else { return Vec::new() };
        let now = Instant::now();
        let mut up: Vec<usize> = group.members.iter().copied().filter(|&i| !self.is_down_at(i, now)).collect();
        if up.is_empty() {
            tracing::debug!("every target of the group is down: trying them all");
            up = group.members.clone();
        }
        let first = match group.strategy {
            Strategy::Round => group.next.fetch_add(1, Ordering::Relaxed),
            Strategy::Random => rand::rng().random_range(0..up.len()),
            Strategy::Fifo => 0,
            Strategy::Hash => match header.visitor {
                Some(addr) => {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    addr.ip().hash(&mut h);
                    h.finish() as usize
                }
                None => group.next.fetch_add(1, Ordering::Relaxed),
            },
        } % up.len();
        up.rotate_left(first);
        up.into_iter().map(|i| Candidate { target: &self.targets[i], health: &self.health[i] }).collect()
    }

    fn is_down_at(&self, i: usize, now: Instant) -> bool {
        self.health[i].lock().expect("target health lock").down(&self.targets[i].selector, now)
    }

    fn group_for(&self, header: &StreamHeader) -> Option<&Group> {
        let groups = self.groups.iter().filter(|g| g.network == header.network);
        if let Ok(host) = host::canonicalize(&header.hostname) {
            let with_host = groups.clone().filter_map(|g| g.host.as_ref().map(|p| (p, g)));
            if let Some(g) = best_match(with_host, &host) {
                return Some(g);
            }
        }
        self.groups.iter().find(|g| g.network == header.network && g.host.is_none())
    }
}

#[cfg(test)]
mod tests;
