//! The access client's admin listener: ready while its session is up, metrics (listeners,
//! streams, failures by status).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tunnel_runtime::admin::{AdminApp, Answer, Method};

/// A failed stream's status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The status the tunnel (or the client itself) answered with.
    pub status: u16,
}

/// The access client's metrics.
#[derive(Default)]
pub struct Metrics {
    /// Listeners open.
    pub listeners: Gauge,
    /// Streams opened through the tunnel.
    pub streams: Counter,
    /// Visitors that could not be carried, by status.
    pub failures: Family<StatusLabel, Counter>,
}

impl Metrics {
    /// Registers every metric.
    pub fn register(&self, r: &mut Registry) {
        r.register("tunnel_access_listeners", "Local listeners open", self.listeners.clone());
        r.register("tunnel_access_streams", "Streams opened through the tunnel", self.streams.clone());
        r.register("tunnel_access_failures", "Visitors that could not be carried, by status", self.failures.clone());
    }
}

/// The access client's admin application.
pub struct AccessAdmin {
    pub(crate) shared: Arc<crate::Shared>,
    pub(crate) registry: Registry,
}

impl AdminApp for AccessAdmin {
    fn ready(&self) -> (bool, Value) {
        let up = self.shared.session.borrow().as_ref().is_some_and(|s| !s.is_closed());
        (up, json!({ "ready": up, "sessions": usize::from(up) }))
    }

    fn metrics(&self) -> String {
        tunnel_runtime::admin::encode(&self.registry)
    }

    fn handle(&self, _method: &Method, _path: &str, _body: &[u8], _peer: std::net::SocketAddr) -> Option<Answer> {
        None
    }
}
