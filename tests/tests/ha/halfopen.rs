//! Half-open sessions: agent A's link blackholed by the chaos proxy (no FIN, no reset), or A
//! frozen by SIGSTOP. The server finds A's sessions dead (no keepalive within its timeout,
//! or a stream not acknowledged) and every request is then served by agent B.

use std::time::SystemTime;

use tunnel_tests::chaos::ChaosProxy;
use tunnel_tests::{origin, tunnel_id, Proc, Server};

use crate::common::{agent_toml, log_time, origins_of, report, toml_agent};

/// Agents ping every 500 ms, well inside the server's 2 s keepalive timeout.
const AGENT_LIMITS: &str = "keepaliveInterval = \"500ms\"\nkeepaliveTimeout = \"1s\"";

fn server(id: &str) -> Server {
    let url =
        format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=app.local:{id}&keepaliveTimeout=2s&ackTimeout=1s");
    Server::start(&["-L", &url], 1)
}

#[test]
fn a_blackholed_agent_link_is_dropped_by_keepalive_the_other_agent_serves_and_a_rejoins() {
    let id = tunnel_id();
    let server = server(&id);
    let proxy = ChaosProxy::start(server.relay);
    let toml_a = agent_toml(proxy.addr(), &id, AGENT_LIMITS, &[("", origin::http("A"))]);
    let (a, _dir_a) = toml_agent(&server, &toml_a, 2);
    let toml_b = agent_toml(server.relay, &id, AGENT_LIMITS, &[("", origin::http("B"))]);
    let (_b, _dir_b) = toml_agent(&server, &toml_b, 4);
    assert_eq!(proxy.connections(), 2, "A's two sessions go through the proxy");
    let web = server.entrypoints[0];
    let seen = origins_of(web, "app.local", 8);
    assert!(seen.contains_key("A") && seen.contains_key("B"), "both agents serve before the fault: {seen:?}");

    let cut = SystemTime::now();
    proxy.blackhole();
    let first = server.proc.wait_for_nth("agent left", 1);
    let second = server.proc.wait_for_nth("agent left", 2);
    for line in [&first, &second] {
        assert!(line.contains("no keepalive within"), "A's sessions leave for want of keepalive: {line}");
    }
    report("blackhole to the server's second `agent left` (keepaliveTimeout=2s)", cut, log_time(&second));
    let lost = a.wait_for("session lost");
    report("blackhole to agent A's `session lost` (keepalive 500ms + 1s)", cut, log_time(&lost));

    let seen = origins_of(web, "app.local", 20);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["B"], "after A's link went dark only B serves: {seen:?}");
    assert_eq!(server.proc.output().matches("agent left").count(), 2, "B stays:\n{}", server.proc.output());

    // The link heals: A's reconnection attempts, held by the proxy, get through.
    let healed = SystemTime::now();
    proxy.resume();
    let rejoined = server.proc.wait_for_nth("agent joined", 6);
    report("link healed to A's second rejoin", healed, log_time(&rejoined));
    let seen = origins_of(web, "app.local", 8);
    assert!(seen.contains_key("A") && seen.contains_key("B"), "A serves again once its link heals: {seen:?}");
}

/// Sends SIGCONT when dropped, so a stopped agent can run (and be killed) whatever happens.
struct Continue<'a>(&'a Proc);

impl Drop for Continue<'_> {
    fn drop(&mut self) {
        self.0.signal("CONT");
    }
}

#[test]
fn a_frozen_agent_is_skipped_after_the_ack_timeout_and_the_other_agent_serves() {
    let id = tunnel_id();
    let server = server(&id);
    let toml_a = agent_toml(server.relay, &id, AGENT_LIMITS, &[("", origin::http("A"))]);
    let (a, _dir_a) = toml_agent(&server, &toml_a, 2);
    let toml_b = agent_toml(server.relay, &id, AGENT_LIMITS, &[("", origin::http("B"))]);
    let (_b, _dir_b) = toml_agent(&server, &toml_b, 4);
    let web = server.entrypoints[0];
    let seen = origins_of(web, "app.local", 8);
    assert!(seen.contains_key("A") && seen.contains_key("B"), "both agents serve before the fault: {seen:?}");

    let stopped = SystemTime::now();
    a.signal("STOP");
    let _resume = Continue(&a);
    // The first requests may wait for an acknowledgement timeout, then succeed on B.
    let seen = origins_of(web, "app.local", 10);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["B"], "a frozen agent serves nothing: {seen:?}");
    let second = server.proc.wait_for_nth("agent left", 2);
    report(
        "SIGSTOP to the server's second `agent left` (ackTimeout=1s, keepaliveTimeout=2s)",
        stopped,
        log_time(&second),
    );
    if let Some(line) = server.proc.output().lines().find(|l| l.contains("unresponsive")) {
        report("SIGSTOP to the first `agent session unresponsive`", stopped, log_time(line));
    }
    let seen = origins_of(web, "app.local", 20);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["B"], "after detection only B serves: {seen:?}");
    assert_eq!(server.proc.output().matches("agent left").count(), 2, "B stays:\n{}", server.proc.output());
}
