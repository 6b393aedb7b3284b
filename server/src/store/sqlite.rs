//! One server's store: a SQLite file (bundled SQLite). A change is one transaction that reads
//! every row, changes them in memory and writes them back: the tables are small, and changes
//! come at the rate of an operator's commands.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, Transaction};
use uuid::Uuid;

use super::{Backend, Route, StoreError, Tunnel};

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> StoreError {
        StoreError::Db(err.to_string())
    }
}

/// The SQLite backend.
pub(super) struct Sqlite {
    conn: Mutex<Connection>,
}

impl Sqlite {
    /// Opens (or makes, mode 0600, in a 0700 folder) the file at `path`.
    pub(super) fn open(path: &Path) -> Result<Sqlite, StoreError> {
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
                 id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created INTEGER NOT NULL, suffix TEXT,
                 keep_hostnames INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS secrets (
                 tunnel TEXT NOT NULL REFERENCES tunnels(id) ON DELETE CASCADE,
                 digest BLOB NOT NULL, expires INTEGER);
             CREATE TABLE IF NOT EXISTS routes (
                 hostname TEXT NOT NULL, path TEXT NOT NULL DEFAULT '',
                 tunnel TEXT NOT NULL REFERENCES tunnels(id) ON DELETE CASCADE,
                 private INTEGER NOT NULL, claimed INTEGER NOT NULL DEFAULT 0,
                 PRIMARY KEY (hostname, path));",
        )?;
        Ok(Sqlite { conn: Mutex::new(conn) })
    }
}

fn read(conn: &Connection) -> Result<Vec<Tunnel>, StoreError> {
    let mut tunnels: Vec<Tunnel> = Vec::new();
    let mut stmt = conn.prepare("SELECT id, name, created, suffix, keep_hostnames FROM tunnels")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, bool>(4)?,
        ))
    })?;
    for row in rows {
        let (id, name, created, suffix, keep_hostnames) = row?;
        let Ok(id) = id.parse::<Uuid>() else { continue };
        let created = created as u64;
        tunnels.push(Tunnel { id, name, created, secrets: Vec::new(), routes: Vec::new(), suffix, keep_hostnames });
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
    let mut stmt =
        conn.prepare("SELECT hostname, path, tunnel, private, claimed FROM routes ORDER BY hostname, path")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, bool>(3)?,
            r.get::<_, bool>(4)?,
        ))
    })?;
    for row in rows {
        let (hostname, path, tunnel, private, claimed) = row?;
        let Some(t) = tunnels.iter_mut().find(|t| t.id.to_string() == tunnel) else { continue };
        let path = (!path.is_empty()).then_some(path);
        t.routes.push(Route { hostname, path, tunnel: t.id, private, claimed });
    }
    Ok(tunnels)
}

fn write(tx: &Transaction<'_>, tunnels: &[Tunnel]) -> Result<(), StoreError> {
    tx.execute_batch("DELETE FROM routes; DELETE FROM secrets; DELETE FROM tunnels;")?;
    for t in tunnels {
        let id = t.id.to_string();
        tx.execute(
            "INSERT INTO tunnels (id, name, created, suffix, keep_hostnames) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, t.name, t.created as i64, t.suffix, t.keep_hostnames],
        )?;
        for (digest, expires) in &t.secrets {
            tx.execute(
                "INSERT INTO secrets (tunnel, digest, expires) VALUES (?1, ?2, ?3)",
                params![id, digest.to_vec(), expires.map(|e| e as i64)],
            )?;
        }
        for r in &t.routes {
            tx.execute(
                "INSERT INTO routes (hostname, path, tunnel, private, claimed) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![r.hostname, r.path.clone().unwrap_or_default(), id, r.private, r.claimed],
            )?;
        }
    }
    Ok(())
}

impl Backend for Sqlite {
    fn load(&self) -> Result<Vec<Tunnel>, StoreError> {
        read(&self.conn.lock().expect("store lock"))
    }

    fn update(&self, change: &mut dyn FnMut(&mut Vec<Tunnel>) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let mut conn = self.conn.lock().expect("store lock");
        // IMMEDIATE: the write lock is taken before the read, so that two processes' changes
        // do not overwrite each other.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut tunnels = read(&tx)?;
        change(&mut tunnels)?;
        write(&tx, &tunnels)?;
        tx.commit()?;
        Ok(())
    }

    fn version(&self) -> Result<i64, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }
}
