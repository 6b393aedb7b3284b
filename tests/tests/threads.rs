//! The binaries on several threads (`--threads 2`), end to end with the real binaries and
//! curl: each thread runs its own event loop, the agent's two sessions get a thread each on
//! both ends, and visitors spread over the server's threads all arrive whole, over raw and
//! HTTP entrypoints at once.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use tunnel_tests::payload::{random_sha256, source_on};
use tunnel_tests::{http_get, origin, tunnel_id, Proc, Server};

/// The `thread=N` field of a log line.
fn thread_of(line: &str) -> String {
    let field =
        line.split_whitespace().find(|w| w.starts_with("thread=")).unwrap_or_else(|| panic!("no thread: {line}"));
    field.trim_start_matches("thread=").to_owned()
}

#[test]
fn sessions_and_visitors_are_spread_over_the_threads() {
    const LEN: usize = 4 << 20;
    let id = tunnel_id();
    let server = Server::start(
        &[
            "--threads",
            "2",
            "-L",
            &format!(
                "relay://127.0.0.1:0?entryPoint=127.0.0.1:0,127.0.0.1:0/raw.local&tunnel=app.local:{id},raw.local:{id}"
            ),
        ],
        2,
    );
    server.proc.wait_for("async runtime started threads=2");
    let (web, source) = (origin::http("A"), source_on("127.0.0.1:0", 7, LEN));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("agent.toml");
    let toml = format!(
        "[relay]\naddr = \"{}\"\ntunnel.id = \"{id}\"\nsessions = 2\n\
         [[services]]\ntype = \"rtcp\"\n\
         [[services.forwarder.nodes]]\naddr = \"{web}\"\nhost = \"app.local\"\n\
         [[services.forwarder.nodes]]\naddr = \"{source}\"\nhost = \"raw.local\"\n",
        server.relay
    );
    std::fs::write(&path, toml).expect("write agent.toml");
    let agent = Proc::start("tunnel-agent", &["--threads", "2", "-C", path.to_str().expect("utf-8 path")]);
    agent.wait_for("async runtime started threads=2");
    let mut on_agent = [agent.wait_for_nth("session established", 1), agent.wait_for_nth("session established", 2)]
        .map(|l| thread_of(&l));
    let mut on_server = [server.proc.wait_for_nth("agent joined", 1), server.proc.wait_for_nth("agent joined", 2)]
        .map(|l| thread_of(&l));
    on_agent.sort();
    on_server.sort();
    assert_eq!(on_agent, ["0", "1"], "the agent's sessions run on a thread each");
    assert_eq!(on_server, ["0", "1"], "the server drives the agent's sessions on a thread each");

    // Eight raw visitors at once (spread over both server threads and both sessions) each get
    // the whole payload, while HTTP requests go through the sniffing entrypoint.
    let raw = server.entrypoints[1];
    let want = random_sha256(7, LEN);
    let pulls: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut conn = TcpStream::connect(raw).expect("connect to the raw entrypoint");
                conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut got = Vec::with_capacity(LEN);
                conn.read_to_end(&mut got).expect("read the payload");
                (got.len(), tunnel_tests::payload::sha256_hex(&got))
            })
        })
        .collect();
    for _ in 0..8 {
        let (status, body) = http_get(server.entrypoints[0], "app.local", "/");
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("origin=A"), "{body}");
    }
    for pull in pulls {
        let (len, sha) = pull.join().expect("visitor thread");
        assert_eq!(len, LEN, "every byte arrives");
        assert_eq!(sha, want, "the bytes arrive unchanged");
    }
}

#[test]
fn too_many_threads_is_refused_with_the_limit() {
    let url = format!("relay://127.0.0.1:0?tunnel=app.local:{}", tunnel_id());
    let (ok, out) = tunnel_tests::run_to_exit("tunnel-server", &["--threads", "5000", "-L", &url]);
    assert!(!ok, "{out}");
    assert!(out.contains("--threads 5000: at most 1024"), "{out}");
}

/// The entrypoint's listeners (one per thread, sharing the port inside the process) keep the
/// port to this process: a second server on it is refused as on one thread, and so is any
/// other listener.
#[test]
fn an_entrypoint_port_is_not_shared_with_another_server() {
    let id = tunnel_id();
    let url = |ep: &str| format!("relay://127.0.0.1:0?entryPoint={ep}&tunnel=app.local:{id}");
    let first = Server::start(&["--threads", "2", "-L", &url("127.0.0.1:0")], 1);
    first.proc.wait_for("async runtime started threads=2");
    let port = first.entrypoints[0];
    let (ok, out) = tunnel_tests::run_to_exit("tunnel-server", &["--threads", "2", "-L", &url(&port.to_string())]);
    assert!(!ok, "a second server took the port: {out}");
    assert!(out.contains(&format!("cannot listen on entrypoint {port}")), "{out}");
    assert!(out.contains("Address already in use"), "{out}");
    assert!(std::net::TcpListener::bind(port).is_err(), "another listener took the port");
    // The first server still answers its visitors (no agent yet: 502).
    let (status, body) = http_get(port, "app.local", "/");
    assert_eq!(status, 502, "{body}");
}
