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
            ..NodeFile::default()
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

#[cfg(test)]
mod tests {
    use tunnel_runtime::cli::ClientFile;
    use tunnel_runtime::config::ConfigError;
    use tunnel_runtime::gost::parse;

    use super::*;
    use crate::config::Config;

    fn example(name: &str) -> String {
        let path = format!("{}/../deploy/examples/gost/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// As `-C f.yaml` does it: translated, validated, keys renamed.
    fn load(text: &str) -> Result<Config, ConfigError> {
        let (file, keys) = translate(&parse(text).unwrap()).map_err(|bad| gost::invalid("f.yaml", bad))?;
        file.validate("f.yaml").map_err(|e| keys.rename(e))
    }

    fn error(text: &str) -> (String, String) {
        match load(text).unwrap_err() {
            ConfigError::Invalid { key, why, .. } => (key, why),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn the_seed_agents() {
        let c = load(&example("agent-sniffing.yaml")).unwrap();
        let hosts: Vec<_> = c.targets.iter().map(|t| t.host.as_ref().map(|h| h.to_string())).collect();
        assert_eq!(hosts, [Some("example.com".into()), Some("sub.example.com".into()), None]);
        assert_eq!(c.targets[2].addr, "192.168.2.1:80");
        assert_eq!(c.relay.tunnel.to_string(), "4d21094e-b74c-4916-86c1-d9fa36ea677b");
        let c = load(&example("agent-iperf.yaml")).unwrap();
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.targets[1].network, tunnel_proto::wire::Network::Udp);
        assert_eq!(c.targets[0].addr, "127.0.0.1:5201");
        let c = load(&example("agent-tcp-services.yaml")).unwrap();
        assert_eq!(c.relay.tunnel.to_string(), "aede1f6a-762b-45da-b937-b6632356555a", "tunnelID spelling");
    }

    #[test]
    fn udp_metadata_and_the_selector() {
        let text = example("agent-udp-dns.yaml").replace(
            "    type: rudp\n    chain: chain-0\n",
            "    type: rudp\n    chain: chain-0\n    metadata:\n      ttl: 30s\n      readBufferSize: 1500\n",
        );
        let text = text.replace(
            "  forwarder:\n",
            "  forwarder:\n    selector:\n      strategy: fifo\n      maxFails: 2\n      failTimeout: 30\n",
        );
        let c = load(&text).unwrap();
        assert_eq!(c.targets[0].udp_ttl, std::time::Duration::from_secs(30));
        assert_eq!(c.targets[0].read_buffer_size, 1500);
        assert_eq!(c.targets[0].selector.max_fails, 2);
        assert_eq!(c.targets[0].selector.fail_timeout, std::time::Duration::from_secs(30));
        let (key, why) = error(&text.replace("readBufferSize: 1500", "readBufferSize: 0"));
        assert_eq!(key, "services[0].listener.metadata.readBufferSize", "{why}");
    }

    #[test]
    fn errors_name_the_yaml_key() {
        let seed = example("agent-rtcp.yaml");
        let (key, why) =
            error(&seed.replace(
                "    type: rtcp\n  listener",
                "    type: rtcp\n    metadata:\n      keepalive: true\n  listener",
            ));
        assert_eq!(key, "services[0].handler.metadata.keepalive");
        assert!(why.contains("sniffing, proxyProtocol"), "{why}");
        let (key, _) = error(&seed.replace("addr: 192.168.1.1:80", "addr: 192.168.1.1"));
        assert_eq!(key, "services[0].forwarder.nodes[0].addr");
        let (key, why) = error(&seed.replace("tunnel.id: 4d21094e", "tunnel.id: 4d2109"));
        assert_eq!(key, "chains[0].hops[0].nodes[0].connector.metadata.tunnel.id", "{why}");
        let (key, _) = error(&seed.replacen(
            "        metadata:\n          tunnel.id: 4d21094e-b74c-4916-86c1-d9fa36ea677b\n",
            "",
            1,
        ));
        assert_eq!(key, "chains[0].hops[0].nodes[0].connector.metadata.tunnel.id");
        let (key, why) = error(&seed.replace("  listener:\n    type: rtcp", "  listener:\n    type: rudp"));
        assert_eq!(key, "services[0].listener.type", "{why}");
        let (key, why) = error(&example("server-ingress.yaml"));
        assert_eq!(key, "services[0].handler.type");
        assert!(why.contains("tunnel-server -C FILE"), "{why}");
    }
}
