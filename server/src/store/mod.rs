//! Tunnels as data: tunnels, their secrets and their routes, created and changed at run time
//! (admin API, `tunnel-server tunnel|route ...`) instead of in the configuration file.
//!
//! One server keeps them in SQLite (`stateDir/tunnels.db`, 0600): a running server and the
//! offline CLI may share the file (SQLite locks per transaction; the server notices another
//! process's change by `PRAGMA data_version` within a second). Secrets are 32 random bytes
//! (base64url, as agents send them), shown once in the connection token and stored as their
//! SHA-256 (a secret of that entropy needs no slow hash). Rules and tokens of the TOML file keep working beside them, read-only.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use tunnel_proto::host::HostPattern;
use uuid::Uuid;

/// A tunnel as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// A stored route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The hostname pattern as written (`app.example.com`, `.example.com`, `*.example.com`).
    pub hostname: String,
    /// A path prefix, or none.
    pub path: Option<String>,
    /// The tunnel.
    pub tunnel: Uuid,
    /// Reached by access clients only.
    pub private: bool,
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
    Db(#[from] rusqlite::Error),
}

/// The embedded store.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
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
    /// Opens (or makes, mode 0600) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            use std::os::unix::fs::DirBuilderExt;
            let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
        }
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| StoreError::Invalid(format!("cannot make {}: {e}", path.display())))?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS tunnels (
                 id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS secrets (
                 tunnel TEXT NOT NULL REFERENCES tunnels(id) ON DELETE CASCADE,
                 digest BLOB NOT NULL, created INTEGER NOT NULL, expires INTEGER);
             CREATE TABLE IF NOT EXISTS routes (
                 hostname TEXT NOT NULL, path TEXT NOT NULL DEFAULT '',
                 tunnel TEXT NOT NULL REFERENCES tunnels(id) ON DELETE CASCADE,
                 private INTEGER NOT NULL, created INTEGER NOT NULL,
                 PRIMARY KEY (hostname, path));",
        )?;
        Ok(Store { conn: Mutex::new(conn), path: path.to_owned() })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A number that changes when another connection (another process) changed the file.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// Makes a tunnel named `name`; returns it and its secret (shown once).
    pub fn create(&self, name: &str) -> Result<(Tunnel, String), StoreError> {
        check_name(name)?;
        let id = Uuid::new_v4();
        let secret = new_secret();
        let mut conn = self.conn.lock().expect("store lock");
        let tx = conn.transaction()?;
        let taken: Option<String> =
            tx.query_row("SELECT id FROM tunnels WHERE name = ?1", params![name], |r| r.get(0)).optional()?;
        if taken.is_some() {
            return Err(StoreError::NameTaken(name.to_owned()));
        }
        let created = now();
        tx.execute(
            "INSERT INTO tunnels (id, name, created) VALUES (?1, ?2, ?3)",
            params![id.to_string(), name, created],
        )?;
        tx.execute(
            "INSERT INTO secrets (tunnel, digest, created, expires) VALUES (?1, ?2, ?3, NULL)",
            params![id.to_string(), digest(secret.as_bytes()).to_vec(), created],
        )?;
        tx.commit()?;
        let secrets = vec![(digest(secret.as_bytes()), None)];
        let tunnel = Tunnel { id, name: name.to_owned(), created: created as u64, secrets, routes: Vec::new() };
        Ok((tunnel, secret))
    }

    /// The tunnel named or numbered `key`.
    pub fn find(&self, key: &str) -> Result<Tunnel, StoreError> {
        let all = self.list()?;
        all.into_iter()
            .find(|t| t.name == key || t.id.to_string() == key.to_ascii_lowercase())
            .ok_or_else(|| StoreError::NoTunnel(key.to_owned()))
    }

    /// Every tunnel with its secrets and routes, by name.
    pub fn list(&self) -> Result<Vec<Tunnel>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        let mut tunnels: Vec<Tunnel> = Vec::new();
        let mut stmt = conn.prepare("SELECT id, name, created FROM tunnels ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?;
        for row in rows {
            let (id, name, created) = row?;
            let Ok(id) = id.parse() else { continue };
            tunnels.push(Tunnel { id, name, created: created as u64, secrets: Vec::new(), routes: Vec::new() });
        }
        let mut stmt = conn.prepare("SELECT tunnel, digest, expires FROM secrets")?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, Option<i64>>(2)?)))?;
        for row in rows {
            let (tunnel, digest, expires) = row?;
            let (Some(t), Ok(digest)) =
                (tunnels.iter_mut().find(|t| t.id.to_string() == tunnel), <[u8; 32]>::try_from(digest.as_slice()))
            else {
                continue;
            };
            t.secrets.push((digest, expires.map(|e| e as u64)));
        }
        let mut stmt = conn.prepare("SELECT hostname, path, tunnel, private FROM routes ORDER BY hostname, path")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, bool>(3)?))
        })?;
        for row in rows {
            let (hostname, path, tunnel, private) = row?;
            let Some(t) = tunnels.iter_mut().find(|t| t.id.to_string() == tunnel) else { continue };
            let path = (!path.is_empty()).then_some(path);
            t.routes.push(Route { hostname, path, tunnel: t.id, private });
        }
        Ok(tunnels)
    }

    /// Deletes the tunnel named or numbered `key`, its secrets and its routes.
    pub fn delete(&self, key: &str) -> Result<Tunnel, StoreError> {
        let tunnel = self.find(key)?;
        let conn = self.conn.lock().expect("store lock");
        conn.execute("DELETE FROM tunnels WHERE id = ?1", params![tunnel.id.to_string()])?;
        Ok(tunnel)
    }

    /// A new secret for tunnel `key`; the old ones stop admitting after `grace` (at once
    /// when zero: their sessions are closed).
    pub fn rotate(&self, key: &str, grace: Duration) -> Result<(Tunnel, String), StoreError> {
        let tunnel = self.find(key)?;
        let secret = new_secret();
        let mut conn = self.conn.lock().expect("store lock");
        let tx = conn.transaction()?;
        let id = tunnel.id.to_string();
        if grace.is_zero() {
            tx.execute("DELETE FROM secrets WHERE tunnel = ?1", params![id])?;
        } else {
            let until = now() + grace.as_secs().max(1) as i64;
            tx.execute(
                "UPDATE secrets SET expires = MIN(COALESCE(expires, ?2), ?2) WHERE tunnel = ?1",
                params![id, until],
            )?;
        }
        tx.execute(
            "INSERT INTO secrets (tunnel, digest, created, expires) VALUES (?1, ?2, ?3, NULL)",
            params![id, digest(secret.as_bytes()).to_vec(), now()],
        )?;
        tx.commit()?;
        drop(conn);
        Ok((self.find(&id)?, secret))
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
        let conn = self.conn.lock().expect("store lock");
        let path = route.path.clone().unwrap_or_default();
        let existing: Option<(String, String)> = conn
            .query_row(
                "SELECT r.tunnel, t.name FROM routes r JOIN tunnels t ON t.id = r.tunnel WHERE r.hostname = ?1 AND r.path = ?2",
                params![route.hostname, path],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((_, name)) = existing {
            return Err(StoreError::Conflict(format!(
                "{}{} is already routed to tunnel {name:?}: delete that route first",
                route.hostname, path
            )));
        }
        let exists: Option<String> = conn
            .query_row("SELECT id FROM tunnels WHERE id = ?1", params![route.tunnel.to_string()], |r| r.get(0))
            .optional()?;
        if exists.is_none() {
            return Err(StoreError::NoTunnel(route.tunnel.to_string()));
        }
        conn.execute(
            "INSERT INTO routes (hostname, path, tunnel, private, created) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![route.hostname, path, route.tunnel.to_string(), route.private, now()],
        )?;
        Ok(())
    }

    /// Deletes the route of `hostname` and `path`; whether there was one.
    pub fn delete_route(&self, hostname: &str, path: Option<&str>) -> Result<bool, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        let n = conn.execute(
            "DELETE FROM routes WHERE hostname = ?1 AND path = ?2",
            params![hostname, path.unwrap_or_default()],
        )?;
        Ok(n > 0)
    }
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
        let (web, secret) = store.create("web").unwrap();
        assert!(matches!(store.create("web"), Err(StoreError::NameTaken(_))));
        assert!(matches!(store.create("bad name"), Err(StoreError::Invalid(_))));
        assert_eq!(store.find("web").unwrap().secrets, vec![(digest(secret.as_bytes()), None)]);
        let route = Route { hostname: "app.test".into(), path: None, tunnel: web.id, private: false };
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
        let mode = std::fs::metadata(store.path()).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077, 0);
        store.delete("web").unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(!store.delete_route("app.test", None).unwrap(), "the routes went with the tunnel");
    }
}
