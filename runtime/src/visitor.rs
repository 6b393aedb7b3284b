//! The visitor path shared by the server's public entrypoints and the access client's
//! listeners: learn the hostname (sniffed from the HTTP `Host` or the TLS SNI, or fixed by
//! the listener), and refuse a visitor that cannot be served with an answer it can read.
//!
//! A refusal is one log line with the reason and the status the visitor is shown. HTTP
//! visitors get an HTTP error response; the connection is then half-closed and what the
//! visitor still sends is read (bounded in bytes and time), so the close is not a reset that
//! destroys the response before it is read. TLS and other visitors are closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_proto::sniff::{self, Guess, SniffError};
use tunnel_proto::wire::{Reply, Status};

use crate::http;

/// Bytes of a refused HTTP visitor's remaining request read before the close.
const REFUSE_DRAIN_BYTES: usize = 64 * 1024;
/// Time given to a refused HTTP visitor to read its answer.
const REFUSE_DRAIN_TIME: Duration = Duration::from_secs(2);

/// The info-level budget of refusal lines.
static REFUSALS: LogBudget = LogBudget::new();

/// One log line per second at most; counts the lines it holds back.
pub struct LogBudget {
    /// The second (since the budget's first use) of the last line let through, plus one.
    last: AtomicU64,
    held: AtomicU64,
}

impl LogBudget {
    /// A budget with nothing spent.
    pub const fn new() -> LogBudget {
        LogBudget { last: AtomicU64::new(0), held: AtomicU64::new(0) }
    }

    /// `Some(lines held back since the last one)` when a line may go out now; `None` (and
    /// one more held back) otherwise.
    pub fn take(&self) -> Option<u64> {
        let now = epoch().elapsed().as_secs() + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != now && self.last.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget::new()
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// What the visitor spoke, to choose how to answer errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    /// An HTTP/1.x request: errors are HTTP responses.
    Http,
    /// TLS or anything else: errors are a close.
    Other,
}

/// A visitor whose hostname is known.
#[derive(Debug)]
pub struct Named {
    /// The canonical hostname.
    pub host: String,
    /// Bytes read while sniffing, to send ahead of the rest.
    pub prefix: Vec<u8>,
    /// What it spoke.
    pub speaks: Speaks,
}

/// Why a visitor could not be named.
#[derive(Debug)]
pub enum Unnamed {
    /// The visitor left (or its socket failed) before naming a host: nothing to answer.
    Left(SniffError),
    /// Answer with this.
    Refuse(Speaks, Reply),
}

/// Reads a sniffing visitor's first bytes until its hostname is known, at most `max` bytes for
/// at most `timeout`.
pub async fn sniff_host(tcp: &mut TcpStream, timeout: Duration, max: usize) -> Result<Named, Unnamed> {
    sniff_host_after(tcp, Vec::new(), timeout, max).await
}

/// As [`sniff_host`], for a visitor whose first bytes (`prefix`) were read already.
pub async fn sniff_host_after(
    tcp: &mut TcpStream,
    prefix: Vec<u8>,
    timeout: Duration,
    max: usize,
) -> Result<Named, Unnamed> {
    let s = sniff::read_hostname_after(tcp, prefix, timeout, max).await;
    let speaks = if s.guess() == Some(Guess::Http) { Speaks::Http } else { Speaks::Other };
    match s.result {
        Ok(found) => match found.hostname() {
            Some(h) => Ok(Named { host: h.to_owned(), prefix: s.prefix, speaks }),
            None => Err(Unnamed::Refuse(speaks, Reply::new(Status::BAD_REQUEST, "TLS ClientHello without SNI"))),
        },
        Err(err @ SniffError::Io(_)) => Err(Unnamed::Left(err)),
        Err(err) => {
            let status = match &err {
                SniffError::Timeout(_) => Status(408),
                SniffError::TooLarge(_) => Status(431),
                _ => Status::BAD_REQUEST,
            };
            Err(Unnamed::Refuse(speaks, Reply::new(status, err.to_string())))
        }
    }
}

/// Answers a visitor that cannot be served with `reply`, logging why (`detail`, which may
/// say more than the visitor is told, or else the reply's message). Refusals are logged at
/// info at most once a second, with the number of others since; the rest at debug, so a
/// flood of bad visitors cannot flood the log.
pub async fn refuse(mut tcp: TcpStream, peer: SocketAddr, speaks: Speaks, host: &str, reply: Reply, detail: &str) {
    log_refusal(peer, host, &reply, detail);
    if speaks != Speaks::Http {
        return;
    }
    let response = http::error_response(reply.status, &reply.message);
    let _ = tcp.write_all(&response).await;
    let _ = tcp.shutdown().await;
    read_out(&mut tcp, REFUSE_DRAIN_BYTES, REFUSE_DRAIN_TIME).await;
}

/// Reads (and drops) what a visitor still sends after its answer, at most `max` bytes for at
/// most `time`, so that closing is not a reset that destroys the answer before it is read.
pub async fn read_out(tcp: &mut TcpStream, max: usize, time: Duration) {
    let drain = async {
        // On the heap: every visitor task would otherwise hold room for it all its life.
        let mut buf = vec![0u8; 4096];
        let mut left = max;
        while left > 0 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(time, drain).await;
}

/// Logs a refusal under the shared budget (info at most once a second, the rest at debug);
/// `detail` may say more than the visitor is told, or else the reply's message is the reason.
pub fn log_refusal(peer: SocketAddr, host: &str, reply: &Reply, detail: &str) {
    let reason = if detail.is_empty() { reply.message.as_str() } else { detail };
    // The status logged is the one the visitor is shown (an HTTP visitor's response; the
    // same code for a visitor that is only closed), so the log and what a user reports agree.
    let status = http::http_status(reply.status).0;
    match REFUSALS.take() {
        Some(suppressed) => {
            tracing::info!(%peer, host, status, reason, suppressed, "visitor refused")
        }
        None => tracing::debug!(%peer, host, status, reason, "visitor refused"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_budget_lets_one_line_a_second_through_and_counts_the_rest() {
        let budget = LogBudget::new();
        assert_eq!(budget.take(), Some(0));
        let held = (0..100).filter(|_| budget.take().is_none()).count();
        assert!(held >= 99, "at most one more line within the same second: {held}");
    }
}
