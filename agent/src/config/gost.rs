//! A GOST YAML file for the agent: `rtcp`/`rudp` services (handler and listener of the same
//! type) whose targets are `forwarder.nodes`, and the chain their listener names, whose last
//! node has the relay connector. The service's `addr` is not used, as in GOST's tunnel mode.

use tunnel_runtime::gost::{self, chain, meta, Bad, Document, KeyMap, Meta};

use super::{FileConfig, ForwarderFile, NodeFile, SelectorFile, ServiceFile};

/// The agent's file from a GOST document, and where each of its keys came from.
pub(super) fn translate(doc: &Document) -> Result<(FileConfig, KeyMap), Bad> {
    let mut keys = KeyMap::default();
    let mut services = Vec::new();
    for (i, svc) in doc.services.iter().enumerate() {
        services.push(service(svc, i, &mut keys)?);
    }
    if services.is_empty() {
        return Err(("services".into(), "no rtcp or rudp service".into()));
    }
    if !doc.ingresses.is_empty() {
        return Err((
            "ingresses".into(),
            "ingress rules belong to tunnel-server's file; an agent's target names its host in forwarder.nodes[].host"
                .into(),
        ));
    }
    let relay = chain::relay_of(doc, &mut keys)?;
    Ok((FileConfig { relay, services, ..FileConfig::default() }, keys))
}

fn service(svc: &gost::Service, i: usize, keys: &mut KeyMap) -> Result<ServiceFile, Bad> {
    let p = format!("services[{i}]");
    let kind = svc.handler.kind.as_str();
    if !matches!(kind, "rtcp" | "rudp") {
        return Err(gost::wrong_service(i, kind, "tunnel-agent", "rtcp and rudp services"));
    }
    if svc.listener.kind != kind {
        return Err((
            format!("{p}.listener.type"),
            format!("{:?}: an {kind} handler takes an {kind} listener", svc.listener.kind),
        ));
    }
    if svc.listener.tls.is_some() {
        return Err((
            format!("{p}.listener.tls"),
            "not supported here: TLS to the server is the chain's dialer".into(),
        ));
    }
    let mut md = Meta::of(&format!("{p}.metadata"), &svc.metadata)?;
    md.add(&format!("{p}.handler.metadata"), &svc.handler.metadata)?;
    md.add(&format!("{p}.listener.metadata"), &svc.listener.metadata)?;
    let sniffing = md.take_bool(&["sniffing"])?.unwrap_or(false);
    let (mut ttl, mut read_buffer_size, mut proxy_protocol) = (None, None, None);
    if kind == "rudp" {
        for (toml, yaml) in [("ttl", &["ttl"]), ("readBufferSize", &["readBufferSize"])] {
            if let Some(path) = md.path_of(yaml) {
                keys.add(format!("{p}.{toml}"), path);
            }
        }
        ttl = md.take_duration(&["ttl"])?;
        read_buffer_size = md.take_number::<usize>(&["readBufferSize"])?;
        md.finish("sniffing, ttl, readBufferSize")?;
    } else {
        proxy_protocol = md.take_number::<u8>(&["proxyProtocol"])?;
        md.finish("sniffing, proxyProtocol")?;
    }
    let Some(fw) = &svc.forwarder else {
        return Err((format!("{p}.forwarder"), "missing: the targets, forwarder.nodes[].addr".into()));
    };
    let nodes = fw
        .nodes
        .iter()
        .map(|n| NodeFile {
            name: n.name.clone(),
            addr: n.addr.clone(),
            host: n.host.clone(),
            proxy_protocol,
            health_check: None,
            health_check_interval: None,
            health_check_timeout: None,
        })
        .collect();
    let selector = match &fw.selector {
        None => None,
        Some(s) => Some(SelectorFile {
            strategy: s.strategy.clone(),
            max_fails: s.max_fails,
            fail_timeout: s
                .fail_timeout
                .as_ref()
                .map(meta::duration)
                .transpose()
                .map_err(|e| (format!("{p}.forwarder.selector.failTimeout"), e))?,
        }),
    };
    Ok(ServiceFile {
        name: svc.name.clone(),
        kind: kind.to_owned(),
        sniffing,
        ttl,
        read_buffer_size,
        forwarder: ForwarderFile { nodes, selector },
    })
}
