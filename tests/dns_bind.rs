//! DNS listeners never share a port: a second server on an address already
//! served fails with "address in use" (also when the first one, or any
//! other program, holds the port in a SO_REUSEPORT group), and servers on
//! port 0 always get ports of their own.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use p2pcdn::dns::server::{DnsServer, Handler};
use p2pcdn::dns::tcp::TcpLimits;

fn handler() -> Handler {
    common::zoneless::handler(Default::default())
}

const LIMITS: TcpLimits = TcpLimits {
    max_connections: 16,
    idle_timeout: Duration::from_secs(5),
};

async fn bind(addr: SocketAddr) -> std::io::Result<DnsServer> {
    // Two UDP sockets per address: the reuse-port group is what must not
    // be joined by a second server.
    DnsServer::bind(handler(), &[addr], LIMITS, 2).await
}

/// Every query to `addr` is answered (REFUSED: no zones), none lost to another socket.
async fn all_answered(addr: SocketAddr, n: u16) -> usize {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut got = 0;
    for id in 0..n {
        let mut q = vec![0u8; 12];
        q[0..2].copy_from_slice(&id.to_be_bytes());
        q[5] = 1;
        q.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        sock.send_to(&q, addr).await.unwrap();
        let mut buf = [0u8; 512];
        if let Ok(Ok((len, _))) =
            tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf)).await
        {
            if len >= 12 && buf[0..2] == id.to_be_bytes() {
                got += 1;
            }
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn a_served_address_cannot_be_bound_again() {
    let first = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = first.addrs[0];
    let err = bind(addr)
        .await
        .err()
        .expect("second server on a served address");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    assert!(err.to_string().contains("address in use"), "{err}");
    // Neither can a plain UDP socket (the group is ours alone)...
    assert!(std::net::UdpSocket::bind(addr).is_err());
    // ...and the first server still answers every query.
    assert_eq!(all_answered(addr, 200).await, 200);
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_held_in_someone_elses_reuseport_group_is_refused() {
    use socket2::{Domain, Protocol, Socket, Type};
    // Another program's SO_REUSEPORT socket (the flaky-test scenario: two
    // test servers sharing a port they bound as port 0).
    let other = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    other.set_reuse_port(true).unwrap();
    other
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let addr = other.local_addr().unwrap().as_socket().unwrap();
    let err = bind(addr)
        .await
        .err()
        .expect("bind over a reuse-port group");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_on_port_zero_get_ports_of_their_own() {
    let mut servers = vec![];
    let mut ports = HashSet::new();
    for _ in 0..20 {
        let s = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        assert!(
            ports.insert(s.addrs[0].port()),
            "port {} given twice",
            s.addrs[0].port()
        );
        servers.push(s);
    }
    for s in servers {
        assert_eq!(all_answered(s.addrs[0], 5).await, 5);
        s.shutdown().await;
    }
}
