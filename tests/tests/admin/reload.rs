//! Live reload under load: a long download through rule A stays byte-exact while a SIGHUP
//! adds rule B (served at once) and removes rule C (404 at once, its agent's session closed
//! with the reason); a broken file changes nothing; twenty reloads leak nothing.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tunnel_tests::payload::{random_sha256, source_on};
use tunnel_tests::{agent, http_get, origin, tunnel_id, Server};

use super::{admin_get, admin_of};

const SIZE: usize = 256 << 20;

fn config(a: &str, c: &str, with_b: bool, with_c: bool) -> String {
    let mut t = String::from("addr = \"127.0.0.1:0\"\nentryPoint = [\"127.0.0.1:0\", \"127.0.0.1:0/dl.local\"]\n");
    t += "[admin]\naddr = \"127.0.0.1:0\"\n";
    t += &format!("[[ingress.rules]]\nhostname = \"dl.local\"\nendpoint = \"{a}\"\n");
    t += &format!("[[ingress.rules]]\nhostname = \"a.local\"\nendpoint = \"{a}\"\n");
    if with_b {
        t += &format!("[[ingress.rules]]\nhostname = \"b.local\"\nendpoint = \"{a}\"\n");
    }
    if with_c {
        t += &format!("[[ingress.rules]]\nhostname = \"c.local\"\nendpoint = \"{c}\"\n");
    }
    t
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn a_reload_under_load_adds_and_removes_rules_without_touching_live_streams() {
    let (a, c) = (tunnel_id(), tunnel_id());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(&path, config(&a, &c, false, true)).unwrap();
    let path_s = path.to_str().unwrap().to_owned();
    let server = Server::start(&["-C", &path_s], 2);
    let admin = admin_of(&server.proc);
    let (web, raw) = (server.entrypoints[0], server.entrypoints[1]);
    let source = source_on("127.0.0.1:0", 7, SIZE);
    let http = origin::http("a");
    let _agent_a = tunnel_tests::agent_config(
        &server,
        &format!(
            "[relay]\naddr = \"{}\"\ntunnel.id = \"{a}\"\n[[services]]\ntype = \"rtcp\"\n[[services.forwarder.nodes]]\naddr = \"{source}\"\nhost = \"dl.local\"\n[[services.forwarder.nodes]]\naddr = \"{http}\"\n",
            server.relay
        ),
        1,
    );
    server.proc.wait_for_nth("agent joined", 2);
    let agent_c = agent(&server, &[&format!("rtcp://:0/{}", origin::http("c"))], &c, "", 3);
    assert_eq!(http_get(web, "c.local", "/").0, 200);
    assert_eq!(http_get(web, "b.local", "/").0, 404);

    // The download starts, and stays in flight through the reload.
    let mut download = TcpStream::connect(raw).unwrap();
    download.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0;
    download.read_exact(&mut buf).unwrap();
    hash.update(&buf);
    got += buf.len();

    std::fs::write(&path, config(&a, &c, true, false)).unwrap();
    server.proc.signal("HUP");
    server.proc.wait_for("configuration reloaded version=2");
    assert_eq!(http_get(web, "b.local", "/").0, 200, "the added rule is served at once");
    let (status, body) = http_get(web, "c.local", "/");
    assert_eq!(status, 404, "the removed rule is gone at once: {body}");
    let closed = server.proc.wait_for("agent session closed by the reload");
    assert!(closed.contains(&c) && closed.contains("its tunnel left the ingress"), "{closed}");
    agent_c.wait_for("session lost");

    loop {
        match download.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hash.update(&buf[..n]);
                got += n;
            }
            Err(e) => panic!("the download broke after {got} bytes: {e}"),
        }
    }
    assert_eq!(got, SIZE);
    assert_eq!(hex::encode(hash.finalize()), random_sha256(7, SIZE), "byte-exact through the reload");

    // A broken file is refused with one line naming it; everything stays as it was.
    std::fs::write(&path, "addr = \"127.0.0.1:0\"\n[[ingress.rules]]\nhostname = \"x\"\nendpoint = \"not-a-uuid\"\n")
        .unwrap();
    let (status, body) = admin_get(admin, "/api/v1/reload", &["-X", "POST", "-H", "Content-Type: application/json"]);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("ingress.rules[0].endpoint") && body.contains(&path_s), "{body}");
    assert!(server.proc.wait_for("reload refused").contains(&path_s));
    assert_eq!(http_get(web, "b.local", "/").0, 200, "the old configuration stays");
    let (_, cfg) = admin_get(admin, "/api/v1/config", &[]);
    assert!(cfg.contains("\"version\":2"), "{cfg}");

    // Twenty reloads in a row leak nothing.
    std::fs::write(&path, config(&a, &c, true, false)).unwrap();
    let pid = server.proc.pid();
    let tasks = |cfg: &str| serde_json::from_str::<serde_json::Value>(cfg).unwrap()["tasks"].as_u64().unwrap();
    let (fd0, rss0, tasks0) = (fds(pid), super::rss_kib(pid), tasks(&admin_get(admin, "/api/v1/config", &[]).1));
    for n in 0..20 {
        let (status, body) =
            admin_get(admin, "/api/v1/reload", &["-X", "POST", "-H", "Content-Type: application/json"]);
        assert_eq!(status, 200, "reload {n}: {body}");
    }
    let (_, cfg) = admin_get(admin, "/api/v1/config", &[]);
    assert!(cfg.contains("\"version\":22"), "{cfg}");
    assert!(tasks(&cfg) <= tasks0, "tasks {tasks0} -> {}", tasks(&cfg));
    assert!(fds(pid) <= fd0 + 2, "file descriptors {fd0} -> {}", fds(pid));
    assert!(super::rss_kib(pid) <= rss0 + 4096, "RSS {rss0} KiB -> {} KiB", super::rss_kib(pid));
    assert_eq!(http_get(web, "a.local", "/").0, 200);
}

#[test]
fn a_reload_that_removes_a_private_rule_cuts_the_connections_it_admitted() {
    use std::io::Write;
    let id = tunnel_id();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    let rules = |private: bool| {
        let mut toml = format!(
            "addr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n\
             [[ingress.rules]]\nhostname = \"open.local\"\nendpoint = \"{id}\"\n"
        );
        if private {
            toml += &format!("[[ingress.rules]]\nhostname = \"priv.local\"\nendpoint = \"${id}\"\n");
        }
        toml
    };
    std::fs::write(&path, rules(true)).unwrap();
    let server = Server::start(&["-C", path.to_str().unwrap()], 0);
    let admin = admin_of(&server.proc);
    let _agent = agent(&server, &[&format!("rtcp://:0/{}", origin::echo())], &id, "", 1);
    let (_access, addrs) = tunnel_tests::access(&server, &["tcp://127.0.0.1:0/priv.local"], &id, "");
    let mut conn = TcpStream::connect(addrs[0]).unwrap();
    conn.set_read_timeout(Some(tunnel_tests::WAIT)).unwrap();
    let mut echo = [0u8; 6];
    conn.write_all(b"before").unwrap();
    conn.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"before", "the private rule serves the access client");
    // The private rule goes; the tunnel stays in the ingress (its sessions are not closed).
    std::fs::write(&path, rules(false)).unwrap();
    let (status, body) = admin_get(admin, "/api/v1/reload", &["-X", "POST", "-H", "Content-Type: application/json"]);
    assert_eq!(status, 200, "{body}");
    // The connection admitted before the reload serves nothing more.
    let _ = conn.write_all(b"after!");
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    assert!(!rest.windows(6).any(|w| w == b"after!"), "the removed rule still served: {rest:?}");
    assert!(body.contains("\"cutStreams\":1"), "{body}");
    server.proc.wait_for("stream cut by the reload");
    // And a new connection is refused by the routes in force.
    let mut again = TcpStream::connect(addrs[0]).unwrap();
    again.set_read_timeout(Some(tunnel_tests::WAIT)).unwrap();
    let _ = again.write_all(b"again!");
    let mut got = Vec::new();
    let _ = again.read_to_end(&mut got);
    assert!(!got.windows(6).any(|w| w == b"again!"), "{got:?}");
}
