//! `[tls]` and `[acme]` as written, and their validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tunnel_runtime::secret::Secret;

/// `[tls]`: certificates from files.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsFile {
    /// `[[tls.certificates]]`: one certificate chain and its key each.
    #[serde(default)]
    pub certificates: Vec<CertFile>,
    /// A directory of certificates: `NAME.crt` with `NAME.key`, or certbot's `NAME/fullchain.pem`
    /// with `NAME/privkey.pem`.
    #[serde(default)]
    pub cert_dir: Option<String>,
}

/// One `[[tls.certificates]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CertFile {
    /// PEM certificate chain, the leaf first.
    pub cert_file: String,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1); private to its owner.
    pub key_file: String,
}

/// `[acme]`: certificates ordered from an ACME CA (RFC 8555).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AcmeFile {
    /// The CA's directory URL, or `letsencrypt` (default), `letsencrypt-staging`, `zerossl`.
    #[serde(default)]
    pub directory: Option<String>,
    /// A contact address for the account.
    #[serde(default)]
    pub email: Option<String>,
    /// PEM root of the directory's own HTTPS certificate (a private CA).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// External account binding (ZeroSSL and others): the key ID.
    #[serde(default)]
    pub eab_kid: Option<String>,
    /// External account binding: the base64url HMAC key.
    #[serde(default)]
    pub eab_hmac_key: Option<Secret>,
    /// The HMAC key in a file private to its owner, instead of `eabHmacKey`.
    #[serde(default)]
    pub eab_hmac_key_file: Option<String>,
    /// The challenge for hosts whose rule names none: `tls-alpn-01` (default when an HTTPS
    /// entrypoint listens) or `http-01`.
    #[serde(default)]
    pub challenge: Option<String>,
    /// A program run as `HOOK set NAME VALUE` / `HOOK clear NAME VALUE` to set and clear the
    /// TXT record of a DNS-01 challenge; with it, wildcard rules get wildcard certificates.
    #[serde(default)]
    pub dns_hook: Option<String>,
    /// How long the hook may take (default 60s).
    #[serde(default, with = "humantime_serde")]
    pub dns_hook_timeout: Option<Duration>,
    /// How long to let DNS settle after the hook set a record (default 0s).
    #[serde(default, with = "humantime_serde")]
    pub dns_propagation: Option<Duration>,
    /// New on-demand certificates (hosts under a wildcard rule, at their first handshake) per
    /// hour and rule (default 10).
    #[serde(default)]
    pub on_demand_per_domain: Option<u32>,
    /// New on-demand certificates per hour in all (default 50).
    #[serde(default)]
    pub on_demand_total: Option<u32>,
}

/// An ACME challenge type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Challenge {
    /// A token served at `http://HOST/.well-known/acme-challenge/` on the HTTP entrypoint.
    Http01,
    /// A certificate shown to the ALPN `acme-tls/1` on the HTTPS entrypoint.
    TlsAlpn01,
    /// A TXT record set by the operator's hook.
    Dns01,
}

impl Challenge {
    /// Parses `http-01`, `tls-alpn-01` or `dns-01`.
    pub fn parse(raw: &str) -> Result<Challenge, String> {
        match raw {
            "http-01" => Ok(Challenge::Http01),
            "tls-alpn-01" => Ok(Challenge::TlsAlpn01),
            "dns-01" => Ok(Challenge::Dns01),
            other => Err(format!("{other:?}: expected http-01, tls-alpn-01 or dns-01")),
        }
    }
}

impl std::fmt::Display for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Challenge::Http01 => "http-01",
            Challenge::TlsAlpn01 => "tls-alpn-01",
            Challenge::Dns01 => "dns-01",
        })
    }
}

/// The validated `[tls]` and `[acme]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeConfig {
    /// Certificate and key files.
    pub files: Vec<(PathBuf, PathBuf)>,
    /// A directory of certificates.
    pub cert_dir: Option<PathBuf>,
    /// Ordering from a CA.
    pub acme: Option<AcmeConfig>,
}

/// The validated `[acme]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AcmeConfig {
    /// The directory URL.
    pub directory: String,
    /// Contact addresses (`mailto:...`).
    pub contact: Vec<String>,
    /// The directory's TLS root.
    pub ca_file: Option<PathBuf>,
    /// External account binding: key ID and HMAC key.
    pub eab: Option<(String, Secret)>,
    /// The default challenge (`None`: TLS-ALPN-01 with an HTTPS entrypoint, else HTTP-01).
    pub challenge: Option<Challenge>,
    /// The DNS-01 hook.
    pub dns_hook: Option<PathBuf>,
    /// How long the hook may take.
    pub dns_hook_timeout: Duration,
    /// Settling time after the hook set a record.
    pub dns_propagation: Duration,
    /// On-demand orders per hour and rule.
    pub on_demand_per_domain: u32,
    /// On-demand orders per hour in all.
    pub on_demand_total: u32,
    /// Where the account and the certificates are kept.
    pub state_dir: PathBuf,
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Validates `[tls]` and `[acme]`; errors are `(key, why)`.
pub fn validate(tls: &TlsFile, acme: Option<&AcmeFile>, state_dir: PathBuf) -> Result<EdgeConfig, (String, String)> {
    let mut files = Vec::new();
    for (i, c) in tls.certificates.iter().enumerate() {
        let key = PathBuf::from(&c.key_file);
        tunnel_runtime::secret::check_private_file(&key).map_err(|e| (format!("tls.certificates[{i}].keyFile"), e))?;
        files.push((PathBuf::from(&c.cert_file), key));
    }
    let cert_dir = tls.cert_dir.as_ref().map(PathBuf::from);
    if let Some(dir) = &cert_dir {
        if !dir.is_dir() {
            return Err(("tls.certDir".into(), format!("{}: not a directory", dir.display())));
        }
    }
    let acme = match acme {
        None => None,
        Some(a) => Some(validate_acme(a, state_dir)?),
    };
    Ok(EdgeConfig { files, cert_dir, acme })
}

fn validate_acme(a: &AcmeFile, state_dir: PathBuf) -> Result<AcmeConfig, (String, String)> {
    let err = |key: &str, why: String| (format!("acme.{key}"), why);
    let directory = match a.directory.as_deref().unwrap_or("letsencrypt") {
        "letsencrypt" => LETS_ENCRYPT.to_owned(),
        "letsencrypt-staging" => "https://acme-staging-v02.api.letsencrypt.org/directory".to_owned(),
        "zerossl" => "https://acme.zerossl.com/v2/DV90".to_owned(),
        url if url.starts_with("https://") => url.to_owned(),
        other => {
            return Err(err(
                "directory",
                format!("{other:?}: an https:// URL, or letsencrypt, letsencrypt-staging or zerossl"),
            ))
        }
    };
    let contact = match &a.email {
        Some(email) if !email.contains('@') || email.contains(char::is_whitespace) => {
            return Err(err("email", format!("{email:?}: not an address")))
        }
        Some(email) => vec![format!("mailto:{email}")],
        None => Vec::new(),
    };
    let ca_file = a.ca_file.as_ref().map(PathBuf::from);
    if let Some(ca) = &ca_file {
        if !ca.is_file() {
            return Err(err("caFile", format!("{}: no such file", ca.display())));
        }
    }
    let hmac = tunnel_runtime::secret::token_or_file(
        a.eab_hmac_key.clone(),
        a.eab_hmac_key_file.as_deref(),
        "acme.eabHmacKey",
        "acme.eabHmacKeyFile",
    )?;
    let eab = match (&a.eab_kid, hmac) {
        (Some(kid), Some(hmac)) => Some((kid.clone(), hmac)),
        (None, None) => None,
        (Some(_), None) => return Err(err("eabKid", "needs eabHmacKey or eabHmacKeyFile".into())),
        (None, Some(_)) => return Err(err("eabHmacKey", "needs eabKid".into())),
    };
    let challenge = a.challenge.as_deref().map(Challenge::parse).transpose().map_err(|e| err("challenge", e))?;
    if challenge == Some(Challenge::Dns01) && a.dns_hook.is_none() {
        return Err(err("challenge", "dns-01 needs dnsHook: the program that sets the TXT record".into()));
    }
    let dns_hook = a.dns_hook.as_ref().map(PathBuf::from);
    if let Some(hook) = &dns_hook {
        if !hook.is_file() {
            return Err(err("dnsHook", format!("{}: no such file", hook.display())));
        }
    }
    Ok(AcmeConfig {
        directory,
        contact,
        ca_file,
        eab,
        challenge,
        dns_hook,
        dns_hook_timeout: a.dns_hook_timeout.unwrap_or(Duration::from_secs(60)),
        dns_propagation: a.dns_propagation.unwrap_or(Duration::ZERO),
        on_demand_per_domain: a.on_demand_per_domain.unwrap_or(10).max(1),
        on_demand_total: a.on_demand_total.unwrap_or(50).max(1),
        state_dir: state_dir.join("acme"),
    })
}

#[cfg(test)]
mod tests {
    use crate::FileConfig;

    const TUNNEL: &str = "4d21094e-b74c-4916-86c1-d9fa36ea677b";

    fn check(text: &str) -> Result<crate::Config, String> {
        let file: FileConfig = toml::from_str(&format!("addr = \":0\"\n{text}")).map_err(|e| e.to_string())?;
        file.validate("test.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn rules_of_one_host_agree_on_tls_and_challenge() {
        let rule =
            |extra: &str| format!("[[ingress.rules]]\nhostname = \"a.test\"\nendpoint = \"{TUNNEL}\"\n{extra}\n");
        let err = check(&format!("{}{}", rule("tls = \"terminate\""), rule("path = \"/x\"\ntls = \"passthrough\"")))
            .unwrap_err();
        assert!(err.contains("ingress.rules[1].tls") && err.contains("per host"), "{err}");
        let err = check(&format!(
            "{}{}",
            rule("challenge = \"http-01\""),
            rule("path = \"/x\"\nchallenge = \"tls-alpn-01\"")
        ))
        .unwrap_err();
        assert!(err.contains("ingress.rules[1].tls"), "{err}");
        // One rule writing the mode is enough.
        check(&format!("{}{}", rule("tls = \"terminate\""), rule("path = \"/x\""))).unwrap();
        let err = check(&rule("tls = \"strip\"")).unwrap_err();
        assert!(err.contains("expected terminate or passthrough"), "{err}");
        let err = check(&rule("tls = \"passthrough\"\nhsts = \"1d\"")).unwrap_err();
        assert!(err.contains("hsts and challenge need tls"), "{err}");
    }

    #[test]
    fn acme_and_https_entrypoints_are_checked() {
        let err = check("[acme]\nchallenge = \"dns-01\"\n").unwrap_err();
        assert!(err.contains("acme.challenge") && err.contains("dnsHook"), "{err}");
        let err = check("[acme]\ndirectory = \"http://ca.test/dir\"\n").unwrap_err();
        assert!(err.contains("acme.directory"), "{err}");
        let err = check("[acme]\neabKid = \"kid\"\n").unwrap_err();
        assert!(err.contains("acme.eabKid"), "{err}");
        let err = check("[[entrypoints]]\naddr = \":0/a.test\"\ntls = true\n").unwrap_err();
        assert!(err.contains("entrypoints.tls"), "{err}");
        let config = check("[acme]\ndirectory = \"letsencrypt-staging\"\nemail = \"ops@example.org\"\n").unwrap();
        let acme = config.edge.acme.unwrap();
        assert!(acme.directory.contains("staging"));
        assert_eq!(acme.contact, ["mailto:ops@example.org"]);
    }

    #[test]
    fn a_password_rule_reachable_in_clear_is_warned_about() {
        let rule = format!(
            "[[ingress.rules]]\nhostname = \"a.test\"\nendpoint = \"{TUNNEL}\"\nbasicAuth = [\"ops:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE\"]\n"
        );
        let plain = check(&format!("entryPoint = \":0\"\n{rule}")).unwrap();
        assert!(plain.warnings().iter().any(|w| w.contains("in clear")), "{:?}", plain.warnings());
        let https = check(&format!(
            "entryPoint = \":0\"\n[[entrypoints]]\naddr = \":0\"\ntls = true\n[acme]\ndirectory = \"letsencrypt-staging\"\n{rule}"
        ))
        .unwrap();
        assert!(!https.warnings().iter().any(|w| w.contains("in clear")), "{:?}", https.warnings());
    }
}
