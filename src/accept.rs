//! The accept step shared by the HTTP(S) and DNS-over-TCP listeners: wait
//! for a connection or shutdown, back off on accept errors (EMFILE and
//! friends) instead of spinning, and close a connection at once when the
//! listener's connection cap is reached.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// The next connection under the cap, with the permit it holds while open
/// (TCP_NODELAY set), or None once `stop` changes. `on_refused` is called
/// for each connection closed because every permit was taken.
pub async fn next_capped(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    stop: &mut watch::Receiver<bool>,
    mut on_refused: impl FnMut(SocketAddr),
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return None,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            on_refused(peer);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        return Some((stream, peer, permit));
    }
}
