//! GOST v3 YAML files (`-C gost.yaml`), as the seed's tutorial writes them.
//!
//! A file whose name ends in `.yaml` or `.yml` is read as GOST YAML, any other as TOML. The
//! YAML is parsed by `serde_yaml_ng` into the [`Document`] types below (only the subset
//! tunnel supports: `services`, `chains`, `ingresses`; unknown keys are errors naming their
//! path), then each binary translates it into its own TOML-side `FileConfig` and validates
//! that, so every rule and message lives in one place. [`KeyMap`] renames the TOML keys of a
//! validation error back to the YAML path the user wrote.
//!
//! What is shared here: the document, the metadata maps ([`meta`]) and the chain of a client
//! binary, which becomes its `[relay]` table ([`chain`]).

pub mod chain;
pub mod meta;

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::config::ConfigError;
pub use meta::{Meta, Metadata};

/// A translation error: the YAML key path and why.
pub type Bad = (String, String);

/// `(key, why)` as a configuration error of `source`.
pub fn invalid(source: &str, (key, why): Bad) -> ConfigError {
    ConfigError::Invalid { source_name: source.to_owned(), key, why }
}

/// Whether `path` names a GOST YAML file (`.yaml` or `.yml`, any case) rather than TOML.
pub fn is_yaml(path: &str) -> bool {
    std::path::Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// Reads and parses a GOST YAML file.
pub fn load(path: &str) -> Result<Document, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::File { path: path.to_owned(), why: e.to_string() })?;
    parse(&text).map_err(|why| ConfigError::File { path: path.to_owned(), why })
}

/// Parses GOST YAML text; the message names the key path, line and column.
pub fn parse(text: &str) -> Result<Document, String> {
    serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
}

/// The top of a GOST file. A key given twice (the seed's last example repeats `services:`)
/// adds its list to the first one's, as its reader expects.
#[derive(Debug, Clone, Default)]
pub struct Document {
    /// `services`.
    pub services: Vec<Service>,
    /// `chains`.
    pub chains: Vec<Chain>,
    /// `ingresses`.
    pub ingresses: Vec<Ingress>,
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(DocumentVisitor)
    }
}

struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a GOST configuration with services, chains and ingresses")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut doc = Document::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "services" => doc.services.extend(map.next_value::<Option<Vec<Service>>>()?.unwrap_or_default()),
                "chains" => doc.chains.extend(map.next_value::<Option<Vec<Chain>>>()?.unwrap_or_default()),
                "ingresses" => doc.ingresses.extend(map.next_value::<Option<Vec<Ingress>>>()?.unwrap_or_default()),
                other => {
                    return Err(de::Error::custom(format!(
                        "{other}: not supported here; tunnel reads the services, chains and ingresses of a GOST file"
                    )))
                }
            }
        }
        Ok(doc)
    }
}

/// `services[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// `name`.
    #[serde(default)]
    pub name: Option<String>,
    /// `addr`.
    #[serde(default)]
    pub addr: Option<String>,
    /// `handler`.
    pub handler: Handler,
    /// `listener`.
    pub listener: Listener,
    /// `forwarder`.
    #[serde(default)]
    pub forwarder: Option<Forwarder>,
    /// `metadata`.
    #[serde(default)]
    pub metadata: Metadata,
}

/// `services[].handler`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handler {
    /// `type`: relay, rtcp, rudp, tcp, udp.
    #[serde(rename = "type")]
    pub kind: String,
    /// `chain`: the chain to dial through (tcp/udp forwarding).
    #[serde(default)]
    pub chain: Option<String>,
    /// `metadata`.
    #[serde(default)]
    pub metadata: Metadata,
}

/// `services[].listener`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `type`: tcp, tls, quic (relay); rtcp, rudp; tcp, udp.
    #[serde(rename = "type")]
    pub kind: String,
    /// `chain`: the chain a remote (rtcp/rudp) listener binds through.
    #[serde(default)]
    pub chain: Option<String>,
    /// `tls`: the relay listener's certificate.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// `metadata`.
    #[serde(default)]
    pub metadata: Metadata,
}

/// `forwarder`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forwarder {
    /// `nodes`.
    #[serde(default)]
    pub nodes: Vec<ForwardNode>,
    /// `selector`.
    #[serde(default)]
    pub selector: Option<Selector>,
}

/// `forwarder.nodes[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardNode {
    /// `name`.
    #[serde(default)]
    pub name: Option<String>,
    /// `addr`: a target (agent) or an ingress hostname (access client).
    pub addr: String,
    /// `host`: the hostname pattern this target serves.
    #[serde(default)]
    pub host: Option<String>,
}

/// `forwarder.selector`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    /// `strategy`: round, random, fifo, hash.
    #[serde(default)]
    pub strategy: Option<String>,
    /// `maxFails`.
    #[serde(default)]
    pub max_fails: Option<u32>,
    /// `failTimeout`: `10s`, or a number of seconds.
    #[serde(default)]
    pub fail_timeout: Option<serde_yaml_ng::Value>,
}

/// `chains[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chain {
    /// `name`, which services refer to.
    pub name: String,
    /// `hops`: a proxy hop (optional), then the relay.
    #[serde(default)]
    pub hops: Vec<Hop>,
}

/// `chains[].hops[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hop {
    /// `name`.
    #[serde(default)]
    pub name: Option<String>,
    /// `nodes`.
    #[serde(default)]
    pub nodes: Vec<ChainNode>,
}

/// `chains[].hops[].nodes[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainNode {
    /// `name`.
    #[serde(default)]
    pub name: Option<String>,
    /// `addr`: the server (relay) or the proxy.
    pub addr: String,
    /// `connector`.
    pub connector: Connector,
    /// `dialer`.
    #[serde(default)]
    pub dialer: Option<Dialer>,
}

/// `connector`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connector {
    /// `type`: relay, http, socks5.
    #[serde(rename = "type")]
    pub kind: String,
    /// `auth`: the proxy's credentials.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// `metadata`: `tunnel.id` and the like.
    #[serde(default)]
    pub metadata: Metadata,
    /// A `dialer` indented under the connector, as two of the seed's access-client examples
    /// write it: taken as the node's dialer.
    #[serde(default)]
    pub dialer: Option<Dialer>,
}

/// `dialer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dialer {
    /// `type`: tcp, tls, quic.
    #[serde(rename = "type")]
    pub kind: String,
    /// `tls`: how the server's certificate is checked.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// `metadata`.
    #[serde(default)]
    pub metadata: Metadata,
}

/// `tls` of a listener or a dialer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tls {
    /// `certFile` (listener).
    #[serde(default)]
    pub cert_file: Option<String>,
    /// `keyFile` (listener).
    #[serde(default)]
    pub key_file: Option<String>,
    /// `caFile` (dialer): CAs to trust.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// `serverName` (dialer).
    #[serde(default)]
    pub server_name: Option<String>,
    /// `secure` (dialer): `false` skips the certificate check. Unlike GOST, tunnel checks it
    /// unless told otherwise.
    #[serde(default)]
    pub secure: Option<bool>,
}

/// `auth`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// `username`.
    #[serde(default)]
    pub username: String,
    /// `password`.
    #[serde(default)]
    pub password: crate::Secret,
}

/// `ingresses[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ingress {
    /// `name`, which a relay handler's `metadata.ingress` refers to.
    pub name: String,
    /// `rules`.
    #[serde(default)]
    pub rules: Vec<IngressRule>,
}

/// `ingresses[].rules[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressRule {
    /// `hostname`.
    pub hostname: String,
    /// `endpoint`: a tunnel ID, `$ID` for a private rule.
    pub endpoint: String,
}

/// The binary each service type belongs to, for the message given to a file meant for
/// another binary.
pub fn owner_of(handler: &str) -> Option<&'static str> {
    match handler {
        "relay" => Some("tunnel-server"),
        "rtcp" | "rudp" => Some("tunnel-agent"),
        "tcp" | "udp" => Some("tunnel-access"),
        _ => None,
    }
}

/// The error for service `i` whose handler type `kind` is not one `binary` runs (`takes`
/// lists those it does).
pub fn wrong_service(i: usize, kind: &str, binary: &str, takes: &str) -> Bad {
    let key = format!("services[{i}].handler.type");
    match owner_of(kind) {
        Some(owner) if owner != binary => (
            key,
            format!("{kind:?} is a {owner} service: run this file with `{owner} -C FILE` ({binary} takes {takes})"),
        ),
        _ => (key, format!("{kind:?} is not supported here; {binary} takes {takes}")),
    }
}

/// Renames the TOML-side keys of a validation error to the YAML paths they came from.
#[derive(Debug, Clone, Default)]
pub struct KeyMap {
    renames: Vec<(String, String)>,
}

impl KeyMap {
    /// Says that TOML key `toml` (and the keys under it) was written at YAML path `yaml`.
    pub fn add(&mut self, toml: impl Into<String>, yaml: impl Into<String>) {
        self.renames.push((toml.into(), yaml.into()));
    }

    /// The YAML path of a TOML key: the longest mapped prefix replaced, else the key itself.
    pub fn yaml_key(&self, key: &str) -> String {
        let under = |prefix: &str| {
            key == prefix || key.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        };
        match self.renames.iter().filter(|(t, _)| under(t)).max_by_key(|(t, _)| t.len()) {
            Some((t, y)) => format!("{y}{}", &key[t.len()..]),
            None => key.to_owned(),
        }
    }

    /// `err` with its key renamed.
    pub fn rename(&self, err: ConfigError) -> ConfigError {
        match err {
            ConfigError::Invalid { source_name, key, why } => {
                ConfigError::Invalid { source_name, key: self.yaml_key(&key), why }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests;
