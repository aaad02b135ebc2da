//! Client RTT sampling: the kernel's smoothed RTT (`TCP_INFO`, `tcpi_rtt`)
//! of each HTTP(S) client connection, folded into the shared per-network
//! [`Aggregator`] that the node's signed report reads.
//!
//! When: once per connection, at the first of
//! - the first read or write [`SAMPLE_AFTER`] after the accept, so that a
//!   long-lived (keep-alive, HTTP/2) connection counts while it is open, or
//! - the end of the connection (the [`Sampled`] wrapper is dropped while
//!   the socket is still open), which is when short connections are sampled.
//!
//! The value is real from the first moment: on a passive open the kernel
//! takes an RTT sample from SYN-ACK → ACK, and every ACK of the TLS
//! handshake and of response data refines it, so a sample at the end of a
//! connection is smoothed over the whole exchange. A connection with no
//! measurement yet (`tcpi_rtt` 0, e.g. the SYN-ACK was retransmitted and
//! nothing was acknowledged since) is counted as "unavailable" and skipped.
//!
//! Which: every connection the HTTP and HTTPS listeners accept, federation
//! peers included. At the TCP layer a peer pulling blobs is a client like
//! any other; its network's RTT is true, and peers are few networks among
//! the [`crate::latency::MAX_NETWORKS`] held.
//!
//! Failing `getsockopt` is never an error: the sample is skipped.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::catalog::unix_now;
use crate::latency::{Aggregator, NetRtt};
use crate::metrics::Metrics;

/// A connection still open this long after the accept is sampled at its
/// next read or write.
pub const SAMPLE_AFTER: Duration = Duration::from_secs(10);

/// The instance's client RTT aggregates, shared by the listeners (writers)
/// and the report builder (reader).
#[derive(Debug)]
pub struct ClientRtt {
    agg: Mutex<Aggregator>,
    metrics: Arc<Metrics>,
}

impl ClientRtt {
    /// Empty aggregates, counting samples in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            agg: Mutex::new(Aggregator::new()),
            metrics,
        }
    }

    fn agg(&self) -> std::sync::MutexGuard<'_, Aggregator> {
        // A panic elsewhere cannot leave the aggregates inconsistent in a
        // way that matters more than losing them.
        self.agg.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Folds in one connection's smoothed RTT, µs (`None` or 0: unavailable).
    pub fn record(&self, ip: IpAddr, srtt_us: Option<u32>) {
        let Some(us) = srtt_us.filter(|us| *us > 0) else {
            Metrics::count(&self.metrics.client_rtt_samples, "unavailable");
            return;
        };
        Metrics::count(&self.metrics.client_rtt_samples, "ok");
        self.metrics.client_rtt_seconds.observe(f64::from(us) / 1e6);
        self.agg().record(ip, us, unix_now());
    }

    /// The reportable aggregates now (expired networks are dropped first).
    pub fn snapshot(&self) -> Vec<NetRtt> {
        let now = unix_now();
        let snap = {
            let mut agg = self.agg();
            agg.expire(now);
            agg.snapshot(now)
        };
        self.metrics
            .client_rtt_networks
            .set(i64::try_from(snap.len()).unwrap_or(i64::MAX));
        snap
    }
}

/// The smoothed RTT of `stream` in µs, as the kernel has it now.
#[cfg(target_os = "linux")]
pub fn srtt_us(stream: &TcpStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>()).ok()?;
    // SAFETY: the descriptor is a live socket borrowed from `stream` for the
    // call; `info` points to `len` writable bytes, of which the kernel
    // writes at most `len` and reports how many in `len`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let need = std::mem::offset_of!(libc::tcp_info, tcpi_rtt) + std::mem::size_of::<u32>();
    if rc != 0 || (len as usize) < need {
        return None;
    }
    // SAFETY: zero-initialised, then (partly) written by the kernel; every
    // field is a plain integer, so any bytes are a valid value.
    let info = unsafe { info.assume_init() };
    Some(info.tcpi_rtt)
}

/// The smoothed RTT of `stream` (not available on this platform).
#[cfg(not(target_os = "linux"))]
pub fn srtt_us(_stream: &TcpStream) -> Option<u32> {
    None
}

/// An accepted client connection that feeds its smoothed RTT to a
/// [`ClientRtt`] once (see the module docs for when).
#[derive(Debug)]
pub struct Sampled {
    stream: TcpStream,
    peer: IpAddr,
    /// Taken when the sample is.
    sink: Option<Arc<ClientRtt>>,
    due: Instant,
}

impl Sampled {
    /// Wraps `stream`, accepted from `peer`.
    pub fn new(stream: TcpStream, peer: IpAddr, sink: Arc<ClientRtt>) -> Self {
        Self {
            stream,
            peer,
            sink: Some(sink),
            due: Instant::now() + SAMPLE_AFTER,
        }
    }

    fn sample(&mut self) {
        if let Some(sink) = self.sink.take() {
            sink.record(self.peer, srtt_us(&self.stream));
        }
    }

    fn sample_if_due(&mut self) {
        if self.sink.is_some() && Instant::now() >= self.due {
            self.sample();
        }
    }
}

impl Drop for Sampled {
    fn drop(&mut self) {
        self.sample();
    }
}

impl AsyncRead for Sampled {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.sample_if_due();
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Sampled {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.sample_if_due();
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.sample_if_due();
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real loopback connection has a real smoothed RTT.
    #[tokio::test]
    async fn reads_a_real_srtt() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"ping").await.unwrap();
            let mut b = [0u8; 4];
            c.read_exact(&mut b).await.unwrap();
        });
        let (mut s, _) = l.accept().await.unwrap();
        {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(b"pong").await.unwrap();
        }
        client.await.unwrap();
        let us = srtt_us(&s);
        if cfg!(target_os = "linux") {
            let us = us.unwrap();
            assert!(us > 0 && us < 100_000, "{us} µs on loopback");
        }
    }
}
