//! Listening sockets, optionally shared between processes with `SO_REUSEPORT`.
//!
//! With `reuse` on, several processes with the same configuration bind the same address and
//! the kernel spreads new TCP connections (and UDP flows, by their address pair) across them,
//! so each core can run its own process and one can be restarted while the others serve.
//! Every process sharing a port must set the option and run as the same user.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Pending connections the kernel queues per listener (tokio's own default).
const BACKLOG: i32 = 1024;

/// A TCP listener on `addr`; with `reuse`, shared with other processes that set it too.
/// `[::]` listens dual-stack (IPv4 too) where the system allows it.
pub fn tcp_listener(addr: SocketAddr, reuse: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    dual_stack(&socket, addr);
    // As std and tokio do on Unix: a restarted server can bind while old connections linger.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    set_reuse_port(&socket, reuse)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// A UDP socket bound to `addr`, not yet registered with the runtime; with `reuse`, shared
/// with other processes that set it too.
pub fn udp_socket(addr: SocketAddr, reuse: bool) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    dual_stack(&socket, addr);
    set_reuse_port(&socket, reuse)?;
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// On `[::]`, accepts IPv4 too (`IPV6_V6ONLY` off) whatever the system's default; where the
/// system refuses, the socket stays IPv6 only.
fn dual_stack(socket: &Socket, addr: SocketAddr) {
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        let _ = socket.set_only_v6(false);
    }
}

/// A peer address as the rest of the program sees it: an IPv4 visitor of a dual-stack
/// listener (`::ffff:192.0.2.7`) is `192.0.2.7`, so logs, budgets and headers name it once.
pub fn canonical_peer(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// Sets `SO_REUSEPORT` when asked; where the system has no such option, asking is an error
/// rather than a silently unshared port.
pub fn set_reuse_port(socket: &Socket, reuse: bool) -> io::Result<()> {
    if reuse {
        enable_reuse_port(socket)
    } else {
        Ok(())
    }
}

#[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))))]
fn enable_reuse_port(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_port(true)
}

#[cfg(not(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin")))))]
fn enable_reuse_port(_: &Socket) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "reuse (SO_REUSEPORT) is not available on this system"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_reuse_listeners_share_a_port_and_a_plain_one_does_not() {
        let first = tcp_listener("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = first.local_addr().unwrap();
        let second = tcp_listener(addr, true).expect("a second reuse listener on the same port");
        assert_eq!(second.local_addr().unwrap(), addr);
        assert!(tcp_listener(addr, false).is_err(), "a listener without reuse must not join the port");
        let udp = udp_socket("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let udp_addr = udp.local_addr().unwrap();
        udp_socket(udp_addr, true).expect("a second reuse UDP socket on the same port");
    }

    #[tokio::test]
    async fn without_reuse_a_bound_port_is_refused() {
        let first = tcp_listener("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = first.local_addr().unwrap();
        assert!(tcp_listener(addr, true).is_err(), "joining a port its first owner did not share");
    }
}
