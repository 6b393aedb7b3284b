//! A lossy link between two network namespaces made for one test: `server` (192.0.2.1/24) and
//! `agent` (192.0.2.2/24, TEST-NET-1), joined by a veth pair, with nftables in the agent's
//! namespace dropping a share of the TCP and UDP packets crossing the veth, both ways (this
//! kernel has no `tc netem`).
//!
//! Neither address exists outside these namespaces: this machine's own uplink may use
//! 192.0.2.0/24 (it does here: eth0 is 192.0.2.2/24, its gateway 192.0.2.1), so an address of
//! that range in the test's own namespace would hijack the route to the gateway. Parallel runs
//! do not collide either: each link has namespaces of its own, named after the PID.
//! Everything is deleted when the [`LossyLink`] is dropped, pass or fail.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The server side's address, in the `server` namespace.
pub const SERVER_IP: &str = "192.0.2.1";
const AGENT_IP: &str = "192.0.2.2";
/// The veth ends (names are per namespace, so fixed names do not collide).
const SERVER_VETH: &str = "lossy-s";
const AGENT_VETH: &str = "lossy-a";

pub struct LossyLink {
    /// Namespace of the server side.
    pub server: String,
    /// Namespace of the agent side, where packets are dropped.
    pub agent: String,
}

fn run(what: &str, cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(out.status.success(), "{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    out
}

fn ip(args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    cmd
}

/// `ip netns add NAME`; fails the test, with the reason, when namespaces cannot be created.
fn add_namespace(name: &str) {
    match ip(&["netns", "add", name]).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`ip netns add {name}` failed: {}; the lossy-link tests need root and iproute2 (CI runs as root)",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("cannot run `ip netns add`: {e}; the lossy-link tests need iproute2 (CI installs it)"),
    }
}

impl LossyLink {
    /// Creates both namespaces and the link, dropping `percent`% of TCP and UDP packets.
    pub fn create(percent: u32) -> LossyLink {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let tag = format!("tunnel-ha-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let link = LossyLink { server: format!("{tag}-s"), agent: format!("{tag}-a") };
        add_namespace(&link.server);
        // From here on, Drop deletes whatever was made (deleting a missing namespace is a no-op).
        add_namespace(&link.agent);
        let (s, a) = (link.server.as_str(), link.agent.as_str());
        run(
            "ip link add (veth)",
            &mut ip(&["-n", s, "link", "add", SERVER_VETH, "type", "veth", "peer", "name", AGENT_VETH, "netns", a]),
        );
        for (ns, dev, addr) in [(s, SERVER_VETH, SERVER_IP), (a, AGENT_VETH, AGENT_IP)] {
            run("ip addr add", &mut ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]));
            run("ip link set up", &mut ip(&["-n", ns, "link", "set", dev, "up"]));
            run("ip link set lo up", &mut ip(&["-n", ns, "link", "set", "lo", "up"]));
            // One wire-sized packet per segment: without this, GSO hands nftables 64 KiB
            // super-packets and a drop loses dozens of segments at once.
            run(
                "ip link set gso",
                &mut ip(&["-n", ns, "link", "set", dev, "gso_max_segs", "1", "gro_max_size", "1500"]),
            );
        }
        link.drop_packets(percent);
        link
    }

    /// Loads the nftables table `inet chaos` in the agent's namespace: a random `percent`% of
    /// the TCP and UDP packets leaving or entering through the veth are dropped and counted.
    fn drop_packets(&self, percent: u32) {
        let rule = format!("meta l4proto {{ tcp, udp }} numgen random mod 100 < {percent} counter drop");
        let ruleset = format!(
            "table inet chaos {{\n\
             chain out {{ type filter hook output priority 0; oifname \"{AGENT_VETH}\" {rule}; }}\n\
             chain in {{ type filter hook input priority 0; iifname \"{AGENT_VETH}\" {rule}; }}\n}}\n"
        );
        let mut child = self
            .command("agent", Path::new("nft"))
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run ip netns exec nft: {e}"));
        child.stdin.take().unwrap().write_all(ruleset.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft failed ({}): {}; the lossy-link tests need nftables (CI installs it)\n{ruleset}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        assert_eq!(self.dropped_packets(), 0, "fresh loss rules have dropped nothing yet");
    }

    /// Packets dropped so far by the loss rules (the sum of their counters).
    pub fn dropped_packets(&self) -> u64 {
        let out =
            run("nft list table", self.command("agent", Path::new("nft")).args(["list", "table", "inet", "chaos"]));
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        let words: Vec<&str> = listed.split_whitespace().collect();
        words.windows(2).filter(|w| w[0] == "packets").filter_map(|w| w[1].parse::<u64>().ok()).sum()
    }

    /// A command running `program` in the `side` ("server" or "agent") namespace; `ip netns
    /// exec` execs it in place, so the child's PID is the program's.
    pub fn command(&self, side: &str, program: &Path) -> Command {
        let ns = match side {
            "server" => &self.server,
            "agent" => &self.agent,
            other => panic!("no {other} side"),
        };
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }
}

impl Drop for LossyLink {
    fn drop(&mut self) {
        let quiet = |mut cmd: Command| {
            let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        quiet(ip(&["netns", "exec", &self.agent, "nft", "delete", "table", "inet", "chaos"]));
        // Deleting a namespace deletes its end of the veth, and with it the pair.
        quiet(ip(&["netns", "del", &self.agent]));
        quiet(ip(&["netns", "del", &self.server]));
    }
}
