//! Remote publish endpoints under `/.well-known/p2pcdn/v1/upload/{site}`:
//! `GET` (what the instance holds), `POST` (a signed manifest opens an
//! upload), `PUT …/blob/{hash}` (one listed blob, verified while streaming).
//!
//! The admission rules live in [`crate::upload`]; this module moves bytes:
//! a blob body goes to a temp file on the store's file system while BLAKE3
//! hashes it, and is renamed into `blobs/` only when hash and size match.
//! A refused or broken-off body leaves nothing behind.

use std::net::IpAddr;
use std::path::PathBuf;
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
use tokio::io::AsyncWriteExt;

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
                .map(|(blake3, size)| Missing { blake3, size })
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
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > size => return Err(UploadError::BlobTooLarge { hash, size }),
        Some(n) if n < size => return Err(UploadError::Truncated { hash, got: n, size }),
        _ => {}
    }
    let tmp = receive(&svc, &hash, size, body).await?;
    let store = svc.store.clone();
    let db = svc.db.clone();
    let committed = tokio::task::spawn_blocking(move || -> Result<(), UploadError> {
        let guard = TempFile(Some(tmp.clone()));
        store.commit_partial(&hash, &tmp).map_err(internal)?;
        guard.disarm();
        db.record_blob(&hash, size, unix_now()).map_err(internal)
    })
    .await
    .unwrap_or_else(|e| Err(internal(e)));
    committed?;
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

/// Removes a temp file on drop unless disarmed.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Streams `body` into a temp file while hashing it; returns the file only
/// when it holds exactly `size` bytes hashing to `hash`.
async fn receive(
    svc: &UploadService,
    hash: &BlobHash,
    size: u64,
    body: Body,
) -> Result<PathBuf, UploadError> {
    let limits = *svc.uploads.limits();
    let deadline = tokio::time::Instant::now() + limits.deadline(size);
    let path = svc.store.temp_path();
    let guard = TempFile(Some(path.clone()));
    let mut out = tokio::fs::File::create(&path).await.map_err(internal)?;
    let mut hasher = blake3::Hasher::new();
    let mut got: u64 = 0;
    let mut stream = body.into_data_stream();
    loop {
        let wait = deadline.min(tokio::time::Instant::now() + limits.idle);
        let next = tokio::time::timeout_at(wait, stream.next())
            .await
            .map_err(|_| UploadError::Slow)?;
        let chunk = match next {
            None => break,
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(UploadError::Interrupted(e.to_string())),
        };
        got = got.saturating_add(chunk.len() as u64);
        if got > size {
            return Err(UploadError::BlobTooLarge { hash: *hash, size });
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(internal)?;
    }
    if got < size {
        return Err(UploadError::Truncated {
            hash: *hash,
            got,
            size,
        });
    }
    let actual = BlobHash::from(hasher.finalize());
    if actual != *hash {
        return Err(UploadError::HashMismatch {
            hash: *hash,
            actual,
        });
    }
    out.flush().await.map_err(internal)?;
    drop(out);
    guard.disarm();
    Ok(path)
}
