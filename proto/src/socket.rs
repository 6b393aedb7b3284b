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
    TcpListener::from_std(bound_listener(addr, reuse)?)
}

/// `n` TCP listeners on `addr`, one for each of a process's threads: in one `SO_REUSEPORT`
/// group, where the kernel spreads new connections over them by their address pair and wakes
/// only the thread whose listener has one. Not yet registered with a runtime: each is made a
/// tokio listener on its own thread.
///
/// Sharing the port within the process does not share it with others: without `reuse`, an
/// address another socket holds is refused as a plain bind would be (a probe bind without the
/// option comes first), and another process cannot join the group either, since its own probe
/// finds the port taken. A port of 0 is picked once, by the first listener, and the kernel
/// never picks one that a group holds.
///
/// One listener when `n` is 1, and on systems other than Linux and Android, where the option
/// does not spread connections.
pub fn tcp_listener_group(addr: SocketAddr, reuse: bool, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if n <= 1 || !cfg!(any(target_os = "linux", target_os = "android")) {
        return Ok(vec![bound_listener(addr, reuse)?]);
    }
    if !reuse && addr.port() != 0 {
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        dual_stack(&probe, addr);
        #[cfg(unix)]
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into())?;
    }
    let first = bound_listener(addr, true)?;
    let addr = first.local_addr()?;
    let mut group = vec![first];
    for _ in 1..n {
        group.push(bound_listener(addr, true)?);
    }
    Ok(group)
}

fn bound_listener(addr: SocketAddr, reuse: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    dual_stack(&socket, addr);
    // As std and tokio do on Unix: a restarted server can bind while old connections linger.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    set_reuse_port(&socket, reuse)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
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

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_group_shares_its_port_within_the_process_only() {
        let group = tcp_listener_group("127.0.0.1:0".parse().unwrap(), false, 3).unwrap();
        assert_eq!(group.len(), 3);
        let addr = group[0].local_addr().unwrap();
        assert!(group.iter().all(|l| l.local_addr().unwrap() == addr));
        // Neither a plain listener nor a second group (another process) may take the port.
        assert!(tcp_listener(addr, false).is_err());
        let err = tcp_listener_group(addr, false, 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        // A group on a port someone else holds is refused too.
        let plain = tcp_listener("127.0.0.1:0".parse().unwrap(), false).unwrap();
        assert!(tcp_listener_group(plain.local_addr().unwrap(), false, 2).is_err());
        // With reuse, sharing with other processes is what was asked for.
        let shared = tcp_listener_group("127.0.0.1:0".parse().unwrap(), true, 2).unwrap();
        let shared_addr = shared[0].local_addr().unwrap();
        assert_eq!(tcp_listener_group(shared_addr, true, 2).unwrap().len(), 2);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_group_spreads_connections_over_its_listeners() {
        let group = tcp_listener_group("127.0.0.1:0".parse().unwrap(), false, 2).unwrap();
        let addr = group[0].local_addr().unwrap();
        let clients: Vec<_> = (0..64).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        // Each connection waits in one listener's queue; collect them all (the listeners are
        // non-blocking, so a pass stops at an empty queue).
        let mut accepted = vec![0usize; group.len()];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while accepted.iter().sum::<usize>() < clients.len() && std::time::Instant::now() < deadline {
            for (n, l) in accepted.iter_mut().zip(&group) {
                *n += std::iter::from_fn(|| l.accept().ok()).count();
            }
        }
        assert_eq!(accepted.iter().sum::<usize>(), clients.len());
        assert!(accepted.iter().all(|&n| n > 0), "every listener gets connections: {accepted:?}");
    }

    #[tokio::test]
    async fn without_reuse_a_bound_port_is_refused() {
        let first = tcp_listener("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = first.local_addr().unwrap();
        assert!(tcp_listener(addr, true).is_err(), "joining a port its first owner did not share");
    }
}
