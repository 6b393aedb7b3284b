//! A GOST YAML file for the access client: `tcp`/`udp` services (handler and listener of the
//! same type) listening on `addr`, whose hostname is `forwarder.nodes[0].addr` (or found by
//! `sniffing`), and the chain their handler names, whose last node has the relay connector.

use tunnel_runtime::gost::{self, chain, Bad, Document, KeyMap, Meta};

use super::{FileConfig, ForwarderFile, NodeFile, ServiceFile};

/// The access client's file from a GOST document, and where each of its keys came from.
pub(super) fn translate(doc: &Document) -> Result<(FileConfig, KeyMap), Bad> {
    let mut keys = KeyMap::default();
    let mut services = Vec::new();
    for (i, svc) in doc.services.iter().enumerate() {
        services.push(service(svc, i, &mut keys)?);
    }
    if services.is_empty() {
        return Err(("services".into(), "no tcp or udp service".into()));
    }
    if !doc.ingresses.is_empty() {
        return Err(("ingresses".into(), "ingress rules belong to tunnel-server's file".into()));
    }
    let relay = chain::relay_of(doc, &mut keys)?;
    Ok((FileConfig { relay, services, ..FileConfig::default() }, keys))
}

fn service(svc: &gost::Service, i: usize, keys: &mut KeyMap) -> Result<ServiceFile, Bad> {
    let p = format!("services[{i}]");
    let kind = svc.handler.kind.as_str();
    if !matches!(kind, "tcp" | "udp") {
        return Err(gost::wrong_service(i, kind, "tunnel-access", "tcp and udp services"));
    }
    if svc.listener.kind != kind {
        return Err((
            format!("{p}.listener.type"),
            format!("{:?}: a {kind} handler takes a {kind} listener", svc.listener.kind),
        ));
    }
    if svc.listener.tls.is_some() {
        return Err((format!("{p}.listener.tls"), "not supported here: local listeners are plain tcp or udp".into()));
    }
    let addr = svc.addr.clone().ok_or_else(|| (format!("{p}.addr"), "missing: where to listen, e.g. :8000".into()))?;
    let mut md = Meta::of(&format!("{p}.metadata"), &svc.metadata)?;
    md.add(&format!("{p}.handler.metadata"), &svc.handler.metadata)?;
    md.add(&format!("{p}.listener.metadata"), &svc.listener.metadata)?;
    for (toml, yaml) in [("sniffing", "sniffing"), ("ttl", "ttl"), ("readBufferSize", "readBufferSize")] {
        if let Some(path) = md.path_of(&[yaml]) {
            keys.add(format!("{p}.{toml}"), path);
        }
    }
    let sniffing = md.take_bool(&["sniffing"])?.unwrap_or(false);
    let reuse = md.take_bool(&["reuse"])?.unwrap_or(false);
    let (mut keepalive, mut ttl, mut read_buffer_size) = (false, None, None);
    if kind == "udp" {
        keepalive = md.take_bool(&["keepalive", "keepAlive"])?.unwrap_or(false);
        ttl = md.take_duration(&["ttl"])?;
        read_buffer_size = md.take_number::<usize>(&["readBufferSize"])?;
        md.finish("keepalive, ttl, readBufferSize, reuse")?;
    } else {
        md.finish("sniffing, reuse")?;
    }
    let forwarder = match &svc.forwarder {
        None => None,
        Some(fw) => Some(forwarder(fw, &p)?),
    };
    Ok(ServiceFile {
        name: svc.name.clone(),
        kind: kind.to_owned(),
        addr,
        sniffing,
        keepalive,
        ttl,
        read_buffer_size,
        forwarder,
        reuse,
    })
}

/// The listener's fixed hostname, one node.
fn forwarder(fw: &gost::Forwarder, p: &str) -> Result<ForwarderFile, Bad> {
    if fw.selector.is_some() {
        return Err((format!("{p}.forwarder.selector"), "not supported here: a listener reaches one hostname".into()));
    }
    let node = match fw.nodes.as_slice() {
        [node] => node,
        [] => return Err((format!("{p}.forwarder.nodes"), "no node: give the hostname as nodes[0].addr".into())),
        _ => {
            return Err((
                format!("{p}.forwarder.nodes"),
                "one hostname per listener: give each hostname a service of its own".into(),
            ))
        }
    };
    if node.host.is_some() {
        return Err((
            format!("{p}.forwarder.nodes[0].host"),
            "not used by an access client: addr is the ingress hostname to reach".into(),
        ));
    }
    Ok(ForwarderFile { nodes: vec![NodeFile { name: node.name.clone(), addr: node.addr.clone() }] })
}

#[cfg(test)]
mod tests {
    use tunnel_proto::wire::Network;
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

    fn key_of(text: &str) -> (String, String) {
        match load(text).unwrap_err() {
            ConfigError::Invalid { key, why, .. } => (key, why),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn the_seed_access_clients() {
        let c = load(&example("access-sniffing.yaml")).unwrap();
        assert!(c.listeners[0].sniffing && c.listeners[0].hostname.is_none());
        assert_eq!(c.listeners[0].addr.to_string(), "127.0.0.1:8000");
        let c = load(&example("access-iperf.yaml")).unwrap();
        let kinds: Vec<_> = c.listeners.iter().map(|l| (l.network, l.keepalive)).collect();
        assert_eq!(kinds, [(Network::Tcp, false), (Network::Udp, true)], "both services: lists");
        assert_eq!(c.listeners[1].hostname.as_deref(), Some("iperf.local"));
        let c = load(&example("access-udp-dns.yaml")).unwrap();
        assert_eq!((c.listeners[0].network, c.listeners[0].keepalive), (Network::Udp, false));
        let with_ttl = example("access-iperf.yaml").replace("# ttl: 5s", "ttl: 9s\n        readBufferSize: 2048");
        let c = load(&with_ttl).unwrap();
        assert_eq!((c.listeners[1].ttl.as_secs(), c.listeners[1].read_buffer_size), (9, 2048));
    }

    #[test]
    fn errors_name_the_yaml_key() {
        let ssh = example("access-ssh.yaml");
        let (key, _) = key_of(&ssh.replace("addr: ssh.srv-2.local", "addr: ssh.srv-2.local\n        host: x"));
        assert_eq!(key, "services[0].forwarder.nodes[0].host");
        let (key, why) =
            key_of(&ssh.replace("      # - name: redis\n      #   addr", "      - name: redis\n        addr"));
        assert_eq!(key, "services[0].forwarder.nodes", "{why}");
        let (key, why) = key_of(
            &example("access-udp-dns.yaml")
                .replace("type: udp\n      chain", "type: udp\n      metadata:\n        sniffing: true\n      chain"),
        );
        assert_eq!(key, "services[0].handler.metadata.sniffing", "{why}");
        let (key, _) = key_of(&example("access-iperf.yaml").replace("# ttl: 5s", "ttl: 0s"));
        assert_eq!(key, "services[1].listener.metadata.ttl");
        let (key, why) = key_of(&example("agent-udp-dns.yaml"));
        assert_eq!(key, "services[0].handler.type");
        assert!(why.contains("tunnel-agent -C FILE"), "{why}");
    }
}
