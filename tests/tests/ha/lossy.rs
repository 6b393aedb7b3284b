//! Bad links keep transfers byte-exact: 50 ms of delay on the agent's link (chaos proxy), and
//! 2% packet loss both ways between the agent, in a network namespace, and the server and
//! origin (nftables in the namespace).

use std::time::Duration;

use tunnel_tests::chaos::ChaosProxy;
use tunnel_tests::{addr_in, bin, tunnel_id, Proc, Server, Transport};

use crate::common::{random_sha256, source_on, Download, End, BIG};
use crate::netns::{LossyLink, SERVER_IP};

const SEED: u64 = 0x1055_ba5e;

/// Downloads from `server`'s first (raw) entrypoint and checks length and sha256.
fn download_is_byte_exact(server: &Server, len: usize, what: &str) {
    let started = std::time::Instant::now();
    match Download::start(server.entrypoints[0]).finish() {
        End::Eof(n, hash) => {
            assert_eq!(n, len, "{what}: bytes downloaded");
            assert_eq!(hash, random_sha256(SEED, len), "{what}: downloaded bytes differ from the origin's");
        }
        other => panic!("{what}: the download did not finish: {other:?}"),
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("measured: {what}: {} MiB in {secs:.1} s", len >> 20);
}

/// A server, and a chaos proxy in front of its relay port, for an agent serving a source.
fn proxied_server(len: usize) -> (Server, ChaosProxy, String, std::net::SocketAddr) {
    let id = tunnel_id();
    let source = source_on("127.0.0.1:0", SEED, len);
    let url = format!("relay://127.0.0.1:0?entryPoint=127.0.0.1:0/big.local&tunnel=big.local:{id}");
    let server = Server::start(&["-L", &url], 1);
    let proxy = ChaosProxy::start(server.relay);
    (server, proxy, id, source)
}

/// Starts the agent through the proxy and waits until both sessions have joined.
fn agent_through(server: &Server, proxy: &ChaosProxy, id: &str, source: std::net::SocketAddr) -> Proc {
    let relay = format!("relay://{}?tunnel.id={id}", proxy.addr());
    let agent = Proc::start("tunnel-agent", &["-L", &format!("rtcp://:0/{source}"), "-F", &relay]);
    agent.wait_for_nth("session established", 2);
    server.proc.wait_for_nth("agent joined", 2);
    assert_eq!(proxy.connections(), 2, "the agent's sessions go through the proxy");
    agent
}

#[test]
fn a_64_mib_download_over_an_agent_link_with_50_ms_delay_is_byte_exact() {
    let (server, proxy, id, source) = proxied_server(BIG);
    // From the first byte: the session handshakes cross the delay too.
    proxy.set_delay(Duration::from_millis(50));
    let _agent = agent_through(&server, &proxy, &id, source);
    download_is_byte_exact(&server, BIG, "64 MiB over a link with 50 ms of delay each way");
}

#[test]
fn a_download_over_a_throttled_agent_link_is_byte_exact() {
    const LEN: usize = 16 << 20;
    let (server, proxy, id, source) = proxied_server(LEN);
    let _agent = agent_through(&server, &proxy, &id, source);
    proxy.set_throttle(Some(8 << 20));
    download_is_byte_exact(&server, LEN, "16 MiB over a link throttled to 8 MiB/s");
}

/// Bytes downloaded over the lossy link.
const LOSSY_LEN: usize = 32 << 20;
/// Tells this test binary, run inside a namespace, which helper to be.
const HELPER: &str = "TUNNEL_HA_HELPER";

/// Runs this test binary's [`namespace_helper`] on one side of `link` as `role`.
fn helper(link: &LossyLink, side: &str, role: &str) -> Proc {
    let exe = std::env::current_exe().expect("test executable");
    let mut cmd = link.command(side, &exe);
    cmd.args(["lossy::namespace_helper", "--exact", "--ignored", "--nocapture", "--test-threads=1"]);
    cmd.env(HELPER, role);
    Proc::start_command(&format!("helper {role:?} in the {side} namespace"), cmd)
}

/// Not a test: the lossy-link tests run this binary inside their namespaces, which this
/// process cannot reach, as the origin next to the agent (`source`) and as the visitor next
/// to the server (`fetch ADDR`).
#[test]
#[ignore = "a helper process, run inside a network namespace by the lossy-link tests"]
fn namespace_helper() {
    let role = std::env::var(HELPER).unwrap_or_else(|_| panic!("run by the lossy-link tests with {HELPER} set"));
    if role == "source" {
        let addr = source_on("127.0.0.1:0", SEED, LOSSY_LEN);
        println!("source listening addr={addr}");
        // Serves until the test kills this process.
        loop {
            std::thread::park();
        }
    }
    let addr = role.strip_prefix("fetch ").unwrap_or_else(|| panic!("unknown helper role {role:?}"));
    match Download::start(addr.parse().expect("fetch ADDR")).finish() {
        End::Eof(n, hash) => println!("fetch done bytes={n} sha256={hash}"),
        other => println!("fetch failed: {other:?}"),
    }
}

fn a_download_over_a_link_losing_2_percent_of_packets_is_byte_exact(t: Transport) {
    let link = LossyLink::create(2);
    let id = tunnel_id();
    let source = helper(&link, "agent", "source");
    let source_addr = addr_in(&source.wait_for("source listening"));
    let url = format!("relay://{SERVER_IP}:0?entryPoint=127.0.0.1:0/big.local&tunnel=big.local:{id}");
    let server = Server::start_wrapped(t, &["-L", &url], 1, |exe| link.command("server", exe));
    let mut cmd = link.command("agent", &bin("tunnel-agent"));
    cmd.args(["-L", &format!("rtcp://:0/{source_addr}"), "-F", &server.relay_url(&id, "")]);
    let agent = Proc::start_command("tunnel-agent (agent namespace)", cmd);
    agent.wait_for_nth("session established", 2);
    server.proc.wait_for_nth("agent joined", 2);

    let what = format!("{t:?}: {} MiB over a link losing 2% of packets", LOSSY_LEN >> 20);
    let started = std::time::Instant::now();
    let visitor = helper(&link, "server", &format!("fetch {}", server.entrypoints[0]));
    let done = visitor.wait_for("fetch ");
    eprintln!("measured: {what}: {:.1} s", started.elapsed().as_secs_f64());
    let want = format!("fetch done bytes={LOSSY_LEN} sha256={}", random_sha256(SEED, LOSSY_LEN));
    assert!(done.ends_with(&want), "{what}: {done}\nexpected: {want}\nserver:\n{}", server.proc.output());
    let dropped = link.dropped_packets();
    eprintln!("measured: {what}: packets dropped by the loss rules: {dropped}");
    assert!(dropped > 0, "the loss rules dropped nothing: the transfer did not cross the lossy link");
}

tunnel_tests::over_transports!(a_download_over_a_link_losing_2_percent_of_packets_is_byte_exact);
