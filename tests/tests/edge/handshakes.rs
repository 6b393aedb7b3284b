//! 6. Relay handshake slots: 2000 idle connections from one address cannot keep a client from
//!    another address out (handshakes are capped per source address, and a connection that
//!    sends nothing gives its slot back early); nor can 1280 stalled ones from 80 addresses in
//!    20 networks (handshakes are capped per /24 too, and a full pool gives the largest
//!    holder's oldest place to a newcomer from a network holding fewer).

use std::net::SocketAddr;

use tokio::net::TcpSocket;
use tunnel_tests::{access, agent, origin, tunnel_id, Server};

use super::runtime;

const IDLE: usize = 2000;

#[test]
fn idle_connections_from_one_address_do_not_lock_others_out() {
    let id = tunnel_id();
    // A long handshake timeout: without the defences, each idle connection would hold its
    // slot for a minute, longer than the test waits for the access client.
    let url = format!("relay://127.0.0.1:0?tunnel=ok.local:{id}&handshakeTimeout=60s");
    let server = Server::start(&["-L", &url], 0);
    let relay: SocketAddr = server.relay;
    let rt = runtime();
    let idle = rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..IDLE {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            if let Ok(conn) = socket.connect(relay).await {
                held.push(conn);
            }
        }
        held
    });
    assert!(idle.len() >= IDLE / 2, "the attacker holds its connections: {}", idle.len());
    // A legitimate agent and access client from 127.0.0.1 get in while the idle ones are held.
    let _agent = agent(&server, &[&format!("rtcp://:0/{}", origin::echo())], &id, "", 1);
    let (access, _) = access(&server, &["tcp://127.0.0.1:0/ok.local"], &id, "");
    assert!(access.logged("session established"));
    drop(idle);
}

/// Networks the attacker holds handshakes from, addresses in each, connections per address.
const NETWORKS: usize = 20;
const ADDRESSES: usize = 4;
const PER_ADDRESS: usize = 16;

#[test]
fn many_addresses_of_many_networks_holding_handshakes_do_not_lock_a_newcomer_out() {
    let id = tunnel_id();
    let url = format!("relay://127.0.0.1:0?tunnel=ok.local:{id}&handshakeTimeout=60s");
    let server = Server::start(&["-L", &url], 0);
    let relay: SocketAddr = server.relay;
    let rt = runtime();
    // 20 networks (127.1.N.0/24) x 4 addresses x 16 connections, each sending one byte and
    // then nothing: more than the 1024 places of the pool.
    let held = rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut held = Vec::new();
        for network in 0..NETWORKS {
            for address in 1..=ADDRESSES {
                for _ in 0..PER_ADDRESS {
                    let socket = TcpSocket::new_v4().unwrap();
                    socket.bind(format!("127.1.{network}.{address}:0").parse().unwrap()).unwrap();
                    if let Ok(mut conn) = socket.connect(relay).await {
                        if conn.write_all(&[0]).await.is_ok() {
                            held.push(conn);
                        }
                    }
                }
            }
        }
        held
    });
    assert!(held.len() >= 1024, "the attacker's connections are open: {}", held.len());
    // An access client from a network that holds nothing gets in while they are held.
    let (access, _) = access(&server, &["tcp://127.0.0.1:0/ok.local"], &id, "");
    assert!(access.logged("session established"));
    drop(held);
}
