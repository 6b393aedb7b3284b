//! Tunnels as data: a tunnel made with `tunnel-server tunnel create` (through the admin API of
//! a running server, or offline on its store), an agent connected with the one printed token,
//! routes added and removed at once, secrets rotated with a grace period and revoked, and a
//! stored route that a rule of the configuration file holds refused.

use std::path::Path;
use std::process::Command;

use tunnel_tests::{bin, curl, origin, Proc, Server};

const ADMIN_TOKEN: &str = "an-admin-token-for-tests";

/// `tunnel-server ARGS`: (success, stdout, stderr).
fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("tunnel-server")).args(args).output().expect("run tunnel-server");
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// `tunnel-server --api http://ADMIN --admin-token T ARGS`, which must succeed: its stdout.
fn api(admin: std::net::SocketAddr, args: &[&str]) -> String {
    let url = format!("http://{admin}");
    let mut all = args.to_vec();
    all.extend(["--api", &url, "--admin-token", ADMIN_TOKEN]);
    let (ok, out, err) = cli(&all);
    assert!(ok, "tunnel-server {args:?}: {err}");
    out
}

fn server(dir: &Path, rules: &str) -> (Server, std::net::SocketAddr, std::path::PathBuf) {
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "addr = \"127.0.0.1:0\"\nstateDir = \"{}\"\nentryPoint = [\"127.0.0.1:0\"]\n[admin]\naddr = \"127.0.0.1:0\"\ntoken = \"{ADMIN_TOKEN}\"\n{rules}",
            dir.join("state").display()
        ),
    )
    .unwrap();
    let server = Server::start(&["-C", config.to_str().unwrap()], 1);
    let admin = tunnel_tests::addr_in(&server.proc.wait_for("admin listening"));
    (server, admin, config)
}

/// An agent connected with a connection token alone.
fn agent(token: &str, target: std::net::SocketAddr) -> Proc {
    let service = format!("rtcp://:0/{target}");
    let p = Proc::start("tunnel-agent", &["--token", token, "-L", &service]);
    p.wait_for("session established");
    p
}

fn get(ep: std::net::SocketAddr, host: &str) -> (u16, String) {
    let (code, out) = curl(&["-sS", "-w", "\n%{http_code}", "-H", &format!("Host: {host}"), &format!("http://{ep}/")]);
    assert_eq!(code, 0, "{out}");
    let (body, status) = out.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

#[test]
fn a_tunnel_made_with_the_cli_takes_an_agent_by_its_token_and_a_route_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin, _) = server(dir.path(), "");
    let token = api(admin, &["tunnel", "create", "web"]);
    assert!(token.starts_with("tun1_") && !token.contains('\n'), "{token}");
    let (origin, _) = origin::http_counting("WEB");
    let _agent = agent(&token, origin);
    server.proc.wait_for("agent joined");
    // A tunnel with no route yet: listed, its agent connected.
    let listed = api(admin, &["tunnel", "show", "web"]);
    assert!(listed.contains("\"routes\": []"), "{listed}");
    let ep = server.entrypoints[0];
    assert_eq!(get(ep, "app.test").0, 404);
    api(admin, &["route", "add", "app.test", "--tunnel", "web"]);
    // At once: no reload, no wait.
    let (status, body) = get(ep, "app.test");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("origin=WEB"), "{body}");
    api(admin, &["route", "delete", "app.test"]);
    assert_eq!(get(ep, "app.test").0, 404, "gone at once");
    // A private route, reached by an access client with the same token alone.
    api(admin, &["route", "add", "db.internal", "--tunnel", "web", "--private"]);
    assert_eq!(get(ep, "db.internal").0, 404, "not from the public side");
    let access = Proc::start("tunnel-access", &["--token", &token, "-L", "tcp://127.0.0.1:0/db.internal"]);
    let local = tunnel_tests::addr_in(&access.wait_for("listening"));
    access.wait_for("session established");
    let (code, body) = curl(&["-sS", &format!("http://{local}/")]);
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("origin=WEB"), "{body}");
    // Each change is one audit line naming who made it, and no secret is logged.
    let line = server.proc.wait_for("audit=\"route deleted\"");
    assert!(line.contains("who=\"admin api from 127.0.0.1:"), "{line}");
    let secret = tunnel_runtime::connect::ConnectToken::decode(&token).unwrap().secret;
    assert!(!server.proc.output().contains(&secret));
}

#[test]
fn a_rotated_secret_admits_for_its_grace_and_a_revoked_one_closes_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin, _) = server(dir.path(), "");
    let first = api(admin, &["tunnel", "create", "ops"]);
    let (origin, _) = origin::http_counting("OPS");
    // The token from a file (private to its owner), as a service would keep it.
    let file = dir.path().join("ops.token");
    std::fs::write(&file, format!("{first}\n")).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let service = format!("rtcp://:0/{origin}");
    let _a = Proc::start("tunnel-agent", &["--token-file", file.to_str().unwrap(), "-L", &service]);
    _a.wait_for("session established");
    let second = api(admin, &["tunnel", "token", "ops", "--grace", "1h"]);
    assert_ne!(first, second);
    // Both admit during the grace period.
    let _b = agent(&second, origin);
    let _c = agent(&first, origin);
    // Each agent keeps two sessions.
    server.proc.wait_for_nth("agent joined", 6);
    let third = api(admin, &["tunnel", "token", "ops"]);
    // Revoked at once: the six sessions of the old secrets are closed...
    server.proc.wait_for_nth("agent session closed", 6);
    // ...and they may not join again; the new secret may.
    let refused = Proc::start("tunnel-agent", &["--token", &second, "-L", &service]);
    refused.wait_for("unauthorized");
    let _d = agent(&third, origin);
    // A grace period's end closes the sessions of the secret it ended.
    api(admin, &["tunnel", "token", "ops", "--grace", "1s"]);
    server.proc.wait_for_nth("agent session closed", 8);
    let closed = server.proc.output().matches("agent session closed").count();
    assert_eq!(closed, 8, "only the two sessions of the secret whose grace ended: {}", server.proc.output());
}

#[test]
fn a_tunnel_made_offline_is_served_when_the_server_starts_and_a_file_rule_is_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let id = tunnel_tests::tunnel_id();
    let rules = format!("[[ingress.rules]]\nhostname = \"file.test\"\nendpoint = \"{id}\"\n");
    let config = dir.path().join("server.toml");
    // Offline, the token names the relay's configured address: a port of its own.
    let (held, relay) = tunnel_tests::listener();
    drop(held);
    std::fs::write(
        &config,
        format!(
            "addr = \"{relay}\"\nstateDir = \"{}\"\nentryPoint = [\"127.0.0.1:0\"]\n[admin]\naddr = \"127.0.0.1:0\"\ntoken = \"{ADMIN_TOKEN}\"\n{rules}",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let (ok, _, err) = cli(&["-C", c, "tunnel", "create", "offline"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&["-C", c, "route", "add", "file.test", "--tunnel", "offline"]);
    assert!(!ok && err.contains("ingress.rules[0]"), "a route the file holds is refused, naming the rule: {err}");
    let (ok, _, err) = cli(&["-C", c, "route", "add", "off.test", "--tunnel", "offline"]);
    assert!(ok, "{err}");
    // The token is printed again by a rotation (the first one was not kept here).
    let (ok, token, err) = cli(&["-C", c, "tunnel", "token", "offline"]);
    assert!(ok, "{err}");
    let server = Server::start(&["-C", c], 1);
    let (origin, _) = origin::http_counting("OFF");
    let _agent = agent(&token, origin);
    server.proc.wait_for("agent joined");
    let (status, body) = get(server.entrypoints[0], "off.test");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("origin=OFF"), "{body}");
}

/// The tools virtualenv's Python (`tests/run` makes it with selenium).
fn venv_python() -> std::path::PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools-venv/bin/python");
    assert!(python.exists(), "{} is missing: tests/run makes it (selenium for the status page)", python.display());
    python
}

/// `tests/browser/status_page.py ARGS`: its standard output.
fn status_page(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/status_page.py");
    let out = Command::new(venv_python()).arg(script).args(args).output().expect("run the browser driver");
    assert!(out.status.success(), "status_page.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_status_page_makes_a_tunnel_whose_token_connects_an_agent_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin, _) = server(dir.path(), "");
    let page = format!("http://{admin}/");
    // Logged in with the admin token; the tunnel made and routed from the page.
    let token = status_page(&["create", &page, ADMIN_TOKEN, "browser", "page.test"]);
    assert!(token.starts_with("tun1_"), "{token}");
    let (origin, _) = origin::http_counting("PAGE");
    let _agent = agent(&token, origin);
    let (status, body) = get(server.entrypoints[0], "page.test");
    assert_eq!(status, 200, "{body}");
    let shot = dir.path().join("status-page.png");
    status_page(&["connected", &page, ADMIN_TOKEN, "browser", shot.to_str().unwrap()]);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 2000);
    // Kept as the test's artifact.
    let artifact = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifact).unwrap();
    std::fs::copy(&shot, artifact.join("status-page-tunnels.png")).unwrap();
    server.proc.wait_for("audit=\"route added\"");
}

#[test]
fn replicas_share_the_store_through_redis_and_a_tunnel_made_on_one_is_served_by_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let redis = tunnel_tests::redis::Redis::tcp();
    let replica = |name: &str| {
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "addr = \"127.0.0.1:0\"\nstateDir = \"{state}\"\nentryPoint = [\"127.0.0.1:0\"]\n\
                 [admin]\naddr = \"127.0.0.1:0\"\ntoken = \"{ADMIN_TOKEN}\"\n\
                 [cluster]\nname = \"{name}\"\npeer = \"127.0.0.1:0\"\nredis = \"{url}\"\n\
                 secret = \"a-cluster-secret-of-some-length\"\nlease = \"3s\"\n",
                state = dir.path().join(format!("state-{name}")).display(),
                url = redis.url()
            ),
        )
        .unwrap();
        let server = Server::start(&["-C", config.to_str().unwrap()], 1);
        let admin = tunnel_tests::addr_in(&server.proc.wait_for("admin listening"));
        (server, admin)
    };
    let (a, a_admin) = replica("a");
    let (b, b_admin) = replica("b");
    // Made and routed on A...
    let token = api(a_admin, &["tunnel", "create", "shared"]);
    api(a_admin, &["route", "add", "shared.test", "--tunnel", "shared"]);
    // ...in force on B within a second (it looks at the store's version every second): B's
    // routes know the tunnel.
    let id = tunnel_runtime::connect::ConnectToken::decode(&token).unwrap().tunnel.to_string();
    let in_force = || {
        let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
        let (_, body) = curl(&["-sS", "-H", &auth, &format!("http://{b_admin}/api/v1/tunnels")]);
        body.contains(&id)
    };
    tunnel_tests::poll_until("the tunnel in force on B", in_force);
    // An agent joins B with the token's secret; both replicas serve the route.
    let (origin, _) = origin::http_counting("SHARED");
    let b_relay = format!("relay://{}", b.relay);
    let service = format!("rtcp://:0/{origin}");
    let relay = format!("{b_relay}?tunnel.id={id}");
    let agent = Proc::start("tunnel-agent", &["--token", &token, "-L", &service, "-F", &relay]);
    agent.wait_for("session established");
    let (status, body) = get(b.entrypoints[0], "shared.test");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("origin=SHARED"), "{body}");
    tunnel_tests::poll_until("A forwards to B's agent", || get(a.entrypoints[0], "shared.test").0 == 200);
    // Redis holds the tunnels sealed: neither names nor routes in clear.
    let (record, _) = redis.cli(&["GET", "tunnel:store:tunnels"]);
    assert!(!record.is_empty() && !record.contains("shared"), "{record}");
    // A record not sealed with the cluster's secret adds nothing and takes nothing away.
    redis.cli(&["SET", "tunnel:store:tunnels", "bm90IHNlYWxlZA=="]);
    redis.cli(&["INCR", "tunnel:store:version"]);
    b.proc.wait_for("tunnel store cannot be read");
    assert_eq!(get(b.entrypoints[0], "shared.test").0, 200, "the tunnels last read stay in force");
    assert!(!b.proc.logged("agent session closed"), "{}", b.proc.output());
}

#[test]
fn agents_ask_for_hostnames_under_their_tunnels_suffix_first_come_first_served() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin, _) = server(dir.path(), "");
    let dev = api(admin, &["tunnel", "create", "dev", "--suffix", "dev.test"]);
    let other = api(admin, &["tunnel", "create", "other", "--suffix", "dev.test"]);
    let plain = api(admin, &["tunnel", "create", "plain"]);
    let (origin_a, _) = origin::http_counting("A");
    let (origin_b, _) = origin::http_counting("B");
    let ep = server.entrypoints[0];
    // The first agent asking for myapp gets myapp.dev.test, at once.
    let service = format!("rtcp://:0/{origin_a}");
    let first = Proc::start("tunnel-agent", &["--token", &dev, "--hostname", "myapp", "-L", &service]);
    first.wait_for("session established");
    let (status, body) = get(ep, "myapp.dev.test");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("origin=A"), "{body}");
    // Another tunnel's agent asking for the same name is refused, and told why.
    let service_b = format!("rtcp://:0/{origin_b}");
    let second = Proc::start("tunnel-agent", &["--token", &other, "--hostname", "myapp", "-L", &service_b]);
    second.wait_for("hostname myapp.dev.test is taken by another tunnel");
    // A tunnel without a suffix may not ask, nor may a name outside the suffix be asked for.
    let third = Proc::start("tunnel-agent", &["--token", &plain, "--hostname", "x", "-L", &service_b]);
    third.wait_for("may not ask for hostnames");
    let fourth = Proc::start("tunnel-agent", &["--token", &dev, "--hostname", "x.elsewhere.test", "-L", &service]);
    fourth.wait_for("may ask for names under dev.test only");
    assert_eq!(get(ep, "myapp.dev.test").0, 200, "still the first agent's");
    drop((second, third, fourth));
    // The route goes with the tunnel's last agent.
    drop(first);
    server.proc.wait_for("audit=\"hostnames released\"");
    assert_eq!(get(ep, "myapp.dev.test").0, 404);
    // Unless the tunnel keeps them: then it stays with no agent (502, not 404).
    let kept = api(admin, &["tunnel", "create", "kept", "--suffix", "keep.test", "--keep-hostnames"]);
    let agent = Proc::start("tunnel-agent", &["--token", &kept, "--hostname", "k", "-L", &service]);
    agent.wait_for("session established");
    assert_eq!(get(ep, "k.keep.test").0, 200);
    let left_before = server.proc.output().matches("agent left").count();
    drop(agent);
    server.proc.wait_for_nth("agent left", left_before + 2);
    assert!(api(admin, &["tunnel", "show", "kept"]).contains("k.keep.test"));
    assert_eq!(get(ep, "k.keep.test").0, 502);
}
