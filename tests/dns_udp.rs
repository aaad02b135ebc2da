//! The UDP listener's burst thread (`dns::udp`): when a socket's queue
//! builds up (a receive comes back full), the sleeping burst thread is
//! woken and drains the queue alongside the main thread. Every query of
//! every burst is answered exactly once with its own ID, through real
//! sockets, and the wake-ups are counted in `p2pcdn_dns_udp_bursts_total`.
//! The receive thread runs with a short time slice (`dns::sched`), the
//! burst thread with the default one.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2pcdn::dns::server::DnsServer;
use p2pcdn::dns::tcp::TcpLimits;
use p2pcdn::metrics::Metrics;

/// A query for example.com A with `id` (REFUSED: the server has no zones).
fn query(id: u16) -> Vec<u8> {
    let mut q = vec![0u8; 12];
    q[0..2].copy_from_slice(&id.to_be_bytes());
    q[5] = 1;
    q.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    q
}

/// Sends `n` queries back to back from one socket, then collects the
/// answers' IDs (each must be new) until all came or a second passed.
fn burst(addr: SocketAddr, first: u16, n: u16) -> HashSet<u16> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    sock.set_recv_buffer_size(4 << 20).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let sock: UdpSocket = sock.into();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    for id in first..first + n {
        sock.send_to(&query(id), addr).unwrap();
    }
    let mut got = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 512];
    while got.len() < usize::from(n) && Instant::now() < deadline {
        if let Ok((len, _)) = sock.recv_from(&mut buf) {
            assert!(len >= 12 && buf[2] & 0x80 != 0, "not a response");
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            assert!(
                (first..first + n).contains(&id),
                "answer to another query: {id}"
            );
            assert!(got.insert(id), "answered twice: {id}");
        }
    }
    got
}

/// A server of the zoneless handler on one UDP socket of 127.0.0.1.
async fn one_socket(metrics: Arc<Metrics>) -> DnsServer {
    let limits = TcpLimits {
        max_connections: 4,
        idle_timeout: Duration::from_secs(5),
    };
    DnsServer::bind(
        common::zoneless::handler(metrics),
        &["127.0.0.1:0".parse().unwrap()],
        limits,
        1,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_wakes_the_burst_thread_and_every_query_is_answered_once() {
    let metrics = Arc::new(Metrics::new());
    // One socket: one main thread and its burst thread.
    let server = one_socket(Arc::clone(&metrics)).await;
    let addr = server.addrs[0];
    let m = Arc::clone(&metrics);
    let (bursts, rounds) = tokio::task::spawn_blocking(move || {
        let mut rounds = 0;
        // A burst of 256 datagrams sent faster than one thread answers
        // them queues up: a full batch. Bounded: at most 50 bursts.
        while m.dns_udp_bursts.get() == 0 && rounds < 50 {
            let first = (rounds * 256) as u16;
            let got = burst(addr, first, 256);
            assert_eq!(
                got.len(),
                256,
                "burst {rounds}: {} of 256 answered",
                got.len()
            );
            rounds += 1;
        }
        // And with the burst thread awake as well, nothing is lost or doubled.
        for r in 0..4u16 {
            let got = burst(addr, 60_000 + r * 1024, 1024);
            assert_eq!(
                got.len(),
                1024,
                "large burst {r}: {} of 1024 answered",
                got.len()
            );
        }
        (m.dns_udp_bursts.get(), rounds)
    })
    .await
    .unwrap();
    assert!(
        bursts > 0,
        "the burst thread was never woken in {rounds} bursts of 256"
    );
    let line = format!("p2pcdn_dns_udp_bursts_total {bursts}");
    assert!(metrics.render().contains(&line), "no {line:?} in /metrics");
    server.shutdown().await;
}

/// Whether the running kernel honours custom time slices (6.12 and later).
fn kernel_has_custom_slices() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = release.trim().split(['.', '-']);
    let major: u32 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let minor: u32 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 12)
}

/// The time slice (ns) of this process's thread named `name`, from
/// `/proc/self/task/*/sched` (`se.slice`).
fn thread_slice(name: &str) -> Option<u64> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let sched = std::fs::read_to_string(task.path().join("sched")).ok()?;
        return sched
            .lines()
            .find(|l| l.starts_with("se.slice"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse().ok());
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn the_receive_thread_runs_with_a_short_time_slice() {
    if !kernel_has_custom_slices() {
        eprintln!("kernel before 6.12: no custom time slices to check");
        return;
    }
    let server = one_socket(Arc::new(Metrics::new())).await;
    // The thread sets its slice as it starts: one answered query proves it ran.
    let addr = server.addrs[0];
    let got = tokio::task::spawn_blocking(move || burst(addr, 1, 1))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        thread_slice("dns-udp-0"),
        Some(100_000),
        "the UDP receive thread's se.slice (ns)"
    );
    let helper = thread_slice("dns-udp-0b");
    assert!(
        helper.is_some_and(|s| s != 100_000),
        "the burst helper keeps the default slice: {helper:?}"
    );
    server.shutdown().await;
}
