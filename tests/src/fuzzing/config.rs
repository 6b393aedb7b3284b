//! Configuration loading of the three binaries: a TOML file's text into each `FileConfig` and
//! through `validate`, and the `-L` / `-F` command-line URLs the same way. A configuration
//! that validates must keep the limits `validate` promises.

use tunnel_proto::host::canonicalize;
use tunnel_proto::wire::MAX_TOKEN;
use tunnel_runtime::cli::ClientFile;
use tunnel_runtime::url::split_host_port;

/// Lines of `data` as text: the first is the `-F` relay URL, the others `-L` URLs.
fn command_line(data: &[u8]) -> Option<(String, Vec<String>)> {
    let text = std::str::from_utf8(data).ok()?;
    let mut lines = text.lines().map(str::to_owned);
    let relay = lines.next()?;
    Some((relay, lines.take(8).collect()))
}

fn check_server(config: tunnel_server::Config) {
    let l = &config.limits;
    assert!(l.max_streams_per_session >= 1 && l.sniff_max_bytes >= 64);
    assert!(l.max_visitors >= 1 && l.max_sessions_per_tunnel >= 1);
    for e in &config.entrypoints {
        if let Some(name) = &e.hostname {
            assert_eq!(canonicalize(name).as_ref(), Ok(name), "entrypoint hostname {name:?} is not canonical");
        }
    }
    for t in config.global_tokens.iter().chain(config.tunnel_tokens.values().flatten()) {
        assert!(!t.is_empty() && t.len() <= MAX_TOKEN, "token of {} bytes accepted", t.len());
    }
}

fn check_relay(relay: &tunnel_runtime::client::RelayOptions) {
    assert!(!relay.servers.is_empty(), "validated relay without a server");
    for addr in &relay.servers {
        split_host_port(addr).unwrap_or_else(|e| panic!("validated relay address {addr:?}: {e}"));
    }
    assert!(relay.weight >= 1 && (1..=16).contains(&relay.sessions));
    if let Some(t) = &relay.token {
        assert!(!t.is_empty() && t.len() <= MAX_TOKEN, "token of {} bytes accepted", t.len());
    }
}

fn check_agent(config: tunnel_agent::Config) {
    check_relay(&config.relay);
    assert!(!config.targets.is_empty());
    for t in &config.targets {
        split_host_port(&t.addr).unwrap_or_else(|e| panic!("validated target address {:?}: {e}", t.addr));
        assert!(!t.udp_ttl.is_zero() && (1..=65535).contains(&t.read_buffer_size));
    }
}

fn check_access(config: tunnel_access::Config) {
    check_relay(&config.relay);
    assert!(!config.listeners.is_empty());
    for l in &config.listeners {
        assert!(!(l.sniffing && l.hostname.is_some()), "sniffing and a fixed hostname both accepted");
        if let Some(name) = &l.hostname {
            assert_eq!(canonicalize(name).as_ref(), Ok(name), "listener hostname {name:?} is not canonical");
        }
        assert!(!l.ttl.is_zero() && (1..=65535).contains(&l.read_buffer_size));
    }
}

/// A server TOML file: parse, validate, check.
pub fn server_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(file) = toml::from_str::<tunnel_server::FileConfig>(text) {
        if let Ok(config) = file.validate("fuzz.toml") {
            check_server(config);
        }
    }
}

/// An agent TOML file: parse, validate, check.
pub fn agent_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(file) = toml::from_str::<tunnel_agent::FileConfig>(text) {
        if let Ok(config) = file.validate("fuzz.toml") {
            check_agent(config);
        }
    }
}

/// An access client TOML file: parse, validate, check.
pub fn access_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(file) = toml::from_str::<tunnel_access::FileConfig>(text) {
        if let Ok(config) = file.validate("fuzz.toml") {
            check_access(config);
        }
    }
}

/// The server's `-L relay://...` URL (the first line): parse, validate, check.
pub fn server_url(data: &[u8]) {
    let Some((url, _)) = command_line(data) else { return };
    if let Ok(file) = tunnel_server::FileConfig::from_url(&url) {
        if let Ok(config) = file.validate("-L") {
            check_server(config);
        }
    }
}

/// The agent's `-F` URL (the first line) and `-L` URLs (the next lines, at most 8).
pub fn agent_urls(data: &[u8]) {
    let Some((relay, services)) = command_line(data) else { return };
    if let Ok(file) = tunnel_agent::FileConfig::from_urls(&services, &relay) {
        if let Ok(config) = file.validate("-L") {
            check_agent(config);
        }
    }
}

/// The access client's `-F` URL (the first line) and `-L` URLs (the next lines, at most 8).
pub fn access_urls(data: &[u8]) {
    let Some((relay, services)) = command_line(data) else { return };
    if let Ok(file) = tunnel_access::FileConfig::from_urls(&services, &relay) {
        if let Ok(config) = file.validate("-L") {
            check_access(config);
        }
    }
}
