//! Public routing by hostname through the ingress, end to end with curl.

use std::io::Write;
use std::net::TcpStream;

use tunnel_tests::{
    access, agent, agent_config, http_get, origin, read_until_close, tunnel_id, Server, Transport, WAIT,
};

fn suffix_rule_matches_domain_and_subdomains_case_insensitively(t: Transport) {
    let id = tunnel_id();
    let origin = origin::http("a");
    let server = Server::start_on(
        t,
        &["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=.example.com:{id}")],
        1,
    );
    let _agent = agent(&server, &[&format!("rtcp://:0/{origin}")], &id, "", 1);
    let ep = server.entrypoints[0];
    for host in ["example.com", "abc.example.com", "ABC.Example.COM", "abc.example.com:8080"] {
        let (status, body) = http_get(ep, host, "/x");
        assert_eq!(status, 200, "{host}: {body}");
        assert!(body.starts_with("origin=a"), "{host}: {body}");
    }
    let (status, body) = http_get(ep, "example.org", "/");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("example.org"), "the 404 names the host: {body}");
}

#[test]
fn exact_rule_beats_wildcard_and_longest_suffix_wins() {
    let (a, b) = (tunnel_id(), tunnel_id());
    let (origin_a, origin_b) = (origin::http("A"), origin::http("B"));
    // Wildcards first, so a "first rule wins" table would send everything to A.
    let rules = format!(".example.com:{a},*.example.com:{a},a.example.com:{b},*.deep.example.com:{b}");
    let server = Server::start(&["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel={rules}")], 1);
    let _agent_a = agent(&server, &[&format!("rtcp://:0/{origin_a}")], &a, "", 1);
    let _agent_b = agent(&server, &[&format!("rtcp://:0/{origin_b}")], &b, "", 2);
    let ep = server.entrypoints[0];
    for (host, want) in [
        ("a.example.com", "origin=B"),
        ("A.EXAMPLE.COM.", "origin=B"),
        ("b.example.com", "origin=A"),
        ("example.com", "origin=A"),
        ("x.deep.example.com", "origin=B"),
        ("deep.example.com", "origin=A"),
        ("x.a.example.com", "origin=A"),
    ] {
        let (status, body) = http_get(ep, host, "/");
        assert_eq!(status, 200, "{host}: {body}");
        assert!(body.starts_with(want), "{host} should reach {want}: {body}");
    }
}

#[test]
fn star_wildcard_does_not_match_the_bare_domain() {
    let id = tunnel_id();
    let origin = origin::http("a");
    let server =
        Server::start(&["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=*.example.com:{id}")], 1);
    let _agent = agent(&server, &[&format!("rtcp://:0/{origin}")], &id, "", 1);
    let ep = server.entrypoints[0];
    let (status, body) = http_get(ep, "x.example.com", "/");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("origin=a"), "{body}");
    let (status, body) = http_get(ep, "example.com", "/");
    assert_eq!(status, 404, "*.example.com must not match example.com: {body}");
    assert!(body.contains("example.com"), "the 404 names the host: {body}");
    let (status, body) = http_get(ep, "notexample.com", "/");
    assert_eq!(status, 404, "{body}");
}

#[test]
fn unroutable_visitors_get_404_or_502_naming_the_host() {
    let (with_agent, without_agent, refusing) = (tunnel_id(), tunnel_id(), tunnel_id());
    let origin = origin::http("a");
    let rules = format!("up.example.com:{with_agent},down.example.com:{without_agent},refused.example.com:{refusing}");
    let server = Server::start(&["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel={rules}")], 1);
    let _agent = agent(&server, &[&format!("rtcp://:0/{origin}")], &with_agent, "", 1);
    let _refusing = agent(&server, &[&format!("rtcp://:0/{}", origin::closed_port())], &refusing, "", 2);
    let ep = server.entrypoints[0];

    let (status, body) = http_get(ep, "up.example.com", "/");
    assert_eq!(status, 200, "{body}");

    let (status, body) = http_get(ep, "nowhere.example.net", "/");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("nowhere.example.net"), "the 404 names the host: {body}");

    let (status, body) = http_get(ep, "down.example.com", "/");
    assert_eq!(status, 502, "a rule whose tunnel has no agent: {body}");
    assert!(body.contains("no agent"), "the 502 says no agent is connected: {body}");
    assert!(body.contains("down.example.com"), "the 502 names the host: {body}");

    let (status, body) = http_get(ep, "refused.example.com", "/");
    assert_eq!(status, 502, "a target that refuses: {body}");
    assert!(body.contains("refused.example.com"), "the 502 names the host: {body}");
    assert!(body.contains("unreachable") || body.contains("refused"), "the 502 says the target refused: {body}");

    // The server stays up and keeps routing after refusing.
    let (status, _) = http_get(ep, "up.example.com", "/again");
    assert_eq!(status, 200);
}

fn private_rule_is_refused_publicly_but_reachable_through_access(t: Transport) {
    let private = tunnel_id();
    let origin = origin::http("p");
    let server = Server::start_on(
        t,
        &["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=priv.local:${private}")],
        1,
    );
    let _agent = agent(&server, &[&format!("rtcp://:0/{origin}")], &private, "", 1);
    let ep = server.entrypoints[0];

    let (status, body) = http_get(ep, "priv.local", "/");
    assert_eq!(status, 404, "a private rule is not usable from a public entrypoint: {body}");
    assert!(body.contains("priv.local"), "{body}");
    assert!(!body.contains("origin=p"), "{body}");

    let (_access, addrs) =
        access(&server, &["tcp://127.0.0.1:0/priv.local", "tcp://127.0.0.1:0?sniffing=true"], &private, "");
    let (fixed, sniffing) = (addrs[0], addrs[1]);
    let (status, body) = http_get(fixed, "anything.example", "/fixed");
    assert_eq!(status, 200, "fixed-hostname listener: {body}");
    assert!(body.starts_with("origin=p") && body.contains("path=/fixed"), "{body}");

    let (status, body) = http_get(sniffing, "priv.local", "/sniffed");
    assert_eq!(status, 200, "sniffing listener: {body}");
    assert!(body.starts_with("origin=p host=priv.local path=/sniffed"), "{body}");

    let (status, body) = http_get(sniffing, "other.local", "/");
    assert_eq!(status, 404, "a hostname no rule routes to this tunnel: {body}");
    assert!(body.contains("other.local"), "{body}");
}

fn direct_mode_reaches_a_tunnel_by_id_without_rules(t: Transport) {
    let id = tunnel_id();
    let origin = origin::http("d");
    let server = Server::start_on(t, &["-L", "relay://127.0.0.1:0?tunnel.direct=true"], 0);
    let _agent = agent(&server, &[&format!("rtcp://:0/{origin}")], &id, "", 1);
    let (_access, addrs) =
        access(&server, &["tcp://127.0.0.1:0/no-rule.local", "tcp://127.0.0.1:0?sniffing=true"], &id, "");
    let (status, body) = http_get(addrs[0], "no-rule.local", "/fixed");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("origin=d"), "{body}");
    let (status, body) = http_get(addrs[1], "whatever.example", "/sniffed");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("origin=d host=whatever.example path=/sniffed"), "{body}");
}

#[test]
fn without_direct_mode_an_unmatched_hostname_is_refused_to_access_clients() {
    let id = tunnel_id();
    let origin = origin::http("d");
    let server =
        Server::start(&["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=known.local:{id}")], 1);
    let _agent = agent(&server, &[&format!("rtcp://:0/{origin}")], &id, "", 1);
    let (_access, addrs) = access(
        &server,
        &["tcp://127.0.0.1:0/no-rule.local", "tcp://127.0.0.1:0?sniffing=true", "tcp://127.0.0.1:0/known.local"],
        &id,
        "",
    );

    // Fixed hostname: nothing to answer in, the connection is closed without a byte.
    let mut conn = TcpStream::connect(addrs[0]).unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: known.local\r\n\r\n").unwrap();
    let (got, closed) = read_until_close(&mut conn, WAIT);
    assert!(closed, "the connection should be closed");
    assert!(got.is_empty(), "nothing from the origin: {:?}", String::from_utf8_lossy(&got));

    // Sniffing: an HTTP error from the access client.
    let (status, body) = http_get(addrs[1], "no-rule.local", "/");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no-rule.local"), "{body}");

    // The rule's own hostname still works, both ways.
    let (status, body) = http_get(addrs[2], "x", "/");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(addrs[1], "known.local", "/");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("origin=d"), "{body}");
}

#[test]
fn agent_routes_by_target_host_with_a_fallback() {
    let (with_fallback, host_only) = (tunnel_id(), tunnel_id());
    let (a, fallback, org) = (origin::http("a"), origin::http("fallback"), origin::http("org"));
    let rules = format!(".example.com:{with_fallback},.example.org:{host_only}");
    let server = Server::start(&["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel={rules}")], 1);
    let relay = server.relay;
    let first = format!(
        r#"
[relay]
addr = "{relay}"
tunnel.id = "{with_fallback}"
[[services]]
type = "rtcp"
[[services.forwarder.nodes]]
name = "a"
addr = "{a}"
host = "a.example.com"
[[services.forwarder.nodes]]
name = "fallback"
addr = "{fallback}"
"#
    );
    let second = format!(
        r#"
[relay]
addr = "{relay}"
tunnel.id = "{host_only}"
[[services]]
type = "rtcp"
[[services.forwarder.nodes]]
name = "org"
addr = "{org}"
host = "a.example.org"
"#
    );
    let _first = agent_config(&server, &first, 1);
    let _second = agent_config(&server, &second, 2);
    let ep = server.entrypoints[0];
    for (host, want) in
        [("a.example.com", "origin=a"), ("b.example.com", "origin=fallback"), ("example.com", "origin=fallback")]
    {
        let (status, body) = http_get(ep, host, "/");
        assert_eq!(status, 200, "{host}: {body}");
        assert!(body.starts_with(want), "{host} should reach {want}: {body}");
    }
    let (status, body) = http_get(ep, "a.example.org", "/");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("origin=org"), "{body}");
    let (status, body) = http_get(ep, "b.example.org", "/");
    assert_eq!(status, 404, "no target for the host and no fallback: {body}");
    assert!(body.contains("b.example.org"), "the 404 names the host: {body}");
}

tunnel_tests::over_transports!(
    suffix_rule_matches_domain_and_subdomains_case_insensitively,
    private_rule_is_refused_publicly_but_reachable_through_access,
    direct_mode_reaches_a_tunnel_by_id_without_rules,
);
