//! The admin listener ([OPS]): probes, metrics that follow the traffic, the JSON API, the
//! token off loopback, the status page in a real browser, and live reload under load.

#[path = "admin/reload.rs"]
mod reload;

use std::net::SocketAddr;
use std::process::Command;

use tunnel_tests::{addr_in, agent, curl, origin, tunnel_id, Proc, Server};

/// The admin address a process logged.
pub fn admin_of(p: &Proc) -> SocketAddr {
    addr_in(&p.wait_for("admin listening"))
}

/// `GET` (or `POST` with `-X POST` in `extra`) on the admin listener: status and body.
pub fn admin_get(addr: SocketAddr, path: &str, extra: &[&str]) -> (u16, String) {
    let url = format!("http://{addr}{path}");
    let mut args = vec!["-s", "--max-time", "10", "-w", "\n%{http_code}"];
    args.extend_from_slice(extra);
    args.push(&url);
    let (_, out) = curl(&args);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// The value of the metric line starting with `prefix` (name and labels), or 0.
pub fn metric(addr: SocketAddr, prefix: &str) -> f64 {
    let (status, text) = admin_get(addr, "/metrics", &[]);
    assert_eq!(status, 200, "{text}");
    tunnel_tests::metric_in(&text, prefix)
}

/// A real HTTP origin (Python's http.server) serving `dir` on a free loopback port.
pub struct FileOrigin {
    child: std::process::Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl FileOrigin {
    /// Serves `dir`. The server binds port 0 itself and says which port it got ("Serving HTTP
    /// on 127.0.0.1 port N ..."): a port picked here and released first could be taken by
    /// another test before it binds.
    pub fn start(dir: &std::path::Path) -> FileOrigin {
        use std::io::BufRead;
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
            .current_dir(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("http.server's first line");
        let port: u16 = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in http.server's line {line:?}"));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        FileOrigin { child, addr }
    }
}

impl Drop for FileOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn counters_follow_the_traffic_and_gauges_come_back() {
    const SIZE: usize = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file.bin"), vec![0x42u8; SIZE]).unwrap();
    let files = FileOrigin::start(dir.path());
    let id = tunnel_id();
    let url = format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=dl.local:{id}");
    let server = Server::start(&["-L", &url, "--admin", "127.0.0.1:0"], 1);
    let admin = admin_of(&server.proc);
    let sessions = format!("tunnel_sessions{{tunnel=\"{id}\",role=\"agent\",transport=\"tcp\"}}");
    let out = format!("tunnel_bytes_total{{tunnel=\"{id}\",direction=\"out\"}}");
    assert_eq!(metric(admin, &sessions), 0.0);
    let mut a = agent(&server, &[&format!("rtcp://:0/{}", files.addr)], &id, "", 1);
    server.proc.wait_for_nth("agent joined", 2);
    assert_eq!(metric(admin, &sessions), 2.0, "the agent's two sessions");
    let ep = server.entrypoints[0];
    let mut moved = 0.0;
    for _ in 0..3 {
        let (code, size) = curl(&[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            "-H",
            "Host: dl.local",
            &format!("http://{ep}/file.bin"),
        ]);
        assert_eq!(code, 0);
        moved += size.trim().parse::<f64>().unwrap();
    }
    assert_eq!(moved, 3.0 * SIZE as f64);
    let counted = metric(admin, &out);
    assert!((counted - moved).abs() / moved < 0.01, "bytes out {counted} vs {moved} moved by curl");
    assert_eq!(metric(admin, &format!("tunnel_streams_opened_total{{tunnel=\"{id}\"}}")), 3.0);
    a.signal("TERM");
    assert_eq!(a.wait_exit(), Some(0));
    tunnel_tests::poll_until("the session gauge back at 0", || metric(admin, &sessions) == 0.0);
    // Build info is there.
    assert_eq!(metric(admin, "tunnel_build_info{version="), 1.0);
}

#[test]
fn readiness_follows_sessions_and_the_drain() {
    let id = tunnel_id();
    // A raw entrypoint: the echo origin is not HTTP, and its stream must stay a byte pipe.
    let url = format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0/r.local&tunnel=r.local:{id}&gracePeriod=20s");
    let mut server = Server::start(&["-L", &url, "--admin", "127.0.0.1:0"], 1);
    let server_admin = admin_of(&server.proc);
    let (status, body) = admin_get(server_admin, "/readyz", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ready\":true"), "{body}");
    let port = server.relay.port();
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("agent.toml");
    std::fs::write(
        &toml,
        format!(
            "[admin]\naddr = \"127.0.0.1:0\"\n[relay]\naddr = \"127.0.0.1:{port}\"\ntunnel.id = \"{id}\"\n[limits]\nbackoffMax = \"1s\"\n[[services]]\ntype = \"rtcp\"\n[[services.forwarder.nodes]]\naddr = \"{}\"\n",
            origin::echo()
        ),
    )
    .unwrap();
    let a = Proc::start("tunnel-agent", &["-C", toml.to_str().unwrap()]);
    let agent_admin = admin_of(&a);
    a.wait_for_nth("session established", 2);
    tunnel_tests::poll_until("the agent is ready", || admin_get(agent_admin, "/readyz", &[]).0 == 200);
    assert!(admin_get(agent_admin, "/readyz", &[]).1.contains("\"sessions\":2"));
    // An echo stream in flight holds the drain open.
    let mut held = std::net::TcpStream::connect(server.entrypoints[0]).unwrap();
    std::io::Write::write_all(&mut held, b"GET / HTTP/1.1\r\nHost: r.local\r\n\r\n").unwrap();
    let mut first = [0u8; 4];
    std::io::Read::read_exact(&mut held, &mut first).unwrap();
    server.proc.signal("TERM");
    tunnel_tests::poll_until("the server is not ready while it drains", || {
        let (status, body) = admin_get(server_admin, "/readyz", &[]);
        status == 503 && body.contains("\"draining\":true")
    });
    assert_eq!(admin_get(server_admin, "/healthz", &[]).0, 200, "alive while draining");
    drop(held);
    assert_eq!(server.proc.wait_exit(), Some(0));
    tunnel_tests::poll_until("the agent is not ready without a server", || {
        admin_get(agent_admin, "/readyz", &[]).0 == 503
    });
    assert_eq!(admin_get(agent_admin, "/healthz", &[]).0, 200, "liveness never depends on the server");
    let relay_back = format!("relay://127.0.0.1:{port}?entryPoint=127.0.0.1:0&tunnel=r.local:{id}");
    let _back = Server::start(&["-L", &relay_back], 1);
    tunnel_tests::poll_until("the agent is ready again", || admin_get(agent_admin, "/readyz", &[]).0 == 200);
}

#[test]
fn the_api_lists_both_agents_of_a_tunnel() {
    let id = tunnel_id();
    let url = format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=two.local:{id}");
    let server = Server::start(&["-L", &url, "--admin", "127.0.0.1:0"], 1);
    let admin = admin_of(&server.proc);
    let _a = agent(&server, &[&format!("rtcp://:0/{}", origin::http("a"))], &id, "sessions=1&weight=3", 1);
    let _b = agent(&server, &[&format!("rtcp://:0/{}", origin::http("b"))], &id, "sessions=1", 2);
    let (status, body) = admin_get(admin, "/api/v1/tunnels", &[]);
    assert_eq!(status, 200, "{body}");
    let api: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let tunnel = api["tunnels"].as_array().unwrap().iter().find(|t| t["tunnel"] == id.as_str()).expect("the tunnel");
    let agents = tunnel["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2, "{body}");
    assert!(agents.iter().any(|a| a["weight"] == 3) && agents.iter().all(|a| a["networks"][0] == "tcp"), "{body}");
    assert_eq!(tunnel["rules"][0]["hostname"], "two.local");
    let (status, rules) = admin_get(admin, "/api/v1/rules", &[]);
    assert!(status == 200 && rules.contains("two.local"), "{rules}");
}

#[test]
fn the_admin_token_is_required_off_loopback() {
    let id = tunnel_id();
    // Off loopback without a token: refused at validation (nothing is bound by --check).
    let (ok, out) = tunnel_tests::run_to_exit(
        "tunnel-server",
        &["-L", &format!("relay://127.0.0.1:0?tunnel=t.local:{id}"), "--admin", "0.0.0.0:9100", "--check"],
    );
    assert!(!ok && out.contains("admin.token"), "{out}");
    // With a token, everything but the probes needs it.
    const TOKEN: &str = "admin-Secret-7f3e";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(
        &path,
        format!("addr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n[[ingress.rules]]\nhostname = \"t.local\"\nendpoint = \"{id}\"\n"),
    )
    .unwrap();
    let server = Server::start(&["-C", path.to_str().unwrap()], 0);
    let admin = admin_of(&server.proc);
    assert_eq!(admin_get(admin, "/healthz", &[]).0, 200);
    assert_eq!(admin_get(admin, "/readyz", &[]).0, 200);
    for path in ["/metrics", "/api/v1/tunnels"] {
        assert_eq!(admin_get(admin, path, &[]).0, 401, "{path} without the token");
        assert_eq!(admin_get(admin, path, &["-H", "Authorization: Bearer wrong"]).0, 401, "{path} with a wrong token");
        let auth = format!("Authorization: Bearer {TOKEN}");
        assert_eq!(admin_get(admin, path, &["-H", &auth]).0, 200, "{path} with the token");
    }
    assert!(!server.proc.output().contains(TOKEN));
}

#[test]
fn the_status_page_shows_tunnels_and_agents_in_a_browser() {
    let chromium = tunnel_tests::chromium();
    let id = tunnel_id();
    let url = format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=page.local:{id}");
    let server = Server::start(&["-L", &url, "--admin", "127.0.0.1:0"], 1);
    let admin = admin_of(&server.proc);
    let _a = agent(&server, &[&format!("rtcp://:0/{}", origin::http("a"))], &id, "", 1);
    let profile = tempfile::tempdir().unwrap();
    let shot = profile.path().join("status.png");
    let common = tunnel_tests::chromium_args(profile.path());
    let dom = tunnel_tests::browser_dom(&format!("http://{admin}/"));
    assert!(dom.contains(&id), "the page lists the tunnel:\n{dom}");
    assert!(dom.contains("class=\"up agent\"") && dom.contains("page.local"), "the page lists its agent:\n{dom}");
    let status = Command::new(chromium)
        .args(&common)
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://{admin}/"))
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 2000);
    if let Ok(keep) = std::env::var("TUNNEL_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

/// A process's resident memory in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap()
}

#[test]
fn sighup_never_ends_an_agent_or_access_client_and_json_logs_are_flat() {
    let id = tunnel_id();
    let url = format!("relay://127.0.0.1:0?tunnel=h.local:{id}");
    let server = Server::start(&["-L", &url], 0);
    let service = format!("rtcp://:0/{}", origin::echo());
    let relay = server.relay_url(&id, "");
    let mut a = Proc::start("tunnel-agent", &["-L", &service, "-F", &relay, "--log-format", "json"]);
    a.wait_for_nth("session established", 2);
    let (mut access, _) = tunnel_tests::access(&server, &["tcp://127.0.0.1:0/h.local"], &id, "");
    a.signal("HUP");
    a.wait_for("SIGHUP");
    access.signal("HUP");
    access.wait_for("SIGHUP");
    assert!(a.is_running() && access.is_running(), "SIGHUP must not end them");
    for line in a.output().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["time"].is_string() && v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    let up = a.wait_for("session established");
    let v: serde_json::Value = serde_json::from_str(&up).unwrap();
    assert!(v["tunnel"] == id.as_str() && v["session"].is_number(), "fields are flat: {up}");
}

#[test]
fn one_address_holding_many_admin_connections_does_not_starve_the_probes() {
    use std::io::Read;
    let server = Server::start(&["-L", "relay://127.0.0.1:0", "--admin", "127.0.0.1:0"], 0);
    let admin = admin_of(&server.proc);
    // One address opens far more idle connections than its share.
    let held: Vec<std::net::TcpStream> =
        (0..40).map(|_| std::net::TcpStream::connect(admin).expect("connect")).collect();
    // Past its share, a connection from that address is closed at once, unanswered.
    let mut extra = std::net::TcpStream::connect(admin).unwrap();
    use std::io::Write;
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut got = Vec::new();
    let _ = extra.read_to_end(&mut got);
    assert!(got.is_empty(), "a connection past the share is not served: {}", String::from_utf8_lossy(&got));
    // A probe from another address is served.
    let url = format!("http://{admin}/healthz");
    let (code, body) = curl(&["--interface", "127.0.0.2", &url]);
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("\"alive\":true"), "{body}");
    drop(held);
}

/// A server from a TOML file with `[admin]` on loopback (plus `admin_extra`) and one rule.
fn server_with_admin(dir: &std::path::Path, admin_extra: &str, id: &str) -> Server {
    let path = dir.join("server.toml");
    std::fs::write(
        &path,
        format!(
            "addr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n{admin_extra}\
             [[ingress.rules]]\nhostname = \"a.local\"\nendpoint = \"{id}\"\n"
        ),
    )
    .unwrap();
    Server::start(&["-C", path.to_str().unwrap()], 0)
}

#[test]
fn a_web_page_cannot_reach_the_admin_listener_through_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let id = tunnel_id();
    let server = server_with_admin(dir.path(), "", &id);
    let admin = admin_of(&server.proc);
    let version = || admin_get(admin, "/api/v1/config", &[]).1;
    assert!(version().contains("\"version\":1"), "{}", version());
    // DNS rebinding: a page of evil.example, its name now resolving to 127.0.0.1, reads nothing.
    for (path, method) in [("/api/v1/tunnels", "GET"), ("/metrics", "GET"), ("/api/v1/reload", "POST")] {
        let (status, body) =
            admin_get(admin, path, &["-X", method, "-H", "Host: evil.example", "-H", "Content-Type: application/json"]);
        assert_eq!(status, 403, "{method} {path} with Host: evil.example: {body}");
        assert!(!body.contains(&id), "{body}");
    }
    // A simple cross-origin POST (a form, or fetch without a preflight) changes nothing.
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let (status, body) = admin_get(
            admin,
            "/api/v1/reload",
            &[
                "-X",
                "POST",
                "-H",
                "Origin: http://evil.example",
                "-H",
                &format!("Content-Type: {content_type}"),
                "-d",
                "x",
            ],
        );
        assert_eq!(status, 403, "a {content_type} POST: {body}");
    }
    assert!(version().contains("\"version\":1"), "no reload happened: {}", version());
    // What programs send passes: JSON, and an address or localhost as Host.
    for host in ["127.0.0.1", "localhost"] {
        let (status, body) = admin_get(admin, "/api/v1/rules", &["-H", &format!("Host: {host}:{}", admin.port())]);
        assert_eq!(status, 200, "Host: {host}: {body}");
    }
    let (status, body) = admin_get(admin, "/api/v1/reload", &["-X", "POST", "-H", "Content-Type: application/json"]);
    assert_eq!(status, 200, "{body}");
    assert!(version().contains("\"version\":2"), "{}", version());
    // A name the operator gives in [admin] hosts (a Service's, say) is answered too.
    let named = server_with_admin(dir.path(), "hosts = [\"tunnel-admin.internal\"]\n", &id);
    let admin = admin_of(&named.proc);
    for host in ["tunnel-admin.internal", "TUNNEL-ADMIN.internal."] {
        let (status, body) = admin_get(admin, "/api/v1/rules", &["-H", &format!("Host: {host}:{}", admin.port())]);
        assert_eq!(status, 200, "Host: {host}: {body}");
    }
    assert_eq!(admin_get(admin, "/api/v1/rules", &["-H", "Host: other.internal"]).0, 403);
}
