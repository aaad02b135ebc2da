//! Remote publish endpoints under `/.well-known/p2pcdn/v1/upload/{site}`:
//! `GET` (what the instance holds), `POST` (a signed manifest opens an
//! upload), `PUT …/blob/{hash}` (one listed blob, verified while streaming).
//!
//! The admission rules live in [`crate::upload`]; this module moves bytes:
//! a blob body goes to a temp file on the store's file system while BLAKE3
//! hashes it, and is renamed into `blobs/` only when hash and size match.
//! A refused or broken-off body leaves nothing behind.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::listen::ConnInfo;
use super::{AppState, HttpError};
use crate::catalog::unix_now;
use crate::config::Config;
use crate::db::Db;
use crate::hash::BlobHash;
use crate::manifest::{self, Acceptance};
use crate::sites::{Imported, IngestError, SiteName, Sites};
use crate::store::BlobStore;
use crate::upload::{UploadError, Uploads};

/// What remote publishing needs of the instance.
pub struct UploadService {
    /// Open sessions and admission rules.
    pub uploads: Uploads,
    /// Sites and their pinned owner keys (swapped by a configuration reload).
    pub cfg: Arc<arc_swap::ArcSwap<Config>>,
    /// Manifest rows.
    pub db: Arc<Db>,
    /// Blobs.
    pub store: BlobStore,
    /// Where an uploaded version is offered (and then published).
    pub sites: Arc<Sites>,
}

/// `GET /upload/{site}`: what this instance holds for the site.
#[derive(Debug, Serialize, Deserialize)]
pub struct SiteInfo {
    /// Site.
    pub site: String,
    /// The site's zone (origin of an owner-signed zone file).
    pub zone: String,
    /// The owner key pinned here.
    pub owner_key: String,
    /// Highest version held (pending or served).
    pub held: Option<u64>,
    /// Base64 envelope of the newest manifest held, if any.
    pub current: Option<String>,
    /// Largest total of new blob bytes one publish may upload.
    pub max_upload_bytes: u64,
}

/// A blob the instance lacks.
#[derive(Debug, Serialize, Deserialize)]
pub struct Missing {
    /// Hash.
    pub blake3: BlobHash,
    /// Size in bytes.
    pub size: u64,
    /// Bytes already held from an interrupted upload: a `PUT` may resume
    /// there with `Content-Range: bytes <have>-<size-1>/<size>` (absent in
    /// answers of instances without resumable uploads: 0).
    #[serde(default)]
    pub have: u64,
}

/// Answer to `POST /upload/{site}` and to each blob `PUT`.
#[derive(Debug, Serialize, Deserialize)]
pub struct UploadState {
    /// Site.
    pub site: String,
    /// Version being uploaded.
    pub version: u64,
    /// Blobs still to upload (POST: all of them; PUT: empty, see `remaining`).
    #[serde(default)]
    pub missing: Vec<Missing>,
    /// Blobs still missing.
    pub remaining: usize,
    /// True once the version is imported (served here, gossiped onwards).
    pub complete: bool,
}

fn refuse(e: &UploadError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    if status.is_server_error() {
        tracing::warn!(error = %e, "remote publish failed");
    } else {
        tracing::info!(error = %e, status = status.as_u16(), "remote publish refused");
    }
    HttpError::for_status(status.as_u16(), e.to_string()).into_response()
}

fn internal(e: impl std::fmt::Display) -> UploadError {
    UploadError::Internal(e.to_string())
}

impl UploadService {
    fn site(&self, site: &str) -> Result<crate::config::SiteConfig, UploadError> {
        let cfg = self.cfg.load();
        if !cfg.remote_publish {
            return Err(UploadError::Disabled);
        }
        cfg.site(site)
            .cloned()
            .ok_or_else(|| UploadError::UnknownSite(site.to_string()))
    }

    fn info(&self, site: &str) -> Result<SiteInfo, UploadError> {
        let sc = self.site(site)?;
        let newest = self.db.newest_manifest(site).map_err(internal)?;
        Ok(SiteInfo {
            site: site.to_string(),
            zone: sc.zone.clone(),
            owner_key: sc.owner_key.to_string(),
            held: self.db.held_version(site).map_err(internal)?,
            current: newest.map(|m| base64::engine::general_purpose::STANDARD.encode(m.envelope)),
            max_upload_bytes: self.uploads.limits().max_total,
        })
    }

    /// Verifies a manifest fully and opens its session (or imports it at
    /// once when nothing is missing).
    fn open(&self, site: &str, envelope: &[u8]) -> Result<UploadState, UploadError> {
        let sc = self.site(site)?;
        let held = self.db.held_version(site).map_err(internal)?;
        let vm = manifest::accept(
            envelope,
            Acceptance {
                site: &sc.hostname,
                owner: &sc.owner_key,
                held_version: held,
                now: unix_now(),
            },
        )?;
        let missing: Vec<(BlobHash, u64)> = vm
            .blobs()
            .into_iter()
            .filter(|(h, n)| !self.store.contains(h, *n))
            .collect();
        let version = vm.manifest.version;
        self.uploads
            .open(site, version, vm.envelope.clone(), &missing, Instant::now())?;
        tracing::info!(%site, version, missing = missing.len(), "remote publish: manifest verified, upload opened");
        let complete = missing.is_empty();
        if complete {
            // Close the session just opened (nothing to wait for) and import.
            self.uploads.close(site);
            self.import(site, &vm.envelope)?;
        }
        Ok(UploadState {
            site: site.to_string(),
            version,
            remaining: missing.len(),
            missing: missing
                .into_iter()
                .map(|(blake3, size)| Missing {
                    blake3,
                    size,
                    have: self.store.partial_held(&blake3, UPLOAD_SOURCE, size),
                })
                .collect(),
            complete,
        })
    }

    fn import(&self, site: &str, envelope: &[u8]) -> Result<(), UploadError> {
        self.site(site)?;
        match self
            .sites
            .offer_for(&SiteName::new(site), envelope, unix_now())
        {
            Ok(Imported::Complete { version }) => {
                tracing::info!(%site, version, "remote publish complete; now served");
            }
            Ok(Imported::Pending { version, missing }) => {
                tracing::warn!(%site, version, missing = missing.len(), "remote publish imported, but blobs vanished meanwhile; replicating them");
            }
            Err(IngestError::Manifest(m)) => return Err(m.into()),
            Err(e) => return Err(internal(e)),
        }
        Ok(())
    }
}

fn service(st: &AppState) -> Result<Arc<UploadService>, UploadError> {
    st.uploads.clone().ok_or(UploadError::Disabled)
}

/// `GET /.well-known/p2pcdn/v1/upload/{site}`.
pub async fn info(State(st): State<AppState>, Path(site): Path<String>) -> Response {
    let site = SiteName::new(&site);
    let r = match service(&st) {
        Ok(svc) => tokio::task::spawn_blocking(move || svc.info(site.as_str()))
            .await
            .unwrap_or_else(|e| Err(internal(e))),
        Err(e) => Err(e),
    };
    match r {
        Ok(i) => ([(header::CACHE_CONTROL, "no-store")], Json(i)).into_response(),
        Err(e) => refuse(&e),
    }
}

/// `POST /.well-known/p2pcdn/v1/upload/{site}`: body = signed manifest envelope.
pub async fn open(State(st): State<AppState>, Path(site): Path<String>, body: Body) -> Response {
    let site = SiteName::new(&site);
    let svc = match service(&st) {
        Ok(s) => s,
        Err(e) => return refuse(&e),
    };
    let bytes = match axum::body::to_bytes(body, manifest::MAX_ENVELOPE_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return HttpError::TooLarge(
                format!(
                    "manifest envelope larger than {} bytes, or the body broke off",
                    manifest::MAX_ENVELOPE_BYTES
                )
                .into(),
            )
            .into_response()
        }
    };
    let r = tokio::task::spawn_blocking(move || svc.open(site.as_str(), &bytes))
        .await
        .unwrap_or_else(|e| Err(internal(e)));
    match r {
        Ok(s) => Json(s).into_response(),
        Err(e) => refuse(&e),
    }
}

/// `PUT /.well-known/p2pcdn/v1/upload/{site}/blob/{hash}`: one listed blob.
pub async fn put_blob(
    State(st): State<AppState>,
    Path((site, hash)): Path<(String, String)>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let site = SiteName::new(&site);
    match put_blob_inner(
        &st,
        site.as_str(),
        &hash,
        conn.map(|c| c.peer.ip()),
        &headers,
        body,
    )
    .await
    {
        Ok(s) => Json(s).into_response(),
        Err(e) => refuse(&e),
    }
}

async fn put_blob_inner(
    st: &AppState,
    site: &str,
    hash: &str,
    source: Option<IpAddr>,
    headers: &HeaderMap,
    body: Body,
) -> Result<UploadState, UploadError> {
    let svc = service(st)?;
    svc.site(site)?;
    let hash: BlobHash = hash.parse().map_err(|e: crate::hash::BadHash| {
        UploadError::Interrupted(format!("bad hash: {}", e.0))
    })?;
    let permit = svc.uploads.begin(site, &hash, source, Instant::now())?;
    let size = permit.size;
    let start = resume_offset(headers, size)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let rest = size - start;
    match declared {
        Some(n) if n > rest => return Err(UploadError::BlobTooLarge { hash, size }),
        Some(n) if n < rest => {
            return Err(UploadError::Truncated {
                hash,
                got: start + n,
                size,
            })
        }
        _ => {}
    }
    receive(&svc, &hash, size, start, body).await?;
    let db = svc.db.clone();
    tokio::task::spawn_blocking(move || db.record_blob(&hash, size, unix_now()).map_err(internal))
        .await
        .unwrap_or_else(|e| Err(internal(e)))?;
    drop(permit);
    tracing::debug!(%site, blob = %hash.short(), size, "remote publish: blob stored");
    let envelope = svc.uploads.stored(site, &hash);
    let remaining = svc.uploads.remaining(site);
    let version = envelope
        .as_deref()
        .and_then(|e| manifest::peek_manifest(e).ok())
        .map_or(0, |m| m.version);
    let complete = match envelope {
        Some(env) => {
            let svc2 = svc.clone();
            let site2 = site.to_string();
            tokio::task::spawn_blocking(move || svc2.import(&site2, &env))
                .await
                .unwrap_or_else(|e| Err(internal(e)))?;
            true
        }
        None => false,
    };
    Ok(UploadState {
        site: site.to_string(),
        version,
        missing: vec![],
        remaining,
        complete,
    })
}

/// The source name of uploaded partial blobs (a partial written by a peer
/// is not resumed by an upload, nor the reverse).
const UPLOAD_SOURCE: &str = "remote-publish";
/// Body bytes gathered before each write to the partial blob.
const WRITE_BATCH: usize = 1 << 20;

/// Where a `PUT` starts: 0, or the start of its `Content-Range:
/// bytes <start>-<size-1>/<size>` (the rest of the blob, nothing else).
fn resume_offset(headers: &HeaderMap, size: u64) -> Result<u64, UploadError> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(0);
    };
    let text = v.to_str().unwrap_or("(not text)");
    let bad = || UploadError::BadRange(text.to_string());
    let (range, total) = text
        .strip_prefix("bytes ")
        .and_then(|r| r.split_once('/'))
        .ok_or_else(bad)?;
    let (first, last) = range.split_once('-').ok_or_else(bad)?;
    let (first, last, total): (u64, u64, u64) = (
        first.parse().map_err(|_| bad())?,
        last.parse().map_err(|_| bad())?,
        total.parse().map_err(|_| bad())?,
    );
    if total != size || size == 0 || last != size - 1 || first > last {
        return Err(bad());
    }
    Ok(first)
}

/// Streams `body` into the store's resumable partial blob, from `start`
/// (the bytes an interrupted upload left; 0 starts over). An interrupted,
/// slow or short body keeps what arrived for the next attempt; the blob
/// enters the store only when all `size` bytes hash to `hash`.
async fn receive(
    svc: &UploadService,
    hash: &BlobHash,
    size: u64,
    start: u64,
    body: Body,
) -> Result<(), UploadError> {
    let limits = *svc.uploads.limits();
    let deadline = tokio::time::Instant::now() + limits.deadline(size - start);
    let (store, h) = (svc.store.clone(), *hash);
    let mut w = tokio::task::spawn_blocking(move || store.partial(h, size, UPLOAD_SOURCE))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    if w.offset() != start {
        if start != 0 {
            return Err(UploadError::Offset {
                hash: *hash,
                held: w.offset(),
                asked: start,
            });
        }
        w = w.blocking(|w| w.restart()).await.map_err(internal)?.0;
    }
    let mut batch: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
    let mut stream = body.into_data_stream();
    let broke = loop {
        let wait = deadline.min(tokio::time::Instant::now() + limits.idle);
        let chunk = match tokio::time::timeout_at(wait, stream.next()).await {
            Err(_) => break Some(UploadError::Slow),
            Ok(None) => break None,
            Ok(Some(Err(e))) => break Some(UploadError::Interrupted(e.to_string())),
            Ok(Some(Ok(c))) => c,
        };
        if w.offset() + (batch.len() + chunk.len()) as u64 > size {
            let _ = tokio::task::spawn_blocking(move || w.abandon()).await;
            return Err(UploadError::BlobTooLarge { hash: *hash, size });
        }
        batch.extend_from_slice(&chunk);
        if batch.len() >= WRITE_BATCH {
            let data = std::mem::replace(&mut batch, Vec::with_capacity(WRITE_BATCH));
            w = w
                .blocking(move |w| w.append(&data))
                .await
                .map_err(internal)?
                .0;
        }
    };
    // Keep what arrived, complete or not.
    w = w
        .blocking(move |w| w.append(&batch).and_then(|()| w.flush()))
        .await
        .map_err(internal)?
        .0;
    if let Some(e) = broke {
        tracing::debug!(blob = %hash.short(), held = w.offset(), size, "remote publish: upload broke off; kept for resuming");
        return Err(e);
    }
    if w.offset() < size {
        return Err(UploadError::Truncated {
            hash: *hash,
            got: w.offset(),
            size,
        });
    }
    tokio::task::spawn_blocking(move || w.finish())
        .await
        .map_err(internal)?
        .map_err(|e| match e {
            crate::store::StoreError::HashMismatch { actual, .. } => UploadError::HashMismatch {
                hash: *hash,
                actual,
            },
            e => internal(e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, v.parse().unwrap());
        h
    }

    #[test]
    fn resume_offsets_are_the_rest_of_the_blob_or_refused() {
        assert_eq!(resume_offset(&HeaderMap::new(), 10).unwrap(), 0);
        assert_eq!(resume_offset(&range("bytes 4-9/10"), 10).unwrap(), 4);
        assert_eq!(resume_offset(&range("bytes 0-9/10"), 10).unwrap(), 0);
        for bad in [
            "bytes 4-8/10",  // not up to the end
            "bytes 4-9/11",  // another size
            "bytes 10-9/10", // empty
            "bytes */10",
            "bytes 4-/10",
            "items 4-9/10",
            "bytes -1-9/10",
        ] {
            assert!(resume_offset(&range(bad), 10).is_err(), "{bad}");
        }
        assert!(resume_offset(&range("bytes 0-0/0"), 0).is_err());
    }
}
