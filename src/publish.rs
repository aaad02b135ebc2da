//! `p2pcdn publish`: walk a folder, hash and store every file, build and sign
//! the manifest, and import it into an instance's data directory.
//!
//! Publishing writes straight into the data directory named by the instance's
//! config (SQLite in WAL mode is safe to share with a running `serve`, which
//! notices the new version within a second). Unchanged files are not copied
//! again: a blob already in the store is skipped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, SiteConfig};
use crate::db::Db;
use crate::hash::BlobHash;
use crate::keys::SecretKey;
use crate::manifest::{self, FileEntry, Manifest, FORMAT};
use crate::sites::{Imported, IngestError, SiteName, Sites};
use crate::store::{BlobStore, StoreError};

/// Publish errors.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The folder could not be walked.
    #[error("{path}: {message}")]
    Walk {
        /// Path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A file name cannot be a manifest path.
    #[error("{0}: file name is not valid UTF-8 or not a clean relative path; rename it")]
    BadName(String),
    /// Storing a file failed (disk full, changed while publishing, ...).
    #[error("{path}: {source}")]
    Store {
        /// File.
        path: String,
        /// Cause.
        source: StoreError,
    },
    /// The manifest was refused or could not be stored.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// Manifest could not be built.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// The signing key is not the owner key configured for the site.
    #[error("the key {got} is not the owner key of {site} in the instance config ({want})")]
    NotOwner {
        /// Site.
        site: String,
        /// Key used.
        got: String,
        /// Configured key.
        want: String,
    },
    /// The site has no default document.
    #[error("{dir} has no {doc}: add it or pass --default-document")]
    NoDefault {
        /// Folder.
        dir: String,
        /// Document name.
        doc: String,
    },
    /// Database failure.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// `resign` found no version to re-sign.
    #[error("no version of {0} is held here to re-sign; publish first")]
    NothingToResign(String),
}

/// What to publish.
#[derive(Debug, Clone)]
pub struct PublishOptions {
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
    /// Print progress to stderr.
    pub progress: bool,
    /// Override issue time (tests); default now.
    pub now: Option<u64>,
    /// Zone records to sign into the manifest (for instances without a local
    /// zone file). `None` carries the previous version's zone forward.
    pub zone: Option<manifest::ZoneDoc>,
    /// Sign no zone even if the previous version had one.
    pub drop_zone: bool,
}

/// What a publish did.
#[derive(Debug, Clone)]
pub struct PublishReport {
    /// Site.
    pub site: String,
    /// Version published.
    pub version: u64,
    /// Files in the manifest.
    pub files: usize,
    /// Total bytes of the site.
    pub bytes: u64,
    /// Blobs newly written.
    pub new_blobs: usize,
    /// Outcome of the import.
    pub imported: Imported,
    /// The signed envelope.
    pub envelope: Vec<u8>,
    /// Mirrors authorized by this version.
    pub mirrors: Vec<crate::keys::PublicKey>,
    /// Mirrors the previous version authorized and this one does not.
    pub dropped_mirrors: Vec<crate::keys::PublicKey>,
    /// What happened to the owner-signed zone.
    pub zone: ZoneOutcome,
}

/// What a publish did with the owner-signed zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneOutcome {
    /// No zone, before or now.
    None,
    /// A zone file was given and signed.
    Signed,
    /// The previous version's zone was carried forward unchanged.
    Carried,
    /// The previous version had a zone and this one has none (`drop_zone`).
    Dropped,
}

/// Content type for a file name (charset for text types).
pub fn content_type_for(path: &str) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let s = mime.essence_str().to_string();
    if s.starts_with("text/")
        || s == "application/javascript"
        || s == "application/json"
        || s == "image/svg+xml"
    {
        format!("{s}; charset=utf-8")
    } else {
        s
    }
}

struct Found {
    rel: String,
    abs: PathBuf,
    size: u64,
}

fn walk(dir: &Path) -> Result<Vec<Found>, PublishError> {
    let mut out = vec![];
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| PublishError::Walk {
            path: e
                .path()
                .map_or_else(|| dir.display().to_string(), |p| p.display().to_string()),
            message: e.to_string(),
        })?;
        let ft = entry.file_type();
        if ft.is_dir() {
            continue;
        }
        if ft.is_symlink() {
            tracing::warn!(path = %entry.path().display(), "skipping symbolic link");
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(dir)
            .ok()
            .and_then(|p| p.to_str())
            .map(|s| s.replace(std::path::MAIN_SEPARATOR, "/"))
            .ok_or_else(|| PublishError::BadName(entry.path().display().to_string()))?;
        if !manifest::is_clean_relative_path(&rel) {
            return Err(PublishError::BadName(entry.path().display().to_string()));
        }
        let size = entry
            .metadata()
            .map_err(|e| PublishError::Walk {
                path: entry.path().display().to_string(),
                message: e.to_string(),
            })?
            .len();
        out.push(Found {
            rel,
            abs: entry.path().to_path_buf(),
            size,
        });
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// Publishes `opts.dir` as `opts.site` into the instance described by `cfg`.
pub fn publish(
    cfg: &Config,
    key: &SecretKey,
    opts: &PublishOptions,
) -> Result<PublishReport, PublishError> {
    let site = manifest::normalize_site(&opts.site);
    let site_cfg = owned_site(cfg, &site, key)?;
    let files = walk(&opts.dir)?;
    if !files.iter().any(|f| f.rel == opts.default_document) {
        return Err(PublishError::NoDefault {
            dir: opts.dir.display().to_string(),
            doc: opts.default_document.clone(),
        });
    }
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| PublishError::Walk {
        path: cfg.data_dir.display().to_string(),
        message: e.to_string(),
    })?;
    let store = BlobStore::open(&cfg.data_dir).map_err(|source| PublishError::Store {
        path: cfg.data_dir.display().to_string(),
        source,
    })?;
    let db = Arc::new(Db::open(&cfg.data_dir.join("p2pcdn.db"))?);
    let now = opts.now.unwrap_or_else(crate::catalog::unix_now);

    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    let mut done_bytes = 0u64;
    let mut new_blobs = 0;
    let mut entries = Vec::with_capacity(files.len());
    let started = Instant::now();
    let mut last_report = Instant::now();
    for (i, f) in files.iter().enumerate() {
        let (hash, size, wrote): (BlobHash, u64, bool) =
            store
                .put_file(&f.abs)
                .map_err(|source| PublishError::Store {
                    path: f.abs.display().to_string(),
                    source,
                })?;
        db.record_blob(&hash, size, now)?;
        new_blobs += usize::from(wrote);
        done_bytes += size;
        entries.push(FileEntry {
            path: f.rel.clone(),
            blake3: hash,
            size,
            content_type: content_type_for(&f.rel),
            headers: Default::default(),
        });
        if opts.progress
            && (last_report.elapsed() > Duration::from_millis(500) || i + 1 == files.len())
        {
            last_report = Instant::now();
            let secs = started.elapsed().as_secs_f64().max(0.001);
            let _ = write!(
                std::io::stderr(),
                "\r  hashed {}/{} files, {:.1}/{:.1} MiB ({:.0} MiB/s)   ",
                i + 1,
                files.len(),
                done_bytes as f64 / 1048576.0,
                total_bytes as f64 / 1048576.0,
                done_bytes as f64 / 1048576.0 / secs
            );
            if i + 1 == files.len() {
                let _ = writeln!(std::io::stderr());
            }
        }
    }

    let held = db.held_version(&site)?;
    // The newest version this instance holds: what the new one replaces.
    let previous = held
        .and_then(|v| db.manifest(&site, v).ok().flatten())
        .and_then(|m| manifest::peek_manifest(&m.envelope).ok());
    let (zone, zone_outcome) = choose_zone(
        opts.zone.as_ref(),
        opts.drop_zone,
        previous.as_ref().and_then(|p| p.zone.clone()),
    );
    let mirrors = authorized_mirrors(cfg, &site_cfg.mirrors);
    let dropped_mirrors: Vec<crate::keys::PublicKey> = previous
        .as_ref()
        .map(|p| {
            p.mirrors
                .iter()
                .filter(|k| !mirrors.contains(k))
                .copied()
                .collect()
        })
        .unwrap_or_default();
    let version = opts.version.unwrap_or_else(|| next_version(now, held));
    let m = Manifest {
        format: FORMAT,
        site: site.clone(),
        version,
        issued: now,
        expires: now.saturating_add(opts.validity_secs),
        default_document: opts.default_document.clone(),
        cache_ttl: opts.cache_ttl,
        mirrors: mirrors.clone(),
        files: entries,
        zone,
    };
    let envelope = manifest::sign(&m, key)?;
    // Acceptance always uses the real clock, whatever issue time was chosen.
    let sites = Sites::new(std::slice::from_ref(&site_cfg), db, store, None);
    let imported = sites.offer_for(
        &SiteName::new(&site_cfg.hostname),
        &envelope,
        crate::catalog::unix_now(),
    )?;
    sites.collect_garbage();
    Ok(PublishReport {
        site,
        version,
        files: m.files.len(),
        bytes: total_bytes,
        new_blobs,
        imported,
        envelope,
        mirrors,
        dropped_mirrors,
        zone: zone_outcome,
    })
}

/// `resign` into a local data directory: the newest version held, re-signed
/// as a new version valid `validity_secs` from now, imported at once (same
/// blobs). Returns (version, expires).
pub fn resign_local(
    cfg: &Config,
    key: &SecretKey,
    site: &str,
    validity_secs: u64,
) -> Result<(u64, u64), PublishError> {
    let site = manifest::normalize_site(site);
    let site_cfg = owned_site(cfg, &site, key)?;
    let store = BlobStore::open(&cfg.data_dir).map_err(|source| PublishError::Store {
        path: cfg.data_dir.display().to_string(),
        source,
    })?;
    let db = Arc::new(Db::open(&cfg.data_dir.join("p2pcdn.db"))?);
    let held = db.held_version(&site)?;
    let prev = db
        .newest_manifest(&site)?
        .ok_or_else(|| PublishError::NothingToResign(site.clone()))?;
    let prev = manifest::verify_signature(&prev.envelope, &site, &key.public())?.manifest;
    let now = crate::catalog::unix_now();
    let m = resigned(&prev, next_version(now, held), now, validity_secs);
    let envelope = manifest::sign(&m, key)?;
    Sites::new(std::slice::from_ref(&site_cfg), db, store, None).offer_for(
        &SiteName::new(&site_cfg.hostname),
        &envelope,
        now,
    )?;
    Ok((m.version, m.expires))
}

/// The version a new manifest gets by default: the clock, but always above
/// the version held.
pub fn next_version(now: u64, held: Option<u64>) -> u64 {
    now.max(held.map_or(1, |h| h.saturating_add(1)))
}

/// The zone a new version signs: the given zone file, else the previous
/// version's zone unless `drop_zone`.
pub fn choose_zone(
    given: Option<&manifest::ZoneDoc>,
    drop_zone: bool,
    previous: Option<manifest::ZoneDoc>,
) -> (Option<manifest::ZoneDoc>, ZoneOutcome) {
    match (given, drop_zone, previous) {
        (Some(z), _, _) => (Some(z.clone()), ZoneOutcome::Signed),
        (None, true, Some(_)) => (None, ZoneOutcome::Dropped),
        (None, false, Some(z)) => (Some(z), ZoneOutcome::Carried),
        (None, _, None) => (None, ZoneOutcome::None),
    }
}

/// The same site content as `previous`, re-signed as `version` and valid for
/// `validity_secs` from `now` (`resign`: extend expiry, nothing to upload).
pub fn resigned(previous: &Manifest, version: u64, now: u64, validity_secs: u64) -> Manifest {
    Manifest {
        version,
        issued: now,
        expires: now.saturating_add(validity_secs),
        ..previous.clone()
    }
}

/// A file of the folder being published, hashed, with where its bytes are.
#[derive(Debug, Clone)]
pub struct LocalFile {
    /// The manifest entry.
    pub entry: FileEntry,
    /// The file on disk.
    pub abs: PathBuf,
}

/// Walks and hashes `dir` without storing anything (remote publish needs no
/// data directory). `progress(bytes, files)` is called after each file.
pub fn scan(
    dir: &Path,
    default_document: &str,
    progress: &mut dyn FnMut(u64, usize),
) -> Result<Vec<LocalFile>, PublishError> {
    let files = walk(dir)?;
    if !files.iter().any(|f| f.rel == default_document) {
        return Err(PublishError::NoDefault {
            dir: dir.display().to_string(),
            doc: default_document.to_string(),
        });
    }
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let (hash, size) =
            crate::store::hash_file(&f.abs).map_err(|source| PublishError::Store {
                path: f.abs.display().to_string(),
                source,
            })?;
        progress(size, 1);
        out.push(LocalFile {
            entry: FileEntry {
                content_type: content_type_for(&f.rel),
                path: f.rel,
                blake3: hash,
                size,
                headers: Default::default(),
            },
            abs: f.abs,
        });
    }
    Ok(out)
}

/// Total bytes of `files`.
pub fn total_bytes(files: &[LocalFile]) -> u64 {
    files.iter().map(|f| f.entry.size).sum()
}

/// The mirrors a new manifest authorizes: this instance's node key (when its
/// key file is readable) plus the site's configured `mirrors`.
fn authorized_mirrors(
    cfg: &Config,
    extra: &[crate::keys::PublicKey],
) -> Vec<crate::keys::PublicKey> {
    let mut v = vec![];
    if let Ok(k) = SecretKey::read(&cfg.node.key) {
        v.push(k.public());
    }
    for k in extra {
        if !v.contains(k) {
            v.push(*k);
        }
    }
    v
}

/// The configured site `site` (normalized), if `key` is its owner key.
fn owned_site(cfg: &Config, site: &str, key: &SecretKey) -> Result<SiteConfig, PublishError> {
    let site_cfg = cfg
        .site(site)
        .ok_or_else(|| IngestError::UnknownSite(site.to_string()))?;
    if site_cfg.owner_key != key.public() {
        return Err(PublishError::NotOwner {
            site: site.to_string(),
            got: key.public().to_string(),
            want: site_cfg.owner_key.to_string(),
        });
    }
    Ok(site_cfg.clone())
}
