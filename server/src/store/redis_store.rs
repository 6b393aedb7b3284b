//! A cluster's store: one record in the cluster's Redis holding every tunnel, sealed
//! (AES-256-GCM, a key derived from the cluster secret, the Redis key as associated data: a
//! record another party wrote does not open, and adds no tunnel), and a version counter the
//! replicas look at every second (never on a visitor's path). A change takes a lock with a
//! lease, reads, changes, writes and counts one version up.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Backend, StoreError, Tunnel};
use crate::https::shared::Sealer;

/// The record of every tunnel.
const DOC: &str = "tunnel:store:tunnels";
/// Counts changes.
const VERSION: &str = "tunnel:store:version";
/// The write lock.
const LOCK: &str = "tunnel:store:lock";
/// Where a change is announced (the new version), for the replicas to read it at once.
pub const CHANNEL: &str = "tunnel:store";
/// How long one Redis command may take.
const TIMEOUT: Duration = Duration::from_secs(3);
/// How long a writer may hold the lock.
const LEASE: Duration = Duration::from_secs(10);

/// The Redis backend (synchronous: the store's operations come from the admin API and the
/// CLI, at an operator's rate).
pub(super) struct RedisStore {
    client: redis::Client,
    conn: Mutex<Option<redis::Connection>>,
    sealer: Sealer,
}

impl From<redis::RedisError> for StoreError {
    fn from(err: redis::RedisError) -> StoreError {
        StoreError::Db(format!("Redis: {err}"))
    }
}

impl RedisStore {
    pub(super) fn new(url: &str, secret: &[u8]) -> Result<RedisStore, StoreError> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Invalid(format!("the cluster's Redis URL: {e}")))?;
        let sealer = Sealer::new(secret, b"tunnel store v1").map_err(StoreError::Db)?;
        Ok(RedisStore { client, conn: Mutex::new(None), sealer })
    }

    /// Runs `f` on the connection (made again after a failure).
    fn with<T>(&self, f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>) -> Result<T, StoreError> {
        let mut slot = self.conn.lock().expect("store lock");
        if slot.is_none() {
            let conn = self.client.get_connection_with_timeout(TIMEOUT)?;
            conn.set_read_timeout(Some(TIMEOUT))?;
            conn.set_write_timeout(Some(TIMEOUT))?;
            *slot = Some(conn);
        }
        let conn = slot.as_mut().expect("a connection");
        match f(conn) {
            Ok(v) => Ok(v),
            Err(e) => {
                *slot = None;
                Err(e.into())
            }
        }
    }

    fn read(&self) -> Result<Vec<Tunnel>, StoreError> {
        let sealed: Option<String> = self.with(|c| redis::cmd("GET").arg(DOC).query(c))?;
        let Some(sealed) = sealed else { return Ok(Vec::new()) };
        let plain = self.sealer.open(DOC, &sealed).ok_or_else(|| {
            StoreError::Db("the tunnel record in Redis is not sealed with this cluster's secret".into())
        })?;
        serde_json::from_slice(&plain).map_err(|e| StoreError::Db(format!("the tunnel record in Redis: {e}")))
    }
}

impl Backend for RedisStore {
    fn load(&self) -> Result<Vec<Tunnel>, StoreError> {
        self.read()
    }

    fn update(&self, change: &mut dyn FnMut(&mut Vec<Tunnel>) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let owner = uuid::Uuid::new_v4().to_string();
        let deadline = Instant::now() + LEASE;
        loop {
            let took: Option<String> = self.with(|c| {
                redis::cmd("SET").arg(LOCK).arg(&owner).arg("NX").arg("PX").arg(LEASE.as_millis() as u64).query(c)
            })?;
            if took.is_some() {
                break;
            }
            if Instant::now() > deadline {
                return Err(StoreError::Db("another change of the tunnel store holds its lock".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let outcome = (|| {
            let mut tunnels = self.read()?;
            change(&mut tunnels)?;
            let json = serde_json::to_vec(&tunnels).map_err(|e| StoreError::Db(e.to_string()))?;
            let sealed = self.sealer.seal(DOC, &json).map_err(StoreError::Db)?;
            let version: i64 = self.with(|c| {
                let (version,): (i64,) = redis::pipe().atomic().set(DOC, sealed).ignore().incr(VERSION, 1).query(c)?;
                Ok(version)
            })?;
            // Best effort: a replica that misses it reads the version within a second anyway.
            let _ = self.with(|c| redis::cmd("PUBLISH").arg(CHANNEL).arg(version).query::<i64>(c));
            Ok(())
        })();
        const RELEASE: &str =
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
        let _ = self.with(|c| redis::cmd("EVAL").arg(RELEASE).arg(1).arg(LOCK).arg(&owner).query::<i64>(c));
        outcome
    }

    fn version(&self) -> Result<i64, StoreError> {
        let version: Option<i64> = self.with(|c| redis::cmd("GET").arg(VERSION).query(c))?;
        Ok(version.unwrap_or(0))
    }
}
