//! The chain of a client binary (agent, access client) as its `[relay]` table: every service
//! goes through one chain, whose last hop is the server (connector `relay`, dialer `tcp`,
//! `tls` or `quic`) and whose optional hop before it is an HTTP CONNECT or SOCKS5 proxy.

use super::{Bad, ChainNode, Dialer, Document, Hop, KeyMap, Meta, Service};
use crate::client::RelayFile;
use crate::Secret;

/// The chain service `i` names (`listener.chain` for rtcp/rudp, `handler.chain` for tcp/udp;
/// either is taken), with the path of the name.
pub fn chain_name(svc: &Service, i: usize) -> Result<(String, String), Bad> {
    match (&svc.handler.chain, &svc.listener.chain) {
        (Some(h), Some(l)) if h != l => {
            Err((format!("services[{i}].listener.chain"), format!("{l:?}, but handler.chain is {h:?}: name one chain")))
        }
        (Some(h), _) => Ok((format!("services[{i}].handler.chain"), h.clone())),
        (None, Some(l)) => Ok((format!("services[{i}].listener.chain"), l.clone())),
        (None, None) => Err((
            format!("services[{i}]"),
            "no chain: name the chain to the server in listener.chain (rtcp, rudp) or handler.chain (tcp, udp)".into(),
        )),
    }
}

/// The `[relay]` table of the file: the one chain its services name.
pub fn relay_of(doc: &Document, keys: &mut KeyMap) -> Result<RelayFile, Bad> {
    let mut chosen: Option<(String, String)> = None;
    for (i, svc) in doc.services.iter().enumerate() {
        let (path, name) = chain_name(svc, i)?;
        match &chosen {
            None => chosen = Some((path, name)),
            Some((first_path, first)) if *first != name => {
                return Err((
                    path,
                    format!(
                        "{name:?}, but {first_path} is {first:?}: every service of one process goes through the same \
                         chain (one server, one tunnel); run one process per tunnel"
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    let Some((path, name)) = chosen else {
        return Err(("services".into(), "no service".into()));
    };
    let Some(k) = doc.chains.iter().position(|c| c.name == name) else {
        return Err((path, format!("no chain named {name:?} in chains")));
    };
    if let Some((j, other)) = doc.chains.iter().enumerate().find(|(j, _)| *j != k) {
        let why = if other.name == name { "a second chain of that name" } else { "used by no service" };
        return Err((format!("chains[{j}]"), format!("{:?}: {why}", other.name)));
    }
    let chain = &doc.chains[k];
    let path = format!("chains[{k}]");
    let Some((relay_hop, proxies)) = chain.hops.split_last() else {
        return Err((
            format!("{path}.hops"),
            "no hop: the last hop is the server, a node with connector type relay".into(),
        ));
    };
    if proxies.len() > 1 {
        return Err((
            format!("{path}.hops"),
            format!("{} hops; one proxy hop and then the server is the longest chain supported", chain.hops.len()),
        ));
    }
    let hop_path = format!("{path}.hops[{}]", chain.hops.len() - 1);
    let mut relay = relay_node(single_node(relay_hop, &hop_path)?, &format!("{hop_path}.nodes[0]"), keys)?;
    if let Some(hop) = proxies.first() {
        let node_path = format!("{path}.hops[0].nodes[0]");
        relay.proxy = Some(proxy_url(single_node(hop, &format!("{path}.hops[0]"))?, &node_path)?);
        keys.add("relay.proxy", node_path);
    }
    Ok(relay)
}

fn single_node<'a>(hop: &'a Hop, path: &str) -> Result<&'a ChainNode, Bad> {
    match hop.nodes.as_slice() {
        [node] => Ok(node),
        [] => Err((format!("{path}.nodes"), "no node".into())),
        more => Err((
            format!("{path}.nodes"),
            format!(
                "{} nodes; one node per hop is supported (an agent spreads its sessions over the addresses the \
                 server's name resolves to)",
                more.len()
            ),
        )),
    }
}

/// The node's dialer, at the node or (as two of the seed's examples indent it) under its
/// connector, with its path.
fn dialer_of<'a>(node: &'a ChainNode, path: &str) -> Result<(Option<&'a Dialer>, String), Bad> {
    match (&node.dialer, &node.connector.dialer) {
        (Some(_), Some(_)) => {
            Err((format!("{path}.connector.dialer"), "a second dialer: keep the one at the node".into()))
        }
        (None, Some(d)) => Ok((Some(d), format!("{path}.connector.dialer"))),
        (d, None) => Ok((d.as_ref(), format!("{path}.dialer"))),
    }
}

/// The server's node: connector `relay` with its metadata, dialer and TLS settings.
fn relay_node(node: &ChainNode, path: &str, keys: &mut KeyMap) -> Result<RelayFile, Bad> {
    let connector = &node.connector;
    if connector.kind != "relay" {
        let hint = if is_proxy(&connector.kind) { "; a proxy hop comes before the server's" } else { "" };
        return Err((
            format!("{path}.connector.type"),
            format!("{:?}: the last hop must be the server, a node with connector type relay{hint}", connector.kind),
        ));
    }
    if connector.auth.is_some() {
        return Err((
            format!("{path}.connector.auth"),
            "not supported: the server takes a token, connector.metadata.token (or tokenFile)".into(),
        ));
    }
    let md_path = format!("{path}.connector.metadata");
    let mut md = Meta::of(&md_path, &connector.metadata)?;
    let tunnel_id = md.take_str_at(&["tunnel.id", "tunnelID"])?;
    let weight = md.take_number::<u8>(&["tunnel.weight", "weight"])?;
    let token = md.take_str(&["token"])?.map(Secret::from);
    let token_file = md.take_str(&["tokenFile"])?;
    let sessions = md.take_number::<usize>(&["sessions", "connections"])?;
    md.finish("tunnel.id (or tunnelID), tunnel.weight, token, tokenFile, sessions")?;
    keys.add("relay", path);
    keys.add("relay.addr", format!("{path}.addr"));
    keys.add("relay.tunnel.id", tunnel_id.as_ref().map_or(format!("{md_path}.tunnel.id"), |(p, _)| p.clone()));
    keys.add("relay.weight", format!("{md_path}.tunnel.weight"));
    keys.add("relay.token", format!("{md_path}.token"));
    keys.add("relay.tokenFile", format!("{md_path}.tokenFile"));
    keys.add("relay.sessions", format!("{md_path}.sessions"));
    let mut file = RelayFile {
        addr: node.addr.clone(),
        dialer: Some("tcp".into()),
        tunnel_id: tunnel_id.map(|(_, id)| id),
        token,
        token_file,
        weight,
        sessions,
        ..RelayFile::default()
    };
    let (dialer, dialer_path) = dialer_of(node, path)?;
    if let Some(d) = dialer {
        dial_settings(d, &dialer_path, &mut file, keys)?;
    }
    Ok(file)
}

/// A relay node's dialer: its type and how the server's certificate is checked.
fn dial_settings(d: &Dialer, path: &str, file: &mut RelayFile, keys: &mut KeyMap) -> Result<(), Bad> {
    if !matches!(d.kind.as_str(), "tcp" | "tls" | "quic") {
        return Err((
            format!("{path}.type"),
            format!("{:?} is not supported here; the dialers to the server are tcp, tls and quic", d.kind),
        ));
    }
    file.dialer = Some(d.kind.clone());
    keys.add("relay.dialer", format!("{path}.type"));
    if let Some(tls) = &d.tls {
        let tls_path = format!("{path}.tls");
        if d.kind == "tcp" {
            return Err((tls_path, "TLS settings need dialer type tls or quic".into()));
        }
        if tls.cert_file.is_some() || tls.key_file.is_some() {
            return Err((
                format!("{tls_path}.certFile"),
                "client certificates are not supported; the server checks a token".into(),
            ));
        }
        file.ca_file = tls.ca_file.clone();
        file.server_name = tls.server_name.clone();
        file.insecure = tls.secure == Some(false);
        keys.add("relay.caFile", format!("{tls_path}.caFile"));
        keys.add("relay.serverName", format!("{tls_path}.serverName"));
    }
    let mut md = Meta::of(&format!("{path}.metadata"), &d.metadata)?;
    if let Some((pin_path, pin)) = md.take_str_at(&["pin"])? {
        file.pin = Some(pin);
        keys.add("relay.pin", pin_path);
    }
    md.finish("pin (sha256:<hex> of the server's certificate)")
}

fn is_proxy(kind: &str) -> bool {
    matches!(kind, "http" | "socks5" | "socks")
}

/// A proxy hop's node as the proxy URL of `[relay] proxy`.
fn proxy_url(node: &ChainNode, path: &str) -> Result<Secret, Bad> {
    let connector = &node.connector;
    let scheme = match connector.kind.as_str() {
        "http" => "http",
        "socks5" | "socks" => "socks5",
        "relay" => return Err((format!("{path}.connector.type"), "\"relay\": the server is the last hop".into())),
        other => {
            return Err((
                format!("{path}.connector.type"),
                format!("{other:?} is not supported here; a proxy hop is http (CONNECT) or socks5"),
            ))
        }
    };
    if let (Some(d), dialer_path) = dialer_of(node, path)? {
        if d.kind != "tcp" || d.tls.is_some() {
            return Err((format!("{dialer_path}.type"), "a proxy is dialed over plain tcp".into()));
        }
        Meta::of(&format!("{dialer_path}.metadata"), &d.metadata)?.finish("nothing")?;
    }
    Meta::of(&format!("{path}.connector.metadata"), &connector.metadata)?.finish("nothing; credentials go in auth")?;
    let userinfo = match &connector.auth {
        Some(auth) => format!("{}:{}@", percent_encode(&auth.username), percent_encode(auth.password.expose())),
        None => String::new(),
    };
    Ok(Secret::from(format!("{scheme}://{userinfo}{}", node.addr)))
}

/// `s` with every byte outside the URL's unreserved set percent-encoded.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
