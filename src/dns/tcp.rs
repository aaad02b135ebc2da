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
/// query header).
async fn connection(mut s: TcpStream, src: SocketAddr, handler: &Handler, idle: Duration) {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(idle, s.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::trace!(%src, "DNS TCP idle timeout");
                return;
            }
        }
        buf.resize(usize::from(u16::from_be_bytes(len)), 0);
        match tokio::time::timeout(idle, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!(%src, "DNS TCP query not received in time: closed");
                return;
            }
        }
        let Some(resp) = handler.answer_tcp(&buf, src) else {
            return;
        };
        let Ok(n) = u16::try_from(resp.len()) else {
            return;
        };
        out.clear();
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&resp);
        match tokio::time::timeout(idle, s.write_all(&out)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!(%src, "DNS TCP client does not read: closed");
                return;
            }
        }
    }
}
