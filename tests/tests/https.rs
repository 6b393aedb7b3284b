//! HTTPS at the edge: TLS terminated on a `tls = true` entrypoint with certificates from
//! files and from a real ACME CA (Debian's pebble), every HTTP feature over HTTPS (path rules,
//! basicAuth, `X-Forwarded-Proto`, the access log, HTTP/2), passthrough hosts on the same
//! port, 421 across certificates, the redirect from plain HTTP, certificates kept across a
//! restart, renewal under a running download, and a refused host that leaves the others
//! serving.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tunnel_tests::pebble::{Pebble, Settings};
use tunnel_tests::{
    agent, agent_config, curl, hash_password, metric, openssl, origin, payload, poll_until, self_signed, tunnel_id,
    External, Server,
};

/// `curl https://HOST:PORT/PATH` with HOST resolved to `ep` and extra arguments:
/// (curl's exit code, HTTP status, HTTP version, body).
fn get(ep: SocketAddr, host: &str, path: &str, extra: &[&str]) -> (i32, u16, String, String) {
    let url = format!("https://{host}:{}{path}", ep.port());
    let resolve = format!("{host}:{}:{}", ep.port(), ep.ip());
    let mut args = vec!["-sS", "--resolve", &resolve, "-w", "\n%{http_code} %{http_version}"];
    args.extend_from_slice(extra);
    args.push(&url);
    let (code, out) = curl(&args);
    let (body, tail) = out.rsplit_once('\n').unwrap_or(("", &out));
    let mut tail = tail.split_whitespace();
    let status = tail.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let version = tail.next().unwrap_or("").to_owned();
    (code, status, version, body.to_owned())
}

/// The SHA-256 fingerprint of the certificate `ep` shows for SNI `host`.
fn served_fingerprint(dir: &Path, ep: SocketAddr, host: &str) -> String {
    let s_client = Command::new("openssl")
        .args(["s_client", "-connect", &ep.to_string(), "-servername", host, "-alpn", "http/1.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .current_dir(dir)
        .spawn()
        .expect("openssl s_client");
    let pem = s_client.wait_with_output().expect("s_client output").stdout;
    let file = dir.join(format!("served-{host}.pem"));
    std::fs::write(&file, pem).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&file)
        .output()
        .expect("openssl x509");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Two free loopback ports (the listeners are dropped; pebble is told them before the server
/// binds them).
fn free_ports() -> (u16, u16) {
    let (a, addr_a) = tunnel_tests::listener();
    let (b, addr_b) = tunnel_tests::listener();
    drop((a, b));
    (addr_a.port(), addr_b.port())
}

/// A certificate for `names` (the first is the subject) in `dir/NAME.crt` and `.key`.
fn cert(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
    let sub = dir.join(names[0].replace('*', "_"));
    std::fs::create_dir_all(&sub).unwrap();
    let san = format!("subjectAltName={}", names.iter().map(|n| format!("DNS:{n}")).collect::<Vec<_>>().join(","));
    self_signed(&sub, names[0], &["-addext", &san])
}

/// An origin speaking TLS with its own certificate (`openssl s_server -www`): what a
/// passthrough host reaches.
fn tls_origin(dir: &Path, host: &str) -> (External, SocketAddr, PathBuf) {
    let sub = dir.join(format!("origin-{host}"));
    std::fs::create_dir_all(&sub).unwrap();
    let (ca, crt, key) = tunnel_tests::ca_signed(&sub, &[host]);
    let (l, addr) = tunnel_tests::listener();
    drop(l);
    let mut cmd = Command::new("openssl");
    cmd.args(["s_server", "-quiet", "-www", "-accept", &addr.to_string(), "-cert"])
        .arg(&crt)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let server = External::start(cmd);
    poll_until("openssl s_server listening", || std::net::TcpStream::connect(addr).is_ok());
    (server, addr, ca)
}

#[test]
fn file_certificates_terminate_tls_and_every_http_feature_serves_https_visitors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (app, other, pass) = (tunnel_id(), tunnel_id(), tunnel_id());
    let (app_origin, _) = origin::http_counting("APP");
    let (admin_origin, _) = origin::http_counting("ADMIN");
    let (other_origin, _) = origin::http_counting("OTHER");
    let (_tls_server, tls_addr, pass_crt) = tls_origin(d, "pass.test");
    let (app_crt, app_key) = cert(d, &["app.test"]);
    let (other_crt, other_key) = cert(d, &["other.test"]);
    let admin = tunnel_id();
    let hash = hash_password("s3cret");
    let toml = format!(
        r#"addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:0"
[[entrypoints]]
addr = "127.0.0.1:0"
[[entrypoints]]
addr = "127.0.0.1:0"
tls = true
[[tls.certificates]]
certFile = "{app_crt}"
keyFile = "{app_key}"
[[tls.certificates]]
certFile = "{other_crt}"
keyFile = "{other_key}"
[[ingress.rules]]
hostname = "app.test"
endpoint = "{app}"
hsts = "365d"
[[ingress.rules]]
hostname = "app.test"
path = "/admin"
endpoint = "{admin}"
basicAuth = ["ops:{hash}"]
[[ingress.rules]]
hostname = "other.test"
endpoint = "{other}"
[[ingress.rules]]
hostname = "pass.test"
endpoint = "{pass}"
tls = "passthrough"
"#,
        app_crt = app_crt.display(),
        app_key = app_key.display(),
        other_crt = other_crt.display(),
        other_key = other_key.display(),
    );
    let config = d.join("server.toml");
    std::fs::write(&config, &toml).unwrap();
    let server = Server::start(&["-C", config.to_str().unwrap()], 2);
    let (plain, https) = (server.entrypoints[0], server.entrypoints[1]);
    let _agents = [
        agent(&server, &[&format!("rtcp://:0/{app_origin}")], &app.to_string(), "", 1),
        agent(&server, &[&format!("rtcp://:0/{admin_origin}")], &admin.to_string(), "", 2),
        agent(&server, &[&format!("rtcp://:0/{other_origin}")], &other.to_string(), "", 3),
        agent(&server, &[&format!("rtcp://:0/{tls_addr}")], &pass.to_string(), "", 4),
    ];
    let app_ca = app_crt.to_str().unwrap();

    // HTTP/1.1 and HTTP/2 (ALPN) reach the origin, which hears it was HTTPS.
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (code, status, got, body) = get(https, "app.test", "/x?y=1", &["--cacert", app_ca, flag, "-D", "-"]);
        assert_eq!((code, status, got.as_str()), (0, 200, version), "{flag}: {body}");
        assert!(body.contains("origin=APP") && body.contains("path=/x?y=1"), "{body}");
        assert!(body.contains("proto=https"), "X-Forwarded-Proto: {body}");
        assert!(body.to_ascii_lowercase().contains("strict-transport-security: max-age=31536000"), "{body}");
    }
    // Path rules and basicAuth, now with the password under TLS.
    let (_, status, _, body) = get(https, "app.test", "/admin/users", &["--cacert", app_ca]);
    assert_eq!(status, 401, "{body}");
    let (_, status, _, body) = get(https, "app.test", "/Admin/users", &["--cacert", app_ca, "--path-as-is"]);
    assert_eq!(status, 401, "a path rule is not dodged by case over HTTPS either: {body}");
    let (_, status, _, body) = get(https, "app.test", "/admin/users", &["--cacert", app_ca, "-u", "ops:s3cret"]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("origin=ADMIN") && body.contains("auth=none"), "{body}");
    // The access log names HTTPS requests as it names plain ones.
    server.proc.wait_for("path=/admin/users status=200");

    // A request for a host the connection's certificate does not cover: 421, both versions.
    for flag in ["--http1.1", "--http2"] {
        let (_, status, _, body) = get(https, "app.test", "/", &["--cacert", app_ca, flag, "-H", "Host: other.test"]);
        assert_eq!(status, 421, "{flag}: no fronting from app.test into other.test: {body}");
    }
    let (_, status, _, body) = get(https, "other.test", "/", &["--cacert", other_crt.to_str().unwrap()]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("origin=OTHER"), "{body}");

    // A passthrough host on the same port reaches its origin's own certificate.
    let (code, status, _, body) = get(https, "pass.test", "/", &["--cacert", pass_crt.to_str().unwrap()]);
    assert_eq!((code, status), (0, 200), "{body}");
    assert!(body.contains("s_server"), "openssl's own page: {body}");
    assert_eq!(
        served_fingerprint(d, https, "pass.test"),
        {
            let out = openssl(d, &["x509", "-noout", "-fingerprint", "-sha256", "-in", "origin-pass.test/server.pem"]);
            out.trim().to_owned()
        },
        "the origin's certificate, not the server's"
    );

    // Plain HTTP to a terminated host is redirected, before any password is read.
    let (code, out) = curl(&[
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "-H",
        "Host: app.test",
        &format!("http://{plain}/admin/users?a=b"),
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, format!("308 https://app.test:{}/admin/users?a=b", https.port()));
    // Plain HTTP sent to the HTTPS port gets a 400 that says so.
    let (code, out) = curl(&["-sS", "-H", "Host: app.test", &format!("http://{https}/")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("plain HTTP was sent to an HTTPS port"), "{out}");

    // The status page lists the certificates, in a real browser.
    let dom = tunnel_tests::browser_dom(&format!("http://{}/", admin_of(&server)));
    assert!(dom.contains("class=\"certificate\"") && dom.contains("other.test"), "{dom}");

    // A certificate file replaced on disk is served without a restart or a reload.
    let before = served_fingerprint(d, https, "app.test");
    let fresh = d.join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    let (new_crt, new_key) = self_signed(&fresh, "app.test", &["-addext", "subjectAltName=DNS:app.test"]);
    std::fs::copy(&new_key, &app_key).unwrap();
    std::fs::copy(&new_crt, &app_crt).unwrap();
    poll_until("the replaced certificate served", || served_fingerprint(d, https, "app.test") != before);
    let (_, status, _, body) = get(https, "app.test", "/", &["--cacert", app_crt.to_str().unwrap()]);
    assert_eq!(status, 200, "{body}");
    // A broken file is logged and the certificate in force stays.
    let serving = served_fingerprint(d, https, "app.test");
    std::fs::write(&app_crt, "not a certificate").unwrap();
    server.proc.wait_for("certificate not loaded; the one in force stays");
    assert_eq!(served_fingerprint(d, https, "app.test"), serving);

    // A reload takes a new certificate (and its host's rule) without a restart.
    let (new_crt, new_key) = cert(d, &["new.test"]);
    let more = format!(
        "{toml}[[tls.certificates]]\ncertFile = \"{}\"\nkeyFile = \"{}\"\n[[ingress.rules]]\nhostname = \"new.test\"\nendpoint = \"{other}\"\n",
        new_crt.display(),
        new_key.display()
    );
    std::fs::write(&config, more).unwrap();
    server.proc.signal("HUP");
    server.proc.wait_for("configuration reloaded");
    let (code, status, _, body) = get(https, "new.test", "/", &["--cacert", new_crt.to_str().unwrap()]);
    assert_eq!((code, status), (0, 200), "{body}");
    assert!(body.contains("origin=OTHER"), "{body}");
}

/// The CA's test setup: the server's plain and HTTPS entrypoints on ports pebble validates.
struct Ca {
    pebble: Pebble,
    plain: u16,
    https: u16,
    root: PathBuf,
}

/// A server's configuration with an admin listener, a plain and an HTTPS entrypoint on the
/// given ports, `[acme]` toward `pebble` (its lines plus `acme`) and then `rest`.
fn acme_toml(state: &Path, plain: u16, https: u16, pebble: &Pebble, acme: &str, rest: &str) -> String {
    format!(
        r#"addr = "127.0.0.1:0"
stateDir = "{state}"
[admin]
addr = "127.0.0.1:0"
[[entrypoints]]
addr = "127.0.0.1:{plain}"
[[entrypoints]]
addr = "127.0.0.1:{https}"
tls = true
[acme]
directory = "{directory}"
caFile = "{api_ca}"
{acme}
{rest}"#,
        state = state.display(),
        directory = pebble.directory_url(),
        api_ca = pebble.api_ca().display(),
    )
}

fn acme_server(ca: &Ca, state: &Path, rules: &str, hook: &Path) -> Server {
    let acme = format!("email = \"ops@example.test\"\ndnsHook = \"{}\"", hook.display());
    Server::start_file(&acme_toml(state, ca.plain, ca.https, &ca.pebble, &acme, rules), 2)
}

fn admin_of(server: &Server) -> SocketAddr {
    tunnel_tests::addr_in(&server.proc.wait_for("admin listening"))
}

fn certificates(admin: SocketAddr) -> serde_json::Value {
    let (code, body) = curl(&["-sS", &format!("http://{admin}/api/v1/certificates")]);
    assert_eq!(code, 0, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn has_certificate(admin: SocketAddr, name: &str) -> bool {
    certificates(admin)["certificates"]
        .as_array()
        .is_some_and(|certs| certs.iter().any(|c| c["names"].as_array().is_some_and(|n| n.iter().any(|n| n == name))))
}

#[test]
fn acme_certificates_by_http01_tlsalpn01_and_dns01_are_kept_renewed_and_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (plain, https) = free_ports();
    // Short-lived certificates, so that a renewal is an ordinary one.
    let settings = Settings { validity: Some(std::time::Duration::from_secs(7 * 24 * 3600)), ..Settings::default() };
    let pebble = Pebble::start_with(d, plain, https, &settings);
    let hook = pebble.hook_script(d);
    // The CA reaches refused.test elsewhere, where nothing answers: its orders fail.
    pebble.add_a("refused.test", &["127.0.0.2"]);
    let root = pebble.root_pem(d);
    let ca = Ca { pebble, plain, https, root };
    let (h, t, w, r, big_tunnel) = (tunnel_id(), tunnel_id(), tunnel_id(), tunnel_id(), tunnel_id());
    let hash = hash_password("s3cret");
    let (h_origin, _) = origin::http_counting("H");
    let (t_origin, _) = origin::http_counting("T");
    let (w_origin, _) = origin::http_counting("W");
    let (r_origin, _) = origin::http_counting("R");
    // A large file, for a download that runs through a renewal.
    let files = d.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let len = 48 << 20;
    let sha = payload::write_random(&mut std::fs::File::create(files.join("big")).unwrap(), 7, len).unwrap();
    let (l, files_addr) = tunnel_tests::listener();
    drop(l);
    let mut python = Command::new("python3");
    python
        .args(["-m", "http.server", "--bind", "127.0.0.1", &files_addr.port().to_string()])
        .current_dir(&files)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _files_server = External::start(python);
    poll_until("python http.server listening", || std::net::TcpStream::connect(files_addr).is_ok());
    let rules = format!(
        r#"[[ingress.rules]]
hostname = "h.test"
endpoint = "{h}"
challenge = "http-01"
[[ingress.rules]]
hostname = "h.test"
path = "/admin"
endpoint = "{t}"
basicAuth = ["ops:{hash}"]
[[ingress.rules]]
hostname = "h.test"
path = "/big"
endpoint = "{big_tunnel}"
[[ingress.rules]]
hostname = "t.test"
endpoint = "{t}"
challenge = "tls-alpn-01"
[[ingress.rules]]
hostname = "*.w.test"
endpoint = "{w}"
[[ingress.rules]]
hostname = "*.od.test"
endpoint = "{w}"
challenge = "tls-alpn-01"
[[ingress.rules]]
hostname = "refused.test"
endpoint = "{r}"
challenge = "http-01"
"#
    );
    let state = d.join("state");
    let server = acme_server(&ca, &state, &rules, &hook);
    let admin = admin_of(&server);
    let _agents = [
        agent(&server, &[&format!("rtcp://:0/{h_origin}")], &h.to_string(), "", 1),
        agent(&server, &[&format!("rtcp://:0/{t_origin}")], &t.to_string(), "", 2),
        agent(&server, &[&format!("rtcp://:0/{w_origin}")], &w.to_string(), "", 3),
        agent(&server, &[&format!("rtcp://:0/{r_origin}")], &r.to_string(), "", 4),
        agent(&server, &[&format!("rtcp://:0/{files_addr}")], &big_tunnel, "", 5),
    ];
    for name in ["h.test", "t.test", "*.w.test"] {
        poll_until(&format!("a certificate for {name}"), || has_certificate(admin, name));
    }
    // The refused host's order failed with the CA's reason, logged once; the others serve.
    let line = server.proc.wait_for("certificate order failed");
    assert!(line.contains("refused.test"), "{line}");
    assert!(line.contains("reason="), "{line}");
    assert!(server.proc.logged("name=h.test challenge=http-01"), "{}", server.proc.output());
    assert!(server.proc.logged("name=t.test challenge=tls-alpn-01"), "{}", server.proc.output());
    assert!(server.proc.logged("name=*.w.test challenge=dns-01"), "{}", server.proc.output());
    assert!(!has_certificate(admin, "x.od.test"), "on demand: nothing before a visitor came");
    let root = ca.root.to_str().unwrap();
    // x.od.test's certificate is ordered at its first handshake, which waits for it.
    for (host, name) in [("h.test", "H"), ("t.test", "T"), ("a.w.test", "W"), ("b.w.test", "W"), ("x.od.test", "W")] {
        for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
            let (code, status, got, body) = get(ca_ep(&ca), host, "/p", &["--cacert", root, flag]);
            assert_eq!((code, status, got.as_str()), (0, 200, version), "{host} {flag}: {body}");
            assert!(body.contains(&format!("origin={name}")) && body.contains("proto=https"), "{body}");
        }
    }
    // Path rules, basicAuth and the access log with the CA's certificate.
    let (_, status, _, body) = get(ca_ep(&ca), "h.test", "/admin/x", &["--cacert", root]);
    assert_eq!(status, 401, "{body}");
    let (_, status, _, body) = get(ca_ep(&ca), "h.test", "/admin/x", &["--cacert", root, "-u", "ops:s3cret"]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("origin=T") && body.contains("proto=https"), "{body}");
    server.proc.wait_for("host=h.test path=/admin/x status=200");
    let (code, _, _, body) = get(ca_ep(&ca), "refused.test", "/", &["--cacert", root]);
    assert_ne!(code, 0, "no certificate, no handshake: {body}");
    assert!(server.proc.logged("name=x.od.test challenge=tls-alpn-01"), "{}", server.proc.output());
    assert!(metric(admin, "tunnel_acme_orders_total{result=\"valid\"}") >= 4.0);
    assert!(metric(admin, "tunnel_acme_orders_total{result=\"invalid\"}") >= 1.0);
    assert!(metric(admin, "tunnel_certificate_expiry_timestamp_seconds{name=\"h.test\",source=\"acme\"}") > 0.0);
    // The account and the certificates are kept private.
    for file in ["account.json", "certs/h.test.pem", "certs/_wildcard.w.test.pem"] {
        let mode = std::fs::metadata(state.join("acme").join(file)).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077, 0, "{file}");
    }

    // A forced renewal swaps the certificate while a download runs; the download is whole.
    let before = served_fingerprint(d, ca_ep(&ca), "h.test");
    let resolve = format!("h.test:{}:127.0.0.1", ca.https);
    let out = d.join("big.out");
    let mut download = Command::new("curl")
        .args(["-sS", "--fail", "--limit-rate", "12M", "--cacert", root, "--resolve", &resolve, "-o"])
        .arg(&out)
        .arg(format!("https://h.test:{}/big", ca.https))
        .spawn()
        .expect("curl");
    poll_until("the download started", || std::fs::metadata(&out).is_ok_and(|m| m.len() > 0));
    let (code, body) = curl(&[
        "-sS",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"name":"h.test"}"#,
        &format!("http://{admin}/api/v1/certificates/renew"),
    ]);
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("renewing"), "{body}");
    poll_until("the renewed certificate served", || served_fingerprint(d, ca_ep(&ca), "h.test") != before);
    assert!(download.wait().unwrap().success(), "the download went on through the renewal");
    assert_eq!(payload::sha256_hex(&std::fs::read(&out).unwrap()), sha, "byte-exact");
    let renewed = served_fingerprint(d, ca_ep(&ca), "h.test");

    // A restart serves the kept certificates at once, without ordering them again.
    drop(server);
    let server = acme_server(&ca, &state, &rules, &hook);
    let admin = admin_of(&server);
    let _agent = agent(&server, &[&format!("rtcp://:0/{h_origin}")], &h.to_string(), "", 1);
    server.proc.wait_for("kept certificate loaded");
    let (code, status, _, body) = get(ca_ep(&ca), "h.test", "/", &["--cacert", root]);
    assert_eq!((code, status), (0, 200), "{body}");
    assert_eq!(served_fingerprint(d, ca_ep(&ca), "h.test"), renewed);
    assert_eq!(metric(admin, "tunnel_acme_orders_total{result=\"valid\"}"), 0.0, "{}", server.proc.output());
}

fn ca_ep(ca: &Ca) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], ca.https))
}

#[test]
fn an_agent_reaches_an_origin_that_only_speaks_tls_and_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_origin, origin_addr, origin_crt) = tls_origin(d, "origin.test");
    let (verified, insecure, untrusted) = (tunnel_id(), tunnel_id(), tunnel_id());
    let server = Server::start_file(
        &format!(
            "addr = \"127.0.0.1:0\"\nentryPoint = [\"127.0.0.1:0\"]\n\
             [[ingress.rules]]\nhostname = \"v.test\"\nendpoint = \"{verified}\"\n\
             [[ingress.rules]]\nhostname = \"i.test\"\nendpoint = \"{insecure}\"\n\
             [[ingress.rules]]\nhostname = \"u.test\"\nendpoint = \"{untrusted}\"\n"
        ),
        1,
    );
    let agent_toml = |tunnel: &str, node: &str| {
        format!(
            "[relay]\naddr = \"{relay}\"\ntunnel.id = \"{tunnel}\"\n[[services]]\ntype = \"rtcp\"\n[[services.forwarder.nodes]]\n{node}\n",
            relay = server.relay
        )
    };
    let ca = origin_crt.display();
    let (_a, _da) = agent_config(
        &server,
        &agent_toml(
            &verified,
            &format!("addr = \"https://{origin_addr}\"\ncaFile = \"{ca}\"\nserverName = \"origin.test\""),
        ),
        1,
    );
    let (insecure_agent, _di) =
        agent_config(&server, &agent_toml(&insecure, &format!("addr = \"tls://{origin_addr}\"\ninsecure = true")), 2);
    insecure_agent.wait_for("insecure = true: the target's certificate is not checked");
    // The system's roots do not know the origin's certificate: refused, with the reason.
    let (untrusted_agent, _du) =
        agent_config(&server, &agent_toml(&untrusted, &format!("addr = \"https://{origin_addr}\"")), 3);
    let ep = server.entrypoints[0];
    for host in ["v.test", "i.test"] {
        let (code, out) =
            curl(&["-sS", "-w", "\n%{http_code}", "-H", &format!("Host: {host}"), &format!("http://{ep}/")]);
        assert_eq!(code, 0, "{out}");
        assert!(out.ends_with("\n200") && out.contains("s_server"), "{host}: the TLS origin's page: {out}");
    }
    let (code, out) = curl(&["-sS", "-w", "\n%{http_code}", "-H", "Host: u.test", &format!("http://{ep}/")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("\n502"), "an unverified origin is not served: {out}");
    untrusted_agent.wait_for("TLS handshake with the target failed");
}

#[test]
fn replicas_share_one_certificate_and_answer_the_challenges_of_each_others_orders() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let redis = tunnel_tests::redis::Redis::tcp();
    // The CA validates at replica B's entrypoints; replica A orders.
    let (b_plain, b_https) = free_ports();
    // This CA also wants external account binding, as ZeroSSL does.
    let (kid, hmac) = ("kid-1", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W");
    let settings = Settings { eab: Some((kid.to_owned(), hmac.to_owned())), ..Settings::default() };
    let pebble = Pebble::start_with(d, b_plain, b_https, &settings);
    let root = pebble.root_pem(d);
    let root = root.to_str().unwrap();
    let (c, t) = (tunnel_id(), tunnel_id());
    let (c_origin, _) = origin::http_counting("C");
    let rules = format!(
        "[[ingress.rules]]\nhostname = \"c.test\"\nendpoint = \"{c}\"\nchallenge = \"http-01\"\n\
         [[ingress.rules]]\nhostname = \"d.test\"\nendpoint = \"{c}\"\nchallenge = \"tls-alpn-01\"\n"
    );
    let replica = |name: &str, plain: u16, https: u16, rules: &str| {
        let acme = format!("eabKid = \"{kid}\"\neabHmacKey = \"{hmac}\"");
        let rest = format!(
            "[cluster]\nname = \"{name}\"\npeer = \"127.0.0.1:0\"\nredis = \"{redis}\"\n\
             secret = \"a-cluster-secret-of-some-length\"\nlease = \"3s\"\n\
             [[ingress.rules]]\nhostname = \"other.test\"\nendpoint = \"{t}\"\ntls = \"passthrough\"\n{rules}",
            redis = redis.url()
        );
        acme_toml(&d.join(format!("state-{name}")), plain, https, &pebble, &acme, &rest)
    };
    let b_file = d.join("b.toml");
    std::fs::write(&b_file, replica("b", b_plain, b_https, "")).unwrap();
    let b = Server::start(&["-C", b_file.to_str().unwrap()], 2);
    let b_admin = admin_of(&b);
    let a_file = d.join("a.toml");
    std::fs::write(&a_file, replica("a", 0, 0, &rules)).unwrap();
    let a = Server::start(&["-C", a_file.to_str().unwrap()], 2);
    let a_admin = admin_of(&a);
    // A's orders succeed although the CA only ever reached B: B answered from Redis.
    for name in ["c.test", "d.test"] {
        poll_until(&format!("A's certificate for {name}"), || has_certificate(a_admin, name));
    }
    assert!(a.proc.logged("name=c.test challenge=http-01"), "{}", a.proc.output());
    assert!(a.proc.logged("name=d.test challenge=tls-alpn-01"), "{}", a.proc.output());
    // What Redis holds is sealed: no key, no certificate in clear.
    let (sealed, _) = redis.cli(&["GET", "tunnel:acme:cert:c.test"]);
    assert!(!sealed.is_empty() && !sealed.contains("PRIVATE KEY") && !sealed.contains("CERTIFICATE"), "{sealed}");

    // B takes the rules: it serves A's certificates without ordering them again.
    std::fs::write(&b_file, replica("b", b_plain, b_https, &rules)).unwrap();
    b.proc.signal("HUP");
    for name in ["c.test", "d.test"] {
        poll_until(&format!("B's certificate for {name}"), || has_certificate(b_admin, name));
    }
    let _agent = agent(&b, &[&format!("rtcp://:0/{c_origin}")], &c, "", 1);
    let a_https = a.entrypoints[1];
    for host in ["c.test", "d.test"] {
        assert_eq!(served_fingerprint(d, b.entrypoints[1], host), served_fingerprint(d, a_https, host), "{host}");
        let (code, status, _, body) = get(b.entrypoints[1], host, "/", &["--cacert", root]);
        assert_eq!((code, status), (0, 200), "{host}: {body}");
    }
    assert_eq!(metric(b_admin, "tunnel_acme_orders_total{result=\"valid\"}"), 0.0, "{}", b.proc.output());
    assert!(b.proc.logged("certificate taken from the cluster"), "{}", b.proc.output());
}
