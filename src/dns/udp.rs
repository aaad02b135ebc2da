//! UDP listener threads: per socket, one OS thread receiving a batch of
//! datagrams with `recvmmsg`, answering them in place (no task, no channel)
//! and sending the batch of responses with one `sendmmsg`, and one helper
//! thread that sleeps until a queue builds up.
//!
//! The helper ("burst lane") is woken only when the main thread's receive
//! comes back full ([`BATCH`] datagrams: more are probably waiting, e.g.
//! after the main thread waited for a core). It then drains the same
//! socket with non-blocking receives alongside the main thread until the
//! queue is empty, and sleeps again. At a steady rate a socket costs one
//! thread's wake-ups (fewest context switches per answer); when a queue
//! builds up, two cores answer it. Counted in
//! `p2pcdn_dns_udp_bursts_total`.
//!
//! The main thread asks the kernel for a short time slice
//! ([`sched::UDP_SLICE`]) so that, when a datagram wakes it onto a busy
//! core, it preempts the running task instead of waiting up to 1.4 ms for
//! that task's slice to end (see `dns::sched`). The helper keeps the
//! default slice: giving it the short one as well was no better in the
//! A/B runs (docs/BENCHMARKS.md, session 13).
//!
//! [`BATCH`] is small (8) so that the first answer of a batch does not
//! wait for many others before the `sendmmsg`, and so that a queue of
//! more than a few datagrams wakes the helper: in `bench/dns-ab.sh` A/B
//! runs at half of gdnsd's peak, one thread with 32-datagram batches had
//! a p99 of 0.59–1.37 ms, with the helper and 8-datagram batches
//! 0.50–1.10 ms (gdnsd 0.62–1.12 ms), for about 7 % more CPU per answer
//! at full load (docs/BENCHMARKS.md).
//!
//! Buffers and the [`Worker`] (zone snapshot per batch, first-level cache
//! of steered answers, response counts added once per batch) are
//! allocated once per thread. A thread checks its stop flag at
//! least every [`POLL`] (the socket's receive timeout, the helper's park).

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::sched;
use super::server::Handler;
use super::worker::Worker;

/// Datagrams per `recvmmsg`/`sendmmsg`.
const BATCH: usize = 8;
/// Largest datagram read (larger ones are cut and then fail to parse).
const RX_SIZE: usize = 4096;
/// How often an idle thread checks the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Starts two threads per socket (see the module docs); they run until
/// `stop` is set.
pub(crate) fn spawn(
    handler: &Arc<Handler>,
    socks: Vec<UdpSocket>,
    stop: &Arc<AtomicBool>,
) -> io::Result<Vec<std::thread::JoinHandle<()>>> {
    let mut threads = vec![];
    for (i, sock) in socks.into_iter().enumerate() {
        sock.set_nonblocking(false)?;
        sock.set_read_timeout(Some(POLL))?;
        let sock = Arc::new(sock);
        let awake = Arc::new(AtomicBool::new(false));
        let helper = {
            let (handler, sock, stop, awake) = (
                Arc::clone(handler),
                Arc::clone(&sock),
                Arc::clone(stop),
                Arc::clone(&awake),
            );
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}b"))
                .spawn(move || burst(&handler, &sock, &stop, &awake))?
        };
        let wake = Wake {
            thread: helper.thread().clone(),
            awake,
        };
        threads.push(helper);
        let handler = Arc::clone(handler);
        let stop = Arc::clone(stop);
        threads.push(
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || serve(&handler, &sock, &stop, &wake))?,
        );
    }
    Ok(threads)
}

/// How the main thread wakes its socket's burst helper.
struct Wake {
    thread: std::thread::Thread,
    /// Set while the helper drains (so it is woken once per burst).
    awake: Arc<AtomicBool>,
}

/// The main loop of one socket: blocking receives; a full batch wakes the
/// burst helper.
fn serve(handler: &Handler, sock: &UdpSocket, stop: &AtomicBool, wake: &Wake) {
    match sched::set_slice(sched::UDP_SLICE) {
        Ok(true) => {}
        Ok(false) => tracing::debug!("UDP thread has a non-default scheduling policy: left as is"),
        Err(e) => tracing::debug!(error = %e, "could not shorten the UDP thread's time slice"),
    }
    let mut lane = Lane::new(sock.as_raw_fd());
    while !stop.load(Ordering::Relaxed) {
        if lane.round(handler, libc::MSG_WAITFORONE) == Some(BATCH)
            && !wake.awake.swap(true, Ordering::AcqRel)
        {
            handler.metrics().dns_udp_bursts.inc();
            wake.thread.unpark();
        }
    }
    wake.thread.unpark();
}

/// The burst helper of one socket: sleeps until woken, then drains the
/// socket without blocking until a receive finds it empty.
fn burst(handler: &Handler, sock: &UdpSocket, stop: &AtomicBool, awake: &AtomicBool) {
    let mut lane = Lane::new(sock.as_raw_fd());
    while !stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(POLL);
        if !awake.load(Ordering::Acquire) {
            continue;
        }
        while lane
            .round(handler, libc::MSG_WAITFORONE | libc::MSG_DONTWAIT)
            .is_some_and(|n| n > 0)
        {}
        awake.store(false, Ordering::Release);
    }
}

/// Converts a received source address.
fn to_socket_addr(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET, length checked);
            // sockaddr_storage is large and aligned enough for it.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for AF_INET6 and sockaddr_in6.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// One thread's receive and send buffers, headers and worker.
struct Lane {
    fd: i32,
    rx: Vec<u8>,
    tx: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    rx_iov: Vec<libc::iovec>,
    rx_hdr: Vec<libc::mmsghdr>,
    tx_iov: Vec<libc::iovec>,
    tx_hdr: Vec<libc::mmsghdr>,
    worker: Worker,
}

impl Lane {
    fn new(fd: i32) -> Self {
        let mut rx = vec![0u8; BATCH * RX_SIZE];
        let rx_iov = rx
            .chunks_exact_mut(RX_SIZE)
            .map(|c| libc::iovec {
                iov_base: c.as_mut_ptr().cast(),
                iov_len: c.len(),
            })
            .collect();
        // SAFETY: mmsghdr is plain data (pointers and integers); all-zero is valid.
        let zero_hdr: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        Self {
            fd,
            rx,
            tx: vec![0u8; BATCH * RX_SIZE],
            // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
            names: vec![unsafe { MaybeUninit::zeroed().assume_init() }; BATCH],
            rx_iov,
            rx_hdr: vec![zero_hdr; BATCH],
            tx_iov: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ],
            tx_hdr: vec![zero_hdr; BATCH],
            worker: Worker::new(),
        }
    }

    /// Receives one batch (`flags` for `recvmmsg`), answers it and sends
    /// the answers. The number of datagrams received, `None` when the
    /// receive failed (timeout, empty non-blocking socket, interrupt).
    fn round(&mut self, handler: &Handler, flags: libc::c_int) -> Option<usize> {
        // The rx buffer does not move (the Vec is never resized), so the
        // iovecs built in `new` stay valid; names and headers are re-aimed
        // each round because `self` may have moved.
        for (i, h) in self.rx_hdr.iter_mut().enumerate() {
            h.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.rx_iov[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_len = 0;
        }
        // SAFETY: every header points at a live, exclusively borrowed name and
        // iovec, each iovec at its own RX_SIZE slice of `rx`; BATCH headers.
        let n = unsafe {
            libc::recvmmsg(
                self.fd,
                self.rx_hdr.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
            ) {
                tracing::debug!(error = %e, "UDP receive error");
            }
            return None;
        }
        let n = n as usize;
        let mut out = 0usize;
        self.worker.begin(handler);
        for i in 0..n {
            let h = &self.rx_hdr[i];
            let Some(src) = to_socket_addr(&self.names[i], h.msg_hdr.msg_namelen) else {
                continue;
            };
            let len = (h.msg_len as usize).min(RX_SIZE);
            let (Some(packet), Some(slot)) = (
                self.rx.get(i * RX_SIZE..i * RX_SIZE + len),
                self.tx.get_mut(out * RX_SIZE..(out + 1) * RX_SIZE),
            ) else {
                continue;
            };
            let Some(resp_len) = handler.answer_udp_in(&mut self.worker, packet, src, slot) else {
                continue;
            };
            self.tx_iov[out] = libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: resp_len,
            };
            let th = &mut self.tx_hdr[out];
            th.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            th.msg_hdr.msg_namelen = self.rx_hdr[i].msg_hdr.msg_namelen;
            th.msg_hdr.msg_iov = &mut self.tx_iov[out];
            th.msg_hdr.msg_iovlen = 1;
            out += 1;
        }
        // Counted before the responses leave, so a client that has its
        // answer sees it in the metrics.
        self.worker.finish(handler);
        send_all(self.fd, &mut self.tx_hdr[..out]);
        Some(n)
    }
}
/// Sends every message with `sendmmsg`, skipping one that fails.
fn send_all(fd: i32, hdrs: &mut [libc::mmsghdr]) {
    let mut done = 0;
    while done < hdrs.len() {
        let rest = &mut hdrs[done..];
        // SAFETY: each header points at a live destination address and an
        // iovec over an initialized slice of the send buffer; `rest.len()` headers.
        let n = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::debug!(error = %e, "UDP send error");
            // The first message failed (e.g. an unreachable destination): skip it.
            done += 1;
        } else {
            done += (n as usize).max(1);
        }
    }
}
