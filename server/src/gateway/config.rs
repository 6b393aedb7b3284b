//! Gateway configuration: `[[gateway]]` tables in the server's TOML file, or
//! `--gateway "gateway://ADDR?secretFile=...&retry=1&timeout=3s"` on the command line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tunnel_runtime::config::ConfigError;
use tunnel_runtime::url::{self, NodeUrl};
use tunnel_runtime::Secret;

use super::seal::{Kdf, Opener, DEFAULT_ITER, MAX_ITER};
use super::target::AllowList;
use crate::config::OneOrMany;

/// Dial attempts after the first one (the seed's default).
pub const DEFAULT_RETRY: u32 = 1;
/// Retries allowed in configuration: each costs up to `timeout`.
const MAX_RETRY: u32 = 10;
/// Each dial's timeout (the seed's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for a visitor to send its line: ample for a slow link, short enough to shed idle
/// connections.
pub const DEFAULT_LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// One `[[gateway]]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewayFile {
    /// Where to listen (`:9000`).
    pub addr: String,
    /// The `openssl enc -k` secret.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// A file whose first line is the secret (as `openssl enc -kfile` reads it).
    #[serde(default)]
    pub secret_file: Option<String>,
    /// Key derivations accepted, tried in order: `sha256` (default), `md5`, `pbkdf2`.
    #[serde(default)]
    pub kdf: Option<OneOrMany>,
    /// PBKDF2 rounds (`openssl enc -iter`), default 10000.
    #[serde(default)]
    pub iter: Option<u32>,
    /// Dial attempts after the first (default 1).
    #[serde(default)]
    pub retry: Option<u32>,
    /// Each dial's timeout (default 3s).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Time for a visitor to send its line (default 10s).
    #[serde(default, with = "humantime_serde")]
    pub line_timeout: Option<Duration>,
    /// `host:port` targets the server may dial itself (default none: ingress hostnames only).
    #[serde(default)]
    pub allow_addresses: Vec<String>,
    /// Share the port with other processes (`SO_REUSEPORT`).
    #[serde(default)]
    pub reuse: bool,
}

/// A validated gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// The secret and the key derivations.
    pub opener: Arc<Opener>,
    /// Dial attempts after the first.
    pub retry: u32,
    /// Each dial's timeout.
    pub timeout: Duration,
    /// Time for a visitor to send its line.
    pub line_timeout: Duration,
    /// Targets the server dials itself.
    pub allow: AllowList,
    /// `SO_REUSEPORT` on the listener.
    pub reuse: bool,
}

impl GatewayFile {
    /// Builds a gateway from `gateway://ADDR?key=value&...`.
    pub fn from_url(raw: &str) -> Result<GatewayFile, ConfigError> {
        let mut u = NodeUrl::parse(raw)?;
        u.expect_scheme(&["gateway"], "gateway")?;
        let list = |v: Option<String>| {
            v.map(|s| s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        };
        let fc = GatewayFile {
            addr: u.addr.clone(),
            secret: u.take(&["secret"]).map(Secret::new),
            secret_file: u.take(&["secretFile"]),
            kdf: u.take(&["kdf"]).map(OneOrMany::One),
            iter: u.take_with(&["iter"], str::parse::<u32>)?,
            retry: u.take_with(&["retry"], str::parse::<u32>)?,
            timeout: u.take_duration(&["timeout"])?,
            line_timeout: u.take_duration(&["lineTimeout"])?,
            allow_addresses: list(u.take(&["allowAddresses"])).unwrap_or_default(),
            reuse: u.take_bool(&["reuse"])?.unwrap_or(false),
        };
        u.finish()?;
        Ok(fc)
    }

    /// Checks every value; errors name `gateway[INDEX].KEY`.
    pub fn validate(&self, index: usize, source_name: &str) -> Result<GatewayConfig, ConfigError> {
        let invalid = |key: &str, why: String| ConfigError::Invalid {
            source_name: source_name.to_owned(),
            key: format!("gateway[{index}].{key}"),
            why,
        };
        let addr = url::bind_addr(&self.addr).map_err(|e| invalid("addr", e))?;
        let secret = match (&self.secret, &self.secret_file) {
            (Some(s), None) => s.expose().to_owned(),
            (None, Some(path)) => read_secret_file(path).map_err(|e| invalid("secretFile", e))?,
            (None, None) => return Err(invalid("secret", "give secret or secretFile".into())),
            (Some(_), Some(_)) => return Err(invalid("secret", "give secret or secretFile, not both".into())),
        };
        if secret.is_empty() {
            return Err(invalid("secret", "must not be empty".into()));
        }
        let iter = self.iter.unwrap_or(DEFAULT_ITER);
        if iter == 0 || iter > MAX_ITER {
            return Err(invalid("iter", format!("must be between 1 and {MAX_ITER}")));
        }
        let names = self.kdf.as_ref().map(OneOrMany::items).unwrap_or_else(|| vec!["sha256".to_owned()]);
        let kdfs =
            names.iter().map(|n| Kdf::parse(n, iter)).collect::<Result<Vec<_>, _>>().map_err(|e| invalid("kdf", e))?;
        if kdfs.is_empty() {
            return Err(invalid("kdf", "give at least one of sha256, md5, pbkdf2".into()));
        }
        if self.iter.is_some() && !kdfs.iter().any(|k| matches!(k, Kdf::Pbkdf2 { .. })) {
            return Err(invalid("iter", "applies to the pbkdf2 key derivation only".into()));
        }
        let retry = self.retry.unwrap_or(DEFAULT_RETRY);
        if retry > MAX_RETRY {
            return Err(invalid("retry", format!("must be at most {MAX_RETRY}")));
        }
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let line_timeout = self.line_timeout.unwrap_or(DEFAULT_LINE_TIMEOUT);
        for (key, d) in [("timeout", timeout), ("lineTimeout", line_timeout)] {
            if d.is_zero() {
                return Err(invalid(key, "must be more than 0".into()));
            }
        }
        let allow =
            AllowList::parse(&self.allow_addresses).map_err(|(i, e)| invalid(&format!("allowAddresses[{i}]"), e))?;
        Ok(GatewayConfig {
            addr,
            opener: Arc::new(Opener::new(secret.into_bytes(), kdfs)),
            retry,
            timeout,
            line_timeout,
            allow,
            reuse: self.reuse,
        })
    }
}

/// Validates every gateway of a configuration.
pub fn validate_all(items: &[GatewayFile], source_name: &str) -> Result<Vec<GatewayConfig>, ConfigError> {
    items.iter().enumerate().map(|(i, g)| g.validate(i, source_name)).collect()
}

/// The first line of a file, without its line ending.
fn read_secret_file(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    Ok(text.split('\n').next().unwrap_or("").trim_end_matches('\r').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_form_with_defaults() {
        let g =
            GatewayFile::from_url("gateway://127.0.0.1:9000?secret=s3cret").unwrap().validate(0, "--gateway").unwrap();
        assert_eq!(g.addr.port(), 9000);
        assert_eq!((g.retry, g.timeout, g.line_timeout), (DEFAULT_RETRY, DEFAULT_TIMEOUT, DEFAULT_LINE_TIMEOUT));
        assert!(g.allow.is_empty() && !g.reuse);
        assert!(!format!("{g:?}").contains("s3cret"), "the secret is never shown");
        let g = GatewayFile::from_url(
            "gateway://:9000?secret=k&kdf=md5,pbkdf2&iter=1000&retry=2&timeout=500ms&lineTimeout=1s&allowAddresses=127.0.0.1:6379,10.0.0.0/8:*&reuse=true",
        )
        .unwrap()
        .validate(0, "--gateway")
        .unwrap();
        assert_eq!(
            (g.retry, g.timeout, g.line_timeout, g.reuse),
            (2, Duration::from_millis(500), Duration::from_secs(1), true)
        );
        assert!(g.opener.is_costly());
        assert!(!g.allow.is_empty());
    }

    #[test]
    fn toml_form_and_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("gateway.key");
        std::fs::write(&key, "p0S8rX680*48\r\nignored\n").unwrap();
        let text = format!(
            "addr = \":8443\"\n[[gateway]]\naddr = \":9000\"\nsecretFile = {:?}\nkdf = [\"sha256\", \"md5\"]\nallowAddresses = [\"[::1]:22\"]\n",
            key.display()
        );
        let fc: crate::FileConfig = toml::from_str(&text).unwrap();
        let gateways = validate_all(&fc.gateway, "server.toml").unwrap();
        assert_eq!(gateways.len(), 1);
        let sealed = super::super::seal::Sealed::parse(b"U2FsdGVkX19KIJ9OQJKT/yHGMrS+5SsBAAjetomptQ0=").unwrap();
        assert_eq!(gateways[0].opener.open(&sealed).unwrap(), "127.0.0.1:62863", "secret read from its first line");
    }

    #[test]
    fn errors_name_the_key() {
        let err =
            |url: &str| GatewayFile::from_url(url).and_then(|g| g.validate(0, "--gateway")).unwrap_err().to_string();
        assert!(err("gateway://:9000").contains("gateway[0].secret"));
        assert!(err("gateway://:9000?secret=a&secretFile=/x").contains("not both"));
        assert!(err("gateway://:9000?secretFile=/nonexistent/key").contains("gateway[0].secretFile"));
        assert!(err("gateway://:9000?secret=a&kdf=sha1").contains("gateway[0].kdf"));
        assert!(err("gateway://:9000?secret=a&iter=5").contains("pbkdf2 key derivation only"));
        assert!(err("gateway://:9000?secret=a&retry=99").contains("gateway[0].retry"));
        assert!(err("gateway://:9000?secret=a&timeout=0s").contains("gateway[0].timeout"));
        assert!(err("gateway://:9000?secret=a&allowAddresses=1.2.3.4:80,nope").contains("gateway[0].allowAddresses[1]"));
        assert!(err("gateway://:9000?secret=a&colour=red").contains("colour"));
        let e = err("gateway://:9000?secret=hunter2&colour=red");
        assert!(!e.contains("hunter2"), "the secret is redacted: {e}");
    }
}
