//! Every routing decision of the server, as one pure value.
//!
//! [`Routes`] is built from validated configuration (the ingress table, direct routing, the
//! tokens) and answers three questions synchronously, with typed errors:
//! - [`Routes::route_public`]: which tunnel serves a public visitor's hostname (private
//!   rules never do);
//! - [`Routes::route_private`]: may an access client of one tunnel reach a hostname;
//! - [`Routes::admit`]: may a session with this hello join or reach its tunnel.
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
            RouteError::NoRoute(_) | RouteError::NotThisTunnel { .. } => Status::NOT_FOUND,
            RouteError::NoHostname | RouteError::BadHostname(_) => Status::BAD_REQUEST,
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

/// A private stream's route: the tunnel, and the canonical hostname sent to its agent
/// (empty when the stream named none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateRoute {
    /// The tunnel the stream goes to.
    pub tunnel: Uuid,
    /// The canonical hostname, or empty.
    pub host: String,
}

impl Routes {
    /// The rule for a public visitor's canonical hostname (a TLS or raw visitor: no path);
    /// private rules are not used, nor rules with basic authentication (which only an HTTP
    /// request can pass).
    pub fn route_public(&self, host: &str) -> Result<&Rule, RouteError> {
        match self.ingress.lookup(host) {
            Some(rule) if !rule.private && rule.basic_auth.is_empty() => Ok(rule),
            _ => Err(RouteError::NoRoute(host.to_owned())),
        }
    }

    /// The rule for a public HTTP request to a canonical hostname and a normalised path;
    /// private rules are not used.
    pub fn route_public_path(&self, host: &str, path: &str) -> Result<&Rule, RouteError> {
        match self.ingress.lookup_path(host, path) {
            Some(rule) if !rule.private => Ok(rule),
            _ => Err(RouteError::NoRoute(host.to_owned())),
        }
    }

    /// The private entrypoint: a stream from an access client of `tunnel` naming `hostname`
    /// (as sent, possibly empty) goes to `tunnel` if a rule for the hostname names that tunnel
    /// (private or not), or by ID alone in direct mode.
    pub fn route_private(&self, tunnel: Uuid, hostname: &str) -> Result<PrivateRoute, RouteError> {
        let host = if hostname.is_empty() {
            None
        } else {
            Some(host::canonicalize(hostname).map_err(RouteError::BadHostname)?)
        };
        let ruled_here = host.as_deref().is_some_and(|h| self.ingress.routes_to(h, &tunnel));
        if ruled_here || self.direct {
            return Ok(PrivateRoute { tunnel, host: host.unwrap_or_default() });
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
        let known = self.direct || self.ingress.knows(&hello.tunnel);
        let token_ok = self.auth.admits(&hello.tunnel, &hello.token.0);
        if self.auth.enabled() && !(known && token_ok) {
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
        }
    }

    #[test]
    fn public_visitors_never_use_private_rules() {
        let r = routes(false);
        assert_eq!(r.route_public("www.example.com").unwrap().tunnel, PUBLIC);
        assert_eq!(r.route_public("srv-3.local").unwrap().tunnel, PRIVATE);
        assert_eq!(r.route_public("srv-2.local"), Err(RouteError::NoRoute("srv-2.local".into())));
        assert_eq!(r.route_public("nowhere.test").unwrap_err().status(), Status::NOT_FOUND);
    }

    #[test]
    fn private_streams_need_a_rule_for_their_tunnel_or_direct_mode() {
        let r = routes(false);
        let ok = r.route_private(PRIVATE, "SRV-2.local.").unwrap();
        assert_eq!(ok, PrivateRoute { tunnel: PRIVATE, host: "srv-2.local".into() });
        assert!(r.route_private(PRIVATE, "srv-3.local").is_ok(), "a public rule of the same tunnel");
        let other = r.route_private(PRIVATE, "www.example.com").unwrap_err();
        assert!(matches!(other, RouteError::NotThisTunnel { .. }) && other.status() == Status::NOT_FOUND);
        assert_eq!(r.route_private(PRIVATE, ""), Err(RouteError::NoHostname));
        assert_eq!(r.route_private(PRIVATE, "a b").unwrap_err().status(), Status::BAD_REQUEST);
        let direct = routes(true);
        assert_eq!(direct.route_private(STRANGER, "").unwrap(), PrivateRoute { tunnel: STRANGER, host: String::new() });
        assert_eq!(direct.route_private(STRANGER, "www.example.com").unwrap().tunnel, STRANGER);
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
        assert!(before.route_public("www.example.com").is_ok(), "a snapshot keeps its table");
        assert!(cell.snapshot().route_public("www.example.com").is_err());
    }
}
