//! Debian's `pebble` ACME test CA (2.4.0) with its `pebble-challtestsrv` as the only DNS
//! server it asks, both on free loopback ports and killed by PID when dropped, for end-to-end
//! tests of an ACME client.
//!
//! Pebble's ACME API and management interface serve a certificate the test makes: a CA of its
//! own and a leaf for `IP:127.0.0.1` and `DNS:localhost`, so a client trusts
//! [`Pebble::api_ca`] (rustls refuses a self-signed CA certificate as a server's, hence the
//! two). The certificates pebble issues chain to a root it generates anew at every start,
//! fetched with [`Pebble::root_pem`].
//!
//! challtestsrv answers every A query with 127.0.0.1 unless told otherwise ([`Pebble::add_a`])
//! and AAAA queries with nothing, so HTTP-01 and TLS-ALPN-01 validations come to 127.0.0.1 on
//! the ports given to [`Pebble::start`]. DNS-01 records are set with [`Pebble::set_txt`], or by
//! the script of [`Pebble::hook_script`] that a DNS-01 hook runs.
//!
//! Pebble runs without its random waits before validating (`PEBBLE_VA_NOSLEEP=1`), without
//! rejecting good nonces (`PEBBLE_WFE_NONCEREJECT=0`) and without reusing valid authorizations
//! (`PEBBLE_AUTHZREUSE=0`), so every order asks for fresh challenges; [`Settings::env`] changes
//! that. Readiness is polled (both log that they listen before they do), never slept for.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{curl, dns, openssl, poll_until, Proc};

/// What [`Pebble::start_with`] changes from the defaults of [`Pebble::start`].
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Lifetime of the certificates pebble issues, in whole seconds (pebble's
    /// `certificateValidityPeriod`; its default is five years).
    pub validity: Option<Duration>,
    /// Environment variables for pebble, set after (so overriding) the defaults: e.g.
    /// `PEBBLE_VA_ALWAYS_VALID=1` (no validation at all), `PEBBLE_WFE_NONCEREJECT=30` (bad
    /// nonces to retry), `PEBBLE_CHAIN_LENGTH=2` (one more intermediate).
    pub env: Vec<(String, String)>,
    /// External account binding required, with this key ID and base64url HMAC key (as
    /// ZeroSSL and other commercial CAs require).
    pub eab: Option<(String, String)>,
}

/// A running pebble and its challtestsrv.
pub struct Pebble {
    /// The ACME API (the directory is `https://ADDR/dir`).
    pub api: SocketAddr,
    /// Pebble's management interface (HTTPS, same certificate as the API): `/roots/0`,
    /// `/intermediates/0`, `/cert-status-by-serial/HEX`.
    pub management: SocketAddr,
    /// challtestsrv's DNS port on 127.0.0.1 (UDP and TCP), pebble's resolver.
    pub dns_port: u16,
    /// challtestsrv's management API (plain HTTP).
    pub challtestsrv: SocketAddr,
    api_ca: PathBuf,
    // Dropped in this order: pebble, then the DNS server it asks.
    pebble: Proc,
    dns: Proc,
}

impl Pebble {
    /// Starts challtestsrv then pebble, its files in `dir/pebble/`, validating HTTP-01 on
    /// `127.0.0.1:http_port` and TLS-ALPN-01 on `127.0.0.1:tls_port` (for names that
    /// [`Pebble::add_a`] did not point elsewhere), and waits until both answer.
    pub fn start(dir: &Path, http_port: u16, tls_port: u16) -> Pebble {
        Pebble::start_with(dir, http_port, tls_port, &Settings::default())
    }

    /// As [`Pebble::start`], with `settings`.
    pub fn start_with(dir: &Path, http_port: u16, tls_port: u16, settings: &Settings) -> Pebble {
        let dir = dir.join("pebble");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let (api_ca, api_cert, api_key) = api_certificate(&dir);

        // The listeners are held until all four ports are picked, so that no two are the same.
        let (held_cts, challtestsrv) = crate::listener();
        let (held_api, api) = crate::listener();
        let (held_mgmt, management) = crate::listener();
        let dns_port = dns::free_tcp_udp_port();
        drop((held_cts, held_api, held_mgmt));

        let mut cmd = Command::new("pebble-challtestsrv");
        // 2.4.0 has no -doh flag; the empty values turn the challenge servers off.
        #[rustfmt::skip]
        cmd.args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}"), "-management", &challtestsrv.to_string()]);
        let mut dns = launch("pebble-challtestsrv", cmd);
        let probe = format!("http://{challtestsrv}/");
        ready("pebble-challtestsrv", &mut dns, || {
            // Any HTTP answer (404 here) from the management API, and the default A record.
            curl(&["-o", "/dev/null", "--max-time", "2", &probe]).0 == 0
                && dns::dig(dns_port, "ready.pebble.test") == "127.0.0.1"
        });

        let mut config = format!(
            "{{\"pebble\": {{\"listenAddress\": \"{api}\", \"managementListenAddress\": \"{management}\", \
             \"certificate\": {}, \"privateKey\": {}, \"httpPort\": {http_port}, \"tlsPort\": {tls_port}, \
             \"ocspResponderURL\": \"\"",
            json_str(&path_str(&api_cert)),
            json_str(&path_str(&api_key)),
        );
        match &settings.eab {
            Some((kid, key)) => config.push_str(&format!(
                ", \"externalAccountBindingRequired\": true, \"externalAccountMACKeys\": {{{}: {}}}",
                json_str(kid),
                json_str(key)
            )),
            None => config.push_str(", \"externalAccountBindingRequired\": false"),
        }
        if let Some(validity) = settings.validity {
            config.push_str(&format!(", \"certificateValidityPeriod\": {}", validity.as_secs()));
        }
        config.push_str("}}\n");
        let config_path = dir.join("pebble-config.json");
        std::fs::write(&config_path, config).unwrap_or_else(|e| panic!("cannot write {}: {e}", config_path.display()));

        let mut cmd = Command::new("pebble");
        cmd.args(["-config", &path_str(&config_path), "-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .envs([("PEBBLE_VA_NOSLEEP", "1"), ("PEBBLE_WFE_NONCEREJECT", "0"), ("PEBBLE_AUTHZREUSE", "0")])
            .envs(settings.env.iter().map(|(k, v)| (k, v)));
        let mut pebble = launch("pebble", cmd);
        let ca = path_str(&api_ca);
        let (dir_url, root_url) = (format!("https://{api}/dir"), format!("https://{management}/roots/0"));
        ready("pebble", &mut pebble, || {
            [&dir_url, &root_url].iter().all(|url| {
                let (code, status) =
                    curl(&["--cacert", &ca, "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url]);
                code == 0 && status == "200"
            })
        });
        Pebble { api, management, dns_port, challtestsrv, api_ca, pebble, dns }
    }

    /// The ACME directory URL, `https://127.0.0.1:PORT/dir`.
    pub fn directory_url(&self) -> String {
        format!("https://{}/dir", self.api)
    }

    /// The PEM of the CA that signed the certificate of pebble's API and management interface:
    /// what an ACME client must trust to talk to it.
    pub fn api_ca(&self) -> PathBuf {
        self.api_ca.clone()
    }

    /// Downloads the root that pebble's certificates chain to (new at every start) to
    /// `dir/pebble-root.pem` and returns that path: the `--cacert` for a client of a server
    /// that got its certificate from pebble.
    pub fn root_pem(&self, dir: &Path) -> PathBuf {
        self.download("roots/0", &dir.join("pebble-root.pem"))
    }

    /// Downloads pebble's intermediate (the issuer of the certificates it signs) to
    /// `dir/pebble-intermediate.pem` and returns that path.
    pub fn intermediate_pem(&self, dir: &Path) -> PathBuf {
        self.download("intermediates/0", &dir.join("pebble-intermediate.pem"))
    }

    /// The base URL of challtestsrv's management API, `http://127.0.0.1:PORT`.
    pub fn challtestsrv_url(&self) -> String {
        format!("http://{}", self.challtestsrv)
    }

    /// Adds `value` to the TXT records of `host` (e.g. `_acme-challenge.example.test`, a final
    /// dot or not): challtestsrv keeps every value set until [`Pebble::clear_txt`].
    pub fn set_txt(&self, host: &str, value: &str) {
        self.manage("set-txt", &format!("{{\"host\":{},\"value\":{}}}", json_str(&fqdn(host)), json_str(value)));
    }

    /// Removes every TXT record of `host` (challtestsrv cannot remove one value alone).
    pub fn clear_txt(&self, host: &str) {
        self.manage("clear-txt", &format!("{{\"host\":{}}}", json_str(&fqdn(host))));
    }

    /// Adds `addrs` to the A records of `host` (replacing the default answer 127.0.0.1 for it).
    pub fn add_a(&self, host: &str, addrs: &[&str]) {
        let list: Vec<String> = addrs.iter().map(|a| json_str(a)).collect();
        let body = format!("{{\"host\":{},\"addresses\":[{}]}}", json_str(&fqdn(host)), list.join(","));
        self.manage("add-a", &body);
    }

    /// Removes the A records of `host`: it resolves to 127.0.0.1 again.
    pub fn clear_a(&self, host: &str) {
        self.manage("clear-a", &format!("{{\"host\":{}}}", json_str(&fqdn(host))));
    }

    /// Writes `dir/pebble-dns01-hook.sh`, an executable script for a DNS-01 hook: `SCRIPT set
    /// NAME VALUE` adds the TXT record, `SCRIPT clear NAME VALUE` removes every TXT record of
    /// NAME (e.g. `_acme-challenge.example.test`; a final dot or not). It calls challtestsrv's
    /// management API with curl, exits non-zero when that fails or its arguments are wrong,
    /// and appends each valid call's arguments as a line `ACTION NAME VALUE` to `SCRIPT.log`
    /// (`dir/pebble-dns01-hook.sh.log`), for a test to check. Returns the script's path.
    pub fn hook_script(&self, dir: &Path) -> PathBuf {
        let path = dir.join("pebble-dns01-hook.sh");
        let script = format!(
            r#"#!/bin/sh
# DNS-01 hook of the tests: sets or clears TXT records on pebble-challtestsrv.
set -eu
if [ $# -ne 3 ]; then echo "usage: $0 set|clear NAME VALUE" >&2; exit 2; fi
case "$2$3" in *[\"\\]*) echo "$0: quote or backslash in NAME or VALUE" >&2; exit 2;; esac
name="${{2%.}}."
case "$1" in
  set) path=set-txt; body="{{\"host\":\"$name\",\"value\":\"$3\"}}" ;;
  clear) path=clear-txt; body="{{\"host\":\"$name\"}}" ;;
  *) echo "$0: unknown action $1 (set or clear)" >&2; exit 2 ;;
esac
printf '%s %s %s\n' "$1" "$2" "$3" >> "$0.log"
exec curl -sS --fail --max-time 20 -o /dev/null --data-binary "$body" "{}/$path"
"#,
            self.challtestsrv_url()
        );
        std::fs::write(&path, script).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
        path
    }

    /// Everything both programs logged so far (pebble logs each request and validation).
    pub fn output(&self) -> String {
        format!("pebble:\n{}\npebble-challtestsrv:\n{}", self.pebble.output(), self.dns.output())
    }

    /// POSTs `body` to challtestsrv's `/path`; panics with its output unless it answers 200.
    fn manage(&self, path: &str, body: &str) {
        let url = format!("{}/{path}", self.challtestsrv_url());
        let (code, out) = curl(&["-w", "\n%{http_code}", "--data-binary", body, &url]);
        let status = out.rsplit('\n').next().unwrap_or_default();
        assert!(
            code == 0 && status == "200",
            "POST {url} {body}: curl exit code {code}, answer {out:?}; pebble-challtestsrv's output:\n{}",
            self.dns.output()
        );
    }

    /// GETs `https://MANAGEMENT/path` into `to`; returns `to`.
    fn download(&self, path: &str, to: &Path) -> PathBuf {
        let url = format!("https://{}/{path}", self.management);
        let (code, _) = curl(&["--fail", "--cacert", &path_str(&self.api_ca), "-o", &path_str(to), &url]);
        assert_eq!(code, 0, "curl {url} failed with exit code {code}; pebble's output:\n{}", self.pebble.output());
        let pem = std::fs::read_to_string(to).unwrap_or_else(|e| panic!("cannot read {}: {e}", to.display()));
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{url} gave no PEM certificate: {pem:?}");
        to.to_path_buf()
    }
}

/// Makes `ca.pem` (a P-256 CA) and `api.pem`, `api.key` (a P-256 server certificate it signed
/// for `IP:127.0.0.1` and `DNS:localhost`) in `dir`; returns their paths in that order.
fn api_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    #[rustfmt::skip]
    openssl(dir, &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", "/CN=Pebble API Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-days", "2", "-keyout", "ca.key", "-out", "ca.pem"]);
    #[rustfmt::skip]
    openssl(dir, &["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", "/CN=localhost", "-keyout", "api.key", "-out", "api.csr"]);
    std::fs::write(
        dir.join("api.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write api.ext");
    #[rustfmt::skip]
    openssl(dir, &["x509", "-req", "-in", "api.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "1", "-extfile", "api.ext", "-out", "api.pem"]);
    (dir.join("ca.pem"), dir.join("api.pem"), dir.join("api.key"))
}

/// Starts `cmd` with its output collected, after checking that `name` is installed so that a
/// missing package fails with a clear message.
fn launch(name: &str, mut cmd: Command) -> Proc {
    if let Err(e) = Command::new(name).arg("-h").output() {
        panic!("cannot run {name}: {e}; this test needs Debian's pebble package installed (CI installs it)");
    }
    crate::die_with_parent(&mut cmd);
    Proc::start_command(name, cmd)
}

/// Polls `answers` until it holds, panicking with `proc`'s output if the program exits first.
fn ready(name: &str, proc: &mut Proc, mut answers: impl FnMut() -> bool) {
    poll_until(name, || {
        assert!(proc.is_running(), "{name} exited early; its output:\n{}", proc.output());
        answers()
    });
}

/// `host` with exactly one final dot, as challtestsrv keys its records (without it a record
/// is stored but never answered).
fn fqdn(host: &str) -> String {
    format!("{}.", host.trim_end_matches('.'))
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `path` as text for a command-line argument or JSON (the harness's paths are UTF-8).
fn path_str(path: &Path) -> String {
    path.to_str().expect("utf-8 path").to_owned()
}
