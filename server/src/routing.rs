//! Every routing decision of the server, as one pure value.
//!
//! [`Routes`] is built from validated configuration (the ingress table, direct routing, the
//! tokens) and answers two questions synchronously, with typed errors:
//! - [`Routes::decide`]: which tunnel a visitor's stream goes to, whatever door it came
//!   through: a public visitor (by hostname, and by path when it is an HTTP request; private
//!   rules never), an access client's stream (a hostname its tunnel may reach), or a stream
//!   another replica forwards (checked again here);
//! - [`Routes::admit`]: may a session with this hello join or reach its tunnel.
//!
//! A public visitor that carries no path (raw, TLS passthrough, gateway, UDP) can send its
//! origin any path, so it may use a host only when none of the host's rules is protected
//! (`basicAuth` or private): protection matches loosely.
//!
//! The server holds it behind one swap point ([`RoutesCell`]): readers take a snapshot per
//! visitor or stream, and a reload replaces the whole value at once.

use std::sync::{Arc, RwLock};

use tunnel_proto::host::{self, HostError};
use tunnel_proto::wire::{self, Hello, Network, Networks, Role, Status};
use uuid::Uuid;

use crate::auth::Auth;
use crate::ingress::{Ingress, Rule};

/// The routing table, direct routing and the tokens.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// Hostname rules.
    pub ingress: Ingress,
    /// Access clients may reach any tunnel by ID when no rule matches.
    pub direct: bool,
    /// Which tokens admit which sessions.
    pub auth: Auth,
}

/// Why a stream cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No rule (that this entrypoint may use) matches the hostname.
    #[error("no route for host {0}")]
    NoRoute(String),
    /// The hostname has only a private rule, and the visitor is public.
    #[error("host {0} has only a private rule")]
    PrivateOnly(String),
    /// A rule of the hostname is protected (`basicAuth` or private), and the visitor carries
    /// no path that could be held to it.
    #[error("host {0} has protected path rules, and this visitor carries no path")]
    Protected(String),
    /// A private stream's hostname is ruled to another tunnel, or to none.
    #[error("no ingress rule routes {host:?} to tunnel {tunnel}")]
    NotThisTunnel {
        /// The canonical hostname.
        host: String,
        /// The access client's tunnel.
        tunnel: Uuid,
    },
    /// A private stream names no hostname and direct routing is off.
    #[error("no hostname given and direct routing is off")]
    NoHostname,
    /// The stream's hostname is not a hostname.
    #[error("invalid hostname: {0}")]
    BadHostname(HostError),
}

impl RouteError {
    /// The status the stream is refused with.
    pub fn status(&self) -> Status {
        match self {
            RouteError::NoRoute(_)
            | RouteError::PrivateOnly(_)
            | RouteError::Protected(_)
            | RouteError::NotThisTunnel { .. } => Status::NOT_FOUND,
            RouteError::NoHostname | RouteError::BadHostname(_) => Status::BAD_REQUEST,
        }
    }

    /// What the visitor is told: a public visitor learns nothing of the rules (an unknown
    /// host, a private one and a protected one read the same); the log gets the error itself.
    pub fn public_message(&self) -> String {
        match self {
            RouteError::PrivateOnly(host) | RouteError::Protected(host) => {
                RouteError::NoRoute(host.clone()).to_string()
            }
            other => other.to_string(),
        }
    }
}

/// Why a session is refused at its hello.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// The client speaks another protocol version.
    #[error("unsupported protocol version {0}, this server speaks {v}", v = wire::VERSION)]
    Version(u8),
    /// Tokens are configured and the tunnel is unknown or the token wrong: one answer for
    /// both, so it reveals neither.
    #[error("unauthorized: unknown tunnel or invalid token")]
    Unauthorized,
    /// No tokens are configured and the tunnel is in no rule.
    #[error("tunnel {0} is in no ingress rule and direct routing is off")]
    UnknownTunnel(Uuid),
    /// An agent that serves nothing.
    #[error("agent serves no network (no rtcp or rudp service)")]
    NoNetworks,
}

impl AdmitError {
    /// The reason as a metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            AdmitError::Version(_) => "version",
            AdmitError::Unauthorized => "unauthorized",
            AdmitError::UnknownTunnel(_) => "unknown_tunnel",
            AdmitError::NoNetworks => "no_networks",
        }
    }

    /// The status of the hello reply.
    pub fn status(&self) -> Status {
        match self {
            AdmitError::Version(_) | AdmitError::NoNetworks => Status::BAD_REQUEST,
            AdmitError::Unauthorized => Status::UNAUTHORIZED,
            AdmitError::UnknownTunnel(_) => Status::NOT_FOUND,
        }
    }
}

/// Who asks for a route, and what it can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach<'a> {
    /// A public visitor, with the normalised path of its HTTP request, or `None` when it
    /// carries no path (raw, TLS passthrough, gateway, UDP). The hostname is canonical.
    Public {
        /// The request's normalised path.
        path: Option<&'a str>,
    },
    /// A stream of an access client of tunnel `access`; the hostname is as sent, possibly
    /// empty.
    Private {
        /// The access client's tunnel.
        access: Uuid,
    },
    /// A stream another replica decided for `tunnel` with `scope`, checked again here.
    Forwarded {
        /// The tunnel the other replica chose.
        tunnel: Uuid,
        /// Whom it came from there.
        scope: wire::Scope,
    },
}

/// Where a stream goes: the tunnel, the canonical hostname sent to its agent (empty when an
/// access client's stream named none), and the rule that decided (none for direct routing
/// and forwarded streams).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'r> {
    /// The tunnel the stream goes to.
    pub tunnel: Uuid,
    /// The canonical hostname, or empty.
    pub host: String,
    /// The rule, when one decided.
    pub rule: Option<&'r Rule>,
}

impl Routes {
    /// Where a stream for `host` goes, for whoever asks ([`Reach`]); every door of the server
    /// asks this and nothing else.
    pub fn decide(&self, host: &str, reach: Reach<'_>) -> Result<Decision<'_>, RouteError> {
        match reach {
            Reach::Public { path } => {
                let rule = self.route_public(host, path)?;
                Ok(Decision { tunnel: rule.tunnel, host: host.to_owned(), rule: Some(rule) })
            }
            Reach::Private { access } => self.route_private(access, host),
            Reach::Forwarded { tunnel, scope } => {
                let decided = match scope {
                    wire::Scope::Public => host::canonicalize(host)
                        .ok()
                        .filter(|h| self.ingress.publicly_routes_to(h, &tunnel))
                        .map(|host| Decision { tunnel, host, rule: None }),
                    wire::Scope::Private(access) => {
                        self.route_private(access, host).ok().filter(|d| d.tunnel == tunnel)
                    }
                };
                decided.ok_or_else(|| RouteError::NotThisTunnel { host: host.to_owned(), tunnel })
            }
        }
    }

    /// The rule for a public visitor of a canonical hostname: an HTTP request by its
    /// normalised path, a visitor without a path by the host's rule without a path, and only
    /// when no rule of the host is protected. Private rules never.
    fn route_public(&self, host: &str, path: Option<&str>) -> Result<&Rule, RouteError> {
        let rule = match path {
            Some(path) => self.ingress.lookup_request(host, path),
            None => self.ingress.lookup(host),
        };
        match rule {
            Some(rule) if rule.private => Err(RouteError::PrivateOnly(host.to_owned())),
            // A visitor without a path could ask the origin for any path.
            Some(_) if path.is_none() && self.ingress.protects(host) => Err(RouteError::Protected(host.to_owned())),
            Some(rule) => Ok(rule),
            None => Err(RouteError::NoRoute(host.to_owned())),
        }
    }

    /// The private entrypoint: a stream from an access client of `tunnel` naming `hostname`
    /// (as sent, possibly empty) goes to `tunnel` if a rule for the hostname names that tunnel
    /// (private or not), or by ID alone in direct mode.
    fn route_private(&self, tunnel: Uuid, hostname: &str) -> Result<Decision<'_>, RouteError> {
        let host = if hostname.is_empty() {
            None
        } else {
            Some(host::canonicalize(hostname).map_err(RouteError::BadHostname)?)
        };
        let ruled_here = host.as_deref().is_some_and(|h| self.ingress.routes_to(h, &tunnel));
        if ruled_here || self.direct {
            return Ok(Decision { tunnel, host: host.unwrap_or_default(), rule: None });
        }
        Err(match host {
            Some(host) => RouteError::NotThisTunnel { host, tunnel },
            None => RouteError::NoHostname,
        })
    }

    /// Whether a session saying `hello` is admitted. An unknown tunnel and a wrong token get
    /// the same answer when tokens are configured.
    pub fn admit(&self, hello: &Hello) -> Result<(), AdmitError> {
        if hello.version != wire::VERSION {
            return Err(AdmitError::Version(hello.version));
        }
        let stored = self.auth.is_stored(&hello.tunnel);
        // A stored tunnel is known with no route at all.
        let known = self.direct || self.ingress.knows(&hello.tunnel) || stored;
        let token_ok = self.auth.admits(&hello.tunnel, &hello.token.0);
        if (self.auth.enabled() || stored) && !(known && token_ok) {
            return Err(AdmitError::Unauthorized);
        }
        if !known {
            return Err(AdmitError::UnknownTunnel(hello.tunnel));
        }
        if hello.role == Role::Agent && hello.networks == Networks::NONE {
            return Err(AdmitError::NoNetworks);
        }
        Ok(())
    }
}

impl Routes {
    /// These routes (the configuration file's) with the store's tunnels and routes after
    /// them; a stored route that a rule of the file already holds is left out, and said so.
    pub fn with_stored(mut self, tunnels: &[crate::store::Tunnel]) -> (Routes, Vec<String>) {
        let mut rules = self.ingress.rules().to_vec();
        let mut warnings = Vec::new();
        for tunnel in tunnels {
            self.auth.add_stored(tunnel.id, tunnel.secrets.clone());
            for route in &tunnel.routes {
                let Ok(pattern) = tunnel_proto::host::HostPattern::parse(&route.hostname) else { continue };
                if let Some(held) = self.file_rule(&pattern, route.path.as_deref()) {
                    warnings.push(format!(
                        "stored route {}{} of tunnel {:?} is left out: {held} holds it",
                        route.hostname,
                        route.path.as_deref().unwrap_or(""),
                        tunnel.name
                    ));
                    continue;
                }
                let mut rule = Rule::new(pattern, tunnel.id, route.private);
                rule.path = route.path.clone();
                rules.push(rule);
            }
        }
        self.ingress = Ingress::new(rules);
        (self, warnings)
    }

    /// The rule of the configuration file with this pattern and path, named as written
    /// (`ingress.rules[N]`), if any.
    pub fn file_rule(&self, pattern: &tunnel_proto::host::HostPattern, path: Option<&str>) -> Option<String> {
        let path = path.map(|p| p.trim_end_matches('/')).map(|p| if p.is_empty() { "/" } else { p });
        self.ingress
            .rules()
            .iter()
            .position(|r| &r.pattern == pattern && r.path.as_deref() == path)
            .map(|i| format!("ingress.rules[{i}] of the configuration file"))
    }

    /// What the token table leaves open or shut, for the log at start and `--check`: with no
    /// tokens, every tunnel of the ingress is open to any agent; with some, the tunnels that no
    /// token admits refuse every session.
    pub fn token_warnings(&self) -> Vec<String> {
        let mut tunnels: Vec<Uuid> = self.ingress.rules().iter().map(|r| r.tunnel).collect();
        tunnels.sort();
        tunnels.dedup();
        if !self.auth.enabled() {
            let list: Vec<String> = tunnels.iter().map(Uuid::to_string).collect();
            return vec![format!(
                "no tokens configured: any agent may join and any access client reach these tunnels: {}",
                if list.is_empty() { "(none in ingress)".to_owned() } else { list.join(", ") }
            )];
        }
        tunnels
            .iter()
            .filter(|t| !self.auth.reachable(t))
            .map(|t| format!("tunnel {t} has no token (and there is no global token): every session is refused; add [[tokens]] for it"))
            .collect()
    }

    /// Hosts whose path rules are protected (`basicAuth` or private), for the log at start
    /// and `--check`: visitors that carry no path cannot be held to those rules, so they are
    /// refused for the whole host.
    pub fn protection_warnings(&self) -> Vec<String> {
        let mut hosts: Vec<String> = Vec::new();
        for rule in self.ingress.rules() {
            let host = rule.pattern.to_string();
            if rule.path.is_some() && (rule.private || !rule.basic_auth.is_empty()) && !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        hosts
            .into_iter()
            .map(|h| format!("host {h} has protected path rules (basicAuth or private): raw, TLS passthrough, gateway and UDP visitors of it are refused; only HTTP requests reach it, each by its path"))
            .collect()
    }
}

/// Whether a stream header's network is one the server carries (both are, today; the wire
/// format keeps room for more).
pub fn carried(network: Network) -> bool {
    matches!(network, Network::Tcp | Network::Udp)
}

/// The one place the server's routes live; a reload swaps the whole value.
#[derive(Debug, Default)]
pub struct RoutesCell(RwLock<Arc<Routes>>);

impl RoutesCell {
    /// A cell holding `routes`.
    pub fn new(routes: Routes) -> RoutesCell {
        RoutesCell(RwLock::new(Arc::new(routes)))
    }

    /// The routes in force now; hold it for one visitor or stream, not across long waits.
    pub fn snapshot(&self) -> Arc<Routes> {
        self.0.read().expect("routes lock").clone()
    }

    /// Puts `routes` in force for every visitor and stream that starts from now on.
    pub fn replace(&self, routes: Routes) {
        *self.0.write().expect("routes lock") = Arc::new(routes);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tunnel_proto::host::HostPattern;
    use tunnel_proto::wire::Token;

    use super::*;
    use crate::ingress::Credential;

    const PUBLIC: Uuid = Uuid::from_u128(0x4d21094e_b74c_4916_86c1_d9fa36ea677b);
    const PRIVATE: Uuid = Uuid::from_u128(0xaede1f6a_762b_45da_b937_b6632356555a);
    const STRANGER: Uuid = Uuid::from_u128(0x11111111_2222_4333_8444_555555555555);

    fn rule(pattern: &str, tunnel: Uuid, private: bool) -> Rule {
        Rule::new(HostPattern::parse(pattern).unwrap(), tunnel, private)
    }

    /// The seed's table: the same tunnel public under one name and private under another.
    fn routes(direct: bool) -> Routes {
        Routes {
            ingress: Ingress::new(vec![
                rule(".example.com", PUBLIC, false),
                rule("srv-3.local", PRIVATE, false),
                rule("srv-2.local", PRIVATE, true),
            ]),
            direct,
            auth: Auth::default(),
        }
    }

    fn hello(role: Role, tunnel: Uuid, token: &str, networks: Networks) -> Hello {
        Hello {
            version: wire::VERSION,
            role,
            tunnel,
            networks,
            weight: 1,
            token: Token(token.as_bytes().to_vec().into()),
            hostname: String::new(),
        }
    }

    const NO_PATH: Reach<'static> = Reach::Public { path: None };

    fn private(access: Uuid) -> Reach<'static> {
        Reach::Private { access }
    }

    #[test]
    fn public_visitors_never_use_private_rules() {
        let r = routes(false);
        assert_eq!(r.decide("www.example.com", NO_PATH).unwrap().tunnel, PUBLIC);
        assert_eq!(r.decide("srv-3.local", NO_PATH).unwrap().tunnel, PRIVATE);
        let private = r.decide("srv-2.local", NO_PATH).unwrap_err();
        assert_eq!(private, RouteError::PrivateOnly("srv-2.local".into()));
        let unknown = r.decide("nowhere.test", NO_PATH).unwrap_err();
        assert_eq!(unknown.status(), Status::NOT_FOUND);
        assert_eq!(private.status(), unknown.status());
        assert_eq!(private.public_message(), "no route for host srv-2.local", "the answer hides the private rule");
        let path = Reach::Public { path: Some("/x") };
        assert_eq!(r.decide("srv-2.local", path), Err(RouteError::PrivateOnly("srv-2.local".into())));
    }

    #[test]
    fn a_visitor_without_a_path_never_reaches_a_host_with_a_protected_rule() {
        let credential = Credential { user: "u".into(), hash: "$argon2id$".into() };
        let public = rule("app.test", PUBLIC, false);
        let admin = Rule { path: Some("/admin".into()), basic_auth: vec![credential], ..public.clone() };
        let internal = Rule { path: Some("/internal".into()), ..rule("app.test", PUBLIC, true) };
        let open = Rule { path: Some("/api".into()), ..rule("open.test", PRIVATE, false) };
        let r = Routes {
            ingress: Ingress::new(vec![public, admin, internal, rule("open.test", PUBLIC, false), open]),
            ..routes(false)
        };
        let protected = r.decide("app.test", NO_PATH).unwrap_err();
        assert_eq!(protected, RouteError::Protected("app.test".into()));
        assert_eq!(protected.public_message(), "no route for host app.test");
        let at = |path| r.decide("app.test", Reach::Public { path: Some(path) });
        assert_eq!(at("/").unwrap().rule.unwrap().path, None, "an HTTP request is routed by its path");
        assert!(!at("/admin/x").unwrap().rule.unwrap().basic_auth.is_empty());
        assert!(at("/internal").is_err(), "a private path rule is never public");
        assert_eq!(
            r.decide("open.test", NO_PATH).unwrap().tunnel,
            PUBLIC,
            "an unprotected path rule leaves the host open"
        );
        let warnings = r.protection_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("host app.test has protected path rules"), "{warnings:?}");
        assert!(r.decide("app.test", private(PUBLIC)).is_ok(), "an access client of the tunnel reaches the host");
    }

    #[test]
    fn private_streams_need_a_rule_for_their_tunnel_or_direct_mode() {
        let r = routes(false);
        let ok = r.decide("SRV-2.local.", private(PRIVATE)).unwrap();
        assert_eq!(ok, Decision { tunnel: PRIVATE, host: "srv-2.local".into(), rule: None });
        assert!(r.decide("srv-3.local", private(PRIVATE)).is_ok(), "a public rule of the same tunnel");
        let other = r.decide("www.example.com", private(PRIVATE)).unwrap_err();
        assert!(matches!(other, RouteError::NotThisTunnel { .. }) && other.status() == Status::NOT_FOUND);
        assert_eq!(r.decide("", private(PRIVATE)), Err(RouteError::NoHostname));
        assert_eq!(r.decide("a b", private(PRIVATE)).unwrap_err().status(), Status::BAD_REQUEST);
        let direct = routes(true);
        let any = Decision { tunnel: STRANGER, host: String::new(), rule: None };
        assert_eq!(direct.decide("", private(STRANGER)).unwrap(), any);
        assert_eq!(direct.decide("www.example.com", private(STRANGER)).unwrap().tunnel, STRANGER);
    }

    #[test]
    fn forwarded_streams_are_checked_against_this_replicas_rules() {
        let r = routes(false);
        let public = |tunnel| Reach::Forwarded { tunnel, scope: wire::Scope::Public };
        assert_eq!(r.decide("WWW.example.com", public(PUBLIC)).unwrap().host, "www.example.com");
        assert!(r.decide("www.example.com", public(PRIVATE)).is_err(), "not that tunnel's host here");
        assert!(r.decide("srv-2.local", public(PRIVATE)).is_err(), "a private rule is not public");
        let from_access = Reach::Forwarded { tunnel: PRIVATE, scope: wire::Scope::Private(PRIVATE) };
        assert!(r.decide("srv-2.local", from_access).is_ok());
        let elsewhere = Reach::Forwarded { tunnel: PUBLIC, scope: wire::Scope::Private(PRIVATE) };
        assert!(r.decide("srv-2.local", elsewhere).is_err(), "the access client's route names another tunnel");
    }

    #[test]
    fn admission() {
        let r = routes(false);
        assert!(r.admit(&hello(Role::Agent, PUBLIC, "", Networks::TCP)).is_ok());
        assert_eq!(r.admit(&hello(Role::Agent, STRANGER, "", Networks::TCP)), Err(AdmitError::UnknownTunnel(STRANGER)));
        assert_eq!(r.admit(&hello(Role::Agent, PUBLIC, "", Networks::NONE)), Err(AdmitError::NoNetworks));
        assert!(r.admit(&hello(Role::Access, PUBLIC, "", Networks::NONE)).is_ok());
        let mut old = hello(Role::Agent, PUBLIC, "", Networks::TCP);
        old.version = 9;
        assert_eq!(r.admit(&old).unwrap_err().status(), Status::BAD_REQUEST);
        assert!(routes(true).admit(&hello(Role::Access, STRANGER, "", Networks::NONE)).is_ok());

        let mut tokens = HashMap::new();
        tokens.insert(PUBLIC, vec!["right".into()]);
        let guarded = Routes { auth: Auth::new(&["global".into()], &tokens), ..routes(false) };
        assert!(guarded.admit(&hello(Role::Agent, PUBLIC, "right", Networks::TCP)).is_ok());
        assert!(guarded.admit(&hello(Role::Agent, PUBLIC, "global", Networks::TCP)).is_ok());
        let wrong = guarded.admit(&hello(Role::Agent, PUBLIC, "wrong", Networks::TCP)).unwrap_err();
        let unknown = guarded.admit(&hello(Role::Agent, STRANGER, "right", Networks::TCP)).unwrap_err();
        assert_eq!(wrong, unknown, "an unknown tunnel and a wrong token get one answer");
        assert_eq!(wrong.status(), Status::UNAUTHORIZED);
    }

    #[test]
    fn a_replaced_table_is_seen_by_the_next_snapshot() {
        let cell = RoutesCell::new(routes(false));
        let before = cell.snapshot();
        cell.replace(Routes::default());
        assert!(before.decide("www.example.com", NO_PATH).is_ok(), "a snapshot keeps its table");
        assert!(cell.snapshot().decide("www.example.com", NO_PATH).is_err());
    }
}
