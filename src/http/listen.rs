//! Accept loops for plain HTTP and HTTPS: TLS handshake with a timeout,
//! HTTP/1.1 and HTTP/2 via hyper-util's auto builder, header-read timeout,
//! a connection limit, and graceful shutdown. Every accepted connection is
//! wrapped in [`Sampled`] so its smoothed RTT reaches the client RTT
//! aggregates (see [`super::rtt`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::rtt::{ClientRtt, Sampled};

/// Facts about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Peer address.
    pub peer: SocketAddr,
    /// True for HTTPS.
    pub tls: bool,
    /// SNI name sent by the client, lowercased.
    pub sni: Option<String>,
}

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Maximum concurrent connections per listener.
    pub max_connections: usize,
    /// TLS handshake deadline.
    pub handshake_timeout: Duration,
    /// Deadline to receive request headers (slowloris guard).
    pub header_timeout: Duration,
    /// Close a connection with no bytes moving for this long.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Live connection counter (for load reports).
#[derive(Debug, Default)]
pub struct ConnCounter(AtomicU64);

impl ConnCounter {
    /// Connections open now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct ConnGuard(Arc<ConnCounter>);
impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Wraps a connection's I/O and records when bytes last moved.
struct Activity<T> {
    inner: T,
    last: Arc<AtomicU64>,
    epoch: std::time::Instant,
}

impl<T> Activity<T> {
    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Activity<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Runs a connection future until it ends or no bytes moved for `idle`.
async fn with_idle_timeout<F: std::future::Future>(
    conn: F,
    last: Arc<AtomicU64>,
    epoch: std::time::Instant,
    idle: Duration,
) {
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(Duration::from_millis(250).min(idle));
    loop {
        tokio::select! {
            _ = &mut conn => return,
            _ = tick.tick() => {
                let now = epoch.elapsed().as_millis() as u64;
                if now.saturating_sub(last.load(Ordering::Relaxed)) > idle.as_millis() as u64 {
                    tracing::debug!("closing idle connection");
                    return;
                }
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown` turns true, sampling each
/// connection's RTT into `rtt`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    counter: Arc<ConnCounter>,
    rtt: Arc<ClientRtt>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refused = |peer| tracing::warn!(%peer, "connection limit reached; dropping connection");
    while let Some((stream, peer, permit)) =
        crate::accept::next_capped(&listener, &permits, &mut shutdown, refused).await
    {
        let stream = Sampled::new(stream, peer.ip(), rtt.clone());
        let app = app.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        counter.0.fetch_add(1, Ordering::Relaxed);
        let guard = ConnGuard(counter.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _guard = guard;
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(64 * 1024);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(256)
                .max_header_list_size(64 * 1024)
                .keep_alive_interval(Some(Duration::from_secs(30)));
            let Some(acceptor) = tls else {
                let info = ConnInfo {
                    peer,
                    tls: false,
                    sni: None,
                };
                serve_conn(stream, info, app, &builder, watcher, limits.idle_timeout).await;
                return;
            };
            let tls_stream =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let sni = tls_stream
                .get_ref()
                .1
                .server_name()
                .map(str::to_ascii_lowercase);
            let info = ConnInfo {
                peer,
                tls: true,
                sni,
            };
            serve_conn(
                tls_stream,
                info,
                app,
                &builder,
                watcher,
                limits.idle_timeout,
            )
            .await;
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("some HTTP connections did not finish within 5 s of shutdown");
    }
}

/// Serves HTTP/1.1 or HTTP/2 on one accepted (and, for HTTPS, handshaken)
/// connection until it ends, goes idle for `idle`, or shutdown drains it.
async fn serve_conn<I>(
    io: I,
    info: ConnInfo,
    app: Router,
    builder: &Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    idle: Duration,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let epoch = std::time::Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let io = Activity {
        inner: io,
        last: last.clone(),
        epoch,
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), with_info(app, info));
    with_idle_timeout(watcher.watch(conn.into_owned()), last, epoch, idle).await;
}

/// Adds [`ConnInfo`] to each request, then runs the router.
#[derive(Clone)]
struct WithInfo {
    app: Router,
    info: ConnInfo,
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for WithInfo {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = tower::util::Oneshot<Router, http::Request<hyper::body::Incoming>>;

    fn call(&self, mut req: http::Request<hyper::body::Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.info.clone());
        self.app.clone().oneshot(req)
    }
}

fn with_info(app: Router, info: ConnInfo) -> WithInfo {
    WithInfo { app, info }
}
