//! A GOST YAML file for the server: one `relay` service (listener `tcp`, `tls` or `quic`)
//! whose handler metadata gives `entryPoint`, `ingress` (the name of one of `ingresses`) and
//! `tunnel.direct`.

use tunnel_runtime::gost::{self, Bad, Document, KeyMap, Meta};
use tunnel_runtime::Secret;

use super::{ConfigError, FileConfig, OneOrMany, RuleFile};

/// Reads a GOST YAML file into the server's file, validated once so that an error names the
/// YAML key it came from.
pub(super) fn load(path: &str) -> Result<FileConfig, ConfigError> {
    let (file, keys) = translate(&gost::load(path)?).map_err(|bad| gost::invalid(path, bad))?;
    file.clone().validate(path).map_err(|e| keys.rename(e))?;
    Ok(file)
}

/// The server's file from a GOST document, and where each of its keys came from.
pub(super) fn translate(doc: &Document) -> Result<(FileConfig, KeyMap), Bad> {
    let mut relay = None;
    for (i, svc) in doc.services.iter().enumerate() {
        if svc.handler.kind != "relay" {
            return Err(gost::wrong_service(i, &svc.handler.kind, "tunnel-server", "one relay service"));
        }
        if relay.is_some() {
            return Err((
                format!("services[{i}]"),
                "a second relay service; tunnel-server runs one relay listener".into(),
            ));
        }
        relay = Some((i, svc));
    }
    let Some((i, svc)) = relay else {
        return Err(("services".into(), "no relay service".into()));
    };
    if !doc.chains.is_empty() {
        return Err((
            "chains".into(),
            "tunnel-server dials no chain (chains are for tunnel-agent and tunnel-access files)".into(),
        ));
    }
    let mut keys = KeyMap::default();
    let mut file = service(svc, i, &mut keys)?;
    let used = ingress_of(svc, i)?;
    let mut found = false;
    for (k, ingress) in doc.ingresses.iter().enumerate() {
        if Some(ingress.name.as_str()) != used.as_ref().map(|(_, name)| name.as_str()) {
            return Err((format!("ingresses[{k}]"), format!("{:?} is used by no relay service", ingress.name)));
        }
        if found {
            return Err((format!("ingresses[{k}]"), format!("a second ingress named {:?}", ingress.name)));
        }
        found = true;
        keys.add("ingress.rules", format!("ingresses[{k}].rules"));
        file.ingress.rules = ingress
            .rules
            .iter()
            .map(|r| RuleFile { hostname: r.hostname.clone(), endpoint: r.endpoint.clone(), ..RuleFile::default() })
            .collect();
    }
    if let Some((path, name)) = used.filter(|_| !found) {
        return Err((path, format!("no ingress named {name:?} in ingresses")));
    }
    Ok((file, keys))
}

/// The name of the ingress the relay handler uses, with its path.
fn ingress_of(svc: &gost::Service, i: usize) -> Result<Option<(String, String)>, Bad> {
    Meta::of(&format!("services[{i}].handler.metadata"), &svc.handler.metadata)?.take_str_at(&["ingress"])
}

fn service(svc: &gost::Service, i: usize, keys: &mut KeyMap) -> Result<FileConfig, Bad> {
    let p = format!("services[{i}]");
    let listener = svc.listener.kind.as_str();
    if !matches!(listener, "tcp" | "tls" | "quic") {
        return Err((
            format!("{p}.listener.type"),
            format!("{listener:?} is not supported here; the relay listens on tcp, tls or quic"),
        ));
    }
    if let Some(chain) = svc.handler.chain.as_ref().or(svc.listener.chain.as_ref()) {
        return Err((format!("{p}.handler.chain"), format!("{chain:?}: a relay service dials no chain")));
    }
    if svc.forwarder.is_some() {
        return Err((format!("{p}.forwarder"), "a relay service forwards to its tunnels' agents, not to nodes".into()));
    }
    let addr =
        svc.addr.clone().ok_or_else(|| (format!("{p}.addr"), "missing: where the relay listens, e.g. :8443".into()))?;
    let mut file = FileConfig { addr, listener: Some(listener.to_owned()), ..FileConfig::default() };
    keys.add("addr", format!("{p}.addr"));
    keys.add("listener", format!("{p}.listener.type"));
    if let Some(tls) = &svc.listener.tls {
        if listener == "tcp" {
            return Err((format!("{p}.listener.tls"), "TLS settings need listener type tls or quic".into()));
        }
        if tls.ca_file.is_some() || tls.server_name.is_some() || tls.secure.is_some() {
            return Err((format!("{p}.listener.tls"), "the relay listener takes certFile and keyFile only".into()));
        }
        file.cert_file = tls.cert_file.clone();
        file.key_file = tls.key_file.clone();
        keys.add("certFile", format!("{p}.listener.tls.certFile"));
        keys.add("keyFile", format!("{p}.listener.tls.keyFile"));
    }
    let mut md = Meta::of(&format!("{p}.metadata"), &svc.metadata)?;
    md.add(&format!("{p}.handler.metadata"), &svc.handler.metadata)?;
    md.add(&format!("{p}.listener.metadata"), &svc.listener.metadata)?;
    md.take(&["ingress"])?;
    if let Some((path, entries)) = md.take_strings_at(&["entryPoint"])? {
        file.entry_point = Some(OneOrMany::Many(entries));
        keys.add("entryPoint", path);
    }
    file.tunnel.direct = md.take_bool(&["tunnel.direct", "direct"])?.unwrap_or(false);
    file.limits.sniff_timeout = md.take_duration(&["sniffing.timeout", "sniffTimeout"])?;
    if let Some(path) = md.path_of(&["token"]) {
        keys.add("token", path);
    }
    file.token = md.take_str(&["token"])?.map(Secret::from);
    if let Some(path) = md.path_of(&["tokenFile"]) {
        keys.add("tokenFile", path);
    }
    file.token_file = md.take_str(&["tokenFile"])?;
    md.finish("entryPoint, ingress, tunnel.direct, sniffing.timeout, token, tokenFile")?;
    Ok(file)
}

#[cfg(test)]
mod tests {
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
    fn the_seed_servers() {
        let c = load(&example("server-private.yaml")).unwrap();
        assert_eq!(c.ingress.rules().len(), 8);
        assert_eq!(c.entrypoints[0].addr.port(), 80);
        assert_eq!(c.relay_addr.port(), 8443);
        assert!(!c.direct);
        let c = load(&example("server-direct.yaml")).unwrap();
        assert!(c.direct && c.entrypoints.is_empty() && c.ingress.rules().is_empty());
        let c = load(&example("server-iperf.yaml")).unwrap();
        assert_eq!(c.ingress.rules().len(), 1);
        let two = example("server-ingress.yaml").replace("entryPoint: \":80\"", "entryPoint: [\":80\", \":443\"]");
        let ports: Vec<_> = load(&two).unwrap().entrypoints.iter().map(|e| e.addr.port()).collect();
        assert_eq!(ports, [80, 443]);
        let quic = example("server-direct.yaml").replace("type: tcp", "type: quic");
        assert_eq!(load(&quic).unwrap().transport, tunnel_proto::channel::Transport::Quic);
    }

    #[test]
    fn errors_name_the_yaml_key() {
        let seed = example("server-ingress.yaml");
        let (key, why) = key_of(&seed.replace("endpoint: ac74d9dd", "endpoint: zz74d9dd"));
        assert_eq!(key, "ingresses[0].rules[1].endpoint", "{why}");
        let (key, _) = key_of(&seed.replace("entryPoint: \":80\"", "entryPoint: \":http\""));
        assert_eq!(key, "services[0].handler.metadata.entryPoint");
        let (key, why) = key_of(&seed.replace("ingress: ingress-0", "ingress: ingress-9"));
        assert_eq!(key, "ingresses[0]", "{why}");
        let (key, why) = key_of(&seed.replace("- name: ingress-0", "- name: ingress-1"));
        assert_eq!(key, "ingresses[0]", "{why}");
        let (key, why) =
            key_of(&seed.replace("      ingress: ingress-0\n", "      ingress: ingress-0\n      sniffing: true\n"));
        assert_eq!(key, "services[0].handler.metadata.sniffing");
        assert!(why.contains("entryPoint, ingress, tunnel.direct"), "{why}");
        let (key, _) = key_of(&seed.replace("  listener:\n    type: tcp", "  listener:\n    type: ws"));
        assert_eq!(key, "services[0].listener.type");
        let (key, why) = key_of(&example("access-ssh.yaml"));
        assert_eq!(key, "services[0].handler.type");
        assert!(why.contains("tunnel-access -C FILE"), "{why}");
        let direct = example("server-direct.yaml");
        let (key, why) = key_of(&format!("{direct}{}", "chains:\n- name: c\n"));
        assert_eq!(key, "chains", "{why}");
        let (key, why) = key_of(&direct.replace("type: tcp", "type: tls\n    tls:\n      certFile: c.pem"));
        assert_eq!(key, "services[0].listener.tls.keyFile", "{why}");
    }
}
