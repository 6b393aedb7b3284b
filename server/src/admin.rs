//! What the server serves on its admin listener: readiness, metrics, the JSON API
//! (`/api/v1/tunnels`, `/api/v1/rules`, `/api/v1/config`, `/api/v1/cluster`, `POST /api/v1/reload`) and the status
//! page at `/`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tunnel_runtime::admin::{AdminApp, Answer, Method};
use uuid::Uuid;

use crate::Shared;

/// The server's admin application.
pub(crate) struct ServerAdmin {
    pub(crate) shared: Arc<Shared>,
    pub(crate) registry: prometheus_client::registry::Registry,
    /// The relay listener's bound address.
    pub(crate) relay: std::net::SocketAddr,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl ServerAdmin {
    fn tunnels(&self) -> Value {
        let s = &self.shared;
        let routes = s.routes();
        let mut ids: Vec<Uuid> = routes.ingress.rules().iter().map(|r| r.tunnel).collect();
        ids.extend(routes.auth.stored_tunnels().copied());
        ids.extend(s.registry.tunnels().into_iter().map(|(id, _)| id));
        ids.extend(s.access.iter().map(|a| a.hello.tunnel));
        ids.sort();
        ids.dedup();
        let transport = crate::relay::transport_label(s);
        let tunnels: Vec<Value> = ids
            .iter()
            .map(|id| {
                let rules: Vec<Value> = routes
                    .ingress
                    .rules()
                    .iter()
                    .filter(|r| &r.tunnel == id)
                    .map(|r| json!({ "hostname": r.pattern.to_string(), "private": r.private }))
                    .collect();
                let agents: Vec<Value> = s
                    .registry
                    .tunnel(id)
                    .map(|t| t.pool.sessions())
                    .unwrap_or_default()
                    .iter()
                    .map(|a| {
                        let mut networks = Vec::new();
                        for n in [tunnel_proto::wire::Network::Tcp, tunnel_proto::wire::Network::Udp] {
                            if a.networks.contains(n) {
                                networks.push(n.to_string());
                            }
                        }
                        json!({
                            "id": a.id,
                            "agent": a.session.peer_addr().to_string(),
                            "transport": transport,
                            "weight": a.weight,
                            "networks": networks,
                            "since": unix(a.since),
                            "streams": a.streams_in_flight(),
                        })
                    })
                    .collect();
                let access: Vec<Value> = s
                    .access
                    .iter()
                    .filter(|a| &a.hello.tunnel == id)
                    .map(|a| {
                        json!({
                            "client": a.peer.to_string(),
                            "transport": transport,
                            "since": unix(a.since),
                            "streams": a.max_streams - a.budget.available_permits(),
                        })
                    })
                    .collect();
                let label = s.tunnel_label(id);
                let bytes = |direction| {
                    s.metrics
                        .bytes
                        .get_or_create(&crate::metrics::TunnelDirection { tunnel: label.clone(), direction })
                        .get()
                };
                json!({
                    "tunnel": id.to_string(),
                    "rules": rules,
                    "agents": agents,
                    "accessClients": access,
                    "bytesIn": bytes("in"),
                    "bytesOut": bytes("out"),
                })
            })
            .collect();
        json!({ "tunnels": tunnels })
    }

    fn rules(&self) -> Value {
        let routes = self.shared.routes();
        let rules: Vec<Value> = routes
            .ingress
            .rules()
            .iter()
            .map(|r| json!({ "hostname": r.pattern.to_string(), "tunnel": r.tunnel.to_string(), "private": r.private }))
            .collect();
        json!({ "rules": rules, "direct": routes.direct })
    }

    /// `/api/v1/store/...`: the tunnels, secrets and routes made at run time.
    fn store(&self, method: &str, rest: &str, body: &[u8], peer: std::net::SocketAddr) -> Answer {
        let s = &self.shared;
        let body: Value = match body.is_empty() {
            true => Value::Null,
            false => match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return Answer::json(400, &json!({ "error": format!("the body is not JSON: {e}") })),
            },
        };
        let who = format!("admin api from {peer}");
        let who = who.as_str();
        let segments: Vec<&str> = rest.split('/').collect();
        let (status, value) = s.with_store(|ctx| crate::tunnels::dispatch(ctx, method, &segments, &body, who));
        Answer::json(status, &value)
    }

    /// `POST /api/v1/certificates/renew {"name": "app.example.com"}`: orders an ordered
    /// certificate again now; the one in force serves until the new one is in.
    fn renew(&self, body: &[u8]) -> Answer {
        let Some(acme) = &self.shared.edge.acme else {
            return Answer::json(404, &json!({ "error": "no certificates are ordered (no [acme] table)" }));
        };
        let name = serde_json::from_slice::<Value>(body).ok().and_then(|v| v["name"].as_str().map(str::to_owned));
        let Some(name) = name else {
            return Answer::json(
                400,
                &json!({ "error": "give the certificate's name: {\"name\": \"app.example.com\"}" }),
            );
        };
        match acme.force_renewal(&name) {
            true => Answer::json(202, &json!({ "renewing": name })),
            false => Answer::json(404, &json!({ "error": format!("no ordered certificate is named {name:?}") })),
        }
    }

    fn config(&self) -> Value {
        let s = &self.shared;
        json!({
            "version": s.in_force.version(),
            "file": s.config.origin.file,
            "transport": s.config.transport.to_string(),
            "relay": self.relay.to_string(),
            "tasks": s.life.tasks().len(),
        })
    }
}

impl AdminApp for ServerAdmin {
    fn ready(&self) -> (bool, Value) {
        let s = &self.shared;
        let draining = s.life.stopping().is_cancelled();
        let sessions: usize = s.registry.tunnels().iter().map(|(_, t)| t.pool.len()).sum::<usize>() + s.access.len();
        let mut body = json!({ "ready": !draining, "draining": draining, "sessions": sessions });
        // A replica without Redis still serves its own tunnels: ready, and degraded.
        if let Some(cluster) = &s.cluster {
            body["cluster"] = cluster.status();
            body["degraded"] = json!(!cluster.directory.is_up());
        }
        (!draining, body)
    }

    fn page(&self) -> Option<&'static str> {
        Some(STATUS_PAGE)
    }

    fn metrics(&self) -> String {
        self.shared.edge.refresh_expiry();
        tunnel_runtime::admin::encode(&self.registry)
    }

    fn handle(&self, method: &Method, path: &str, body: &[u8], peer: std::net::SocketAddr) -> Option<Answer> {
        if let Some(rest) = path.strip_prefix("/api/v1/store/") {
            return Some(self.store(method.as_str(), rest, body, peer));
        }
        Some(match (method.as_str(), path) {
            ("GET", "/api/v1/tunnels") => Answer::json(200, &self.tunnels()),
            ("GET", "/api/v1/rules") => Answer::json(200, &self.rules()),
            ("GET", "/api/v1/config") => Answer::json(200, &self.config()),
            ("GET", "/api/v1/cluster") => match &self.shared.cluster {
                Some(cluster) => Answer::json(200, &cluster.status()),
                None => {
                    Answer::json(404, &json!({ "error": "this server is not a cluster replica (no [cluster] table)" }))
                }
            },
            ("POST", "/api/v1/reload") => match crate::reload::reload(&self.shared) {
                Ok(report) => Answer::json(200, &report),
                Err(why) => Answer::json(422, &json!({ "applied": false, "error": why })),
            },
            (_, "/api/v1/reload") => Answer::text(405, "405 use POST\n"),
            ("GET", "/api/v1/certificates") => Answer::json(200, &self.shared.edge.describe()),
            ("POST", "/api/v1/certificates/renew") => self.renew(body),
            (_, "/api/v1/certificates/renew") => Answer::text(405, "405 use POST\n"),
            _ => return None,
        })
    }
}

/// The status page: one self-contained HTML document that reads the API and refreshes itself.
const STATUS_PAGE: &str = include_str!("status.html");
