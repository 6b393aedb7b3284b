//! One HTTP visitor connection: the hyper server, and each request's way to its origin.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{
    HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER, STRICT_TRANSPORT_SECURITY, UPGRADE,
    WWW_AUTHENTICATE,
};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tunnel_proto::defaults;
use tunnel_proto::wire::{Network, Reply, Status};
use tunnel_runtime::{http, visitor};
use uuid::Uuid;

use super::pool::{Key, Origin};
use super::{auth, set_forwarded, HttpOptions};
use crate::https::Terminated;
use crate::routing::{Decision, Reach};
use crate::visit::{Door, Opening, Refusal, Visitor as Asking};
use crate::Shared;
use tunnel_runtime::http::io::{Counted, Prefixed, RequestBody};
use tunnel_runtime::http::proxy::{self, strip_hop_by_hop};
use tunnel_runtime::http::target;

type Out = http::Body;

/// Serves one HTTP visitor whose first bytes (`prefix`) were read by the sniffer, over a
/// connection whose TLS was terminated here when `tls`; returns its outcome for the metrics.
pub(crate) async fn serve<IO>(
    shared: Arc<Shared>,
    io: IO,
    prefix: Vec<u8>,
    peer: SocketAddr,
    options: Arc<HttpOptions>,
    tls: Option<Terminated>,
) -> &'static str
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.limits();
    let stop = shared.life.stopping().clone();
    let hard = shared.life.hard_stop().clone();
    let peer_value = super::peer_value(peer.ip());
    let visitor = Arc::new(Visitor { shared, peer, peer_value, options, tls, sticky: std::sync::Mutex::new(None) });
    let svc = service_fn(move |req| {
        let visitor = visitor.clone();
        async move { Ok::<_, Infallible>(Visitor::handle(visitor, req).await) }
    });
    let builder = http::visitor_server(limits.sniff_timeout, limits.sniff_max_bytes);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(Prefixed::new(prefix, io)), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn.as_mut() => r,
                _ = hard.cancelled() => Ok(()),
            }
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, %err, "HTTP visitor connection ended");
    }
    "served"
}

/// What every request of one visitor connection shares.
struct Visitor {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// The visitor's address as an `X-Forwarded-For` value, made once.
    peer_value: HeaderValue,
    options: Arc<HttpOptions>,
    /// How its TLS was terminated, on an HTTPS entrypoint.
    tls: Option<Terminated>,
    /// The origin connection of this visitor's last request, kept for its next one to the
    /// same tunnel and host: a keep-alive visitor then costs no trip through the shared pool
    /// (sessions are balanced per visitor, as raw visitors are). It goes to the pool when
    /// the visitor leaves. At most [`MAX_STICKY`] visitors keep one at a time, so idle
    /// keep-alive visitors by the thousand do not each hold an origin connection.
    sticky: std::sync::Mutex<Option<(Uuid, String, Origin, StickyPlace)>>,
}

/// Visitors keeping an origin connection of their own at once; the others give theirs to
/// the shared pool (bounded per key) after each response.
pub const MAX_STICKY: usize = 256;

/// One of the [`MAX_STICKY`] places; given back when dropped.
struct StickyPlace(Arc<std::sync::atomic::AtomicUsize>);

impl StickyPlace {
    fn take(count: &Arc<std::sync::atomic::AtomicUsize>) -> Option<StickyPlace> {
        let taken = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_STICKY).then_some(n + 1));
        taken.is_ok().then(|| StickyPlace(count.clone()))
    }
}

impl Drop for StickyPlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Visitor {
    fn drop(&mut self) {
        if let Some((tunnel, host, origin, _place)) = self.sticky.get_mut().ok().and_then(|s| s.take()) {
            let key = (tunnel, host, origin.session_id, self.peer.ip());
            let (shared, session) = (&self.shared, origin.session_id);
            self.shared.http.origins.put(key, origin, || shared.is_live(&tunnel, Network::Tcp, session));
        }
    }
}

impl Visitor {
    /// This visitor's kept origin connection, if it serves (tunnel, host) and may be reused.
    fn take_sticky(&self, tunnel: Uuid, host: &str) -> Option<Origin> {
        let mut sticky = self.sticky.lock().ok()?;
        match sticky.take() {
            Some((t, h, origin, _place)) if t == tunnel && h == host && origin.reusable() => Some(origin),
            Some(other) if other.2.reusable() => {
                *sticky = Some(other);
                None
            }
            _ => None,
        }
    }

    /// Keeps `origin` for this visitor's next request, or gives it to the pool when one is
    /// kept already.
    fn keep(&self, key: Key, origin: Origin) {
        if !origin.reusable() {
            return;
        }
        if let Ok(mut sticky) = self.sticky.lock() {
            if sticky.is_none() {
                if let Some(place) = StickyPlace::take(&self.shared.http.sticky) {
                    *sticky = Some((key.0, key.1, origin, place));
                    return;
                }
            }
        }
        let (shared, (tunnel, _, session, _)) = (&self.shared, &key);
        let live = || shared.is_live(tunnel, Network::Tcp, *session);
        self.shared.http.origins.put(key.clone(), origin, live);
    }
}

/// The fields of a request's access-log line.
struct Line {
    peer: SocketAddr,
    method: String,
    host: String,
    path: String,
    tunnel: Option<Uuid>,
    rule: String,
    /// When the request came; `None` when the access log is off (nothing is logged).
    start: Option<Instant>,
}

impl Line {
    fn log(&self, status: u16, bytes_in: u64, bytes_out: u64) {
        let Some(start) = self.start else { return };
        let tunnel = self.tunnel.map(|t| t.to_string()).unwrap_or_default();
        tracing::info!(
            peer = %self.peer, method = %self.method, host = %self.host, path = %self.path, status,
            bytes_in, bytes_out, duration_ms = start.elapsed().as_millis() as u64, tunnel,
            rule = %self.rule, "request"
        );
    }
}

impl Visitor {
    async fn handle(self: Arc<Self>, mut req: Request<Incoming>) -> Response<Out> {
        let on = self.options.access_log;
        let mut line = Line {
            peer: self.peer,
            // Built only for the access log: nothing is allocated for it when it is off.
            method: if on { req.method().to_string() } else { String::new() },
            host: String::new(),
            path: if on { req.uri().path().to_owned() } else { String::new() },
            tunnel: None,
            rule: String::new(),
            start: on.then(Instant::now),
        };
        if self.tls.is_none() {
            if let Some(answer) = self.acme_token(&req).await {
                return answer;
            }
        }
        let host = match target::request_host(&req) {
            Ok(host) => host,
            Err(err) => return self.error(&line, Reply::new(Status::BAD_REQUEST, err.to_string()), ""),
        };
        line.host = host.clone();
        if let Some(tls) = &self.tls {
            // No fronting: a connection made for one certificate serves the hosts it covers.
            if !tls.cert.covers(&host) {
                let reply = Reply::new(Status(421), format!("{host}: not served on this connection"));
                return self.error(&line, reply, "the host is not covered by the connection's certificate");
            }
        }
        let routes = self.shared.routes();
        // A host with path rules is routed by the normalised path, and its origin is sent
        // that same path; other hosts' paths go through untouched.
        let normalised = match routes.ingress.has_paths(&host) {
            true => match target::normalize_path(req.uri().path()) {
                Ok(path) => Some(path),
                Err(err) => return self.error(&line, Reply::new(Status::BAD_REQUEST, err.to_string()), ""),
            },
            false => None,
        };
        let path = normalised.as_deref().unwrap_or(req.uri().path());
        let (tunnel, rule, users, edge) = match self.shared.decide(&routes, &self.asking(&host, Some(path))) {
            Ok(Decision { tunnel, rule: Some(rule), .. }) => {
                // The label names the rule in the access log and in the guess limiter.
                let label = if on || !rule.basic_auth.is_empty() { rule.label() } else { String::new() };
                (tunnel, label, rule.basic_auth.clone(), rule.edge.clone())
            }
            Ok(Decision { tunnel, rule: None, .. }) => (tunnel, String::new(), Vec::new(), Default::default()),
            Err(refusal) => return self.error(&line, refusal.reply, &refusal.detail),
        };
        // Plain HTTP to a host served over HTTPS is sent there before anything else is read
        // (a password included).
        if self.tls.is_none() {
            let https = &self.shared.edge;
            if let Some(port) = https.https_port {
                if edge.redirect.unwrap_or_else(|| https.redirects(&routes, &host)) {
                    return self.redirect(&line, &host, port, req.uri());
                }
            }
        }
        drop(routes);
        line.tunnel = Some(tunnel);
        if !users.is_empty() {
            let outcome = self.shared.http.auth.check(&rule, self.peer.ip(), &users, req.headers()).await;
            line.rule = rule;
            match outcome {
                auth::Outcome::Allowed(user) => {
                    tracing::debug!(peer = %self.peer, %host, user, "basic authentication passed");
                    req.headers_mut().remove(AUTHORIZATION);
                }
                auth::Outcome::Denied(why) => {
                    let mut resp = self.error(
                        &line,
                        Reply::new(Status::UNAUTHORIZED, format!("{host}: authentication required")),
                        why,
                    );
                    let challenge = format!("Basic realm=\"{host}\", charset=\"UTF-8\"");
                    resp.headers_mut().insert(
                        WWW_AUTHENTICATE,
                        HeaderValue::from_str(&challenge).expect("a canonical host is a header value"),
                    );
                    return resp;
                }
                auth::Outcome::Ambiguous => {
                    let reply = Reply::new(Status::BAD_REQUEST, "more than one Authorization header");
                    return self.error(&line, reply, "");
                }
                auth::Outcome::Busy => {
                    let mut resp = self.error(
                        &line,
                        Reply::new(Status::UNAVAILABLE, format!("{host}: try again")),
                        "authentication is busy",
                    );
                    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
                    return resp;
                }
                auth::Outcome::TooMany(wait) => {
                    let reply = Reply::new(Status(429), format!("{host}: too many attempts; try again later"));
                    let mut resp = self.error(&line, reply, "too many password guesses from this address");
                    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
                    return resp;
                }
            }
        } else {
            line.rule = rule;
        }
        if let Some(path) = normalised {
            let target = match req.uri().query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            match Uri::try_from(target) {
                Ok(uri) => *req.uri_mut() = uri,
                Err(_) => return self.error(&line, Reply::new(Status::BAD_REQUEST, "bad request target"), ""),
            }
        }
        let upgrading = proxy::takes_upgrade(&req);
        let visitor_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
        let host_value = HeaderValue::from_str(&host).expect("a canonical host is a header value");
        proxy::to_origin(&mut req, &host_value, upgrading);
        let headers = req.headers_mut();
        let https = self.tls.is_some();
        set_forwarded(headers, self.peer.ip(), &self.peer_value, &host_value, &self.options.trusted_proxies, https);
        let up = Arc::new(AtomicU64::new(0));
        let slow = Arc::new(AtomicBool::new(false));
        let pace = self.shared.limits().body_pace();
        let req = req.map(|body| RequestBody::paced(Counted::new(body, up.clone()), pace, slow.clone()));
        let label = self.shared.tunnel_label(&tunnel);
        let (origin, mut resp) = match self.send(tunnel, host, req).await {
            Ok(sent) => sent,
            // The body fell behind its pace: the visitor hears so, not that the origin failed.
            Err(_) if slow.load(Ordering::Relaxed) => {
                let reply = Reply::new(Status(408), "the request body came too slowly");
                let detail = format!("the request body came slower than {} bytes a second", pace.min_rate);
                return self.error(&line, reply, &detail);
            }
            Err(refusal) => return self.error(&line, refusal.reply, &refusal.detail),
        };
        self.shared.forwarded_request(&label);
        let key = (tunnel, line.host.clone(), origin.session_id, self.peer.ip());
        tracing::debug!(peer = %self.peer, host = %key.1, %tunnel, session = origin.session_id, "request forwarded");
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            match visitor_upgrade {
                Some(visitor_upgrade) => {
                    // The upgraded connection is a task of the server's: a drain waits for it.
                    // Its access line and bytes are counted when it ends.
                    let origin_upgrade = hyper::upgrade::on(&mut resp);
                    let mut origin = origin;
                    let tasks = self.shared.life.tasks();
                    origin.detach(&self.shared.life);
                    let shared = self.shared.clone();
                    tasks.spawn(async move {
                        let pump = proxy::pump_upgraded(visitor_upgrade, origin_upgrade, origin);
                        tokio::select! {
                            (up, down) = pump => {
                                shared.metrics.carried(&label, up, down);
                                line.log(101, up, down);
                            }
                            _ = shared.life.hard_stop().cancelled() => {
                                tracing::debug!(peer = %line.peer, host = %line.host, "upgraded connection cut: the grace period is over");
                            }
                        }
                    });
                }
                None => line.log(101, 0, 0),
            }
            return resp.map(|_| Empty::new().map_err(|never| match never {}).boxed_unsync());
        }
        strip_hop_by_hop(resp.headers_mut(), false);
        if let (true, Some(max_age)) = (https, edge.hsts) {
            let value = HeaderValue::from_str(&format!("max-age={max_age}")).expect("a number is a header value");
            resp.headers_mut().insert(STRICT_TRANSPORT_SECURITY, value);
        }
        let down = Arc::new(AtomicU64::new(0));
        let status = resp.status().as_u16();
        resp.map(move |body| {
            let reuse = self.options.reuse_origins;
            let finish = Finish { visitor: self.clone(), key, origin, line, status, up, label, reuse };
            Tracked { inner: Counted::new(body, down.clone()), down, ended: false, finish: Some(finish) }.boxed_unsync()
        })
    }

    /// Sends `req` on an idle origin connection or a new stream. A connection that fails
    /// before the request went out is replaced; one that fails after it went out but before
    /// any byte of the response came back is replaced too when the request can be sent again
    /// (an idempotent method without a body), on another session. At most
    /// [`defaults::OPEN_ATTEMPTS`] tries.
    async fn send(
        &self,
        tunnel: Uuid,
        host: String,
        req: Request<RequestBody>,
    ) -> Result<(Origin, Response<Incoming>), Refusal> {
        // The visitor's own connection of its last request (sticky) goes first: it carries
        // what a raw visitor's stream would, and fails like one. A request on a connection
        // from the shared pool, or a new stream, may be sent again (see `Replay`).
        let mut sticky = match self.options.reuse_origins {
            true => self.take_sticky(tunnel, &host),
            false => None,
        };
        let replay = if sticky.is_some() { None } else { Replay::of(&req) };
        let mut req = Some(req);
        let mut avoid = Vec::new();
        let failed = |detail: String| {
            Refusal::new(Status::BAD_GATEWAY, format!("{host}: no agent could take the request"), detail)
        };
        let mut last = String::from("the origin connection failed");
        for attempt in 0..defaults::OPEN_ATTEMPTS {
            let Some(request) = req.take().or_else(|| replay.as_ref().map(Replay::request)) else { break };
            let sticky = sticky.take();
            let kept = sticky.is_some();
            let prefer = match (kept, attempt) {
                (false, 0) => self.shared.pick_session(&tunnel, Network::Tcp),
                _ => None,
            };
            let pooled = match prefer {
                Some(session) if self.options.reuse_origins => {
                    self.shared.http.origins.take(&(tunnel, host.clone(), session, self.peer.ip()))
                }
                _ => sticky,
            };
            let fresh = pooled.is_none();
            let mut origin = match pooled {
                Some(origin) => origin,
                None => self.connect(tunnel, &host, prefer, &avoid).await?,
            };
            if origin.ready().await.is_err() {
                req = Some(request);
                if fresh {
                    avoid.push(origin.session_id);
                }
                continue;
            }
            let sent = origin.sender.try_send_request(request);
            let outcome = if fresh || kept {
                // A new stream was just acknowledged by its agent; the visitor's own connection
                // answered its last request: neither needs the probe's timer.
                origin.drive(sent).await
            } else {
                // A reused connection skipped the open's acknowledgement, which is what finds a
                // dead or frozen agent session. So a response that is slow to start has the
                // session probed; a silent one is closed, which fails this request over.
                tokio::pin!(sent);
                let ack = self.shared.limits().reply_timeouts().ack;
                let session = origin.session_id;
                match tokio::time::timeout(ack, origin.drive(&mut sent)).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        // The connection's IO goes on while the session is probed.
                        let (_, outcome) = tokio::join!(
                            async {
                                self.probe(tunnel, &host, session).await;
                            },
                            origin.drive(&mut sent)
                        );
                        outcome
                    }
                }
            };
            match outcome {
                Ok(resp) => return Ok((origin, resp)),
                Err(mut err) => {
                    let back = err.take_message();
                    let error = err.into_error();
                    last = format!("the origin connection failed: {error}");
                    if fresh {
                        avoid.push(origin.session_id);
                    }
                    match back {
                        Some(back) => {
                            tracing::debug!(%host, %error, "origin connection failed before the request went out; retrying");
                            req = Some(back);
                        }
                        None if replay.is_some() => {
                            tracing::debug!(%host, %error, "origin connection failed before the response; sending the request again");
                        }
                        None => {
                            tracing::debug!(%host, %error, "origin connection failed mid-request");
                            return Err(failed(last));
                        }
                    }
                }
            }
        }
        Err(failed(last))
    }

    /// Checks that agent session `session` still answers, by opening a stream on it for
    /// `host` (kept in the pool when it opens there): a silent session is closed by the open,
    /// which fails the requests waiting on its streams over to other sessions.
    async fn probe(&self, tunnel: Uuid, host: &str, session: u64) {
        tracing::debug!(%host, session, "slow response on a reused origin connection; probing its session");
        if let Ok(origin) = self.connect(tunnel, host, Some(session), &[]).await {
            if origin.session_id == session && self.options.reuse_origins {
                let shared = &self.shared;
                let live = || shared.is_live(&tunnel, Network::Tcp, session);
                self.shared.http.origins.put((tunnel, host.to_owned(), session, self.peer.ip()), origin, live);
            }
        }
    }

    /// This visitor asking for `host` (canonical) and `path` (normalised, for a host with
    /// path rules).
    fn asking<'a>(&self, host: &'a str, path: Option<&'a str>) -> Asking<'a> {
        Asking {
            door: Door::Request,
            peer: self.peer,
            host,
            reach: Reach::Public { path },
            network: Network::Tcp,
            forwarded_for: Some(self.peer),
        }
    }

    /// Opens a stream to the tunnel (session `prefer` first, none of `avoid`) and an
    /// HTTP/1.1 client connection over it.
    async fn connect(&self, tunnel: Uuid, host: &str, prefer: Option<u64>, avoid: &[u64]) -> Result<Origin, Refusal> {
        let opening = Opening { prefix: &[], prefer, avoid };
        let opened = self.shared.open(&self.asking(host, None), tunnel, host, opening).await?;
        let (sender, conn) =
            match hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(opened.agent.stream)).await {
                Ok(pair) => pair,
                Err(err) => {
                    let message = format!("{host}: no agent could take the request");
                    return Err(Refusal::new(Status::BAD_GATEWAY, message, format!("origin handshake failed: {err}")));
                }
            };
        let hold = Box::new((opened.agent.permit, opened.slot));
        Ok(Origin::new(sender, Box::pin(conn.with_upgrades()), opened.agent.agent, hold))
    }

    /// The answer to an ACME CA's HTTP-01 request for a token being validated now.
    async fn acme_token(&self, req: &Request<Incoming>) -> Option<Response<Out>> {
        let token = req.uri().path().strip_prefix("/.well-known/acme-challenge/")?;
        let auth = self.shared.edge.acme.as_ref()?.http_token(token).await?;
        tracing::debug!(peer = %self.peer, "HTTP-01 validation answered");
        let body = http_body_util::Full::new(Bytes::from(auth)).map_err(|never| match never {}).boxed_unsync();
        let mut resp = Response::new(body);
        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        Some(resp)
    }

    /// `308` to the same target on the HTTPS entrypoint.
    fn redirect(&self, line: &Line, host: &str, port: u16, uri: &Uri) -> Response<Out> {
        let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let location = match port {
            443 => format!("https://{host}{target}"),
            port => format!("https://{host}:{port}{target}"),
        };
        line.log(308, 0, 0);
        let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
        *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
        match HeaderValue::from_str(&location) {
            Ok(value) => drop(resp.headers_mut().insert(LOCATION, value)),
            Err(_) => return self.error(line, Reply::new(Status::BAD_REQUEST, "bad request target"), ""),
        }
        resp
    }

    fn error(&self, line: &Line, reply: Reply, detail: &str) -> Response<Out> {
        visitor::log_refusal(self.peer, &line.host, &reply, detail);
        let (response, code, len) = http::error_reply(reply.status, &reply.message);
        line.log(code, 0, len);
        response
    }
}

/// What is needed to send a request again: an idempotent method and no body (the request
/// line and headers are kept; the body is empty by definition).
struct Replay {
    method: Method,
    uri: Uri,
    version: hyper::Version,
    headers: HeaderMap,
    up: Arc<AtomicU64>,
}

impl Replay {
    fn of(req: &Request<RequestBody>) -> Option<Replay> {
        let idempotent = matches!(
            *req.method(),
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
        );
        if !idempotent || !req.body().is_end_stream() || req.headers().contains_key(UPGRADE) {
            return None;
        }
        Some(Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            up: Arc::new(AtomicU64::new(0)),
        })
    }

    fn request(&self) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::unpaced(Counted::empty(self.up.clone())));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// What is done once a response body is finished or dropped.
struct Finish {
    visitor: Arc<Visitor>,
    key: Key,
    origin: Origin,
    line: Line,
    status: u16,
    up: Arc<AtomicU64>,
    label: String,
    reuse: bool,
}

/// A response body on its way to the visitor: counted, and its origin connection given back
/// to the pool when it was read to the end.
struct Tracked {
    inner: Counted,
    down: Arc<AtomicU64>,
    ended: bool,
    finish: Option<Finish>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // The origin connection's IO is done here, by the task that sends the body on.
        if let Some(finish) = self.finish.as_mut() {
            finish.origin.poll_conn(cx);
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let Some(f) = self.finish.take() else { return };
        let (up, down) = (f.up.load(Ordering::Relaxed), self.down.load(Ordering::Relaxed));
        f.visitor.shared.metrics.carried(&f.label, up, down);
        f.line.log(f.status, up, down);
        if f.reuse && (self.ended || self.inner.is_end_stream()) {
            f.visitor.keep(f.key, f.origin);
        }
    }
}
