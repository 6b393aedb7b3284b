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
    for (k, ingress) in doc.ingresses.iter().enumerate() {
        if Some(ingress.name.as_str()) != used.as_ref().map(|(_, name)| name.as_str()) {
            return Err((format!("ingresses[{k}]"), format!("{:?} is used by no relay service", ingress.name)));
        }
        if !file.ingress.rules.is_empty() {
            return Err((format!("ingresses[{k}]"), format!("a second ingress named {:?}", ingress.name)));
        }
        keys.add("ingress.rules", format!("ingresses[{k}].rules"));
        file.ingress.rules = ingress
            .rules
            .iter()
            .map(|r| RuleFile {
                hostname: r.hostname.clone(),
                endpoint: r.endpoint.clone(),
                path: None,
                basic_auth: Vec::new(),
            })
            .collect();
    }
    if let Some((path, name)) = used {
        if !doc.ingresses.iter().any(|g| g.name == name) {
            return Err((path, format!("no ingress named {name:?} in ingresses")));
        }
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
    if let Some((path, entry)) = md.take_str_at(&["entryPoint"])? {
        file.entry_point = Some(OneOrMany::One(entry));
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
