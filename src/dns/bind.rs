//! Binding DNS listeners without sharing a port by accident.
//!
//! UDP uses one `SO_REUSEPORT` socket per UDP thread, and a reuse-port group
//! accepts any socket of the same user that also sets the option: a second
//! server on the same address would silently take part of the queries. So
//! an address is claimed first with sockets that do not set it: the TCP
//! listener (kept), then a plain UDP socket on the same port (closed just
//! before the group is bound). Either fails with "address in use" when the
//! address is already served, by p2pcdn or anything else; a port-0 address
//! retries on another port.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Attempts at finding a port free for both TCP and UDP (port 0 only).
const PORT_TRIES: usize = 32;

fn udp_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Restarts may bind over TIME_WAIT connections; never SO_REUSEPORT.
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

fn in_use(addr: SocketAddr, proto: &str, e: &io::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("{addr} ({proto}): address in use, another process serves it ({e})"),
    )
}

/// Claims `want` for DNS: a TCP listener and `udp_sockets` UDP sockets in a
/// reuse-port group of their own, all on one port (port 0 picks a free one).
pub(crate) fn claim(
    want: SocketAddr,
    udp_sockets: usize,
) -> io::Result<(std::net::TcpListener, Vec<UdpSocket>)> {
    let mut last = None;
    for _ in 0..PORT_TRIES {
        let tcp = match tcp_listener(want) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(in_use(want, "TCP", &e)),
            Err(e) => return Err(e),
        };
        let addr = tcp.local_addr()?;
        let group = udp_socket(addr, false).and_then(|probe| {
            drop(probe);
            (0..udp_sockets.max(1))
                .map(|_| udp_socket(addr, true))
                .collect::<io::Result<Vec<_>>>()
        });
        match group {
            Ok(g) => return Ok((tcp, g)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && want.port() == 0 => last = Some(e),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(in_use(addr, "UDP", &e)),
            Err(e) => return Err(e),
        }
    }
    Err(last.map_or_else(
        || io::Error::other("no port free for both UDP and TCP"),
        |e| in_use(want, "UDP", &e),
    ))
}
