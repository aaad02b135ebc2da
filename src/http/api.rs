//! The node API under `/.well-known/p2pcdn/v1/`: identity, health, status,
//! anti-entropy (`sync`, `push`), blob transfer and per-blob availability
//! (`have`) between peers.
//! Handlers translate; verification happens in `federation`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;

use super::decide::{self, RangeDecision};
use super::intake::Admitted;
use super::listen::ConnInfo;
use super::{AppState, HttpError};
use crate::catalog::unix_now;
use crate::federation::gossip::PROTOCOL;
use crate::federation::wire::{
    stated_version, version_refusal, PushRef, SyncRequest, MAX_BUNDLE_BYTES, MAX_SYNC_BYTES,
};
use crate::federation::Federation;
use crate::hash::BlobHash;
use crate::store::StoreError;

/// A peer request's federation and body, read under the intake limits
/// (slot first, then bytes, then the deadline), or the refusal.
async fn admit(
    st: &AppState,
    conn: Option<Extension<ConnInfo>>,
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<(Arc<Federation>, Vec<u8>, Admitted), HttpError> {
    let fed = st.fed.clone().ok_or_else(federation_disabled)?;
    let ip = conn.map_or(IpAddr::from([0, 0, 0, 0]), |Extension(c)| c.peer.ip());
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (body, admitted) = st.intake.read(ip, declared, body, max).await.map_err(|e| {
        tracing::debug!(%ip, error = %e, "peer request refused by the intake limits");
        HttpError::from(e)
    })?;
    Ok((fed, body, admitted))
}

fn federation_disabled() -> HttpError {
    HttpError::NotFound("federation is not enabled on this node".into())
}

fn no_federation() -> Response {
    federation_disabled().into_response()
}

/// `GET /node[?challenge=<nonce>]`: name, key and URL of this node; with a
/// challenge, signed with the node key (binding proof).
pub async fn node(State(st): State<AppState>, uri: axum::http::Uri) -> Response {
    let Some(f) = &st.fed else {
        return no_federation();
    };
    let challenge = uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("challenge=")));
    let nonce = match challenge.map(crate::federation::binding::Nonce::parse) {
        None => None,
        Some(Some(n)) => Some(n),
        Some(None) => return HttpError::BadRequest("bad challenge".into()).into_response(),
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(f.node_doc(nonce.as_ref())),
    )
        .into_response()
}

/// `GET /.well-known/p2pcdn/<site>.key`: the owner key this node pins for a
/// site it serves (an owner can point `owner_domain` at an instance they run).
pub async fn owner_key(State(st): State<AppState>, Path(file): Path<String>) -> Response {
    let Some(site) = file.strip_suffix(".key") else {
        return HttpError::NotFound("not found".into()).into_response();
    };
    let cat = st.catalog.load();
    match cat.site(crate::sites::SiteName::new(site).as_str()) {
        Some(s) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "public, max-age=300"),
            ],
            format!("{}\n", s.config.owner_key),
        )
            .into_response(),
        None => HttpError::NotFound("no such site".into()).into_response(),
    }
}

/// `GET /status`: the federation as this node sees it: JSON (for
/// `p2pcdn status`), or the status page for clients that ask for HTML.
pub async fn status(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let mut r = if crate::status_page::negotiate::prefers_html(accept) {
        status_page(st).await
    } else {
        status_json(&st)
    };
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    r
}

/// The status page (`crate::status_page`), rendered off the async runtime.
async fn status_page(st: AppState) -> Response {
    let task = tokio::task::spawn_blocking(move || {
        let view = crate::status_page::collect::view(
            &st.catalog.load(),
            st.fed.as_deref(),
            &st.node_name,
            unix_now(),
        );
        crate::status_page::render(&view)
    });
    match task.await {
        Ok(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (header::CONTENT_SECURITY_POLICY, crate::status_page::CSP),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "status page task failed");
            HttpError::Internal.into_response()
        }
    }
}

/// The JSON status document.
fn status_json(st: &AppState) -> Response {
    let now = unix_now();
    let cat = st.catalog.load();
    let certs = st.fed.as_ref().and_then(|f| f.certs().cloned());
    let warn_days = st
        .fed
        .as_ref()
        .map_or(14, |f| f.config().expiry_warning_days);
    let sites: Vec<_> = cat
        .sites()
        .map(|s| {
            let expires = s.current.as_ref().map(|m| m.manifest.expires);
            serde_json::json!({
                "expires": expires,
                "expires_in_s": expires.map(|e| crate::expiry::seconds_left(now, e)),
                "expiry_warning": expires.is_some_and(|e| crate::expiry::due(now, e, warn_days)),
                "site": s.config.hostname,
                "serving": s.current.as_ref().map(|m| m.manifest.version),
                "newest": s.newest.as_ref().map(|m| m.manifest.version),
                "mirrors": s.newest.as_ref().map(|m| m.manifest.mirrors.iter().map(|k| k.to_string()).collect::<Vec<_>>()),
                "authorized": s.authorized,
                "cert": certs.as_ref().and_then(|c| c.valid_for(&s.config.hostname, now)).map(|c| serde_json::json!({
                    "source": c.source,
                    "not_after": c.not_after,
                })),
            })
        })
        .collect();
    let Some(fed) = &st.fed else {
        return Json(serde_json::json!({"node": &*st.node_name, "sites": sites, "peers": []}))
            .into_response();
    };
    let me = fed.own_report();
    let peers: Vec<_> = fed
        .peers()
        .into_iter()
        .map(|p| {
            let r = p.report.as_ref().map(|r| &r.report);
            serde_json::json!({
                "name": p.name,
                "key": p.key.to_string(),
                "url": p.url,
                "healthy": p.healthy(now),
                "probe_up": p.probe.is_up(),
                "rtt_ms": p.probe.rtt_ms(),
                "report_age_s": r.map(|r| now.saturating_sub(r.issued)),
                "load": r.map(|r| r.load.fraction(&r.capacity)),
                "rps": r.map(|r| r.load.rps),
                "capacity_rps": r.map(|r| r.capacity.rps),
                "holds": r.map(|r| r.holds.clone()).unwrap_or_default(),
                "addresses": r.map(|r| r.addresses.clone()).unwrap_or_default(),
                "addresses_verified": fed.answerable_addresses(&p),
                "location_plausible": fed.location_plausible(&p),
                "certs": r.and_then(|r| r.certs.clone()),
            })
        })
        .collect();
    Json(serde_json::json!({
        "node": &*st.node_name,
        "key": fed.me.to_string(),
        "url": fed.url,
        "load": me.as_ref().map(|r| r.report.load.fraction(&r.report.capacity)),
        "rps": me.as_ref().map(|r| r.report.load.rps),
        "holds": me.as_ref().map(|r| r.report.holds.clone()).unwrap_or_default(),
        "sites": sites,
        "peers": peers,
        "unbound_peers": fed
            .unbound_bootstrap_peers()
            .into_iter()
            .map(|(url, error)| serde_json::json!({"url": url, "error": error}))
            .collect::<Vec<_>>(),
    }))
    .into_response()
}

/// A request in another protocol version: refused with a text naming both
/// versions, logged at WARN (once per address and version).
fn wrong_version(st: &AppState, ip: Option<IpAddr>, theirs: u32) -> Response {
    if let Some(fed) = &st.fed {
        let ip = ip.map_or_else(|| "unknown".to_string(), |i| i.to_string());
        if fed.note_sync_error(&format!("version refusal {ip}"), Some(&theirs.to_string())) {
            tracing::warn!(peer = %ip, peer_protocol = theirs, our_protocol = PROTOCOL, "refused a peer request in another federation protocol version (see docs/PROTOCOL.md, Versioning)");
        }
    }
    (
        StatusCode::BAD_REQUEST,
        format!("{}\n", version_refusal(theirs)),
    )
        .into_response()
}

/// `POST /sync`: takes the caller's site versions and report fingerprint,
/// returns manifests it lacks, our site versions, and our report digest
/// when the fingerprints differ. The body is read only after a slot and
/// bytes were reserved.
pub async fn sync(
    State(st): State<AppState>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let ip = conn.as_ref().map(|Extension(c)| c.peer.ip());
    let (fed, body, admitted) = admit(&st, conn, &headers, body, MAX_SYNC_BYTES).await?;
    let v = stated_version(&body);
    if v != PROTOCOL {
        return Ok(wrong_version(&st, ip, v));
    }
    let req: SyncRequest = serde_json::from_slice(&body)
        .map_err(|e| HttpError::BadRequest(format!("bad sync request: {e}").into()))?;
    drop(body);
    let resp = tokio::task::spawn_blocking(move || fed.answer_sync(&req))
        .await
        .map_err(|_| HttpError::Internal)?;
    drop(admitted);
    Ok(Json(resp).into_response())
}

/// `POST /swim`: one SWIM membership message from a bound peer, signed
/// with its node key; answers the messages for it (an `Ack`, possibly
/// relayed for a `PingReq`). The body is read only after a slot and bytes
/// were reserved.
pub async fn swim(
    State(st): State<AppState>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    use crate::federation::swim::{self, Refusal};
    let ip = conn.as_ref().map(|Extension(c)| c.peer.ip());
    let (fed, body, admitted) = admit(&st, conn, &headers, body, swim::MAX_SWIM_BYTES).await?;
    let v = stated_version(&body);
    if v != PROTOCOL {
        return Ok(wrong_version(&st, ip, v));
    }
    let sig = headers.get(swim::SIG_HEADER).and_then(|v| v.to_str().ok());
    let now = crate::federation::unix_millis();
    let req = match swim::check(&body, sig, now, |id| fed.membership.key_of(id)) {
        Ok(r) => r,
        Err(Refusal::Unknown(id)) if swim::bare_ack(&body, fed.membership.me()).is_some() => {
            tracing::trace!(from = %id, "ping from a peer not bound yet: bare ack");
            let reply = swim::bare_ack(&body, fed.membership.me());
            return Ok(Json(reply).into_response());
        }
        Err(e) => {
            tracing::debug!(error = %e, "membership message refused");
            return Err(match e {
                Refusal::Unknown(_) | Refusal::Signature(_) => {
                    HttpError::Forbidden(e.to_string().into())
                }
                _ => HttpError::BadRequest(e.to_string().into()),
            });
        }
    };
    drop(body);
    let reply = swim::handle(&fed, req.from, req.msg).await;
    drop(admitted);
    Ok(Json(reply).into_response())
}

/// `POST /push`: documents a peer thinks we lack, each verified before
/// use, and the reports it wants (answered as a bundle; 204 when it wants
/// none). The body is read only after a slot and bytes were reserved, and
/// parsed without copying the manifests.
pub async fn push(
    State(st): State<AppState>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let ip = conn.as_ref().map(|Extension(c)| c.peer.ip());
    let (fed, body, admitted) = admit(&st, conn, &headers, body, MAX_BUNDLE_BYTES).await?;
    let parsed = tokio::task::spawn_blocking(move || {
        let _admitted = admitted;
        // Parsed once; only a body that does not parse is read again for
        // the version it states (a protocol 1 bundle has none).
        let b: PushRef<'_> = match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return Err((stated_version(&body), e.to_string())),
        };
        if b.v != PROTOCOL {
            return Err((b.v, String::new()));
        }
        Ok(fed.answer_push(&b.manifests, b.reports, &b.want))
    })
    .await
    .map_err(|_| HttpError::Internal)?;
    match parsed {
        Err((v, _)) if v != PROTOCOL => Ok(wrong_version(&st, ip, v)),
        Err((_, e)) => Err(HttpError::BadRequest(format!("bad bundle: {e}").into())),
        Ok(b) if b.reports.is_empty() => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(b) => Ok(Json(b).into_response()),
    }
}

/// `GET /blob/{blake3}`: a verified blob, with Range support (resumable pulls).
pub async fn blob(
    State(st): State<AppState>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Ok(h) = hash.parse::<BlobHash>() else {
        return (StatusCode::BAD_REQUEST, "bad hash\n").into_response();
    };
    let store = st.store.clone();
    let opened = tokio::task::spawn_blocking(move || store.open_verified_any(&h)).await;
    let (file, size) = match opened {
        Ok(Ok(x)) => x,
        Ok(Err(StoreError::Missing(_))) => {
            return (StatusCode::NOT_FOUND, "no such blob\n").into_response()
        }
        Ok(Err(StoreError::Corrupt(_))) => {
            return (StatusCode::NOT_FOUND, "blob failed verification\n").into_response()
        }
        _ => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let etag = format!("\"{h}\"");
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, len, content_range) =
        match decide::decide_range(range, None, &etag, std::time::UNIX_EPOCH, size) {
            RangeDecision::Full => (StatusCode::OK, 0, size, None),
            RangeDecision::Partial { start, end } => (
                StatusCode::PARTIAL_CONTENT,
                start,
                end - start + 1,
                Some(format!("bytes {start}-{end}/{size}")),
            ),
            RangeDecision::Unsatisfiable => {
                return (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{size}"))],
                )
                    .into_response()
            }
        };
    st.load.record(len);
    let uploaded = st.metrics.peer_upload_bytes.clone();
    let mut hm = HeaderMap::new();
    hm.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        hm.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&len.to_string()) {
        hm.insert(header::CONTENT_LENGTH, v);
    }
    if let Some(cr) = content_range.and_then(|c| HeaderValue::from_str(&c).ok()) {
        hm.insert(header::CONTENT_RANGE, cr);
    }
    // Counted as the bytes leave for the connection (never more than the
    // socket writes: TLS framing only adds).
    let path = st.store.blob_path(&h);
    let stream = super::file_stream::uncached_stream(file, path, start, len, 1 << 20).inspect(
        move |chunk| {
            if let Ok(b) = chunk {
                uploaded.inc_by(b.len() as u64);
            }
        },
    );
    (status, hm, Body::from_stream(stream)).into_response()
}

/// `GET /have/{site}/{version}`: which blobs of a version this node holds
/// verified, as a bitmap over the manifest's blob order
/// ([`crate::federation::replicate::have`]), for peers replicating the same
/// version. 404 unless this node mirrors the site, is authorized for that
/// version and it is the newest it knows; bounded by
/// [`crate::federation::replicate::have::MAX_BLOBS`] blobs (8 KiB).
pub async fn have(
    State(st): State<AppState>,
    Path((site, version)): Path<(String, u64)>,
) -> Response {
    use crate::federation::replicate::have::{Bitmap, MAX_BLOBS};
    if st.fed.is_none() {
        return no_federation();
    }
    let not_here = || (StatusCode::NOT_FOUND, "not replicating this version\n").into_response();
    let cat = st.catalog.load();
    let Some(s) = cat.site(&crate::manifest::normalize_site(&site)) else {
        return not_here();
    };
    let manifest = match &s.newest {
        Some(m) if s.config.mirror && s.authorized && m.manifest.version == version => m.clone(),
        // The catalog picks up a publish made by another process up to
        // 0.5 s after gossip (which reads the database) already offers its
        // manifest: answer from the database then, or a replicator polling
        // the publishing node in that window would take it for another
        // replicator instead of the origin.
        _ if s.config.mirror
            && s.newest
                .as_ref()
                .is_none_or(|m| m.manifest.version < version) =>
        {
            match st
                .fed
                .as_ref()
                .and_then(|f| f.offered_manifest(&site, version))
            {
                Some(vm) => vm,
                None => return not_here(),
            }
        }
        _ => return not_here(),
    };
    let blobs = manifest.blobs();
    if blobs.len() > MAX_BLOBS {
        return not_here();
    }
    let store = st.store.clone();
    let bits = tokio::task::spawn_blocking(move || {
        Bitmap::from_flags(blobs.iter().map(|(h, size)| store.contains(h, *size)))
    })
    .await;
    match bits {
        Ok(b) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            b.as_bytes().to_vec(),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
