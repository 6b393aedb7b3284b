//! The server's Prometheus metrics, registered once and handed to the code that counts.
//!
//! Tunnel labels are tunnel IDs of the ingress (a tunnel reached only by direct routing is
//! counted as `direct`), entrypoint labels are configured addresses, and every other label is
//! one of a fixed set: nothing is labelled by a visitor's address or a free-form hostname.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of a session gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    /// The tunnel.
    pub tunnel: String,
    /// `agent` or `access`.
    pub role: &'static str,
    /// `tcp`, `tls` or `quic`.
    pub transport: &'static str,
}

/// A tunnel.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TunnelLabel {
    /// The tunnel.
    pub tunnel: String,
}

/// A tunnel and a status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TunnelStatus {
    /// The tunnel.
    pub tunnel: String,
    /// The stream status (`404`, `502`, ...).
    pub status: u16,
}

/// A tunnel and a direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TunnelDirection {
    /// The tunnel.
    pub tunnel: String,
    /// `in` (from visitors) or `out` (to visitors).
    pub direction: &'static str,
}

/// An entrypoint and what became of a visitor.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VisitorOutcome {
    /// The entrypoint's configured address.
    pub entrypoint: String,
    /// `served`, `refused` or `left`.
    pub outcome: &'static str,
}

/// An entrypoint and a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntrypointReason {
    /// The entrypoint's configured address.
    pub entrypoint: String,
    /// One of a fixed set.
    pub reason: &'static str,
}

/// A reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// One of a fixed set.
    pub reason: &'static str,
}

/// A result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `success` or `failure`.
    pub result: &'static str,
}

/// Every metric of the server. Per-stream counting happens only while `on` (the admin listener
/// is configured), so a server nobody scrapes pays nothing for it.
#[derive(Default)]
pub struct Metrics {
    /// Whether per-stream counters are kept.
    pub on: bool,
    /// Sessions now, by tunnel, role and transport.
    pub sessions: Family<SessionLabels, Gauge>,
    /// Streams opened to agents, by tunnel.
    pub streams_opened: Family<TunnelLabel, Counter>,
    /// Streams that failed, by tunnel and status.
    pub streams_failed: Family<TunnelStatus, Counter>,
    /// Bytes carried, by tunnel and direction.
    pub bytes: Family<TunnelDirection, Counter>,
    /// Public visitors, by entrypoint and outcome.
    pub visitors: Family<VisitorOutcome, Counter>,
    /// Datagrams dropped on arrival at a UDP entrypoint, by entrypoint and reason.
    pub udp_dropped: Family<EntrypointReason, Counter>,
    /// Refused handshakes, by reason.
    pub handshake_failures: Family<Reason, Counter>,
    /// Reloads, by result.
    pub reloads: Family<Outcome, Counter>,
    /// The version of the configuration in force (1 at start, +1 per applied reload).
    pub config_version: Gauge,
    /// Streams forwarded between replicas, by direction (`out` to another replica, `in` from
    /// one) and result (`ok`, `refused`, `failed`).
    pub forwarded: Family<Forwarded, Counter>,
    /// 1 while the cluster's Redis answers, 0 while it does not (absent without a cluster).
    pub cluster_redis_up: Gauge,
}

/// A forwarded stream's direction and result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Forwarded {
    /// `out` or `in`.
    pub direction: &'static str,
    /// `ok`, `refused` or `failed`.
    pub result: &'static str,
}

impl Metrics {
    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("tunnel_sessions", "Sessions connected now", self.sessions.clone());
        registry.register("tunnel_streams_opened", "Streams opened to agents", self.streams_opened.clone());
        registry.register("tunnel_streams_failed", "Streams that could not be served", self.streams_failed.clone());
        registry.register("tunnel_bytes", "Bytes carried between visitors and agents", self.bytes.clone());
        registry.register("tunnel_visitors", "Public visitors by outcome", self.visitors.clone());
        registry.register(
            "tunnel_udp_datagrams_dropped",
            "Datagrams dropped on arrival at a UDP entrypoint",
            self.udp_dropped.clone(),
        );
        registry.register(
            "tunnel_handshake_failures",
            "Sessions refused at their handshake",
            self.handshake_failures.clone(),
        );
        registry.register("tunnel_reloads", "Configuration reloads", self.reloads.clone());
        registry.register(
            "tunnel_config_version",
            "Version of the configuration in force",
            self.config_version.clone(),
        );
        registry.register("tunnel_cluster_forwarded", "Streams forwarded between replicas", self.forwarded.clone());
    }

    /// Registers the cluster's gauge (a server with a `[cluster]` table only).
    pub fn register_cluster(&self, registry: &mut Registry) {
        registry.register(
            "tunnel_cluster_redis_up",
            "1 while the cluster's Redis answers, 0 while forwarding is off for want of it",
            self.cluster_redis_up.clone(),
        );
    }

    /// Counts a forwarded stream.
    pub fn forwarded(&self, direction: &'static str, result: &'static str) {
        if self.on {
            self.forwarded.get_or_create(&Forwarded { direction, result }).inc();
        }
    }

    /// Counts a stream opened to an agent of `tunnel`.
    pub fn opened(&self, tunnel: &str) {
        if self.on {
            self.streams_opened.get_or_create(&TunnelLabel { tunnel: tunnel.to_owned() }).inc();
        }
    }

    /// Counts a stream's bytes once it is done.
    pub fn carried(&self, tunnel: &str, from_visitor: u64, to_visitor: u64) {
        if !self.on {
            return;
        }
        let label = |direction| TunnelDirection { tunnel: tunnel.to_owned(), direction };
        self.bytes.get_or_create(&label("in")).inc_by(from_visitor);
        self.bytes.get_or_create(&label("out")).inc_by(to_visitor);
    }

    /// Counts a stream that failed with `status`.
    pub fn failed(&self, tunnel: &str, status: u16) {
        if !self.on {
            return;
        }
        self.streams_failed.get_or_create(&TunnelStatus { tunnel: tunnel.to_owned(), status }).inc();
    }

    /// Counts a public visitor's outcome on `entrypoint`.
    pub fn visitor(&self, entrypoint: &str, outcome: &'static str) {
        if !self.on {
            return;
        }
        self.visitors.get_or_create(&VisitorOutcome { entrypoint: entrypoint.to_owned(), outcome }).inc();
    }

    /// Counts a datagram dropped on arrival at UDP `entrypoint`.
    pub fn udp_dropped(&self, entrypoint: &str, reason: &'static str) {
        if self.on {
            self.udp_dropped.get_or_create(&EntrypointReason { entrypoint: entrypoint.to_owned(), reason }).inc();
        }
    }

    /// Counts a refused handshake.
    pub fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures.get_or_create(&Reason { reason }).inc();
    }
}
