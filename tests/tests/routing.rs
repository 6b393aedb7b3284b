//! Public routing by hostname through the ingress, end to end with curl.

use tunnel_tests::{agent, http_get, origin, tunnel_id, Server};

#[test]
fn suffix_rule_matches_domain_and_subdomains_case_insensitively() {
    let id = tunnel_id();
    let origin = origin::http("a");
    let server = Server::start(&["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=.example.com:{id}")], 1);
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
