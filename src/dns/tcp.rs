//! DNS over TCP (RFC 1035 §4.2.2, RFC 7766): two-byte length-prefixed
//! messages, answered in order on each connection.
//!
//! Bounded like the UDP path: a cap on open connections shared by every
//! listener (a new connection over the cap is closed at once, so a flood of
//! idle connections cannot take file descriptors from the HTTP side), and
//! one deadline for waiting on the next query, reading a query's bytes and
//! writing a response (slow senders and clients that never read are cut).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::server::Handler;

/// Limits of the TCP listeners.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Open connections over all listeners.
    pub max_connections: usize,
    /// Idle, read and write deadline.
    pub idle_timeout: Duration,
}

/// Accepts connections on `listener` until `stop` changes; each connection
/// holds one of `permits` while it is open.
pub(crate) async fn serve(
    listener: TcpListener,
    handler: Arc<Handler>,
    permits: Arc<Semaphore>,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    let refused = |src| {
        handler.metrics().dns_tcp_refused.inc();
        tracing::debug!(%src, "DNS TCP connection cap reached: closed");
    };
    while let Some((stream, src, permit)) =
        crate::accept::next_capped(&listener, &permits, &mut stop, refused).await
    {
        while conns.try_join_next().is_some() {}
        let handler = handler.clone();
        conns.spawn(async move {
            connection(stream, src, &handler, idle).await;
            drop(permit);
        });
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

/// Serves one connection until the client closes it, a deadline passes or
/// a message cannot be answered (not a query, or undecodable without a
/// query header). Pipelined queries that arrive together are answered
/// together, with one write.
async fn connection(mut s: TcpStream, src: SocketAddr, handler: &Handler, idle: Duration) {
    // Allocated once per connection: received bytes, one response, the responses to send.
    let mut inbuf: Vec<u8> = Vec::with_capacity(4096);
    let mut resp = vec![0u8; usize::from(u16::MAX)];
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    // When the oldest unanswered byte arrived (a query must be complete within `idle`).
    let mut partial_since: Option<tokio::time::Instant> = None;
    loop {
        let mut used = 0;
        while let Some(msg) = frame(inbuf.get(used..).unwrap_or_default()) {
            let Some(n) = handler.answer_tcp_into(msg, src, &mut resp) else {
                // Flush what was answered before closing.
                let _ = tokio::time::timeout(idle, s.write_all(&out)).await;
                return;
            };
            let (Ok(len), Some(body)) = (u16::try_from(n), resp.get(..n)) else {
                return;
            };
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(body);
            used += 2 + msg.len();
        }
        inbuf.drain(..used);
        if !out.is_empty() {
            match tokio::time::timeout(idle, s.write_all(&out)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::debug!(%src, "DNS TCP client does not read: closed");
                    return;
                }
            }
            out.clear();
        }
        let now = tokio::time::Instant::now();
        partial_since = if inbuf.is_empty() {
            None
        } else {
            Some(partial_since.unwrap_or(now))
        };
        let deadline = partial_since.unwrap_or(now) + idle;
        match tokio::time::timeout_at(deadline, s.read_buf(&mut inbuf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) if partial_since.is_some() => {
                tracing::debug!(%src, "DNS TCP query not received in time: closed");
                return;
            }
            Err(_) => {
                tracing::trace!(%src, "DNS TCP idle timeout");
                return;
            }
        }
    }
}

/// The first complete length-prefixed message in `buf`, without its prefix.
fn frame(buf: &[u8]) -> Option<&[u8]> {
    let len = usize::from(u16::from_be_bytes([*buf.first()?, *buf.get(1)?]));
    buf.get(2..2 + len)
}
