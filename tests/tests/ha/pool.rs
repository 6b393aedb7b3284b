//! Several agents on one tunnel: both get traffic, and losing one (kill -9, or a rolling
//! update by SIGTERM) costs no request issued after the loss.

use std::time::Instant;

use tunnel_tests::{agent, origin, tunnel_id, Server, Transport};

use crate::common::{
    agent_toml, failures, log_time, origin_name, origins_of, report, source_on, toml_agent, Download, End, Load, BIG,
};

fn two_agents_on_one_tunnel_both_receive_traffic(t: Transport) {
    let id = tunnel_id();
    let server =
        Server::start_on(t, &["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=app.local:{id}")], 1);
    let _a = agent(&server, &[&format!("rtcp://:0/{}", origin::http("A"))], &id, "", 2);
    let _b = agent(&server, &[&format!("rtcp://:0/{}", origin::http("B"))], &id, "", 4);
    let seen = origins_of(server.entrypoints[0], "app.local", 20);
    assert!(seen.contains_key("A") && seen.contains_key("B"), "20 requests should reach both agents: {seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 20, "{seen:?}");
}

const SEED: u64 = 0x0dea_d0be;

fn kill_9_of_one_agent_costs_no_request_issued_after_it(t: Transport) {
    let id = tunnel_id();
    let eps = "127.0.0.1:0,127.0.0.1:0/big.local";
    // A short acknowledgement timeout: over QUIC a killed peer says nothing, and its sessions
    // are found dead when a stream goes unacknowledged.
    let url = format!("relay://127.0.0.1:0?entryPoint={eps}&tunnel=app.local:{id},big.local:{id}&ackTimeout=1s");
    let server = Server::start_on(t, &["-L", &url], 2);
    let (web, big) = (server.entrypoints[0], server.entrypoints[1]);
    let source = source_on("127.0.0.1:0", SEED, BIG);
    let toml_a = agent_toml(server.relay, &id, "", &[("app.local", origin::http("A")), ("big.local", source)]);
    let (mut a, _dir_a) = toml_agent(&server, &toml_a, 2);

    // The download starts while A is the only agent, so A carries it; it is then left unread,
    // in flight, while B joins and requests flow.
    let mut download = Download::start(big);
    download.read_at_least(1 << 20);
    let toml_b = agent_toml(server.relay, &id, "", &[("app.local", origin::http("B")), ("big.local", source)]);
    let (_b, _dir_b) = toml_agent(&server, &toml_b, 4);

    let mut load = Load::start(web, "app.local", 1000);
    load.wait_done(10);
    let killed_at = std::time::SystemTime::now();
    a.signal("KILL");
    assert_eq!(a.wait_exit(), None, "the agent was killed by a signal");
    // Requests issued from here on find the agent dead, its sockets closed.
    let killed = Instant::now();
    load.wait_more(30);
    let outcomes = load.stop();

    let after: Vec<_> = outcomes.iter().filter(|o| o.started >= killed).collect();
    assert!(after.len() >= 20, "requests issued after the kill: {}", after.len());
    let failed: Vec<_> = after.iter().filter_map(|o| o.result.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} of {} requests issued after the kill failed: {failed:?}", failed.len(), after.len());
    let wrong: Vec<_> = after.iter().filter_map(|o| o.result.as_ref().ok()).filter(|b| origin_name(b) != "B").collect();
    assert!(wrong.is_empty(), "after the kill only B can answer: {wrong:?}");
    let before_failed = outcomes.iter().filter(|o| o.started < killed && o.result.is_err()).count();
    eprintln!("requests in flight at the kill that failed: {before_failed}; all failures: {:?}", failures(&outcomes));

    // The download A carried ends, before its full length, without hanging.
    let end = download.finish();
    eprintln!("{t:?}: the download from the killed agent ended with {end:?}");
    match end {
        End::Eof(n, _) | End::Failed(n, _) => assert!(n < BIG, "the download from the killed agent completed ({n})"),
        End::Stalled(n) => panic!("the download from the killed agent hung after {n} bytes"),
    }
    let left = server.proc.wait_for_nth("agent left", 2);
    report(&format!("{t:?}: kill -9 to the server's second `agent left`"), killed_at, log_time(&left));
    assert!(
        !server.proc.logged("reason=client is going away"),
        "a killed agent cannot say going-away:\n{}",
        server.proc.output()
    );
}

fn sigterm_on_one_agent_is_a_rolling_update_without_failed_requests(t: Transport) {
    let id = tunnel_id();
    let server =
        Server::start_on(t, &["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=app.local:{id}")], 1);
    let web = server.entrypoints[0];
    let mut a = agent(&server, &[&format!("rtcp://:0/{}", origin::http("A"))], &id, "", 2);
    let _b = agent(&server, &[&format!("rtcp://:0/{}", origin::http("B"))], &id, "", 4);

    let mut load = Load::start(web, "app.local", 200);
    load.wait_done(50);
    a.signal("TERM");
    assert_eq!(a.wait_exit(), Some(0), "a TERMed agent finishes and exits 0:\n{}", a.output());
    let exited = Instant::now();
    let outcomes = load.finish();

    assert_eq!(outcomes.len(), 200);
    let failed = failures(&outcomes);
    assert!(failed.is_empty(), "a rolling update must not fail requests: {failed:?}");
    let names: Vec<&str> = outcomes.iter().map(|o| origin_name(o.result.as_ref().unwrap())).collect();
    assert!(names[..50].contains(&"A"), "A served before its TERM: {names:?}");
    let after: Vec<_> = outcomes.iter().filter(|o| o.started >= exited).map(|o| o.result.as_ref().unwrap()).collect();
    assert!(after.iter().all(|b| origin_name(b) == "B"), "after A exited only B answers: {after:?}");
    server.proc.wait_for_nth("reason=client is going away", 2);
    assert!(a.logged("shutting down"), "{}", a.output());
}

tunnel_tests::over_transports!(
    two_agents_on_one_tunnel_both_receive_traffic,
    kill_9_of_one_agent_costs_no_request_issued_after_it,
    sigterm_on_one_agent_is_a_rolling_update_without_failed_requests,
);
