//! Tunnels as data at run time: the [`store`](crate::store) the server keeps them in, the
//! routes it adds to the configuration file's, and the operations of the admin API
//! (`/api/v1/store/...`) and of `tunnel-server tunnel|route`.
//!
//! The store is opened at start when its file exists, and made by the first tunnel created.
//! Every change (through the API, or by another process on the same file, seen within a
//! second) puts new routes in force at once: sessions they no longer admit are closed,
//! streams they no longer route are cut, as on a reload. Each change is one `audit` log line
//! (what, which tunnel or route; never a secret).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tunnel_runtime::connect::ConnectToken;
use uuid::Uuid;

use crate::routing::Routes;
use crate::store::{Route, Store, StoreError, Tunnel};
use crate::Shared;

/// How often the store's file is looked at for other processes' changes and secrets whose
/// grace ended.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The server's tunnels store and what a connection token says of the server.
pub(crate) struct Tunnels {
    path: PathBuf,
    store: Mutex<Option<Arc<Store>>>,
    /// The data version last put in force, and when (seconds since the epoch).
    seen: Mutex<(i64, u64)>,
    /// The tunnels last read: what stays in force while the store cannot be read.
    last_good: Mutex<Vec<Tunnel>>,
    /// The last read failed: the next look reads again, whatever the version says.
    stale: std::sync::atomic::AtomicBool,
    /// The relay URLs agents dial (`relay+tls://host:port`).
    servers: Vec<String>,
    /// The relay certificate's pin, for the encrypted transports.
    pin: Option<String>,
}

impl Tunnels {
    /// The store at `path` (opened now if the file exists) or, for a replica of a cluster,
    /// in the cluster's Redis; and the server's relay URLs and pin for connection tokens.
    pub(crate) fn open(
        path: PathBuf,
        cluster: Option<&crate::cluster::ClusterConfig>,
        servers: Vec<String>,
        pin: Option<String>,
    ) -> Result<Tunnels, String> {
        let store = match (cluster, path.exists()) {
            (Some(c), _) => {
                Some(Arc::new(Store::redis(c.redis.expose(), c.secret.expose().as_bytes()).map_err(|e| e.to_string())?))
            }
            (None, true) => Some(Arc::new(Store::open(&path).map_err(|e| format!("{}: {e}", path.display()))?)),
            (None, false) => None,
        };
        let seen = Mutex::new((-1, unix_now()));
        Ok(Tunnels {
            path,
            store: Mutex::new(store),
            seen,
            last_good: Mutex::default(),
            stale: Default::default(),
            servers,
            pin,
        })
    }

    /// The store, if open.
    fn get(&self) -> Option<Arc<Store>> {
        self.store.lock().expect("store lock").clone()
    }

    /// The store, made if missing.
    fn get_or_make(&self) -> Result<Arc<Store>, StoreError> {
        let mut slot = self.store.lock().expect("store lock");
        if let Some(store) = slot.as_ref() {
            return Ok(store.clone());
        }
        let store = Arc::new(Store::open(&self.path)?);
        tracing::info!(path = %self.path.display(), "tunnel store made");
        *slot = Some(store.clone());
        Ok(store)
    }

    /// The stored tunnels (none without a store). A store that cannot be read (a file
    /// damaged, Redis away, a record not sealed by this cluster) is logged and changes
    /// nothing: the tunnels last read stay in force.
    fn stored(&self) -> Vec<Tunnel> {
        let Some(store) = self.get() else { return Vec::new() };
        let mut last = self.last_good.lock().expect("store lock");
        let read = store.list();
        let failed = read.is_err();
        match read {
            Ok(tunnels) => *last = tunnels,
            // Said once per outage; the store is read again every second until it answers.
            Err(err) if !self.stale.load(std::sync::atomic::Ordering::Relaxed) => {
                tracing::error!(%err, "the tunnel store cannot be read: the tunnels last read stay in force")
            }
            Err(_) => {}
        }
        if self.stale.swap(failed, std::sync::atomic::Ordering::Relaxed) && !failed {
            tracing::info!("the tunnel store is read again");
        }
        last.clone()
    }

    /// The connection token of `tunnel` with `secret`.
    fn token(&self, tunnel: Uuid, secret: String) -> String {
        ConnectToken { servers: self.servers.clone(), tunnel, secret, pin: self.pin.clone() }.encode()
    }
}

/// The configuration file's `routes` with the store's tunnels and routes.
pub(crate) fn merge(tunnels: &Tunnels, file: Routes) -> Routes {
    let (routes, warnings) = file.with_stored(&tunnels.stored());
    for warning in warnings {
        tracing::warn!(message = %warning);
    }
    routes
}

/// As [`merge`], for a running server.
pub(crate) fn merged(shared: &Shared, file: Routes) -> Routes {
    merge(&shared.tunnels, file)
}

/// Puts the store's present state in force beside the file's routes.
pub(crate) fn apply(shared: &Shared) {
    let version = shared.tunnels.get().and_then(|store| store.data_version().ok()).unwrap_or(-1);
    *shared.tunnels.seen.lock().expect("store lock") = (version, unix_now());
    let routes = merged(shared, (*shared.in_force.file_routes()).clone());
    shared.in_force.routes.replace(routes);
    let routes = shared.routes();
    let (closed, cut) = crate::reload::settle(shared, &routes);
    if closed > 0 || cut > 0 {
        tracing::info!(closed, cut, "tunnel store change: sessions closed and streams cut");
    }
}

/// Watches the store for other processes' (and, in a cluster, other replicas') changes,
/// and for rotated secrets whose grace ended (their sessions are closed then), until stop.
pub(crate) async fn watch(shared: Arc<Shared>) {
    let stop = shared.life.stopping().clone();
    // In a cluster, a change another replica announces is read at once.
    let announced = Arc::new(tokio::sync::Notify::new());
    if let Some(cluster) = &shared.cluster {
        tokio::spawn(follow(cluster.config.redis.expose().to_owned(), announced.clone(), stop.clone()));
    }
    loop {
        tokio::select! {
            () = tokio::time::sleep(WATCH_INTERVAL) => {}
            () = announced.notified() => {}
            () = stop.cancelled() => return,
        }
        // The store's calls block (a file, or Redis): off the visitors' threads.
        let shared = shared.clone();
        let _ = tokio::task::spawn_blocking(move || look(&shared)).await;
    }
}

/// Follows the announcements of changes to a cluster's store (pub/sub), waking `announced`
/// for each, until `stop`; reconnects after a loss. The version is read every second anyway.
async fn follow(url: String, announced: Arc<tokio::sync::Notify>, stop: tokio_util::sync::CancellationToken) {
    use futures::StreamExt;
    let Ok(client) = redis::Client::open(url.as_str()) else { return };
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await.ok()?;
            pubsub.subscribe(crate::store::redis_store::CHANNEL).await.ok()?;
            let mut messages = pubsub.into_on_message();
            while messages.next().await.is_some() {
                announced.notify_one();
            }
            Some(())
        };
        tokio::select! {
            _ = subscribed => {}
            () = stop.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(WATCH_INTERVAL) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One look of [`watch`].
fn look(shared: &Shared) {
    if shared.tunnels.get().is_none() && shared.tunnels.path.exists() {
        // Made by the offline CLI while the server runs.
        if shared.tunnels.get_or_make().is_err() {
            return;
        }
    }
    let Some(store) = shared.tunnels.get() else { return };
    let (seen, applied_at) = *shared.tunnels.seen.lock().expect("store lock");
    let stale = shared.tunnels.stale.load(std::sync::atomic::Ordering::Relaxed);
    let changed = stale || store.data_version().is_ok_and(|version| version != seen);
    // A rotated secret whose grace ended since: its sessions are closed now.
    let expired = shared.routes().auth.expired_between(applied_at, unix_now());
    if changed || expired {
        apply(shared);
    }
}

/// What the store's operations work with: the store, the configuration file's routes (which
/// stored routes may not take), and what puts a change in force (nothing, offline).
pub(crate) struct Ctx<'a> {
    /// The store.
    pub(crate) tunnels: &'a Tunnels,
    /// The configuration file's routes.
    pub(crate) file: Arc<Routes>,
    /// Puts a change in force.
    pub(crate) apply: &'a dyn Fn(),
}

impl Shared {
    /// The store's operations on this running server.
    pub(crate) fn with_store<T>(&self, op: impl FnOnce(&Ctx<'_>) -> T) -> T {
        let apply = || apply(self);
        op(&Ctx { tunnels: &self.tunnels, file: self.in_force.file_routes(), apply: &apply })
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// One tunnel as the API shows it (never a secret).
pub(crate) fn describe(t: &Tunnel) -> Value {
    let routes: Vec<Value> =
        t.routes.iter().map(|r| json!({ "hostname": r.hostname, "path": r.path, "private": r.private })).collect();
    let rotating = t.secrets.iter().filter_map(|(_, e)| *e).min();
    let routes: Vec<Value> = routes
        .into_iter()
        .zip(&t.routes)
        .map(|(mut v, r)| {
            if r.claimed {
                v["claimed"] = json!(true);
            }
            v
        })
        .collect();
    json!({
        "tunnel": t.id.to_string(),
        "name": t.name,
        "created": t.created,
        "routes": routes,
        "secrets": t.secrets.len(),
        "rotatingOutAt": rotating,
        "suffix": t.suffix,
        "keepHostnames": t.keep_hostnames,
    })
}

/// An API answer: status and body.
pub(crate) type Answer = (u16, Value);

fn refused(err: StoreError) -> Answer {
    let status = match &err {
        StoreError::NoTunnel(_) => 404,
        StoreError::NameTaken(_) | StoreError::Conflict(_) => 409,
        StoreError::Invalid(_) => 400,
        StoreError::Db(_) => 500,
    };
    if status == 500 {
        tracing::error!(%err, "tunnel store");
    }
    (status, json!({ "error": err.to_string() }))
}

/// `POST /api/v1/store/tunnels {"name": "web"}`: the tunnel and its connection token, shown
/// this once.
pub(crate) fn create(ctx: &Ctx<'_>, body: &Value, who: &str) -> Answer {
    let Some(name) = body["name"].as_str() else {
        return (400, json!({ "error": "give the tunnel's name: {\"name\": \"web\"}" }));
    };
    let store = match ctx.tunnels.get_or_make() {
        Ok(store) => store,
        Err(err) => return refused(err),
    };
    match store.create(name, body["suffix"].as_str(), body["keepHostnames"].as_bool().unwrap_or(false)) {
        Ok((tunnel, secret)) => {
            tracing::info!(audit = "tunnel created", who, tunnel = %tunnel.id, name = %tunnel.name);
            (ctx.apply)();
            let mut answer = describe(&tunnel);
            answer["token"] = json!(ctx.tunnels.token(tunnel.id, secret));
            (201, answer)
        }
        Err(err) => refused(err),
    }
}

/// `GET /api/v1/store/tunnels`.
pub(crate) fn list(ctx: &Ctx<'_>) -> Answer {
    let Some(store) = ctx.tunnels.get() else { return (200, json!({ "tunnels": [] })) };
    match store.list() {
        Ok(tunnels) => (200, json!({ "tunnels": tunnels.iter().map(describe).collect::<Vec<_>>() })),
        Err(err) => refused(err),
    }
}

/// `GET /api/v1/store/tunnels/KEY` (a name or an ID).
pub(crate) fn show(ctx: &Ctx<'_>, key: &str) -> Answer {
    let Some(store) = ctx.tunnels.get() else { return refused(StoreError::NoTunnel(key.to_owned())) };
    match store.find(key) {
        Ok(tunnel) => (200, describe(&tunnel)),
        Err(err) => refused(err),
    }
}

/// `DELETE /api/v1/store/tunnels/KEY`: the tunnel, its secrets and routes; its sessions are
/// closed.
pub(crate) fn delete(ctx: &Ctx<'_>, key: &str, who: &str) -> Answer {
    let Some(store) = ctx.tunnels.get() else { return refused(StoreError::NoTunnel(key.to_owned())) };
    match store.delete(key) {
        Ok(tunnel) => {
            tracing::info!(audit = "tunnel deleted", who, tunnel = %tunnel.id, name = %tunnel.name);
            (ctx.apply)();
            (200, json!({ "deleted": tunnel.id.to_string() }))
        }
        Err(err) => refused(err),
    }
}

/// `POST /api/v1/store/tunnels/KEY/token {"grace": "1h"}`: a new secret and its token; the old
/// ones admit for `grace` more (none: revoked now, their sessions closed).
pub(crate) fn rotate(ctx: &Ctx<'_>, key: &str, body: &Value, who: &str) -> Answer {
    let grace = match body.get("grace").and_then(Value::as_str) {
        None => Duration::ZERO,
        Some(raw) => match humantime::parse_duration(raw) {
            Ok(grace) => grace,
            Err(e) => {
                return (400, json!({ "error": format!("grace {raw:?}: {e} (e.g. \"10m\", or \"0s\" to revoke now)") }))
            }
        },
    };
    let Some(store) = ctx.tunnels.get() else { return refused(StoreError::NoTunnel(key.to_owned())) };
    match store.rotate(key, grace) {
        Ok((tunnel, secret)) => {
            let grace_s = grace.as_secs();
            tracing::info!(audit = "tunnel secret rotated", who, tunnel = %tunnel.id, name = %tunnel.name, grace_s);
            (ctx.apply)();
            let mut answer = describe(&tunnel);
            answer["token"] = json!(ctx.tunnels.token(tunnel.id, secret));
            (200, answer)
        }
        Err(err) => refused(err),
    }
}

/// `POST /api/v1/store/routes {"tunnel": KEY, "hostname": H, "path": P, "private": B}`.
pub(crate) fn add_route(ctx: &Ctx<'_>, body: &Value, who: &str) -> Answer {
    let (Some(key), Some(hostname)) = (body["tunnel"].as_str(), body["hostname"].as_str()) else {
        return (
            400,
            json!({ "error": "give the tunnel and the hostname: {\"tunnel\": \"web\", \"hostname\": \"app.example.com\"}" }),
        );
    };
    let Some(store) = ctx.tunnels.get() else { return refused(StoreError::NoTunnel(key.to_owned())) };
    let tunnel = match store.find(key) {
        Ok(tunnel) => tunnel,
        Err(err) => return refused(err),
    };
    let route = Route {
        hostname: hostname.trim().to_ascii_lowercase(),
        path: body["path"].as_str().map(str::to_owned),
        tunnel: tunnel.id,
        private: body["private"].as_bool().unwrap_or(false),
        claimed: false,
    };
    let file = &ctx.file;
    let refuse = |r: &Route| {
        let pattern = tunnel_proto::host::HostPattern::parse(&r.hostname).ok()?;
        file.file_rule(&pattern, r.path.as_deref())
            .map(|held| format!("{}{}: {held} holds it", r.hostname, r.path.as_deref().unwrap_or("")))
    };
    match store.add_route(&route, refuse) {
        Ok(()) => {
            tracing::info!(audit = "route added", who, tunnel = %tunnel.id, hostname = %route.hostname, path = route.path.as_deref().unwrap_or(""), private = route.private);
            (ctx.apply)();
            (
                201,
                json!({ "tunnel": tunnel.id.to_string(), "hostname": route.hostname, "path": route.path, "private": route.private }),
            )
        }
        Err(err) => refused(err),
    }
}

/// `DELETE /api/v1/store/routes {"hostname": H, "path": P}`.
pub(crate) fn delete_route(ctx: &Ctx<'_>, body: &Value, who: &str) -> Answer {
    let Some(hostname) = body["hostname"].as_str() else {
        return (400, json!({ "error": "give the hostname: {\"hostname\": \"app.example.com\"}" }));
    };
    let hostname = hostname.trim().to_ascii_lowercase();
    let path = body["path"].as_str();
    let Some(store) = ctx.tunnels.get() else { return (404, json!({ "error": "no such route" })) };
    match store.delete_route(&hostname, path) {
        Ok(true) => {
            tracing::info!(audit = "route deleted", who, %hostname, path = path.unwrap_or(""));
            (ctx.apply)();
            (200, json!({ "deleted": hostname }))
        }
        Ok(false) => (404, json!({ "error": format!("no stored route for {hostname}{}", path.unwrap_or("")) })),
        Err(err) => refused(err),
    }
}

/// Routes an API request `method /api/v1/store/SEGMENTS...` to its operation.
pub(crate) fn dispatch(ctx: &Ctx<'_>, method: &str, segments: &[&str], body: &Value, who: &str) -> Answer {
    match (method, segments) {
        ("GET", ["tunnels"]) => list(ctx),
        ("POST", ["tunnels"]) => create(ctx, body, who),
        ("GET", ["tunnels", key]) => show(ctx, key),
        ("DELETE", ["tunnels", key]) => delete(ctx, key, who),
        ("POST", ["tunnels", key, "token"]) => rotate(ctx, key, body, who),
        ("POST", ["routes"]) => add_route(ctx, body, who),
        ("DELETE", ["routes"]) => delete_route(ctx, body, who),
        ("GET", ["routes"]) => {
            let (status, all) = list(ctx);
            let mut routes = Vec::new();
            for t in all["tunnels"].as_array().into_iter().flatten() {
                for r in t["routes"].as_array().into_iter().flatten() {
                    let mut r = r.clone();
                    r["tunnel"] = t["name"].clone();
                    routes.push(r);
                }
            }
            (status, json!({ "routes": routes }))
        }
        _ => (404, json!({ "error": "no such store endpoint; see README, Tunnels as data" })),
    }
}

/// The store's operations without a running server (`tunnel-server -C FILE tunnel ...`):
/// the configuration file says where the store is and what a connection token names.
pub fn offline(config: &crate::Config, method: &str, segments: &[&str], body: &Value) -> anyhow::Result<Answer> {
    let identity = match config.transport.is_encrypted() {
        true => Some(crate::identity::load(&config.identity)?),
        false => None,
    };
    let servers = match config.advertise.is_empty() {
        false => config.advertise.iter().map(|a| format!("{}://{a}", config.transport.scheme())).collect(),
        true => {
            let addr = crate::advertised(config.relay_addr);
            if config.relay_addr.ip().is_unspecified() {
                eprintln!("note: advertise is not set: tokens name {addr}; set advertise = [\"HOST:PORT\"] in the configuration for agents elsewhere");
            }
            vec![format!("{}://{addr}", config.transport.scheme())]
        }
    };
    let pin = identity.map(|i| i.fingerprint());
    let tunnels = Tunnels::open(config.state_dir.join("tunnels.db"), config.cluster.as_ref(), servers, pin)
        .map_err(anyhow::Error::msg)?;
    let nothing = || {};
    let ctx = Ctx { tunnels: &tunnels, file: Arc::new(config.routes()), apply: &nothing };
    Ok(dispatch(&ctx, method, segments, body, "offline cli"))
}

/// A store operation through a running server's admin API at `api` (`http://HOST:PORT`).
pub fn remote(api: &str, token: Option<&str>, method: &str, path: &str, body: &Value) -> anyhow::Result<Answer> {
    use http_body_util::BodyExt;
    let authority = api
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("--api {api:?}: the admin listener's http://HOST:PORT"))?
        .trim_end_matches('/')
        .to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let tcp = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(&authority))
            .await
            .map_err(|_| anyhow::anyhow!("{api}: no answer within 10 s"))?
            .map_err(|e| anyhow::anyhow!("{api}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let payload = match body.is_null() {
            true => bytes::Bytes::new(),
            false => bytes::Bytes::from(serde_json::to_vec(body)?),
        };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("/api/v1/store/{path}"))
            .header(hyper::header::HOST, &authority)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(http_body_util::Full::new(payload))?;
        let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
            .await
            .map_err(|_| anyhow::anyhow!("{api}: no answer within 30 s"))??;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or_else(
            |_| json!({ "error": format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes).trim()) }),
        );
        Ok((status, value))
    })
}

/// Routes the hostname an agent of `tunnel` asked for (`myapp`, or `myapp.SUFFIX`) to it,
/// under the tunnel's allowed suffix, first come first served; the hostname, or why not.
pub(crate) fn claim(shared: &Shared, tunnel: Uuid, asked: &str) -> Result<String, String> {
    let Some(store) = shared.tunnels.get() else { return Err("this tunnel may not ask for hostnames".into()) };
    let stored = store.find(&tunnel.to_string()).map_err(|_| "this tunnel may not ask for hostnames".to_owned())?;
    let Some(suffix) = stored.suffix.as_deref() else {
        return Err(format!("tunnel {:?} may not ask for hostnames (it has no suffix)", stored.name));
    };
    let asked = asked.trim().trim_end_matches('.').to_ascii_lowercase();
    let host = match asked.strip_suffix(&format!(".{suffix}")) {
        Some(label) => format!("{label}.{suffix}"),
        None if !asked.contains('.') => format!("{asked}.{suffix}"),
        None => return Err(format!("{asked}: tunnel {:?} may ask for names under {suffix} only", stored.name)),
    };
    let label = &host[..host.len() - suffix.len() - 1];
    if label.is_empty() || label.contains('.') {
        return Err(format!("{asked}: one label under {suffix}, such as myapp.{suffix}"));
    }
    let host = tunnel_proto::host::canonicalize(&host).map_err(|e| format!("{asked}: {e}"))?;
    let file = shared.in_force.file_routes();
    let refuse = |h: &str| {
        let pattern = tunnel_proto::host::HostPattern::Exact(h.to_owned());
        file.file_rule(&pattern, None).map(|held| format!("hostname {h} is taken ({held})"))
    };
    store.claim(tunnel, &host, refuse).map_err(|e| e.to_string())?;
    tracing::info!(audit = "hostname claimed", who = "agent", %tunnel, hostname = %host);
    apply(shared);
    Ok(host)
}

/// Takes away the hostnames `tunnel`'s agents asked for, once it has no agent left here or
/// on another replica.
pub(crate) fn release(shared: &Shared, tunnel: Uuid) {
    if shared.registry.session_count(&tunnel) > 0 {
        return;
    }
    if let Some(cluster) = &shared.cluster {
        let held = [tunnel_proto::wire::Network::Tcp, tunnel_proto::wire::Network::Udp]
            .into_iter()
            .any(|n| !crate::cluster::presence::Presence::holders(cluster.directory.as_ref(), &tunnel, n).is_empty());
        if held {
            return;
        }
    }
    let Some(store) = shared.tunnels.get() else { return };
    match store.release(tunnel) {
        Ok(0) => {}
        Ok(released) => {
            tracing::info!(audit = "hostnames released", who = "agent", %tunnel, released, "the tunnel's last agent left");
            apply(shared);
        }
        Err(err) => tracing::warn!(%tunnel, %err, "the hostnames the tunnel's agents asked for are not released"),
    }
}
