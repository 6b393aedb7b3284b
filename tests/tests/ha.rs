//! High availability and faults ([POOL]), end to end with the real binaries:
//! - `ha/pool.rs`: several agents on one tunnel share its traffic; kill -9 of one, or a
//!   rolling update by SIGTERM, costs no request issued after it (over tcp, tls and quic);
//! - `ha/restart.rs`: a server restarted on the same port is rejoined by its agents without
//!   their restart; SIGTERM on the server lets a download in flight finish byte-exact while
//!   new visitors are refused;
//! - `ha/halfopen.rs`: a blackholed link (chaos proxy) or a frozen agent (SIGSTOP) is found by
//!   keepalive and acknowledgement timeouts, and traffic moves to the other agent;
//! - `ha/lossy.rs`: 50 ms of delay or a throttle (chaos proxy) and 2% packet loss (nftables
//!   between two network namespaces made by `ha/netns.rs`) keep large transfers byte-exact.
//!
//! Tests wait on log lines, EOF and process exits, with the harness's deadlines; durations are
//! printed as `measured: ...` for the record, never asserted.

#[path = "ha/common.rs"]
mod common;
#[path = "ha/halfopen.rs"]
mod halfopen;
#[path = "ha/lossy.rs"]
mod lossy;
#[path = "ha/netns.rs"]
mod netns;
#[path = "ha/pool.rs"]
mod pool;
#[path = "ha/restart.rs"]
mod restart;
