//! The HTTPS/HTTP mirror: axum router, thin handlers, TLS and listeners.
//!
//! Handlers translate between HTTP and the catalog/store; the decisions
//! (conditional requests, ranges, path normalization) live in [`decide`].

pub mod acme;
pub mod api;
pub mod decide;
pub mod error;
pub mod file_stream;
pub mod intake;
pub mod listen;
pub mod rtt;
pub mod tls;
pub mod upload;

use std::io::SeekFrom;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::catalog::SharedCatalog;
use crate::config::PlainHttp;
use crate::sites::SiteName;
use crate::store::{BlobStore, StoreError};
use decide::{Precondition, RangeDecision};
pub use error::HttpError;
use listen::{ConnCounter, ConnInfo};

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// What is served.
    pub catalog: SharedCatalog,
    /// Where the bytes are.
    pub store: BlobStore,
    /// HTTPS port for redirects (None: no HTTPS listener).
    pub https_port: Option<u16>,
    /// This node's name (health endpoint).
    pub node_name: Arc<str>,
    /// Open connections.
    pub connections: Arc<ConnCounter>,
    /// Request and byte counters (load reports).
    pub load: Arc<crate::federation::LoadMeter>,
    /// The federation agent, when enabled.
    pub fed: Option<Arc<crate::federation::Federation>>,
    /// Admission of peer requests with bodies (`sync`, `push`): slots and
    /// byte budgets taken before the body is read.
    pub intake: Arc<intake::Intake>,
    /// Where responses are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Remote publish (None: not offered).
    pub uploads: Option<Arc<upload::UploadService>>,
}

/// The router: node API under `/.well-known/p2pcdn/v1/`, everything else is site content.
pub fn router(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .route("/.well-known/p2pcdn/v1/health", get(health))
        .route("/.well-known/p2pcdn/v1/node", get(api::node))
        .route("/.well-known/p2pcdn/{file}", get(api::owner_key))
        .route("/.well-known/p2pcdn/v1/status", get(api::status))
        .route(
            "/.well-known/p2pcdn/v1/sync",
            axum::routing::post(api::sync),
        )
        .route(
            "/.well-known/p2pcdn/v1/push",
            axum::routing::post(api::push),
        )
        .route(
            crate::federation::swim::PATH,
            axum::routing::post(api::swim),
        )
        .route("/.well-known/p2pcdn/v1/blob/{hash}", get(api::blob))
        .route(
            "/.well-known/p2pcdn/v1/have/{site}/{version}",
            get(api::have),
        )
        .route(
            crate::federation::challenge::PATH,
            axum::routing::post(acme::challenge),
        )
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::federation::wire::MAX_BUNDLE_BYTES,
        ))
        // Remote publish streams its own bodies under its own bounds.
        .route(
            "/.well-known/p2pcdn/v1/upload/{site}",
            get(upload::info).post(upload::open),
        )
        .route(
            "/.well-known/p2pcdn/v1/upload/{site}/blob/{hash}",
            axum::routing::put(upload::put_blob),
        )
        .fallback(serve_site)
        .layer(axum::middleware::map_response_with_state(
            metrics,
            count_response,
        ))
        .with_state(state)
}

/// Counts every response by status class.
async fn count_response(
    State(metrics): State<Arc<crate::metrics::Metrics>>,
    resp: Response,
) -> Response {
    crate::metrics::Metrics::count(
        &metrics.http_responses,
        crate::metrics::status_class(resp.status().as_u16()),
    );
    resp
}

async fn health(State(st): State<AppState>) -> Response {
    let cat = st.catalog.load();
    let body = serde_json::json!({
        "status": "ok",
        "node": &*st.node_name,
        "sites": cat.versions().into_iter().map(|(s, v)| serde_json::json!({"site": s, "version": v})).collect::<Vec<_>>(),
        "open_connections": st.connections.get(),
    });
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// A redirect (301, 308) to `location`, or None when it is no valid header.
fn redirect(status: StatusCode, location: &str, msg: &'static str) -> Option<Response> {
    let v = HeaderValue::from_str(location).ok()?;
    let mut r = error::text(status, msg);
    r.headers_mut().insert(header::LOCATION, v);
    Some(r)
}

/// The request's host: `:authority` (HTTP/2) or `Host`, without port,
/// normalized. None when missing, invalid or given more than once.
fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<SiteName> {
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return None;
    }
    let raw = match uri.authority() {
        Some(a) => a.host().to_string(),
        None => {
            let h = headers.get(header::HOST)?.to_str().ok()?;
            let h = h.parse::<http::uri::Authority>().ok()?;
            h.host().to_string()
        }
    };
    Some(SiteName::new(&raw))
}

async fn serve_site(
    State(st): State<AppState>,
    conn: Option<Extension<ConnInfo>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(HttpError::MethodNotAllowed);
    }
    if uri.path().len() > 8192 || uri.query().is_some_and(|q| q.len() > 8192) {
        return Err(HttpError::UriTooLong);
    }
    let host = request_host(&uri, &headers)
        .ok_or(HttpError::BadRequest("missing or invalid Host".into()))?;
    let conn = conn.map(|Extension(c)| c);
    if let Some(sni) = conn.as_ref().and_then(|c| c.sni.as_deref()) {
        if SiteName::new(sni) != host {
            return Err(HttpError::Misdirected(
                "Host does not match the TLS server name".into(),
            ));
        }
    }
    let catalog = st.catalog.load();
    let site = catalog.site(host.as_str()).ok_or(HttpError::Misdirected(
        "this server does not serve that host".into(),
    ))?;
    let is_tls = conn.as_ref().is_some_and(|c| c.tls);
    if !is_tls && site.config.plain_http == PlainHttp::Redirect {
        if let (Some(port), Some(_)) = (st.https_port, &site.config.tls) {
            let port = if port == 443 {
                String::new()
            } else {
                format!(":{port}")
            };
            let pq = uri.path_and_query().map_or("/", |p| p.as_str());
            let loc = format!("https://{host}{port}{pq}");
            if let Some(r) = redirect(StatusCode::PERMANENT_REDIRECT, &loc, "moved to HTTPS\n") {
                return Ok(r);
            }
        }
    }
    let Some(vm) = site.current.clone() else {
        if let (false, Some(fed), Some(newest)) = (site.authorized, &st.fed, &site.newest) {
            // Not coming soon: only the owner can change this.
            return Err(HttpError::Unavailable {
                message: format!(
                    "this mirror is not authorized by the owner of {host}: its node key {} is not among the mirrors of the site's signed manifest (version {}); the owner adds it with `p2pcdn publish --mirror {}`",
                    fed.me, newest.manifest.version, fed.me
                )
                .into(),
                retry_after: None,
            });
        }
        return Err(HttpError::retry_soon(
            "site content not available on this mirror yet",
        ));
    };
    let rp = decide::normalize_request_path(uri.path()).map_err(|e| {
        tracing::debug!(path = uri.path(), error = %e, "rejected request path");
        HttpError::BadRequest("bad request path".into())
    })?;
    let doc = &vm.manifest.default_document;
    let lookup = if rp.is_dir {
        if rp.path.is_empty() {
            doc.clone()
        } else {
            format!("{}/{doc}", rp.path)
        }
    } else {
        rp.path.clone()
    };
    let Some(entry) = vm.file(&lookup) else {
        if !rp.is_dir && vm.file(&format!("{}/{doc}", rp.path)).is_some() {
            let q = uri.query().map_or(String::new(), |q| format!("?{q}"));
            let loc = format!("{}/{q}", uri.path());
            if let Some(r) = redirect(StatusCode::MOVED_PERMANENTLY, &loc, "moved\n") {
                return Ok(r);
            }
        }
        return Err(HttpError::NotFound("not found".into()));
    };

    let etag = format!("\"{}\"", entry.blake3);
    let last_modified = site.last_modified();
    let h = |n: header::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    let mut resp_headers = HeaderMap::new();
    let set = |hm: &mut HeaderMap, n: header::HeaderName, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            hm.insert(n, v);
        }
    };
    set(&mut resp_headers, header::ETAG, &etag);
    set(
        &mut resp_headers,
        header::LAST_MODIFIED,
        &httpdate::fmt_http_date(last_modified),
    );
    set(
        &mut resp_headers,
        header::CACHE_CONTROL,
        &format!("public, max-age={}", vm.manifest.cache_ttl),
    );

    match decide::evaluate_preconditions(
        h(header::IF_MATCH),
        h(header::IF_NONE_MATCH),
        h(header::IF_MODIFIED_SINCE),
        h(header::IF_UNMODIFIED_SINCE),
        &etag,
        last_modified,
    ) {
        Precondition::NotModified => {
            return Ok((StatusCode::NOT_MODIFIED, resp_headers).into_response())
        }
        Precondition::Failed => {
            return Ok((StatusCode::PRECONDITION_FAILED, resp_headers).into_response())
        }
        Precondition::Proceed => {}
    }

    set(&mut resp_headers, header::CONTENT_TYPE, &entry.content_type);
    resp_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    resp_headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    for (k, v) in &entry.headers {
        if let (Ok(k), Ok(v)) = (
            header::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            resp_headers.insert(k, v);
        }
    }

    let size = entry.size;
    let (status, start, len) = match decide::decide_range(
        h(header::RANGE),
        h(header::IF_RANGE),
        &etag,
        last_modified,
        size,
    ) {
        RangeDecision::Full => (StatusCode::OK, 0, size),
        RangeDecision::Partial { start, end } => {
            set(
                &mut resp_headers,
                header::CONTENT_RANGE,
                &format!("bytes {start}-{end}/{size}"),
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeDecision::Unsatisfiable => {
            return Err(HttpError::RangeNotSatisfiable {
                size,
                headers: Box::new(resp_headers),
            });
        }
    };

    // Hot small files: verified bytes straight from memory, no system call.
    if method != Method::HEAD && size <= crate::store::SMALL_BLOB {
        if let Some(bytes) = st.store.cached_small(&entry.blake3) {
            let (a, b) = (start as usize, (start + len) as usize);
            if b <= bytes.len() {
                set(&mut resp_headers, header::CONTENT_LENGTH, &len.to_string());
                st.load.record(len);
                return Ok((status, resp_headers, Body::from(bytes.slice(a..b))).into_response());
            }
        }
    }
    let store = st.store.clone();
    let hash = entry.blake3;
    // Small bodies are read in the blocking task that opens and verifies the
    // blob: one hand-off to the blocking pool per request instead of two.
    let inline = method != Method::HEAD && len <= INLINE_BODY_MAX;
    let opened = tokio::task::spawn_blocking(move || {
        if inline && size <= crate::store::SMALL_BLOB {
            // Read, verify and cache the whole small blob.
            let all = store.read_small_verified(&hash, size)?;
            let (a, b) = (start as usize, (start + len) as usize);
            return all
                .get(a..b)
                .map(|s| Opened::Bytes(s.to_vec()))
                .ok_or(StoreError::Corrupt(hash));
        }
        let file = store.open_verified(&hash, size)?;
        if !inline {
            return Ok(Opened::File(file));
        }
        read_range(file, start, len)
            .map(Opened::Bytes)
            .map_err(|source| StoreError::Io {
                path: format!("blob {}", hash.to_hex()),
                source,
            })
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "blob open task failed");
        HttpError::Internal
    })?;
    let file = match opened {
        Ok(Opened::Bytes(bytes)) => {
            set(&mut resp_headers, header::CONTENT_LENGTH, &len.to_string());
            st.load.record(len);
            return Ok((status, resp_headers, Body::from(bytes)).into_response());
        }
        Ok(Opened::File(f)) => f,
        Err(e @ (StoreError::Corrupt(_) | StoreError::Missing(_))) => {
            tracing::error!(site = %host, path = %lookup, error = %e, "refusing to serve unverifiable blob");
            if let Some(fed) = &st.fed {
                // Have the replicator fetch a good copy from a peer.
                fed.replicate_now.notify_one();
            }
            return Err(HttpError::retry_soon(
                "content temporarily unavailable on this mirror",
            ));
        }
        Err(e) => {
            tracing::error!(site = %host, path = %lookup, error = %e, "blob read failed");
            return Err(HttpError::Internal);
        }
    };
    set(&mut resp_headers, header::CONTENT_LENGTH, &len.to_string());
    st.load.record(if method == Method::HEAD { 0 } else { len });
    if method == Method::HEAD {
        return Ok((status, resp_headers, Body::empty()).into_response());
    }
    let mut file = tokio::fs::File::from_std(file);
    if start > 0 {
        file.seek(SeekFrom::Start(start)).await.map_err(|e| {
            tracing::error!(error = %e, "seek failed");
            HttpError::Internal
        })?;
    }
    let stream = ReaderStream::with_capacity(file.take(len), 128 * 1024);
    Ok((status, resp_headers, Body::from_stream(stream)).into_response())
}

/// Bodies up to this size are read into memory and sent in one piece.
const INLINE_BODY_MAX: u64 = 64 * 1024;

/// A verified blob, opened for streaming or already read.
enum Opened {
    File(std::fs::File),
    Bytes(Vec<u8>),
}

/// Reads `len` bytes at `start` of a verified blob (blocking).
fn read_range(mut f: std::fs::File, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek};
    if start > 0 {
        f.seek(SeekFrom::Start(start))?;
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "blob shorter than its manifest entry",
        ));
    }
    Ok(buf)
}
