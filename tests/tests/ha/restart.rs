//! The server going away: killed and restarted on the same port, or draining on SIGTERM.

use std::net::TcpStream;
use std::time::Duration;

use tunnel_tests::{agent, origin, read_until_close, tunnel_id, Server};

use crate::common::{
    agent_toml, fetch, log_time, origin_name, random_sha256, report, source_on, toml_agent, Download, End, BIG,
};

#[test]
fn agent_rejoins_a_server_restarted_on_the_same_port_without_restarting() {
    let id = tunnel_id();
    let web = origin::http("A");
    let mut first =
        Server::start(&["-L", &format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0&tunnel=app.local:{id}")], 1);
    let port = first.relay.port();
    let toml = agent_toml(first.relay, &id, "backoffBase = \"100ms\"\nbackoffMax = \"1s\"", &[("", web)]);
    let (mut a, _dir) = toml_agent(&first, &toml, 2);
    assert_eq!(origin_name(&fetch(first.entrypoints[0], "app.local").unwrap()), "A");

    first.proc.signal("KILL");
    assert_eq!(first.proc.wait_exit(), None, "the server was killed");
    a.wait_for("session lost");
    // At least one attempt against the dead port fails before the new server exists.
    a.wait_for("cannot join tunnel");

    let relay = format!("relay://127.0.0.1:{port}?entryPoint=127.0.0.1:0&tunnel=app.local:{id}");
    let second = Server::start(&["-L", &relay], 1);
    assert_eq!(second.relay.port(), port, "the new server listens on the old relay port");
    let rejoined = a.wait_for_nth("session established", 4);
    second.proc.wait_for_nth("agent joined", 2);
    report(
        "server restart (relay listening) to the agent's second session",
        log_time(&second.proc.wait_for("relay listening")),
        log_time(&rejoined),
    );
    assert!(a.is_running(), "the agent never exits because the server is down");
    let body = fetch(second.entrypoints[0], "app.local").unwrap_or_else(|e| panic!("through the new server: {e}"));
    assert_eq!(origin_name(&body), "A", "{body}");
}

const SEED: u64 = 0x7e57_da7a;

#[test]
fn sigterm_on_the_server_finishes_a_download_in_flight_and_refuses_new_visitors() {
    let id = tunnel_id();
    let source = source_on("127.0.0.1:0", SEED, BIG);
    let url = format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0/big.local&tunnel=big.local:{id}&gracePeriod=25s");
    let mut server = Server::start(&["-L", &url], 1);
    let ep = server.entrypoints[0];
    let a = agent(&server, &[&format!("rtcp://:0/{source}")], &id, "", 2);

    let mut download = Download::start(ep);
    download.read_at_least(1 << 20);
    server.proc.signal("TERM");
    server.proc.wait_for("shutting down");

    // A visitor after the TERM: refused, or closed at once without a byte.
    match TcpStream::connect(ep) {
        Err(e) => eprintln!("new visitor refused: {e}"),
        Ok(mut late) => {
            let (got, closed) = read_until_close(&mut late, Duration::from_secs(10));
            assert!(got.is_empty(), "a visitor after the TERM was served {} bytes", got.len());
            assert!(closed, "a visitor after the TERM was neither refused nor closed");
        }
    }

    match download.finish() {
        End::Eof(n, hash) => {
            assert_eq!(n, BIG, "bytes of the download in flight at the TERM");
            assert_eq!(hash, random_sha256(SEED, BIG), "the download in flight at the TERM differs from the origin's");
        }
        other => panic!("the download in flight at the TERM did not finish: {other:?}\n{}", server.proc.output()),
    }
    a.wait_for("server is going away: replacing the session while it drains");
    assert_eq!(server.proc.wait_exit(), Some(0), "the server exits 0 once drained:\n{}", server.proc.output());
}
