//! The routing table: validated rules, looked up synchronously.
//!
//! A visitor's host picks the best host pattern (an exact rule beats any wildcard, and among
//! wildcards the longest suffix wins). The rules of that pattern may carry a path: an HTTP
//! request takes the one whose path is the longest prefix of its own (on a segment boundary:
//! `/api` covers `/api` and `/api/x`, not `/apix`), and the rule without a path is the
//! fallback; TLS and raw visitors, who have no path, take the fallback.

use tunnel_proto::host::{best_match, HostPattern};
use tunnel_runtime::http::target::protection_key;
use uuid::Uuid;

/// One ingress rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Which hostnames the rule covers.
    pub pattern: HostPattern,
    /// The path prefix it covers (`/api`), or none: every path.
    pub path: Option<String>,
    /// The tunnel the hostnames go to.
    pub tunnel: Uuid,
    /// A private rule is never used by public entrypoints, only by access clients.
    pub private: bool,
    /// Users allowed in by HTTP basic authentication (none: no authentication).
    pub basic_auth: Vec<Credential>,
    /// How HTTPS entrypoints serve the rule's host.
    pub edge: Edge,
}

/// How HTTPS entrypoints serve a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Terminated where the server has or can get a certificate; passed through otherwise.
    #[default]
    Auto,
    /// Terminated: the server's certificate, its HTTP features.
    Terminate,
    /// Passed through by SNI to the origin, which holds the certificate.
    Passthrough,
}

/// A rule's HTTPS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Edge {
    /// Terminate or pass through (the same for every rule of a host pattern).
    pub tls: TlsMode,
    /// Plain HTTP requests are redirected to HTTPS; `None`: where the host is terminated.
    pub redirect: Option<bool>,
    /// `Strict-Transport-Security` on HTTPS responses: its max-age in seconds.
    pub hsts: Option<u64>,
    /// The ACME challenge for the host's certificate (the `[acme]` default when `None`).
    pub challenge: Option<crate::https::Challenge>,
}

impl Rule {
    /// A rule for every path, without authentication.
    pub fn new(pattern: HostPattern, tunnel: Uuid, private: bool) -> Rule {
        Rule { pattern, path: None, tunnel, private, basic_auth: Vec::new(), edge: Edge::default() }
    }

    /// The rule as written, for logs: `host` or `host/path`.
    pub fn label(&self) -> String {
        match &self.path {
            Some(path) => format!("{}{path}", self.pattern),
            None => self.pattern.to_string(),
        }
    }
}

/// A user of basic authentication and the hash of its password (a PHC string, argon2).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The user name.
    pub user: String,
    /// `$argon2id$v=19$...`.
    pub hash: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:<hash>", self.user)
    }
}

/// Whether rule path `prefix` covers request path `path` (both normalised, starting with `/`).
pub fn path_covers(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.is_empty(),
        None => false,
    }
}

/// The ingress table.
#[derive(Debug, Clone, Default)]
pub struct Ingress {
    rules: Vec<Rule>,
}

impl Ingress {
    /// A table of `rules`, in the order written (earlier wins among equal matches).
    pub fn new(rules: Vec<Rule>) -> Ingress {
        Ingress { rules }
    }

    /// The rules of the best host pattern for a canonical hostname.
    fn candidates<'a>(&'a self, host: &str) -> impl Iterator<Item = &'a Rule> + 'a {
        let best = best_match(self.rules.iter().map(|r| (&r.pattern, &r.pattern)), host).cloned();
        self.rules.iter().filter(move |r| best.as_ref() == Some(&r.pattern))
    }

    /// The rule for a canonical hostname when there is no path (TLS, raw, or a stream): the
    /// best host pattern's rule without a path.
    pub fn lookup(&self, host: &str) -> Option<&Rule> {
        self.candidates(host).find(|r| r.path.is_none())
    }

    /// The rule for an HTTP request to a canonical hostname and a normalised path: among the
    /// best host pattern's rules, the longest path prefix, else the rule without a path.
    pub fn lookup_path(&self, host: &str, path: &str) -> Option<&Rule> {
        let mut best: Option<&Rule> = None;
        for rule in self.candidates(host) {
            let better = match (&rule.path, best.and_then(|b| b.path.as_ref())) {
                (Some(p), _) if !path_covers(p, path) => false,
                (Some(p), Some(q)) => p.len() > q.len(),
                (Some(_), None) => true,
                (None, _) => best.is_none(),
            };
            if better {
                best = Some(rule);
            }
        }
        best
    }

    /// The rule that says how HTTPS entrypoints serve canonical `host`: among its best host
    /// pattern's public rules, the first that writes a TLS mode, else the first; `None` when
    /// no public rule covers it. (Rules of one pattern agree on the mode and the challenge.)
    pub fn tls_of(&self, host: &str) -> Option<&Rule> {
        let mut found: Option<&Rule> = None;
        for rule in self.candidates(host).filter(|r| !r.private) {
            if found.is_none_or(|f| f.edge.tls == TlsMode::Auto && f.edge.challenge.is_none()) {
                found = Some(rule);
            }
        }
        found
    }

    /// Whether some rule of the best host pattern for `host` sends it to `tunnel`.
    pub fn routes_to(&self, host: &str, tunnel: &Uuid) -> bool {
        self.candidates(host).any(|r| &r.tunnel == tunnel)
    }

    /// Whether a public rule of the best host pattern for `host` sends it to `tunnel` (what a
    /// replica checks of a public visitor another replica forwards).
    pub fn publicly_routes_to(&self, host: &str, tunnel: &Uuid) -> bool {
        self.candidates(host).any(|r| &r.tunnel == tunnel && !r.private)
    }

    /// The rule an HTTP request to `host` with normalised `path` is held to: the exact match
    /// ([`Ingress::lookup_path`]), unless a protected rule (`basicAuth` or private, with a
    /// path) covers the path as the loosest common origin reads both
    /// ([`protection_key`]: case, `;` parameters, trailing dots and spaces, escapes) and the
    /// exact match does not cover it as precisely. Protection matches loosely, publication
    /// strictly: `/ADMIN`, `/admin;x` and `/x/..;/admin` are held to `/admin`'s rule.
    pub fn lookup_request(&self, host: &str, path: &str) -> Option<&Rule> {
        let exact = self.lookup_path(host, path);
        let protected = |r: &&Rule| r.path.is_some() && (r.private || !r.basic_auth.is_empty());
        if !self.candidates(host).any(|r| protected(&r)) {
            // Nothing to protect: no key is computed for the hosts that need none.
            return exact;
        }
        let key = protection_key(path);
        let mut loose: Option<(&Rule, String)> = None;
        for rule in self.candidates(host).filter(protected) {
            let rule_key = protection_key(rule.path.as_deref().unwrap_or("/"));
            let longer = loose.as_ref().is_none_or(|(_, k)| rule_key.len() > k.len());
            if path_covers(&rule_key, &key) && longer {
                loose = Some((rule, rule_key));
            }
        }
        let Some((loose, loose_key)) = loose else { return exact };
        let exact_holds = exact.is_some_and(|e| {
            std::ptr::eq(e, loose)
                || e.path.as_deref().is_some_and(|p| {
                    let exact_key = protection_key(p);
                    path_covers(&exact_key, &key) && exact_key.len() >= loose_key.len()
                })
        });
        if exact_holds {
            exact
        } else {
            Some(loose)
        }
    }

    /// Whether a rule of the best host pattern for `host` is protected (`basicAuth` or
    /// private): a visitor that carries no path cannot be held to such a rule.
    pub fn protects(&self, host: &str) -> bool {
        self.candidates(host).any(|r| r.private || !r.basic_auth.is_empty())
    }

    /// Whether a rule for `host` has a path (its requests' paths are then normalised).
    pub fn has_paths(&self, host: &str) -> bool {
        self.candidates(host).any(|r| r.path.is_some())
    }

    /// Whether any rule names `tunnel` (agents of other tunnels are refused at join).
    pub fn knows(&self, tunnel: &Uuid) -> bool {
        self.rules.iter().any(|r| &r.tunnel == tunnel)
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Uuid = Uuid::from_u128(1);
    const B: Uuid = Uuid::from_u128(2);
    const C: Uuid = Uuid::from_u128(3);

    fn rule(host: &str, path: Option<&str>, tunnel: Uuid) -> Rule {
        Rule { path: path.map(str::to_owned), ..Rule::new(HostPattern::parse(host).unwrap(), tunnel, false) }
    }

    #[test]
    fn the_longest_path_prefix_wins_and_the_pathless_rule_is_the_fallback() {
        let t = Ingress::new(vec![
            rule("a.example", None, A),
            rule("a.example", Some("/api"), B),
            rule("a.example", Some("/api/v2"), C),
        ]);
        assert_eq!(t.lookup_path("a.example", "/").unwrap().tunnel, A);
        assert_eq!(t.lookup_path("a.example", "/apix").unwrap().tunnel, A);
        assert_eq!(t.lookup_path("a.example", "/api").unwrap().tunnel, B);
        assert_eq!(t.lookup_path("a.example", "/api/v1/x").unwrap().tunnel, B);
        assert_eq!(t.lookup_path("a.example", "/api/v2").unwrap().tunnel, C);
        assert_eq!(t.lookup_path("a.example", "/api/v2/users").unwrap().tunnel, C);
        assert_eq!(t.lookup("a.example").unwrap().tunnel, A);
    }

    #[test]
    fn a_host_with_path_rules_only_has_no_rule_for_other_paths_or_for_tls() {
        let t = Ingress::new(vec![rule("a.example", Some("/api"), B), rule(".example", None, C)]);
        assert_eq!(t.lookup_path("a.example", "/api/x").unwrap().tunnel, B);
        assert!(t.lookup_path("a.example", "/other").is_none());
        assert!(t.lookup("a.example").is_none());
        assert_eq!(t.lookup("b.example").unwrap().tunnel, C);
    }

    #[test]
    fn a_root_path_rule_covers_everything() {
        assert!(path_covers("/", "/x"));
        assert!(path_covers("/api/", "/api/x"));
        assert!(path_covers("/api/", "/api"));
        assert!(!path_covers("/api", "/ap"));
    }

    #[test]
    fn protected_rules_match_loosely_and_public_ones_strictly() {
        let admin = Rule {
            basic_auth: vec![Credential { user: "u".into(), hash: "h".into() }],
            ..rule("a.example", Some("/admin"), B)
        };
        let internal = Rule { private: true, ..rule("a.example", Some("/internal"), C) };
        let open = rule("a.example", Some("/admin/open"), A);
        let t = Ingress::new(vec![rule("a.example", None, A), admin, internal, open, rule("b.example", None, A)]);
        for path in [
            "/admin",
            "/ADMIN",
            "/Admin/x",
            "/admin;x",
            "/admin%3Bx",
            "/x/..;/admin",
            "/admin.",
            "/admin%20",
            "/admin/open/..;/x",
            "/ADMIN/OPEN",
        ] {
            assert_eq!(t.lookup_request("a.example", path).unwrap().tunnel, B, "{path}");
        }
        for path in ["/INTERNAL", "/internal;a", "/internal./x"] {
            assert!(t.lookup_request("a.example", path).unwrap().private, "{path}");
        }
        assert_eq!(t.lookup_request("a.example", "/admin/open/x").unwrap().tunnel, A, "an exact public carve-out");
        assert_eq!(t.lookup_request("a.example", "/administrator").unwrap().tunnel, A);
        assert_eq!(t.lookup_request("a.example", "/").unwrap().tunnel, A);
        assert_eq!(t.lookup_request("b.example", "/ADMIN").unwrap().tunnel, A, "another host's rules");
    }
}
