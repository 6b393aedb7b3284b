//! The routing table: validated rules, looked up synchronously.

use tunnel_proto::host::{best_match, HostPattern};
use uuid::Uuid;

/// One ingress rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Which hostnames the rule covers.
    pub pattern: HostPattern,
    /// The tunnel the hostnames go to.
    pub tunnel: Uuid,
    /// A private rule is never used by public entrypoints, only by access clients.
    pub private: bool,
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

    /// The best rule for a canonical hostname: an exact rule beats any wildcard, and among
    /// wildcards the longest suffix wins.
    pub fn lookup(&self, host: &str) -> Option<&Rule> {
        best_match(self.rules.iter().map(|r| (&r.pattern, r)), host)
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
