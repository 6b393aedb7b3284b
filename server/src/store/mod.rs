//! Tunnels as data: tunnels, their secrets and their routes, created and changed at run time
//! (admin API, `tunnel-server tunnel|route ...`) instead of in the configuration file.
//!
//! One server keeps them in SQLite (`stateDir/tunnels.db`, 0600): a running server and the
//! offline CLI may share the file (SQLite locks per transaction; the server notices another
//! process's change by `PRAGMA data_version` within a second). Secrets are 32 random bytes
//! (base64url, as agents send them), shown once in the connection token and stored as their
//! SHA-256 (a secret of that entropy needs no slow hash). Rules and tokens of the TOML file keep working beside them, read-only.

pub(crate) mod redis_store;
mod sqlite;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tunnel_proto::host::HostPattern;
use uuid::Uuid;

/// A tunnel as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tunnel {
    /// Its ID.
    pub id: Uuid,
    /// Its name (unique).
    pub name: String,
    /// When it was made (seconds since the epoch).
    pub created: u64,
    /// Its secrets: digest and, for one being rotated out, when it stops admitting.
    pub secrets: Vec<([u8; 32], Option<u64>)>,
    /// Its routes.
    pub routes: Vec<Route>,
    /// The suffix under which its agents may ask for hostnames (`dev.example.com`), if any.
    #[serde(default)]
    pub suffix: Option<String>,
    /// The hostnames its agents asked for stay when its last agent leaves.
    #[serde(default)]
    pub keep_hostnames: bool,
}

/// A stored route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The hostname pattern as written (`app.example.com`, `.example.com`, `*.example.com`).
    pub hostname: String,
    /// A path prefix, or none.
    pub path: Option<String>,
    /// The tunnel.
    pub tunnel: Uuid,
    /// Reached by access clients only.
    pub private: bool,
    /// Asked for by an agent at connect time: gone when the tunnel's last agent leaves.
    #[serde(default)]
    pub claimed: bool,
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such tunnel.
    #[error("no tunnel named or numbered {0:?}")]
    NoTunnel(String),
    /// The name is taken.
    #[error("a tunnel is already named {0:?}")]
    NameTaken(String),
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// The route exists.
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error("the tunnel store failed: {0}")]
    Db(String),
}

/// Where the tunnels are kept: one server's SQLite file, or a cluster's Redis.
trait Backend: Send + Sync {
    /// Every tunnel.
    fn load(&self) -> Result<Vec<Tunnel>, StoreError>;
    /// Runs `change` on every tunnel under the backend's write lock and keeps the result
    /// when it succeeds.
    fn update(&self, change: &mut dyn FnMut(&mut Vec<Tunnel>) -> Result<(), StoreError>) -> Result<(), StoreError>;
    /// A number that changes with every change made by anyone (another process, another
    /// replica).
    fn version(&self) -> Result<i64, StoreError>;
}

/// The store of tunnels, secrets and routes.
pub struct Store {
    backend: Box<dyn Backend>,
    /// Where it is, for logs.
    place: String,
}

/// Seconds since the epoch, as SQLite keeps integers.
fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The digest a secret is stored as.
pub fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

impl Store {
    /// Opens (or makes, mode 0600) the SQLite store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store { backend: Box::new(sqlite::Sqlite::open(path)?), place: path.display().to_string() })
    }

    /// The store of a cluster, in its Redis at `url`, sealed with a key derived from the
    /// cluster's `secret`.
    pub fn redis(url: &str, secret: &[u8]) -> Result<Store, StoreError> {
        Ok(Store { backend: Box::new(redis_store::RedisStore::new(url, secret)?), place: "the cluster's Redis".into() })
    }

    /// Where it is.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// A number that changes when anyone else changed the store.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.backend.version()
    }

    /// Makes a tunnel named `name` (whose agents may ask for hostnames under `suffix`);
    /// returns it and its secret (shown once).
    pub fn create(
        &self,
        name: &str,
        suffix: Option<&str>,
        keep_hostnames: bool,
    ) -> Result<(Tunnel, String), StoreError> {
        check_name(name)?;
        let suffix = match suffix {
            Some(raw) => Some(
                tunnel_proto::host::canonicalize(raw.trim_start_matches("*.").trim_start_matches('.'))
                    .map_err(|e| StoreError::Invalid(format!("suffix {raw:?}: {e}")))?,
            ),
            None => None,
        };
        let secret = new_secret();
        let tunnel = Tunnel {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            created: now() as u64,
            secrets: vec![(digest(secret.as_bytes()), None)],
            routes: Vec::new(),
            suffix,
            keep_hostnames,
        };
        let made = tunnel.clone();
        self.backend.update(&mut |tunnels| {
            if tunnels.iter().any(|t| t.name == made.name) {
                return Err(StoreError::NameTaken(made.name.clone()));
            }
            tunnels.push(made.clone());
            Ok(())
        })?;
        Ok((tunnel, secret))
    }

    /// The tunnel named or numbered `key`.
    pub fn find(&self, key: &str) -> Result<Tunnel, StoreError> {
        self.list()?.into_iter().find(|t| matches(t, key)).ok_or_else(|| StoreError::NoTunnel(key.to_owned()))
    }

    /// Every tunnel with its secrets and routes, by name.
    pub fn list(&self) -> Result<Vec<Tunnel>, StoreError> {
        let mut tunnels = self.backend.load()?;
        tunnels.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(tunnels)
    }

    /// Deletes the tunnel named or numbered `key`, its secrets and its routes.
    pub fn delete(&self, key: &str) -> Result<Tunnel, StoreError> {
        let mut gone = None;
        self.backend.update(&mut |tunnels| {
            let at =
                tunnels.iter().position(|t| matches(t, key)).ok_or_else(|| StoreError::NoTunnel(key.to_owned()))?;
            gone = Some(tunnels.remove(at));
            Ok(())
        })?;
        gone.ok_or_else(|| StoreError::NoTunnel(key.to_owned()))
    }

    /// A new secret for tunnel `key`; the old ones stop admitting after `grace` (at once
    /// when zero: their sessions are closed).
    pub fn rotate(&self, key: &str, grace: Duration) -> Result<(Tunnel, String), StoreError> {
        let secret = new_secret();
        let mut rotated = None;
        self.backend.update(&mut |tunnels| {
            let t = tunnels.iter_mut().find(|t| matches(t, key)).ok_or_else(|| StoreError::NoTunnel(key.to_owned()))?;
            if grace.is_zero() {
                t.secrets.clear();
            } else {
                let until = (now() + grace.as_secs().max(1) as i64) as u64;
                for (_, expires) in &mut t.secrets {
                    *expires = Some(expires.map_or(until, |e| e.min(until)));
                }
            }
            t.secrets.push((digest(secret.as_bytes()), None));
            rotated = Some(t.clone());
            Ok(())
        })?;
        Ok((rotated.ok_or_else(|| StoreError::NoTunnel(key.to_owned()))?, secret))
    }

    /// Adds a route; `refuse` says why a route may not be added (a TOML rule holds it).
    pub fn add_route(&self, route: &Route, refuse: impl Fn(&Route) -> Option<String>) -> Result<(), StoreError> {
        HostPattern::parse(&route.hostname).map_err(|e| StoreError::Invalid(format!("{:?}: {e}", route.hostname)))?;
        if let Some(path) = &route.path {
            if !path.starts_with('/') || path.contains(['?', '#', '%', '\\', ' ']) || path.contains("//") {
                return Err(StoreError::Invalid(format!(
                    "{path:?}: a path starts with / and has no ?, #, %, \\, spaces or //"
                )));
            }
        }
        if let Some(why) = refuse(route) {
            return Err(StoreError::Conflict(why));
        }
        self.backend.update(&mut |tunnels| {
            let same = |r: &Route| r.hostname == route.hostname && r.path == route.path;
            if let Some(holder) = tunnels.iter().find(|t| t.routes.iter().any(same)) {
                return Err(StoreError::Conflict(format!(
                    "{}{} is already routed to tunnel {:?}: delete that route first",
                    route.hostname,
                    route.path.as_deref().unwrap_or(""),
                    holder.name
                )));
            }
            let t = tunnels
                .iter_mut()
                .find(|t| t.id == route.tunnel)
                .ok_or_else(|| StoreError::NoTunnel(route.tunnel.to_string()))?;
            t.routes.push(route.clone());
            Ok(())
        })
    }

    /// Routes `hostname` (a name its agent asked for) to `tunnel` while it has agents: first
    /// come first served; already the tunnel's is fine; at most [`MAX_CLAIMS`] per tunnel (an
    /// agent cycling through names cannot fill the store).
    pub fn claim(
        &self,
        tunnel: Uuid,
        hostname: &str,
        refuse: impl Fn(&str) -> Option<String>,
    ) -> Result<(), StoreError> {
        if let Some(why) = refuse(hostname) {
            return Err(StoreError::Conflict(why));
        }
        self.backend.update(&mut |tunnels| {
            let same = |r: &Route| r.hostname == hostname && r.path.is_none();
            if let Some(holder) = tunnels.iter().find(|t| t.routes.iter().any(same)) {
                return match holder.id == tunnel {
                    true => Ok(()),
                    false => Err(StoreError::Conflict(format!("hostname {hostname} is taken by another tunnel"))),
                };
            }
            let t =
                tunnels.iter_mut().find(|t| t.id == tunnel).ok_or_else(|| StoreError::NoTunnel(tunnel.to_string()))?;
            if t.routes.iter().filter(|r| r.claimed).count() >= MAX_CLAIMS {
                return Err(StoreError::Conflict(format!(
                    "tunnel {:?} already holds {MAX_CLAIMS} hostnames its agents asked for",
                    t.name
                )));
            }
            t.routes.push(Route { hostname: hostname.to_owned(), path: None, tunnel, private: false, claimed: true });
            Ok(())
        })
    }

    /// Takes away the hostnames `tunnel`'s agents asked for; how many there were.
    pub fn release(&self, tunnel: Uuid) -> Result<usize, StoreError> {
        let mut released = 0;
        self.backend.update(&mut |tunnels| {
            if let Some(t) = tunnels.iter_mut().find(|t| t.id == tunnel && !t.keep_hostnames) {
                let before = t.routes.len();
                t.routes.retain(|r| !r.claimed);
                released = before - t.routes.len();
            }
            Ok(())
        })?;
        Ok(released)
    }

    /// Deletes the route of `hostname` and `path`; whether there was one.
    pub fn delete_route(&self, hostname: &str, path: Option<&str>) -> Result<bool, StoreError> {
        let mut found = false;
        self.backend.update(&mut |tunnels| {
            for t in tunnels.iter_mut() {
                let before = t.routes.len();
                t.routes.retain(|r| !(r.hostname == hostname && r.path.as_deref() == path));
                found |= t.routes.len() != before;
            }
            Ok(())
        })?;
        Ok(found)
    }
}

/// The most hostnames the agents of one tunnel may hold at once.
pub const MAX_CLAIMS: usize = 16;

/// Whether `key` names `t` (its name, or its ID).
fn matches(t: &Tunnel, key: &str) -> bool {
    t.name == key || t.id.to_string() == key.to_ascii_lowercase()
}

/// 32 random bytes, base64url.
fn new_secret() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// A tunnel's name: 1 to 63 letters, digits, `-`, `_` or `.`.
fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    match ok {
        true => Ok(()),
        false => Err(StoreError::Invalid(format!("{name:?}: a tunnel's name is 1 to 63 letters, digits, -, _ or ."))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnels_secrets_and_routes_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("tunnels.db")).unwrap();
        let (web, secret) = store.create("web", None, false).unwrap();
        assert!(matches!(store.create("web", None, false), Err(StoreError::NameTaken(_))));
        assert!(matches!(store.create("bad name", None, false), Err(StoreError::Invalid(_))));
        assert_eq!(store.find("web").unwrap().secrets, vec![(digest(secret.as_bytes()), None)]);
        let route = Route { hostname: "app.test".into(), path: None, tunnel: web.id, private: false, claimed: false };
        store.add_route(&route, |_| None).unwrap();
        let err = store.add_route(&route, |_| None).unwrap_err();
        assert!(err.to_string().contains("already routed to tunnel \"web\""), "{err}");
        let err = store
            .add_route(&Route { hostname: "toml.test".into(), ..route.clone() }, |_| {
                Some("held by ingress.rules[0]".into())
            })
            .unwrap_err();
        assert!(err.to_string().contains("ingress.rules[0]"), "{err}");
        let (rotated, new) = store.rotate("web", Duration::from_secs(60)).unwrap();
        assert_eq!(rotated.secrets.len(), 2);
        assert!(rotated.secrets.iter().any(|(d, e)| d == &digest(secret.as_bytes()) && e.is_some()));
        assert!(rotated.secrets.iter().any(|(d, e)| d == &digest(new.as_bytes()) && e.is_none()));
        let (revoked, _) = store.rotate(&web.id.to_string(), Duration::ZERO).unwrap();
        assert_eq!(revoked.secrets.len(), 1, "revoked at once");
        assert_eq!(store.find("web").unwrap().routes, vec![route]);
        let mode = std::fs::metadata(dir.path().join("tunnels.db")).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077, 0);
        // Hostnames asked for: first come first served, at most MAX_CLAIMS a tunnel.
        let (other, _) = store.create("other", Some("dev.test"), false).unwrap();
        for i in 0..MAX_CLAIMS {
            store.claim(web.id, &format!("n{i}.dev.test"), |_| None).unwrap();
        }
        store.claim(web.id, "n0.dev.test", |_| None).unwrap();
        let err = store.claim(web.id, "one-more.dev.test", |_| None).unwrap_err();
        assert!(err.to_string().contains("already holds 16"), "{err}");
        let err = store.claim(other.id, "n1.dev.test", |_| None).unwrap_err();
        assert!(err.to_string().contains("taken by another tunnel"), "{err}");
        assert_eq!(store.release(web.id).unwrap(), MAX_CLAIMS);
        store.delete("web").unwrap();
        store.delete("other").unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(!store.delete_route("app.test", None).unwrap(), "the routes went with the tunnel");
    }
}
