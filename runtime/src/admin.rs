//! The admin listener each binary can open (`--admin 127.0.0.1:9100`, TOML `[admin]`): health
//! and readiness probes, Prometheus metrics, a JSON API and, on the server, a status page.
//!
//! Off by default. An address that is not loopback needs a token (`[admin] token` or
//! `tokenFile`), sent as `Authorization: Bearer TOKEN`; `/healthz` and `/readyz` never need it,
//! everything else does once a token is set. What each binary serves comes from its
//! [`AdminApp`]; this module only speaks HTTP (hyper) and checks the token.
//!
//! A web page the operator opens must not reach the listener through the browser: a request
//! whose `Host` names neither an address nor `localhost` nor a name of `[admin] hosts` is
//! refused (so DNS rebinding reads nothing), and a request that changes state (any method but
//! `GET`, `HEAD` and `OPTIONS`) needs a header a page cannot send without the listener's
//! consent: `Authorization`, or `Content-Type: application/json` (no CORS preflight is ever
//! answered).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
pub use hyper::Method;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ConfigError;
use crate::secret::Secret;

/// Largest request body the admin listener reads.
const MAX_BODY: usize = 64 * 1024;
/// A request must arrive whole within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// `[admin]` as written.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdminFile {
    /// Where to listen, `host:port`.
    #[serde(default)]
    pub addr: Option<String>,
    /// Token required for everything but the probes.
    #[serde(default)]
    pub token: Option<Secret>,
    /// File holding the token.
    #[serde(default)]
    pub token_file: Option<String>,
    /// Host names requests may name besides addresses and `localhost` (a Service's name, say).
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// A validated admin listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Token for everything but the probes.
    pub token: Option<Secret>,
    /// Host names requests may name besides addresses and `localhost`, canonical.
    pub hosts: Vec<String>,
}

impl AdminFile {
    /// Validates; `None` when no address is set (the listener is off). `--admin` overrides
    /// the file's address.
    pub fn validate(&self, source: &str, cli_addr: Option<&str>) -> Result<Option<AdminConfig>, ConfigError> {
        let invalid =
            |key: &str, why: String| ConfigError::Invalid { source_name: source.to_owned(), key: key.to_owned(), why };
        let Some(raw) = cli_addr.or(self.addr.as_deref()) else { return Ok(None) };
        let addr: SocketAddr = raw
            .parse()
            .map_err(|_| invalid("admin.addr", format!("{raw:?} is not an address (write 127.0.0.1:9100)")))?;
        let token = crate::secret::token_or_file(
            self.token.clone(),
            self.token_file.as_deref(),
            "admin.token",
            "admin.tokenFile",
        )
        .map_err(|(key, why)| invalid(&key, why))?;
        if !addr.ip().is_loopback() && token.is_none() {
            return Err(invalid(
                "admin.token",
                format!("the admin listener on {addr} is reachable from other machines: set [admin] token or tokenFile, or listen on 127.0.0.1"),
            ));
        }
        let mut hosts = Vec::new();
        for (i, name) in self.hosts.iter().enumerate() {
            let canonical = tunnel_proto::host::canonicalize(name)
                .map_err(|e| invalid(&format!("admin.hosts[{i}]"), format!("{name:?}: {e}")))?;
            hosts.push(canonical);
        }
        Ok(Some(AdminConfig { addr, token, hosts }))
    }
}

/// An HTTP answer of the admin listener.
pub struct Answer {
    /// The status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Answer {
    /// A JSON answer.
    pub fn json(status: u16, value: &serde_json::Value) -> Answer {
        Answer { status, content_type: "application/json", body: value.to_string() + "\n" }
    }

    /// A plain-text answer.
    pub fn text(status: u16, body: impl Into<String>) -> Answer {
        Answer { status, content_type: "text/plain; charset=utf-8", body: body.into() }
    }
}

/// What a binary serves on its admin listener.
pub trait AdminApp: Send + Sync + 'static {
    /// Whether the binary is ready, with a JSON body saying why (`{"ready":true,...}`).
    fn ready(&self) -> (bool, serde_json::Value);
    /// A page served at `/` without the token (it holds no data; it reads the API, passing
    /// the token from its URL fragment `#token=...`).
    fn page(&self) -> Option<&'static str> {
        None
    }
    /// The Prometheus text exposition of its metrics.
    fn metrics(&self) -> String;
    /// Any other path (`/`, `/api/v1/...`); `None` for 404. `body` is the request body,
    /// `peer` who sent it (for audit lines).
    fn handle(&self, method: &Method, path: &str, body: &[u8], peer: std::net::SocketAddr) -> Option<Answer>;
}

/// A running admin listener.
pub struct Admin {
    addr: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Admin {
    /// Binds the listener and serves `app` until [`Admin::stop`].
    pub async fn spawn(config: &AdminConfig, app: Arc<dyn AdminApp>) -> std::io::Result<Admin> {
        let listener = TcpListener::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, token = config.token.is_some(), "admin listening");
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let shared = Arc::new((app, config.token.clone(), config.hosts.clone()));
        tasks.spawn(accept(listener, shared, stop.clone(), tasks.clone()));
        Ok(Admin { addr, stop, tasks })
    }

    /// Starts the listener `config` asks for, if any. `app` makes the application from a
    /// registry that already holds the build info (it registers its own metrics there).
    pub async fn start(
        config: Option<&AdminConfig>,
        app: impl FnOnce(prometheus_client::registry::Registry) -> Arc<dyn AdminApp>,
    ) -> std::io::Result<Option<Admin>> {
        match config {
            Some(config) => Ok(Some(Admin::spawn(config, app(registry())).await?)),
            None => Ok(None),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and ends the connections.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

type Shared = Arc<(Arc<dyn AdminApp>, Option<Secret>, Vec<String>)>;

/// Admin connections open at once, in all.
pub const MAX_CONNECTIONS: usize = 256;
/// Admin connections open at once from one address: a client that holds many cannot starve
/// the probes and scrapers that come from elsewhere.
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 16;

/// Places taken by open admin connections, in all and per source address.
#[derive(Default)]
struct Places {
    per_source: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One open connection's place; given back when dropped.
struct Place {
    places: Arc<Places>,
    source: std::net::IpAddr,
}

impl Places {
    fn take(self: &Arc<Self>, source: std::net::IpAddr) -> Option<Place> {
        let mut map = self.per_source.lock().ok()?;
        let total: usize = map.values().sum();
        let here = map.entry(source).or_insert(0);
        if *here >= MAX_CONNECTIONS_PER_SOURCE || total >= MAX_CONNECTIONS {
            return None;
        }
        *here += 1;
        Some(Place { places: self.clone(), source })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Ok(mut map) = self.places.per_source.lock() {
            if let Some(n) = map.get_mut(&self.source) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.source);
                }
            }
        }
    }
}

async fn accept(listener: TcpListener, shared: Shared, stop: CancellationToken, tasks: TaskTracker) {
    let places = Arc::new(Places::default());
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(err) => {
                    tracing::debug!(%err, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let peer = tunnel_proto::socket::canonical_peer(peer);
        let Some(place) = places.take(peer.ip()) else {
            tracing::debug!(%peer, "admin connection refused: too many open from this address or in all");
            continue;
        };
        let (shared, stop) = (shared.clone(), stop.clone());
        tasks.spawn(async move {
            let _place = place;
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(respond(&shared, req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}

async fn respond(shared: &Shared, req: Request<Incoming>, peer: std::net::SocketAddr) -> Response<Full<Bytes>> {
    let (app, token, hosts) = (&shared.0, &shared.1, &shared.2);
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if !host_allowed(hosts, &req) {
        return build(Answer::text(
            403,
            "403 Forbidden: the Host header names neither an address nor localhost nor a name of [admin] hosts\n",
        ));
    }
    let changes_state = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state && !from_a_program(&req) {
        return build(Answer::text(403, "403 Forbidden: send Content-Type: application/json (or the Authorization header) with a request that changes state\n"));
    }
    let answer = match path.as_str() {
        "/healthz" => Answer::json(200, &serde_json::json!({ "alive": true })),
        "/readyz" => {
            let (ready, body) = app.ready();
            Answer::json(if ready { 200 } else { 503 }, &body)
        }
        "/" if method == Method::GET && app.page().is_some() => Answer {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: app.page().unwrap_or_default().to_owned(),
        },
        _ if !authorized(token.as_ref(), &req) => {
            Answer::text(401, "401 Unauthorized: send Authorization: Bearer TOKEN\n")
        }
        "/metrics" => Answer {
            status: 200,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: app.metrics(),
        },
        _ => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return build(Answer::text(413, "413 request body too large\n")),
            };
            app.handle(&method, &path, &body, peer).unwrap_or_else(|| Answer::text(404, "404 Not Found\n"))
        }
    };
    build(answer)
}

/// Whether the request's `Host` is one the listener answers: an IP address, `localhost`, or
/// a configured name, with any port. A request without `Host` (HTTP/1.0 tools) passes:
/// browsers always send one.
fn host_allowed(hosts: &[String], req: &Request<Incoming>) -> bool {
    let Some(value) = req.headers().get(hyper::header::HOST) else { return true };
    let Ok(value) = value.to_str() else { return false };
    let name = match value.strip_prefix('[') {
        Some(v6) => return v6.split_once(']').is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => match value.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => value,
        },
    };
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = name.trim_end_matches('.');
    name.eq_ignore_ascii_case("localhost") || hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Whether a request carries what a cross-origin web page cannot send without a preflight:
/// an `Authorization` header, or a JSON body type.
fn from_a_program(req: &Request<Incoming>) -> bool {
    let headers = req.headers();
    let json = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    json || headers.contains_key(hyper::header::AUTHORIZATION)
}

fn authorized(token: Option<&Secret>, req: &Request<Incoming>) -> bool {
    let Some(token) = token else { return true };
    let sent = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(sent.as_bytes().ct_eq(token.expose().as_bytes()))
}

fn build(answer: Answer) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(answer.body)));
    *r.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(answer.content_type));
    r.headers_mut().insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-store"));
    r
}

/// `tunnel_build_info{version,commit}` and a registry to add the rest to.
pub fn registry() -> prometheus_client::registry::Registry {
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    let mut r = prometheus_client::registry::Registry::default();
    let info = Family::<Vec<(String, String)>, Gauge>::default();
    let labels = vec![
        ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ("commit".to_owned(), option_env!("TUNNEL_COMMIT").unwrap_or("unknown").to_owned()),
    ];
    info.get_or_create(&labels).set(1);
    r.register("tunnel_build_info", "Version and commit of this build", info);
    r
}

/// The text exposition of `registry`.
pub fn encode(registry: &prometheus_client::registry::Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}
