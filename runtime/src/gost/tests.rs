use super::*;

const CHAIN: &str = "
chains:
- name: chain-0
  hops:
  - name: hop-0
    nodes:
    - name: node-0
      addr: :8443
      connector:
        type: relay
        metadata:
          tunnel.id: 4d21094e-b74c-4916-86c1-d9fa36ea677b
      dialer:
        type: tcp
";

fn service(kind: &str, chain: &str) -> String {
    format!("- name: s\n  addr: :0\n  handler:\n    type: {kind}\n  listener:\n    type: {kind}\n    chain: {chain}\n")
}

fn doc(text: &str) -> Document {
    parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn relay(text: &str) -> Result<RelayFile, Bad> {
    chain::relay_of(&doc(text), &mut KeyMap::default())
}

use crate::client::RelayFile;

#[test]
fn yaml_is_told_by_the_extension() {
    for yes in ["gost.yaml", "/etc/x.YML", "a.b.yml"] {
        assert!(is_yaml(yes), "{yes}");
    }
    for no in ["server.toml", "yaml", "gost.yaml.bak", "x.yamll"] {
        assert!(!is_yaml(no), "{no}");
    }
}

#[test]
fn a_repeated_services_key_adds_up() {
    let text = format!("services:\n{}services:\n{}{CHAIN}", service("rtcp", "chain-0"), service("rudp", "chain-0"));
    let d = doc(&text);
    assert_eq!(d.services.iter().map(|s| s.handler.kind.as_str()).collect::<Vec<_>>(), ["rtcp", "rudp"]);
    assert_eq!(d.chains.len(), 1);
}

#[test]
fn unknown_keys_are_named_with_their_path() {
    let err = parse("log:\n  level: debug\n").unwrap_err();
    assert!(err.contains("log: not supported here"), "{err}");
    let err = parse("services:\n- addr: :1\n  handler:\n    type: relay\n    auther: a\n  listener:\n    type: tcp\n")
        .unwrap_err();
    assert!(err.starts_with("services[0].handler: unknown field `auther`"), "{err}");
    assert!(err.contains("line 5"), "{err}");
    let err = parse(&CHAIN.replace("      dialer:", "      bypass: b\n      dialer:")).unwrap_err();
    assert!(err.starts_with("chains[0].hops[0].nodes[0]: unknown field `bypass`"), "{err}");
}

#[test]
fn metadata_is_taken_without_case_and_the_rest_refused() {
    let md: Metadata = serde_yaml_ng::from_str("Sniffing: \"true\"\nttl: 7\nreadBufferSize: 1500\nwho: x\n").unwrap();
    let mut meta = Meta::of("services[0].handler.metadata", &md).unwrap();
    assert_eq!(meta.take_bool(&["sniffing"]).unwrap(), Some(true));
    assert_eq!(meta.take_duration(&["ttl"]).unwrap(), Some(std::time::Duration::from_secs(7)));
    assert_eq!(meta.take_number::<usize>(&["readbuffersize"]).unwrap(), Some(1500));
    let (key, why) = meta.finish("sniffing, ttl").unwrap_err();
    assert_eq!(key, "services[0].handler.metadata.who");
    assert!(why.contains("not supported here") && why.contains("sniffing, ttl"), "{why}");

    let bad: Metadata = serde_yaml_ng::from_str("keepalive: maybe\nttl: soon\nn: 300\n").unwrap();
    let mut meta = Meta::of("m", &bad).unwrap();
    assert_eq!(meta.take_bool(&["keepalive"]).unwrap_err().0, "m.keepalive");
    assert_eq!(meta.take_duration(&["ttl"]).unwrap_err().0, "m.ttl");
    assert_eq!(meta.take_number::<u8>(&["n"]).unwrap_err().0, "m.n");

    let mut twice = Meta::of("a.metadata", &serde_yaml_ng::from_str("ttl: 1s").unwrap()).unwrap();
    twice.add("b.metadata", &serde_yaml_ng::from_str("TTL: 2s").unwrap()).unwrap();
    let (key, why) = twice.take_duration(&["ttl"]).unwrap_err();
    assert_eq!(key, "b.metadata.TTL");
    assert!(why.contains("a.metadata.ttl"), "{why}");
}

#[test]
fn key_map_renames_the_longest_prefix_on_a_boundary() {
    let mut keys = KeyMap::default();
    keys.add("relay", "chains[0].hops[0].nodes[0]");
    keys.add("relay.token", "chains[0].hops[0].nodes[0].connector.metadata.token");
    keys.add("ingress.rules", "ingresses[1].rules");
    assert_eq!(keys.yaml_key("relay.token"), "chains[0].hops[0].nodes[0].connector.metadata.token");
    assert_eq!(keys.yaml_key("relay.tokenFile"), "chains[0].hops[0].nodes[0].tokenFile");
    assert_eq!(keys.yaml_key("ingress.rules[3].endpoint"), "ingresses[1].rules[3].endpoint");
    assert_eq!(keys.yaml_key("services[0].addr"), "services[0].addr");
    let err =
        keys.rename(ConfigError::Invalid { source_name: "f.yaml".into(), key: "relay.addr".into(), why: "x".into() });
    assert_eq!(err.to_string(), "f.yaml: chains[0].hops[0].nodes[0].addr: x");
}

#[test]
fn the_chain_becomes_the_relay_table() {
    let r = relay(&format!("services:\n{}{CHAIN}", service("rtcp", "chain-0"))).unwrap();
    assert_eq!((r.addr.as_str(), r.dialer.as_deref()), (":8443", Some("tcp")));
    assert_eq!(r.tunnel_id.as_deref(), Some("4d21094e-b74c-4916-86c1-d9fa36ea677b"));
    assert!(r.proxy.is_none());

    // Two of the seed's access-client examples indent the dialer under the connector.
    let indented = CHAIN.replace("      dialer:\n        type: tcp", "        dialer:\n          type: quic");
    let r = relay(&format!("services:\n{}{indented}", service("tcp", "chain-0"))).unwrap();
    assert_eq!(r.dialer.as_deref(), Some("quic"));

    let tls = CHAIN.replace(
        "        type: tcp\n",
        "        type: tls\n        tls:\n          serverName: relay.example\n          secure: false\n",
    );
    let tls =
        tls.replace("          tunnel.id:", "          tunnel.weight: 7\n          token: t0k\n          tunnelID:");
    let r = relay(&format!("services:\n{}{tls}", service("rtcp", "chain-0"))).unwrap();
    assert_eq!((r.dialer.as_deref(), r.server_name.as_deref(), r.insecure), (Some("tls"), Some("relay.example"), true));
    assert_eq!((r.weight, r.token.as_ref().map(|t| t.expose())), (Some(7), Some("t0k")));
    assert!(r.tunnel_id.is_some(), "tunnelID is the seed's other spelling");
}

#[test]
fn a_proxy_hop_before_the_relay() {
    let proxy = "  - name: proxy\n    nodes:\n    - name: p\n      addr: 127.0.0.1:3128\n      connector:\n        type: http\n        auth:\n          username: al ice\n          password: p@ss:w/rd\n";
    let text = format!(
        "services:\n{}{}",
        service("rtcp", "chain-0"),
        CHAIN.replace("  hops:\n", &format!("  hops:\n{proxy}"))
    );
    let r = relay(&text).unwrap();
    assert_eq!(r.proxy.unwrap().expose(), "http://al%20ice:p%40ss%3Aw%2Frd@127.0.0.1:3128");
    let socks = text.replace("type: http", "type: socks5");
    assert!(relay(&socks).unwrap().proxy.unwrap().expose().starts_with("socks5://"));
    let (key, why) = relay(&text.replace("type: http", "type: ss")).unwrap_err();
    assert_eq!(key, "chains[0].hops[0].nodes[0].connector.type");
    assert!(why.contains("http (CONNECT) or socks5"), "{why}");
}

#[test]
fn chain_errors_name_the_key() {
    let case = |text: String, key: &str, says: &str| {
        let (k, why) = relay(&text).unwrap_err();
        assert_eq!(k, key, "{why}");
        assert!(why.contains(says), "{k}: {why}");
    };
    let s = |chain: &str| format!("services:\n{}", service("rtcp", chain));
    case(
        format!("{}{}", s("chain-0"), CHAIN.replace("type: relay", "type: http")),
        "chains[0].hops[0].nodes[0].connector.type",
        "a proxy hop comes before",
    );
    case(
        format!("{}{}", s("chain-0"), CHAIN.replace("type: tcp", "type: ws")),
        "chains[0].hops[0].nodes[0].dialer.type",
        "tcp, tls and quic",
    );
    case(format!("{}{}", s("chain-9"), CHAIN), "services[0].listener.chain", "no chain named \"chain-9\"");
    case(
        format!("{}{}", s("chain-0"), CHAIN.replace("tunnel.id:", "tunnel.idd:")),
        "chains[0].hops[0].nodes[0].connector.metadata.tunnel.idd",
        "not supported here",
    );
    let two = format!(
        "{}{}",
        s("chain-0"),
        CHAIN.replace(
            "    nodes:\n",
            "    nodes:\n    - name: n\n      addr: :1\n      connector:\n        type: relay\n"
        )
    );
    case(two, "chains[0].hops[0].nodes", "one node per hop");
    let other = format!("services:\n{}{}{CHAIN}", service("rtcp", "chain-0"), service("rudp", "chain-1"));
    case(other, "services[1].listener.chain", "same chain");
    let unused = format!("{}{CHAIN}{}", s("chain-0"), CHAIN.replace("chains:\n", "").replace("chain-0", "chain-1"));
    case(unused, "chains[1]", "used by no service");
    let none = "services:\n- addr: :0\n  handler:\n    type: rtcp\n  listener:\n    type: rtcp\n".to_owned();
    case(none, "services[0]", "no chain");
}
