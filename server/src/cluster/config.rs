//! The `[cluster]` table: this replica's name, its peer address, the Redis URL, the shared
//! secret and the presence lease.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tunnel_runtime::url;
use tunnel_runtime::Secret;

/// The presence lease unless configured: a replica that stops renewing is forgotten this long
/// after its last renewal.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(6);
/// The shortest secret accepted.
pub const MIN_SECRET: usize = 16;
/// Environment variable that overrides `name` (a pod's name, for one).
pub const NAME_ENV: &str = "TUNNEL_CLUSTER_NAME";
/// Environment variable that overrides `advertise` (a pod's address and the peer port).
pub const ADVERTISE_ENV: &str = "TUNNEL_CLUSTER_ADVERTISE";
/// Environment variable that overrides `redis` (a URL with a password, from a secret store).
pub const REDIS_ENV: &str = "TUNNEL_CLUSTER_REDIS";

/// `[cluster]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterFile {
    /// This replica's name, unique in the cluster (default: the host name).
    #[serde(default)]
    pub name: Option<String>,
    /// The address the peer listener binds, and advertises unless `advertise` is given.
    pub peer: String,
    /// The address other replicas dial, when `peer` is a wildcard.
    #[serde(default)]
    pub advertise: Option<String>,
    /// `redis://[user:password@]host:port/db`, `rediss://` for TLS (verified against the
    /// system's roots), or `unix:///path` (or the `TUNNEL_CLUSTER_REDIS` environment variable).
    #[serde(default)]
    pub redis: Option<Secret>,
    /// The secret every replica shares (at least 16 bytes).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// A file holding the secret instead (private to its owner).
    #[serde(default)]
    pub secret_file: Option<String>,
    /// Within how long a replica that stops renewing is forgotten (renewed three times per
    /// lease).
    #[serde(default, with = "humantime_serde")]
    pub lease: Option<Duration>,
}

/// A validated `[cluster]` table.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This replica's name.
    pub name: String,
    /// Where the peer listener binds.
    pub listen: SocketAddr,
    /// What other replicas dial (port 0 there means the bound port).
    pub advertise: SocketAddr,
    /// The Redis URL.
    pub redis: Secret,
    /// The shared secret.
    pub secret: Secret,
    /// The presence lease.
    pub lease: Duration,
}

impl ClusterFile {
    /// Validates the table; errors are `(key, why)` with keys under `cluster.`. `env` reads
    /// the environment overrides (the process environment outside tests).
    pub fn validate(&self, env: impl Fn(&str) -> Option<String>) -> Result<ClusterConfig, (String, String)> {
        let bad = |key: &str, why: String| (format!("cluster.{key}"), why);
        let name = match env(NAME_ENV).filter(|v| !v.trim().is_empty()).or_else(|| self.name.clone()) {
            Some(name) => name.trim().to_owned(),
            None => host_name().ok_or_else(|| bad("name", "missing, and the host name cannot be read".into()))?,
        };
        check_name(&name).map_err(|why| bad("name", format!("{name:?}: {why}")))?;
        let listen = url::bind_addr(&self.peer).map_err(|e| bad("peer", e))?;
        let advertise = match env(ADVERTISE_ENV).filter(|v| !v.trim().is_empty()).or_else(|| self.advertise.clone()) {
            Some(raw) => {
                // A bare address takes the peer listener's port: a pod's address from the
                // downward API is written the same way for IPv4 and IPv6.
                let text = raw.trim();
                let addr: SocketAddr = text
                    .parse()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, listen.port())))
                    .map_err(|_| {
                        bad(
                            "advertise",
                            format!("{raw:?}: expected an IP address with or without a port, like 10.0.0.5:7443, [fd00::5]:7443 or fd00::5"),
                        )
                    })?;
                if addr.ip().is_unspecified() || addr.port() == 0 {
                    return Err(bad("advertise", format!("{raw:?}: other replicas cannot dial a wildcard address or port 0")));
                }
                addr
            }
            None if listen.ip().is_unspecified() => {
                return Err(bad(
                    "advertise",
                    format!(
                        "missing: peer {listen} listens on every address, so say which one other replicas dial (advertise = \"10.0.0.5:{}\", or the {ADVERTISE_ENV} environment variable)",
                        listen.port()
                    ),
                ))
            }
            None => listen,
        };
        let redis =
            match env(REDIS_ENV).filter(|v| !v.trim().is_empty()).map(Secret::new).or_else(|| self.redis.clone()) {
                Some(url) => url,
                None => {
                    return Err(bad("redis", format!("missing: the Redis URL every replica shares (or {REDIS_ENV})")))
                }
            };
        let redis = redis.expose().trim();
        let schemes = ["redis://", "rediss://", "unix://", "redis+unix://"];
        if !schemes.iter().any(|s| redis.starts_with(s)) {
            return Err(bad(
                "redis",
                "expected a redis://host:port/db URL (rediss:// for TLS, or unix:///path)".into(),
            ));
        }
        if let Err(err) = redis::Client::open(redis) {
            return Err(bad("redis", format!("not a Redis URL: {err}")));
        }
        let secret = tunnel_runtime::secret::token_or_file(
            self.secret.clone(),
            self.secret_file.as_deref(),
            "secret",
            "secretFile",
        )
        .map_err(|(key, why)| bad(&key, why))?
        .ok_or_else(|| bad("secret", "missing: give secret or secretFile, the same on every replica".into()))?;
        if secret.expose().len() < MIN_SECRET {
            return Err(bad("secret", format!("must be at least {MIN_SECRET} bytes")));
        }
        let lease = self.lease.unwrap_or(DEFAULT_LEASE);
        if lease < Duration::from_secs(1) {
            return Err(bad("lease", "must be at least 1s".into()));
        }
        Ok(ClusterConfig { name, listen, advertise, redis: Secret::new(redis), secret, lease })
    }
}

/// A replica name: 1 to 63 letters, digits, `.`, `_` or `-`.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > tunnel_proto::wire::MAX_PEER_NAME {
        return Err("must be 1 to 63 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err("only letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(toml_text: &str) -> ClusterFile {
        toml::from_str(toml_text).unwrap()
    }

    const BASE: &str = r#"
        name = "a"
        peer = "127.0.0.2:7443"
        redis = "redis://127.0.0.1:6379/0"
        secret = "0123456789abcdef"
    "#;

    #[test]
    fn a_table_validates_and_advertises_its_peer_address() {
        let c = file(BASE).validate(|_| None).unwrap();
        assert_eq!(c.name, "a");
        assert_eq!(c.advertise, "127.0.0.2:7443".parse().unwrap());
        assert_eq!(c.lease, DEFAULT_LEASE);
    }

    #[test]
    fn the_environment_names_the_replica_and_its_address() {
        let text = BASE.replace("127.0.0.2:7443", "0.0.0.0:7443");
        let err = file(&text).validate(|_| None).unwrap_err();
        assert_eq!(err.0, "cluster.advertise");
        assert!(err.1.contains(ADVERTISE_ENV), "{}", err.1);
        let env = |k: &str| match k {
            NAME_ENV => Some("pod-1".to_owned()),
            ADVERTISE_ENV => Some("10.1.2.3:7443".to_owned()),
            _ => None,
        };
        let c = file(&text).validate(env).unwrap();
        assert_eq!((c.name.as_str(), c.advertise), ("pod-1", "10.1.2.3:7443".parse().unwrap()));
        // A bare pod address, IPv4 or IPv6, takes the peer port.
        for (given, want) in
            [("10.1.2.3", "10.1.2.3:7443"), ("fd00::17", "[fd00::17]:7443"), ("[fd00::17]:9", "[fd00::17]:9")]
        {
            let env = |k: &str| (k == ADVERTISE_ENV).then(|| given.to_owned());
            let c = file(&text).validate(env).unwrap();
            assert_eq!(c.advertise, want.parse().unwrap(), "{given}");
        }
        let env = |k: &str| (k == ADVERTISE_ENV).then(|| "fd00::17:x".to_owned());
        let err = file(&text).validate(env).unwrap_err();
        assert!(err.0 == "cluster.advertise" && err.1.contains("fd00::5"), "{err:?}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (from, to, key) in [
            ("secret = \"0123456789abcdef\"", "secret = \"short\"", "cluster.secret"),
            ("secret = \"0123456789abcdef\"", "", "cluster.secret"),
            ("redis://127.0.0.1:6379/0", "http://127.0.0.1:6379", "cluster.redis"),
            ("name = \"a\"", "name = \"a b\"", "cluster.name"),
            ("redis = \"redis://127.0.0.1:6379/0\"", "", "cluster.redis"),
            ("127.0.0.2:7443", "127.0.0.2", "cluster.peer"),
        ] {
            let err = file(&BASE.replace(from, to)).validate(|_| None).unwrap_err();
            assert_eq!(err.0, key, "{to}: {}", err.1);
        }
    }
}
