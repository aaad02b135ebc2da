//! Accepting manifests into an instance's data directory: verify, record,
//! and switch the served version atomically once every blob is present.
//!
//! Used by `publish` (local) and, later, by federation pulls. Order of
//! operations gives crash safety: blobs are written (verified) first, then
//! the manifest row; a manifest becomes `complete` in one transaction that
//! also retires older versions, so readers see the old or the new version,
//! never a mix.

use std::collections::HashSet;

use crate::config::SiteConfig;
use crate::db::{Db, DbError, ManifestState};
use crate::hash::BlobHash;
use crate::manifest::{self, Acceptance, ManifestError};
use crate::store::{BlobStore, StoreError};

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The manifest was refused.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Database failure.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The site is not configured on this instance.
    #[error(
        "site {0} is not configured on this instance (add a [[site]] entry with its owner key)"
    )]
    UnknownSite(String),
}

/// Result of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// Every blob present: this version is now served.
    Complete {
        /// Version now served.
        version: u64,
    },
    /// Accepted, but these blobs are missing; it is not served yet.
    Pending {
        /// Version.
        version: u64,
        /// Missing blobs.
        missing: Vec<BlobHash>,
    },
}

/// Verifies and stores a signed manifest for `site`.
pub fn import_manifest(
    db: &Db,
    store: &BlobStore,
    site: &SiteConfig,
    envelope: &[u8],
    now: u64,
) -> Result<Imported, IngestError> {
    let held = db.held_version(&site.hostname)?;
    let vm = manifest::accept(
        envelope,
        Acceptance {
            site: &site.hostname,
            owner: &site.owner_key,
            held_version: held,
            now,
        },
    )?;
    let m = &vm.manifest;
    let missing: Vec<BlobHash> = vm
        .blobs()
        .into_iter()
        .filter(|(h, size)| !store.contains(h, *size))
        .map(|(h, _)| h)
        .collect();
    let state = if missing.is_empty() {
        ManifestState::Complete
    } else {
        ManifestState::Pending
    };
    if !db.insert_manifest(m, &vm.envelope, now, state)? {
        // Another import of this or a newer version won the race.
        let held = db.held_version(&m.site)?.unwrap_or(m.version);
        return Err(ManifestError::NotNewer {
            site: m.site.clone(),
            got: m.version,
            held,
        }
        .into());
    }
    if !missing.is_empty() {
        return Ok(Imported::Pending {
            version: m.version,
            missing,
        });
    }
    db.complete(&m.site, m.version)?;
    tracing::info!(site = %m.site, version = m.version, files = m.files.len(), "manifest complete; now served");
    Ok(Imported::Complete { version: m.version })
}

/// Removes blobs that no pending or complete manifest references.
/// Returns (files removed, bytes freed).
pub fn collect_garbage(db: &Db, store: &BlobStore) -> Result<(usize, u64), IngestError> {
    let mut keep: HashSet<BlobHash> = HashSet::new();
    for row in db.live_manifests()? {
        // Parse without verification: GC must keep whatever a live row names.
        let Ok(m) = manifest::peek_manifest(&row.envelope) else {
            continue;
        };
        keep.extend(m.files.iter().map(|f| f.blake3));
    }
    let (n, bytes) = store.gc(&keep)?;
    Ok((n, bytes))
}
