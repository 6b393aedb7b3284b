use std::net::SocketAddr;
use std::time::Duration;

use tunnel_proto::host::HostPattern;
use tunnel_proto::wire::Network;

use super::*;

fn target(name: &str, network: Network, host: Option<&str>) -> Target {
    with_selector(name, network, host, Selector::default())
}

fn with_selector(name: &str, network: Network, host: Option<&str>, selector: Selector) -> Target {
    Target {
        name: name.into(),
        network,
        addr: "127.0.0.1:1".into(),
        host: host.map(|h| HostPattern::parse(h).unwrap()),
        udp_ttl: Duration::from_secs(1),
        read_buffer_size: 1500,
        selector,
        proxy_protocol: None,
        health_check: None,
        tls: None,
    }
}

fn header(network: Network, hostname: &str) -> StreamHeader {
    StreamHeader { network, hostname: hostname.into(), visitor: None }
}

fn pick<'a>(t: &'a Targets, network: Network, host: &str) -> Option<&'a str> {
    t.select(&header(network, host)).first().map(|c| c.target.name.as_str())
}

fn order(t: &Targets, header: &StreamHeader) -> Vec<String> {
    t.select(header).iter().map(|c| c.target.name.clone()).collect()
}

#[test]
fn host_matches_beat_fallbacks_and_fallbacks_take_turns() {
    let t = Targets::new(vec![
        target("wild", Network::Tcp, Some("*.example.com")),
        target("exact", Network::Tcp, Some("www.example.com")),
        target("fb1", Network::Tcp, None),
        target("fb2", Network::Tcp, None),
        target("dns", Network::Udp, Some("dns.example.com")),
    ]);
    assert_eq!(pick(&t, Network::Tcp, "www.example.com"), Some("exact"));
    assert_eq!(pick(&t, Network::Tcp, "API.example.com."), Some("wild"));
    let turns: Vec<_> = (0..4).map(|_| pick(&t, Network::Tcp, "other.test").unwrap()).collect();
    assert_eq!(turns, ["fb1", "fb2", "fb1", "fb2"]);
    assert_eq!(pick(&t, Network::Tcp, ""), Some("fb1"), "no hostname: a fallback");
    assert_eq!(pick(&t, Network::Udp, "dns.example.com"), Some("dns"));
    assert_eq!(pick(&t, Network::Udp, "www.example.com"), None, "a TCP target never serves UDP");
}

#[test]
fn a_group_offers_every_target_the_pick_first_then_the_others_in_turn() {
    let t = Targets::new(vec![
        target("a", Network::Tcp, Some("app.example")),
        target("b", Network::Tcp, Some("app.example")),
        target("c", Network::Tcp, Some("app.example")),
    ]);
    let h = header(Network::Tcp, "app.example");
    assert_eq!(order(&t, &h), ["a", "b", "c"]);
    assert_eq!(order(&t, &h), ["b", "c", "a"]);
    assert_eq!(order(&t, &h), ["c", "a", "b"]);
}

#[test]
fn a_failed_target_is_skipped_until_its_fail_timeout_and_back_after_a_success() {
    let selector = Selector { max_fails: 2, fail_timeout: Duration::from_secs(3600), ..Selector::default() };
    let t = Targets::new(vec![
        with_selector("dead", Network::Tcp, None, selector),
        with_selector("live", Network::Tcp, None, selector),
    ]);
    let h = header(Network::Tcp, "x");
    t.select(&h).into_iter().find(|c| c.target.name == "dead").unwrap().failed();
    assert!(!t.is_down(0), "one failure of two allowed");
    t.select(&h).into_iter().find(|c| c.target.name == "dead").unwrap().failed();
    assert!(t.is_down(0));
    for _ in 0..5 {
        assert_eq!(order(&t, &h), ["live"], "a target that is down is not offered");
    }
    // Every target down: all are offered.
    let live = t.select(&h).into_iter().next().unwrap();
    live.failed();
    live.failed();
    assert_eq!(order(&t, &h).len(), 2, "every target down: all are tried");
    t.select(&h).into_iter().find(|c| c.target.name == "dead").unwrap().succeeded();
    assert!(!t.is_down(0), "a success puts it back");
}

#[test]
fn a_zero_fail_timeout_never_skips() {
    let selector = Selector { fail_timeout: Duration::ZERO, ..Selector::default() };
    let t = Targets::new(vec![
        with_selector("a", Network::Tcp, None, selector),
        with_selector("b", Network::Tcp, None, selector),
    ]);
    let h = header(Network::Tcp, "x");
    for c in t.select(&h) {
        c.failed();
    }
    assert!(!t.is_down(0) && !t.is_down(1));
}

#[test]
fn strategies() {
    let names = ["a", "b", "c"];
    let make = |strategy| {
        let selector = Selector { strategy, ..Selector::default() };
        Targets::new(names.iter().map(|n| with_selector(n, Network::Tcp, None, selector)).collect())
    };
    let fifo = make(Strategy::Fifo);
    let h = header(Network::Tcp, "x");
    for _ in 0..3 {
        assert_eq!(order(&fifo, &h), ["a", "b", "c"]);
    }
    fifo.select(&h)[0].failed();
    assert_eq!(order(&fifo, &h), ["b", "c"], "fifo: the standby takes over");

    let hash = make(Strategy::Hash);
    let visitor = |ip: &str, port: u16| StreamHeader {
        visitor: Some(SocketAddr::new(ip.parse().unwrap(), port)),
        ..header(Network::Tcp, "x")
    };
    let first = order(&hash, &visitor("192.0.2.7", 1000));
    for port in [1001, 2000, 65000] {
        assert_eq!(order(&hash, &visitor("192.0.2.7", port)), first, "one visitor IP keeps its target");
    }
    let spread: std::collections::HashSet<String> =
        (1..=64).map(|i| order(&hash, &visitor(&format!("192.0.2.{i}"), 1))[0].clone()).collect();
    assert!(spread.len() > 1, "visitors spread over the targets: {spread:?}");

    let random = make(Strategy::Random);
    let seen: std::collections::HashSet<String> = (0..200).map(|_| order(&random, &h)[0].clone()).collect();
    assert_eq!(seen.len(), 3, "random reaches every target: {seen:?}");
    assert_eq!(order(&random, &h).len(), 3);

    assert_eq!(Strategy::parse("ROUND"), Ok(Strategy::Round));
    assert!(Strategy::parse("weighted").unwrap_err().contains("round, random, fifo, hash"));
}

#[test]
fn a_failed_check_holds_a_target_out_until_a_check_passes() {
    let t = Targets::new(vec![target("a", Network::Tcp, None), target("b", Network::Tcp, None)]);
    t.candidate(0).checked(false, "connect: refused");
    assert!(t.is_down(0));
    t.candidate(0).succeeded();
    assert!(t.is_down(0), "a dial success does not overrule the failed check");
    t.candidate(0).checked(true, "");
    assert!(!t.is_down(0));
    t.candidate(1).failed();
    assert!(t.is_down(1));
    t.candidate(1).checked(true, "");
    assert!(!t.is_down(1), "a passing check forgets failed dials");
}
