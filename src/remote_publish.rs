//! `p2pcdn publish --to URL` and `p2pcdn resign --to URL`, client side: hash
//! and sign locally (no data directory), ask the instance which blobs it
//! lacks, upload only those, and let the instance import the version.
//!
//! Resuming is re-running: each run signs a new version, the instance lists
//! only blobs it does not hold yet, so blobs finished before an interruption
//! are not sent again (a blob cut off mid-way is sent again whole).
//! Endpoints and status codes: `docs/PROTOCOL.md`, "Remote publish".

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;

use crate::hash::BlobHash;
use crate::http::upload::{SiteInfo, UploadState};
use crate::keys::{PublicKey, SecretKey};
use crate::manifest::{self, Manifest, ManifestError, ZoneDoc, FORMAT};
use crate::publish::{self, LocalFile, PublishError, ZoneOutcome};

/// Remote publish errors.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The instance could not be reached or the exchange broke off.
    #[error("{url}: {source}")]
    Http {
        /// Request URL.
        url: String,
        /// Cause.
        source: reqwest::Error,
    },
    /// The instance refused a step; its text says why.
    #[error("{url}: {status}: {body}")]
    Refused {
        /// Request URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The instance's explanation.
        body: String,
    },
    /// The key is not the owner key the instance pins for the site.
    #[error("the key {got} is not the owner key the instance pins for {site} ({want})")]
    NotOwner {
        /// Site.
        site: String,
        /// Key used.
        got: String,
        /// Pinned key.
        want: String,
    },
    /// Nothing published yet, so nothing to re-sign.
    #[error("the instance holds no version of {0} to re-sign; publish first")]
    NothingToResign(String),
    /// Hashing or reading the folder failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// Building or checking a manifest failed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Bad arguments (URL, CA file).
    #[error("{0}")]
    Setup(String),
}

/// A connection to one instance's upload API.
pub struct Remote {
    client: reqwest::Client,
    base: String,
}

/// What to publish remotely.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Site hostname.
    pub site: String,
    /// Folder with the site's files.
    pub dir: PathBuf,
    /// Explicit version (default: max(now, held + 1)).
    pub version: Option<u64>,
    /// Validity in seconds from now.
    pub validity_secs: u64,
    /// `Cache-Control: max-age`.
    pub cache_ttl: u32,
    /// Default document.
    pub default_document: String,
    /// Show progress bars on stderr.
    pub progress: bool,
    /// Zone file text to sign (origin: the site's zone on the instance).
    pub zone_text: Option<String>,
    /// Sign no zone even if the previous version had one.
    pub drop_zone: bool,
    /// Mirrors to authorize besides those the previous version authorized.
    pub mirrors: Vec<PublicKey>,
    /// Upload rate cap, bytes per second.
    pub max_rate: Option<u64>,
}

/// What a remote publish or resign did.
#[derive(Debug, Clone)]
pub struct RemoteReport {
    /// Site.
    pub site: String,
    /// Version signed.
    pub version: u64,
    /// Expiry, unix seconds.
    pub expires: u64,
    /// Files in the manifest.
    pub files: usize,
    /// Total bytes of the site.
    pub bytes: u64,
    /// Distinct blobs in the manifest.
    pub blobs: usize,
    /// Blobs uploaded by this run.
    pub uploaded: usize,
    /// Bytes uploaded by this run.
    pub uploaded_bytes: u64,
    /// Bytes this run did not send again because the instance kept them
    /// from an interrupted upload.
    pub resumed_bytes: u64,
    /// True once the instance imported the version.
    pub complete: bool,
    /// Mirrors the version authorizes.
    pub mirrors: Vec<PublicKey>,
    /// What happened to the owner-signed zone.
    pub zone: ZoneOutcome,
    /// The version the instance held was signed by another owner key (a
    /// key rotation): its zone and mirrors were not carried forward.
    pub rotated: bool,
    /// The signed envelope.
    pub envelope: Vec<u8>,
}

fn bar_style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}

impl Remote {
    /// A client for the instance at `url` (`https://host[:port]`), trusting
    /// the web PKI plus `ca_file`; `connect` overrides the host's address.
    pub fn new(
        url: &str,
        ca_file: Option<&Path>,
        connect: Option<SocketAddr>,
    ) -> Result<Self, RemoteError> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| RemoteError::Setup(format!("--to {url}: {e}")))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| RemoteError::Setup(format!("--to {url}: no host")))?
            .to_string();
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60));
        if let Some(ca) = ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| RemoteError::Setup(format!("--ca-file {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| RemoteError::Setup(format!("--ca-file {}: {e}", ca.display())))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if let Some(addr) = connect {
            b = b.resolve(&host, addr);
        }
        let client = b
            .build()
            .map_err(|e| RemoteError::Setup(format!("HTTP client: {e}")))?;
        Ok(Self {
            client,
            base: url.trim_end_matches('/').to_string(),
        })
    }

    fn url(&self, site: &str, rest: &str) -> String {
        format!("{}/.well-known/p2pcdn/v1/upload/{site}{rest}", self.base)
    }

    async fn check(url: &str, r: reqwest::Response) -> Result<reqwest::Response, RemoteError> {
        if r.status().is_success() {
            return Ok(r);
        }
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default().trim().to_string();
        Err(RemoteError::Refused {
            url: url.to_string(),
            status,
            body,
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        url: &str,
        r: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<T, RemoteError> {
        let http = |source| RemoteError::Http {
            url: url.to_string(),
            source,
        };
        let r = Self::check(url, r.map_err(http)?).await?;
        r.json().await.map_err(http)
    }

    /// What the instance holds for `site`.
    pub async fn info(&self, site: &str) -> Result<SiteInfo, RemoteError> {
        let url = self.url(site, "");
        Self::json(&url, self.client.get(&url).send().await).await
    }

    /// Offers a signed manifest; returns the blobs the instance lacks.
    pub async fn open(&self, site: &str, envelope: &[u8]) -> Result<UploadState, RemoteError> {
        let url = self.url(site, "");
        let r = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(envelope.to_vec())
            .send()
            .await;
        Self::json(&url, r).await
    }

    /// Uploads one blob from `path`, from byte `from` on (what the instance
    /// holds of an interrupted upload; 0: all of it).
    #[allow(clippy::too_many_arguments)]
    async fn put(
        &self,
        site: &str,
        hash: &BlobHash,
        size: u64,
        from: u64,
        path: &Path,
        bar: &indicatif::ProgressBar,
        max_rate: Option<u64>,
    ) -> Result<UploadState, RemoteError> {
        use tokio::io::AsyncSeekExt;
        let url = self.url(site, &format!("/blob/{hash}"));
        let walk = |e: std::io::Error| PublishError::Walk {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let mut file = tokio::fs::File::open(path).await.map_err(walk)?;
        if from > 0 {
            file.seek(std::io::SeekFrom::Start(from))
                .await
                .map_err(walk)?;
        }
        let bar = bar.clone();
        bar.inc(from);
        let stream =
            tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024).then(move |chunk| {
                let bar = bar.clone();
                async move {
                    if let (Ok(c), Some(rate)) = (&chunk, max_rate) {
                        let secs = c.len() as f64 / rate.max(1) as f64;
                        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                    }
                    if let Ok(c) = &chunk {
                        bar.inc(c.len() as u64);
                    }
                    chunk
                }
            });
        let mut req = self
            .client
            .put(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, size - from);
        if from > 0 {
            req = req.header(
                reqwest::header::CONTENT_RANGE,
                format!("bytes {from}-{}/{size}", size - 1),
            );
        }
        let r = req.body(reqwest::Body::wrap_stream(stream)).send().await;
        Self::json(&url, r).await
    }
}

/// Checks the pinned owner key and returns the newest manifest the instance
/// holds, verified with our own key (None: nothing held yet).
fn previous(info: &SiteInfo, key: &SecretKey) -> Result<Option<Manifest>, RemoteError> {
    if info.owner_key != key.public().to_string() {
        return Err(RemoteError::NotOwner {
            site: info.site.clone(),
            got: key.public().to_string(),
            want: info.owner_key.clone(),
        });
    }
    let Some(b64) = &info.current else {
        return Ok(None);
    };
    let env = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| ManifestError::Envelope(e.to_string()))?;
    Ok(Some(
        manifest::verify_signature(&env, &info.site, &key.public())?.manifest,
    ))
}

/// Publishes `opts.dir` to the instance behind `remote`.
pub async fn publish(
    remote: &Remote,
    key: &SecretKey,
    opts: &RemoteOptions,
) -> Result<RemoteReport, RemoteError> {
    let site = manifest::normalize_site(&opts.site);
    let info = remote.info(&site).await?;
    // A held version signed by another owner key (the instance re-pinned
    // after a key rotation) cannot be checked against ours: nothing of it
    // is carried forward.
    let (prev, rotated) = match previous(&info, key) {
        Err(RemoteError::Manifest(ManifestError::WrongKey { .. })) => (None, true),
        other => (other?, false),
    };

    let hash_bar = if opts.progress {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    hash_bar.set_style(bar_style(
        "hashing {msg} files, {bytes} ({binary_bytes_per_sec}) {spinner}",
    ));
    let (dir, doc, hb) = (
        opts.dir.clone(),
        opts.default_document.clone(),
        hash_bar.clone(),
    );
    let files = tokio::task::spawn_blocking(move || {
        let mut n = 0usize;
        publish::scan(&dir, &doc, &mut |bytes, files| {
            n += files;
            hb.inc(bytes);
            hb.set_message(n.to_string());
        })
    })
    .await
    .map_err(|e| RemoteError::Setup(e.to_string()))??;
    hash_bar.finish_and_clear();

    let zone_given = opts.zone_text.as_ref().map(|text| ZoneDoc {
        origin: info.zone.clone(),
        text: text.clone(),
    });
    let (zone, zone_outcome) = publish::choose_zone(
        zone_given.as_ref(),
        opts.drop_zone,
        prev.as_ref().and_then(|p| p.zone.clone()),
    );
    let mut mirrors = prev.as_ref().map(|p| p.mirrors.clone()).unwrap_or_default();
    for m in &opts.mirrors {
        if !mirrors.contains(m) {
            mirrors.push(*m);
        }
    }
    let now = crate::catalog::unix_now();
    let m = Manifest {
        format: FORMAT,
        site: site.clone(),
        version: opts
            .version
            .unwrap_or_else(|| publish::next_version(now, info.held)),
        issued: now,
        expires: now.saturating_add(opts.validity_secs),
        default_document: opts.default_document.clone(),
        cache_ttl: opts.cache_ttl,
        mirrors,
        files: files.iter().map(|f| f.entry.clone()).collect(),
        zone,
    };
    let mut report = send(
        remote,
        key,
        &m,
        &files,
        opts.progress,
        opts.max_rate,
        zone_outcome,
    )
    .await?;
    report.rotated = rotated;
    Ok(report)
}

/// Re-signs the newest version the instance holds with a new version number
/// and expiry; the files are the same, so nothing is uploaded.
pub async fn resign(
    remote: &Remote,
    key: &SecretKey,
    site: &str,
    validity_secs: u64,
) -> Result<RemoteReport, RemoteError> {
    let site = manifest::normalize_site(site);
    let info = remote.info(&site).await?;
    let prev = previous(&info, key)?.ok_or_else(|| RemoteError::NothingToResign(site.clone()))?;
    let now = crate::catalog::unix_now();
    let m = publish::resigned(
        &prev,
        publish::next_version(now, info.held),
        now,
        validity_secs,
    );
    let zone = if m.zone.is_some() {
        ZoneOutcome::Carried
    } else {
        ZoneOutcome::None
    };
    send(remote, key, &m, &[], false, None, zone).await
}

/// Signs `m`, offers it, uploads what the instance lacks from `files`.
async fn send(
    remote: &Remote,
    key: &SecretKey,
    m: &Manifest,
    files: &[LocalFile],
    progress: bool,
    max_rate: Option<u64>,
    zone: ZoneOutcome,
) -> Result<RemoteReport, RemoteError> {
    let envelope = manifest::sign(m, key)?;
    let opened = remote.open(&m.site, &envelope).await?;
    let by_hash: HashMap<BlobHash, &LocalFile> =
        files.iter().map(|f| (f.entry.blake3, f)).collect();
    let mut todo: Vec<(BlobHash, u64, u64)> = opened
        .missing
        .iter()
        .map(|x| (x.blake3, x.size, x.have.min(x.size)))
        .collect();
    // Small blobs first: an interruption then loses the least work.
    todo.sort_by_key(|(h, n, _)| (*n, *h));
    let total: u64 = todo.iter().map(|(_, n, _)| n).sum();
    let bar = if progress && !todo.is_empty() {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(bar_style(
        "uploading {msg} {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    ));
    let mut complete = opened.complete;
    let mut uploaded_bytes = 0;
    let mut resumed_bytes = 0;
    for (i, (hash, size, have)) in todo.iter().enumerate() {
        let Some(f) = by_hash.get(hash) else {
            return Err(RemoteError::Setup(format!(
                "the instance asked for blob {hash}, which this manifest does not list"
            )));
        };
        bar.set_message(format!("file {}/{}", i + 1, todo.len()));
        let before = bar.position();
        let mut attempt = 0;
        // An earlier, interrupted upload left `from` bytes on the instance.
        let mut from = *have;
        let state = loop {
            match remote
                .put(&m.site, hash, *size, from, &f.abs, &bar, max_rate)
                .await
            {
                Ok(s) => break s,
                // Transport failures are retried from what the instance
                // kept; refusals are final.
                Err(RemoteError::Http { .. }) if attempt < 2 => {
                    attempt += 1;
                    bar.set_position(before);
                    tokio::time::sleep(Duration::from_secs(attempt)).await;
                    from = remote
                        .open(&m.site, &envelope)
                        .await
                        .ok()
                        .and_then(|o| o.missing.into_iter().find(|x| x.blake3 == *hash))
                        .map_or(0, |x| x.have.min(*size));
                }
                Err(e) => {
                    bar.abandon();
                    return Err(e);
                }
            }
        };
        uploaded_bytes += size - from;
        resumed_bytes += from;
        complete = state.complete;
    }
    bar.finish_and_clear();
    Ok(RemoteReport {
        site: m.site.clone(),
        version: m.version,
        expires: m.expires,
        files: m.files.len(),
        bytes: m.files.iter().map(|f| f.size).sum(),
        blobs: {
            let mut v: Vec<_> = m.files.iter().map(|f| f.blake3).collect();
            v.sort();
            v.dedup();
            v.len()
        },
        uploaded: todo.len(),
        uploaded_bytes,
        resumed_bytes,
        complete,
        mirrors: m.mirrors.clone(),
        zone,
        rotated: false,
        envelope,
    })
}
