//! UDP listener threads: one OS thread per socket, each receiving a batch of
//! datagrams with `recvmmsg`, answering them in place (no task, no channel)
//! and sending the batch of responses with one `sendmmsg`.
//!
//! Buffers and the [`Worker`] (zone snapshot per batch, first-level cache
//! of steered answers, response counts added once per batch) are
//! allocated once per thread. A thread checks its stop flag at
//! least every [`POLL`] (the socket's receive timeout).

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::server::Handler;
use super::worker::Worker;

/// Datagrams per `recvmmsg`/`sendmmsg`.
const BATCH: usize = 32;
/// Largest datagram read (larger ones are cut and then fail to parse).
const RX_SIZE: usize = 4096;
/// How often an idle thread checks the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Starts one thread per socket; they run until `stop` is set.
pub(crate) fn spawn(
    handler: &Arc<Handler>,
    socks: Vec<UdpSocket>,
    stop: &Arc<AtomicBool>,
) -> io::Result<Vec<std::thread::JoinHandle<()>>> {
    let mut threads = vec![];
    for (i, sock) in socks.into_iter().enumerate() {
        sock.set_nonblocking(false)?;
        sock.set_read_timeout(Some(POLL))?;
        let handler = Arc::clone(handler);
        let stop = Arc::clone(stop);
        threads.push(
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || serve(&handler, &sock, &stop))?,
        );
    }
    Ok(threads)
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

/// The receive/answer/send loop of one socket.
fn serve(handler: &Handler, sock: &UdpSocket, stop: &AtomicBool) {
    let fd = sock.as_raw_fd();
    let mut rx = vec![0u8; BATCH * RX_SIZE];
    let mut tx = vec![0u8; BATCH * RX_SIZE];
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut names: Vec<libc::sockaddr_storage> =
        vec![unsafe { MaybeUninit::zeroed().assume_init() }; BATCH];
    let mut rx_iov: Vec<libc::iovec> = rx
        .chunks_exact_mut(RX_SIZE)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr().cast(),
            iov_len: c.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data (pointers and integers); all-zero is valid.
    let zero_hdr: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut rx_hdr = vec![zero_hdr; BATCH];
    let mut tx_iov: Vec<libc::iovec> = vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0
        };
        BATCH
    ];
    let mut tx_hdr = vec![zero_hdr; BATCH];
    let mut worker = Worker::new();
    while !stop.load(Ordering::Relaxed) {
        for (i, h) in rx_hdr.iter_mut().enumerate() {
            h.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut rx_iov[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_len = 0;
        }
        // SAFETY: every header points at a live, exclusively borrowed name and
        // iovec, each iovec at its own RX_SIZE slice of `rx`; BATCH headers.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                rx_hdr.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
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
            continue;
        }
        let mut out = 0usize;
        worker.begin(handler);
        for i in 0..n as usize {
            let h = &rx_hdr[i];
            let Some(src) = to_socket_addr(&names[i], h.msg_hdr.msg_namelen) else {
                continue;
            };
            let len = (h.msg_len as usize).min(RX_SIZE);
            let (Some(packet), Some(slot)) = (
                rx.get(i * RX_SIZE..i * RX_SIZE + len),
                tx.get_mut(out * RX_SIZE..(out + 1) * RX_SIZE),
            ) else {
                continue;
            };
            let Some(resp_len) = handler.answer_udp_in(&mut worker, packet, src, slot) else {
                continue;
            };
            tx_iov[out] = libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: resp_len,
            };
            let th = &mut tx_hdr[out];
            th.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            th.msg_hdr.msg_namelen = rx_hdr[i].msg_hdr.msg_namelen;
            th.msg_hdr.msg_iov = &mut tx_iov[out];
            th.msg_hdr.msg_iovlen = 1;
            out += 1;
        }
        // Counted before the responses leave, so a client that has its
        // answer sees it in the metrics.
        worker.finish(handler);
        send_all(fd, &mut tx_hdr[..out]);
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
