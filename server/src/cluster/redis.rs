//! The one task that talks to Redis: it publishes this replica's [`Record`] under a lease,
//! renews it, follows the others' records by pub/sub and a periodic full read, and says
//! when Redis is lost. Nothing on a visitor's path waits for it.
//!
//! Keys: `tunnel:replica:NAME` holds a replica's record as JSON. It is renewed every third of
//! the lease and expires two thirds of a lease after its last renewal (one late renewal is
//! forgiven); the others read every record each third of a lease, so a replica that stops is
//! forgotten within one lease. After each change a replica publishes its
//! name on the `tunnel:presence` channel; the others read that one key again. Each renewal
//! also reads every record (SCAN and MGET), which is how an expired replica is noticed.
//! A clean stop deletes the key and publishes the name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::presence::{Directory, Record};

/// Prefix of the record keys.
pub const KEY_PREFIX: &str = "tunnel:replica:";
/// The channel changed replicas publish their names on.
pub const CHANNEL: &str = "tunnel:presence";
/// Longest wait for one Redis command before Redis counts as lost.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Delays between attempts to reach Redis again.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// What the task needs besides the directory.
pub struct Task {
    /// The Redis URL.
    pub url: String,
    /// The lease.
    pub lease: Duration,
    /// This replica's tunnels now (tunnel, networks bits).
    pub tunnels: Box<dyn Fn() -> BTreeMap<Uuid, u8> + Send + Sync>,
    /// Told when Redis comes and goes (true: up).
    pub health: Box<dyn Fn(bool) + Send + Sync>,
}

/// Runs until `stop`, then removes this replica's record.
pub async fn run(task: Task, directory: Arc<Directory>, stop: CancellationToken) {
    let client = match redis::Client::open(task.url.as_str()) {
        Ok(c) => c,
        Err(err) => {
            directory.set_down(format!("bad Redis URL: {err}"));
            return tracing::error!(error = %err, "cluster: the Redis URL cannot be used");
        }
    };
    let mut delay = RETRY_MIN;
    let mut was_up = false;
    loop {
        let outcome = tokio::select! {
            r = serve(&task, &client, &directory, &mut was_up) => r,
            _ = stop.cancelled() => break,
        };
        let why = match outcome {
            Ok(()) => break,
            Err(why) => why,
        };
        if was_up {
            tracing::warn!(reason = %why, "cluster: Redis lost; forwarding to other replicas is off, local tunnels keep working");
            delay = RETRY_MIN;
        } else {
            tracing::debug!(reason = %why, retry_in = ?delay, "cluster: Redis not reachable");
        }
        was_up = false;
        directory.set_down(why);
        (task.health)(false);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => break,
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
    // A clean stop: the others forget this replica now rather than at the lease's end.
    if let Ok(Ok(mut conn)) = tokio::time::timeout(COMMAND_TIMEOUT, client.get_multiplexed_async_connection()).await {
        let key = format!("{KEY_PREFIX}{}", directory.own());
        let _ = timed(redis::cmd("DEL").arg(&key).query_async::<()>(&mut conn)).await;
        let _ = timed(redis::cmd("PUBLISH").arg(CHANNEL).arg(directory.own()).query_async::<()>(&mut conn)).await;
        tracing::info!("cluster: presence removed");
    }
}

/// One connection's life: returns why Redis was lost.
async fn serve(task: &Task, client: &redis::Client, directory: &Directory, was_up: &mut bool) -> Result<(), String> {
    let mut conn = timed(client.get_multiplexed_async_connection()).await?;
    let mut pubsub = timed(client.get_async_pubsub()).await?;
    timed(pubsub.subscribe(CHANNEL)).await?;
    let mut messages = pubsub.into_on_message();
    publish(task, directory, &mut conn, true).await?;
    read_all(directory, &mut conn).await?;
    directory.set_up();
    (task.health)(true);
    *was_up = true;
    tracing::info!(replicas = directory.replicas().len(), "cluster: presence published; following the other replicas");
    let mut renew = tokio::time::interval(task.lease / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renew.tick().await;
    loop {
        tokio::select! {
            _ = directory.wake.notified() => {
                if directory.take_dirty() {
                    publish(task, directory, &mut conn, true).await?;
                }
            }
            message = messages.next() => {
                let Some(message) = message else { return Err("the subscription ended".into()) };
                let Ok(name) = message.get_payload::<String>() else { continue };
                if name != directory.own() {
                    let raw: Option<String> = timed(redis::cmd("GET").arg(format!("{KEY_PREFIX}{name}")).query_async(&mut conn)).await?;
                    directory.update(&name, raw.and_then(|r| parse(&r)));
                }
            }
            _ = renew.tick() => {
                let dirty = directory.take_dirty();
                publish(task, directory, &mut conn, dirty).await?;
                read_all(directory, &mut conn).await?;
            }
        }
    }
}

/// Writes this replica's record under the lease, and announces it when `announce`.
async fn publish(
    task: &Task,
    directory: &Directory,
    conn: &mut MultiplexedConnection,
    announce: bool,
) -> Result<(), String> {
    let record = Record {
        name: directory.own().to_owned(),
        peer: directory.own_peer(),
        config: directory.own_config(),
        tunnels: (task.tunnels)(),
    };
    let json = serde_json::to_string(&record).map_err(|e| e.to_string())?;
    let key = format!("{KEY_PREFIX}{}", record.name);
    let expiry = (task.lease.as_millis() as u64 * 2 / 3).max(1);
    timed(redis::cmd("SET").arg(&key).arg(json).arg("PX").arg(expiry).query_async::<()>(conn)).await?;
    if announce {
        timed(redis::cmd("PUBLISH").arg(CHANNEL).arg(&record.name).query_async::<()>(conn)).await?;
    }
    Ok(())
}

/// Reads every replica's record.
async fn read_all(directory: &Directory, conn: &mut MultiplexedConnection) -> Result<(), String> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = timed(
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{KEY_PREFIX}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(conn),
        )
        .await?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 || keys.len() > 10_000 {
            break;
        }
    }
    let records = if keys.is_empty() {
        Vec::new()
    } else {
        let raw: Vec<Option<String>> = timed(redis::cmd("MGET").arg(&keys).query_async(conn)).await?;
        raw.into_iter().flatten().filter_map(|r| parse(&r)).collect()
    };
    directory.replace_all(records);
    Ok(())
}

/// A record, or `None` (logged) for one that does not parse.
fn parse(raw: &str) -> Option<Record> {
    match serde_json::from_str::<Record>(raw) {
        Ok(r) => Some(r),
        Err(err) => {
            tracing::debug!(error = %err, "cluster: a presence record does not parse; ignored");
            None
        }
    }
}

/// A Redis call under [`COMMAND_TIMEOUT`], its error as text.
async fn timed<T>(call: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("Redis did not answer within {COMMAND_TIMEOUT:?}")),
    }
}
