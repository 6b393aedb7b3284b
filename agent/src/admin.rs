//! The agent's admin listener: ready with at least one session, metrics (sessions up,
//! reconnects by reason, streams by target and outcome, dial latency), and the API
//! (`/api/v1/sessions`, `/api/v1/targets`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tunnel_runtime::admin::{AdminApp, Answer, Method};

/// A reconnect's reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// `refused`, `unreachable`, `lost` or `going_away`.
    pub reason: &'static str,
}

/// A stream's target and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetOutcome {
    /// The configured target's name.
    pub target: String,
    /// `ok`, `refused`, `timeout` or `no_target`.
    pub outcome: &'static str,
}

/// The agent's metrics.
pub struct Metrics {
    /// Sessions established now.
    pub sessions: Gauge,
    /// Reconnects, by reason.
    pub reconnects: Family<Reason, Counter>,
    /// Streams, by target and outcome.
    pub streams: Family<TargetOutcome, Counter>,
    /// Time to connect to a target, in seconds.
    pub dial_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            sessions: Gauge::default(),
            reconnects: Family::default(),
            streams: Family::default(),
            dial_seconds: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 4.0, 10)),
        }
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn register(&self, r: &mut Registry) {
        r.register("tunnel_agent_sessions", "Sessions to the server established now", self.sessions.clone());
        r.register("tunnel_agent_reconnects", "Session attempts that failed or sessions lost", self.reconnects.clone());
        r.register("tunnel_agent_streams", "Streams by target and outcome", self.streams.clone());
        r.register("tunnel_agent_dial_seconds", "Time to connect to a target", self.dial_seconds.clone());
    }

    /// Counts a stream's outcome.
    pub fn stream(&self, target: &str, outcome: &'static str) {
        self.streams.get_or_create(&TargetOutcome { target: target.to_owned(), outcome }).inc();
    }
}

/// One established session, as the API lists it.
#[derive(Clone)]
pub struct SessionInfo {
    /// The server address it reached.
    pub server: String,
    /// When.
    pub since: SystemTime,
}

/// The agent's admin application.
pub struct AgentAdmin {
    pub(crate) shared: Arc<crate::Shared>,
    pub(crate) registry: Registry,
}

/// Sessions now, for readiness and the API.
#[derive(Default)]
pub struct Sessions {
    pub(crate) up: AtomicI64,
    pub(crate) list: Mutex<Vec<(usize, SessionInfo)>>,
}

impl AdminApp for AgentAdmin {
    fn ready(&self) -> (bool, Value) {
        let n = self.shared.sessions.up.load(Ordering::Relaxed).max(0);
        (n > 0, json!({ "ready": n > 0, "sessions": n }))
    }

    fn metrics(&self) -> String {
        tunnel_runtime::admin::encode(&self.registry)
    }

    fn handle(&self, method: &Method, path: &str, _body: &[u8], _peer: std::net::SocketAddr) -> Option<Answer> {
        if method != Method::GET {
            return None;
        }
        Some(match path {
            "/api/v1/sessions" => {
                let list = self.shared.sessions.list.lock().expect("sessions lock").clone();
                let sessions: Vec<Value> = list
                    .iter()
                    .map(|(id, s)| {
                        let since = s.since.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                        json!({ "id": id, "server": s.server, "since": since })
                    })
                    .collect();
                Answer::json(
                    200,
                    &json!({ "tunnel": self.shared.config.relay.tunnel.to_string(), "sessions": sessions }),
                )
            }
            "/api/v1/targets" => {
                let targets: Vec<Value> = self
                    .shared
                    .targets
                    .all()
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        json!({
                            "name": t.name,
                            "network": t.network.to_string(),
                            "addr": t.addr,
                            "host": t.host.as_ref().map(|h| h.to_string()),
                            "down": self.shared.targets.is_down(i),
                        })
                    })
                    .collect();
                Answer::json(200, &json!({ "targets": targets }))
            }
            _ => return None,
        })
    }
}
