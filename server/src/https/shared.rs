//! What the replicas of a cluster share of the edge, through the cluster's Redis: the ACME
//! account, the ordered certificates, the challenge answers of orders in progress (so that
//! whichever replica the CA asks can answer), and a lock per name with a lease (so that one
//! replica orders a name at a time).
//!
//! Every value is sealed with AES-256-GCM under a key derived (HKDF-SHA256) from the cluster
//! secret, with the Redis key as associated data: a record read from Redis is an attack until
//! it opens, and one moved to another key does not open. Redis sees no private key.

use std::time::Duration;

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// The prefix of every key the edge writes.
pub const PREFIX: &str = "tunnel:acme:";
/// How long one Redis command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest record read back (a certificate chain and key are a few KiB).
const MAX_RECORD: usize = 256 * 1024;

/// The edge's part of the cluster's Redis.
pub struct SharedStore {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    key: Sealer,
    /// This replica's name, the owner written in locks.
    replica: String,
}

struct Len(usize);

impl ring::hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl SharedStore {
    /// The store of the cluster at `url`, sealed with a key derived from `secret`.
    pub fn new(url: &str, secret: &[u8], replica: &str) -> Result<SharedStore, String> {
        let client = redis::Client::open(url).map_err(|e| format!("the cluster's Redis URL cannot be used: {e}"))?;
        let key = Sealer::new(secret, b"edge certificates v1")?;
        Ok(SharedStore { client, conn: tokio::sync::Mutex::new(None), key, replica: replica.to_owned() })
    }

    fn seal(&self, key: &str, plain: &[u8]) -> Result<String, String> {
        self.key.seal(key, plain)
    }

    fn open(&self, key: &str, sealed: &str) -> Option<Vec<u8>> {
        self.key.open(key, sealed)
    }
}

/// AES-256-GCM under a key derived (HKDF-SHA256) from the cluster secret for one use
/// (`purpose`), the record's Redis key as associated data.
pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    /// The sealer of `purpose` for the cluster whose secret is `secret`.
    pub fn new(secret: &[u8], purpose: &[u8]) -> Result<Sealer, String> {
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"tunnel cluster");
        let prk = salt.extract(secret);
        let mut bytes = [0u8; 32];
        prk.expand(&[purpose], Len(32))
            .and_then(|okm| okm.fill(&mut bytes))
            .map_err(|_| "key derivation failed".to_owned())?;
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| "bad key".to_owned())?);
        Ok(Sealer { key })
    }

    /// `plain` sealed for Redis key `key`, as base64.
    pub fn seal(&self, key: &str, plain: &[u8]) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| "no randomness".to_owned())?;
        let mut data = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(key.as_bytes()), &mut data)
            .map_err(|_| "sealing failed".to_owned())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// The plain text of a record read from Redis key `key`; `None` (logged) when it does not
    /// open with this cluster's key there.
    pub fn open(&self, key: &str, sealed: &str) -> Option<Vec<u8>> {
        if sealed.len() > MAX_RECORD {
            tracing::warn!(%key, "a shared record is too large: ignored");
            return None;
        }
        let raw = base64::engine::general_purpose::STANDARD.decode(sealed).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, data) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        match self.key.open_in_place(nonce, Aad::from(key.as_bytes()), &mut data) {
            Ok(plain) => Some(plain.to_vec()),
            Err(_) => {
                tracing::warn!(%key, "a shared record does not open with this cluster's secret: ignored");
                None
            }
        }
    }
}

impl SharedStore {
    /// Runs `cmd` on the shared connection (made again after a failure), under a time limit.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let mut slot = self.conn.lock().await;
        let conn = match slot.as_mut() {
            Some(conn) => conn,
            None => {
                let conn = tokio::time::timeout(COMMAND_TIMEOUT, self.client.get_multiplexed_async_connection())
                    .await
                    .map_err(|_| "Redis did not answer".to_owned())?
                    .map_err(|e| format!("Redis: {e}"))?;
                slot.insert(conn)
            }
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async::<T>(conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                *slot = None;
                Err(format!("Redis: {e}"))
            }
            Err(_) => {
                *slot = None;
                Err("Redis did not answer".into())
            }
        }
    }

    /// The record `kind`/`name`, opened; `None` when missing, unreadable or not sealed by
    /// this cluster.
    pub async fn get(&self, kind: &str, name: &str) -> Option<Vec<u8>> {
        let key = format!("{PREFIX}{kind}:{name}");
        let sealed: Option<String> = match self.query(redis::cmd("GET").arg(&key)).await {
            Ok(v) => v,
            Err(err) => {
                tracing::debug!(%key, %err, "shared record not read");
                return None;
            }
        };
        self.open(&key, &sealed?)
    }

    /// Writes the record `kind`/`name` (for `ttl`, if given; only when missing, if `only_new`);
    /// whether it was written.
    pub async fn put(&self, kind: &str, name: &str, value: &[u8], ttl: Option<Duration>, only_new: bool) -> bool {
        let key = format!("{PREFIX}{kind}:{name}");
        let Ok(sealed) = self.seal(&key, value) else { return false };
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key).arg(sealed);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
        }
        if only_new {
            cmd.arg("NX");
        }
        match self.query::<Option<String>>(&cmd).await {
            Ok(reply) => reply.is_some(),
            Err(err) => {
                tracing::warn!(%key, %err, "shared record not written");
                false
            }
        }
    }

    /// Takes the order lock of `name` for `lease`; false when another replica holds it (or
    /// Redis cannot be asked: then nobody orders through it).
    pub async fn lock(&self, name: &str, lease: Duration) -> bool {
        let key = format!("{PREFIX}lock:{name}");
        let cmd =
            redis::cmd("SET").arg(&key).arg(&self.replica).arg("NX").arg("PX").arg(lease.as_millis() as u64).clone();
        matches!(self.query::<Option<String>>(&cmd).await, Ok(Some(_)))
    }

    /// Gives the order lock of `name` back, if this replica still holds it.
    pub async fn unlock(&self, name: &str) {
        let key = format!("{PREFIX}lock:{name}");
        const SCRIPT: &str =
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
        let cmd = redis::cmd("EVAL").arg(SCRIPT).arg(1).arg(&key).arg(&self.replica).clone();
        if let Err(err) = self.query::<i64>(&cmd).await {
            tracing::debug!(%key, %err, "order lock not given back; it ends with its lease");
        }
    }
}
