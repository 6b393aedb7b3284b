//! A real DNS server for UDP tests: `dnsmasq` on a free loopback port answering fixed host
//! records, and `dig` to ask it (or anything that carries its datagrams).

use std::net::UdpSocket;
use std::process::Command;

use crate::{poll_until, External};

/// A running `dnsmasq`, killed when dropped.
pub struct Dnsmasq {
    /// Its UDP (and TCP) port on 127.0.0.1.
    pub port: u16,
    _proc: External,
}

impl Dnsmasq {
    /// Starts dnsmasq answering each `(name, IPv4 address)` record, and waits until it answers
    /// the first.
    pub fn start(records: &[(&str, &str)]) -> Dnsmasq {
        let port = free_tcp_udp_port();
        let mut c = Command::new("dnsmasq");
        c.args(["--no-daemon", "--bind-interfaces", "--listen-address=127.0.0.1", "--no-resolv", "--no-hosts"])
            .args(["--user=root", "--pid-file="])
            .arg(format!("--port={port}"));
        for (name, addr) in records {
            c.arg(format!("--host-record={name},{addr}"));
        }
        let proc = External::start(c);
        let (name, addr) = records.first().expect("at least one record");
        poll_until("dnsmasq", || dig(port, name) == *addr);
        Dnsmasq { port, _proc: proc }
    }
}

/// `dig +short NAME` at 127.0.0.1:`port`, one try of 5 s; the answer, trimmed (empty when
/// none came).
pub fn dig(port: u16, name: &str) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+short", "+tries=1", "+timeout=5", name])
        .output()
        .expect("dig (dnsutils) must be installed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A loopback port free for both TCP and UDP (dnsmasq and iperf3 use one number for both).
pub fn free_tcp_udp_port() -> u16 {
    loop {
        let (tcp, addr) = crate::listener();
        if UdpSocket::bind(addr).is_ok() {
            drop(tcp);
            return addr.port();
        }
    }
}
