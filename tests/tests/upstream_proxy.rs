//! Agents and access clients reaching the server through real upstream proxies: tinyproxy
//! (HTTP CONNECT with Basic auth) and dante (SOCKS5), written as GOST's two-hop chain
//! `-F http://user:pass@proxy -F relay://server`. The server is named `localhost`, which the
//! proxy resolves (its log shows the name it was given).

use std::net::SocketAddr;
use std::process::Command;

use tunnel_tests::{agent_config, http_get, origin, run_to_exit, tunnel_id, Proc, Server, Transport};

/// A proxy process on a free loopback port, with its config in a temp dir.
struct ProxyProc {
    proc: Proc,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

fn tinyproxy(user: &str, pass: &str) -> ProxyProc {
    let dir = tempfile::tempdir().unwrap();
    let (proc, addr) = tunnel_tests::proxies::tinyproxy(dir.path(), user, pass);
    ProxyProc { proc, addr, _dir: dir }
}

fn dante() -> ProxyProc {
    let dir = tempfile::tempdir().unwrap();
    let addr = origin::closed_port();
    // `socksmethod: username` checks system accounts (it would need a user created on the
    // machine); the SOCKS5 credentials path is covered against a scripted peer in the
    // runtime's unit tests, and proxy credentials end to end with tinyproxy.
    let cfg = format!(
        "logoutput: stderr\ninternal: 127.0.0.1 port = {}\nexternal: 127.0.0.1\nsocksmethod: none\nclientmethod: none\n\
         user.privileged: root\nuser.unprivileged: nobody\n\
         client pass {{\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  log: error\n}}\n\
         socks pass {{\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  command: connect\n  log: connect error\n}}\n",
        addr.port()
    );
    let path = dir.path().join("danted.conf");
    std::fs::write(&path, cfg).unwrap();
    let mut cmd = Command::new("danted");
    cmd.arg("-f").arg(&path).arg("-N").arg("1").arg("-p").arg(dir.path().join("danted.pid"));
    let proc = Proc::start_command("danted (needs the dante-server package; CI installs it)", cmd);
    proc.wait_for("running");
    ProxyProc { proc, addr, _dir: dir }
}

fn server_for(t: Transport, rule: &str) -> Server {
    Server::start_on(t, &["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel={rule}")], 1)
}

/// The server's `-F` URL naming it `localhost`, so only a proxy that resolves names reaches it.
fn relay_by_name(server: &Server, id: &str, extra: &str) -> String {
    server.relay_url(id, extra).replacen("127.0.0.1:", "localhost:", 1)
}

fn start(binary: &str, listen: &str, proxy: &str, relay: &str) -> Proc {
    Proc::start(binary, &["-L", listen, "-F", proxy, "-F", relay])
}

fn an_agent_reaches_the_server_through_tinyproxy_with_credentials(t: Transport) {
    let id = tunnel_id();
    let origin = origin::http("behind-proxy");
    let server = server_for(t, &format!("app.example:{id}"));
    let proxy = tinyproxy("alice", "s3cret");
    let port = server.relay.port();
    let url = format!("http://alice:s3cret@{}", proxy.addr);
    let agent = start("tunnel-agent", &format!("rtcp://:0/{origin}"), &url, &relay_by_name(&server, &id, "sessions=1"));
    agent.wait_for("session established");
    server.proc.wait_for("agent joined");
    proxy.proc.wait_for(&format!("CONNECT localhost:{port}"));
    let (status, body) = http_get(server.entrypoints[0], "app.example", "/through");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("origin=behind-proxy"), "{body}");
    assert!(!agent.output().contains("s3cret"), "the proxy password is never printed:\n{}", agent.output());
}

#[test]
fn a_toml_agent_takes_the_proxy_password_from_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let id = tunnel_id();
    let origin = origin::http("from-file");
    let server = server_for(Transport::Tcp, &format!("app.example:{id}"));
    let proxy = tinyproxy("alice", "filed-secret");
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("proxy-password");
    std::fs::write(&pw, "filed-secret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let toml = format!(
        "[relay]\naddr = \"localhost:{}\"\ntunnel.id = \"{id}\"\nsessions = 1\nproxy = \"http://alice@{}\"\n\
         proxyPasswordFile = \"{}\"\n[[services]]\ntype = \"rtcp\"\n[[services.forwarder.nodes]]\naddr = \"{origin}\"\n",
        server.relay.port(),
        proxy.addr,
        pw.display()
    );
    let (agent, _dir) = agent_config(&server, &toml, 1);
    proxy.proc.wait_for(&format!("CONNECT localhost:{}", server.relay.port()));
    let (status, body) = http_get(server.entrypoints[0], "app.example", "/");
    assert_eq!((status, body.starts_with("origin=from-file")), (200, true), "{body}");
    assert!(!agent.output().contains("filed-secret"), "{}", agent.output());
}

#[test]
fn a_wrong_proxy_password_fails_with_the_proxy_status() {
    let id = tunnel_id();
    let server = server_for(Transport::Tcp, &format!("app.example:{id}"));
    let proxy = tinyproxy("alice", "s3cret");
    let url = format!("http://alice:not-it@{}", proxy.addr);
    let agent = start("tunnel-agent", "rtcp://:0/:1", &url, &relay_by_name(&server, &id, "sessions=1"));
    let line = agent.wait_for("refused CONNECT");
    // tinyproxy answers 401 where the standard says 407.
    assert!(line.contains("401 Unauthorized") && line.contains("wrong or missing proxy credentials"), "{line}");
    assert!(!agent.output().contains("not-it"), "the proxy password is never printed:\n{}", agent.output());
    assert!(!server.proc.logged("agent joined"), "{}", server.proc.output());
}

fn an_agent_and_an_access_client_reach_the_server_through_dante(t: Transport) {
    let id = tunnel_id();
    let origin = origin::http("socks");
    let server = server_for(t, &format!("private.example:${id}"));
    let proxy = dante();
    let url = format!("socks5://{}", proxy.addr);
    let agent = start("tunnel-agent", &format!("rtcp://:0/{origin}"), &url, &relay_by_name(&server, &id, "sessions=1"));
    agent.wait_for("session established");
    server.proc.wait_for("agent joined");
    let access = start("tunnel-access", "tcp://127.0.0.1:0/private.example", &url, &relay_by_name(&server, &id, ""));
    let listen = tunnel_tests::addr_in(&access.wait_for("listening"));
    access.wait_for("session established");
    let (status, body) = http_get(listen, "private.example", "/socks");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("origin=socks"), "{body}");
    // Both sessions went through dante (it logs the address it resolved the name to; that the
    // name travels as a SOCKS5 domain address is pinned by the runtime's unit test).
    let relay = format!("127.0.0.1.{}", server.relay.port());
    let connects = proxy.proc.output().lines().filter(|l| l.contains("tcp/connect") && l.ends_with(&relay)).count();
    assert!(connects >= 2, "dante carried the agent's and the access client's sessions:\n{}", proxy.proc.output());
}

// Over TCP and TLS; QUIC cannot pass a TCP proxy (see the last test).
mod tcp {
    #[test]
    fn an_agent_reaches_the_server_through_tinyproxy_with_credentials() {
        super::an_agent_reaches_the_server_through_tinyproxy_with_credentials(super::Transport::Tcp)
    }
    #[test]
    fn an_agent_and_an_access_client_reach_the_server_through_dante() {
        super::an_agent_and_an_access_client_reach_the_server_through_dante(super::Transport::Tcp)
    }
}
mod tls {
    #[test]
    fn an_agent_reaches_the_server_through_tinyproxy_with_credentials() {
        super::an_agent_reaches_the_server_through_tinyproxy_with_credentials(super::Transport::Tls)
    }
    #[test]
    fn an_agent_and_an_access_client_reach_the_server_through_dante() {
        super::an_agent_and_an_access_client_reach_the_server_through_dante(super::Transport::Tls)
    }
}

#[test]
fn quic_through_a_proxy_and_misordered_chains_are_refused_at_validation() {
    let relay = "relay+quic://localhost:8443?tunnel.id=4d21094e-b74c-4916-86c1-d9fa36ea677b";
    let (ok, out) =
        run_to_exit("tunnel-agent", &["--check", "-L", "rtcp://:0/:80", "-F", "socks5://127.0.0.1:1080", "-F", relay]);
    assert!(!ok, "{out}");
    assert!(out.contains("relay.proxy") && out.contains("QUIC runs over UDP"), "{out}");
    let (ok, out) = run_to_exit(
        "tunnel-access",
        &[
            "--check",
            "-L",
            "tcp://:0/x",
            "-F",
            relay.replace("relay+quic", "relay").as_str(),
            "-F",
            "http://u:pw@127.0.0.1:3128",
        ],
    );
    assert!(!ok && out.contains("the last hop must be the server"), "{out}");
    assert!(!out.contains("pw@"), "{out}");
    let tcp = "relay://localhost:8443?tunnel.id=4d21094e-b74c-4916-86c1-d9fa36ea677b";
    let (ok, out) =
        run_to_exit("tunnel-agent", &["--check", "-L", "rtcp://:0/:80", "-F", "http://u:pw@127.0.0.1:3128", "-F", tcp]);
    assert!(ok, "{out}");
}
