//! Each site's version lifecycle, owned in one place.
//!
//! [`Sites`] takes signed manifest envelopes ([`Sites::offer`]), verifies
//! each envelope once (owner signature, expiry, rollback: see
//! [`manifest::accept`]) and keeps the verified manifest in memory; it
//! walks every version through the typed states of [`lifecycle::Stage`]
//! (Offered → Pending {missing} → Complete → Retired), learns of blobs the
//! store committed ([`Sites::blob_committed`]), completes a version and
//! collects garbage in one place ([`Sites::complete`]), answers whether the
//! owner authorizes a node ([`Sites::authorizes`]) and publishes the
//! [`Catalog`] snapshot that DNS, HTTP and steering read.
//!
//! The database stays the durable record (rows and their states); this
//! module is the only code that moves a version from one state to another.
//! Data flows publish → store → sites → federation → steer → serve: this
//! module imports nothing from `federation`, `http` or `dns`.

pub mod lifecycle;
pub mod name;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::sync::watch;

use crate::catalog::{Catalog, LiveSite, SharedCatalog};
use crate::config::SiteConfig;
use crate::db::{Db, DbError, ManifestState, StoredManifest};
use crate::hash::BlobHash;
use crate::keys::PublicKey;
use crate::manifest::{self, Acceptance, ManifestError, VerifiedManifest};
use crate::store::{BlobStore, StoreError};
pub use lifecycle::{Stage, Transition};
pub use name::{SiteName, Version};

/// Why an offered manifest (or a lifecycle step) failed.
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

/// Result of an offer.
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

/// Whether `me` may serve content of a manifest with this mirror list
/// (an empty list lets every mirror serve).
pub fn authorized(mirrors: &[PublicKey], me: &PublicKey) -> bool {
    mirrors.is_empty() || mirrors.contains(me)
}

/// A version known to this instance: its verified manifest and its stage.
#[derive(Debug, Clone)]
struct Tracked {
    manifest: Arc<VerifiedManifest>,
    stage: Stage,
}

/// The sites of one instance (see the module documentation).
pub struct Sites {
    configs: RwLock<HashMap<SiteName, SiteConfig>>,
    db: Arc<Db>,
    store: BlobStore,
    /// This node's key: versions that do not authorize it are not served.
    me: Option<PublicKey>,
    /// Verified manifests of pending and complete versions.
    versions: Mutex<HashMap<(SiteName, Version), Tracked>>,
    catalog: SharedCatalog,
    published: watch::Sender<u64>,
    /// Stored manifests found invalid at the last build, with why: each is
    /// logged once (at WARN) until it becomes valid or goes away.
    invalid: Mutex<HashSet<(String, u64, String)>>,
}

impl Sites {
    /// The sites of `configs`, over the instance's database and store; no
    /// catalog is published until [`Sites::publish`].
    pub fn new(
        configs: &[SiteConfig],
        db: Arc<Db>,
        store: BlobStore,
        me: Option<PublicKey>,
    ) -> Self {
        let sites = Self {
            configs: RwLock::new(HashMap::new()),
            db,
            store,
            me,
            versions: Mutex::new(HashMap::new()),
            catalog: Arc::new(arc_swap::ArcSwap::from_pointee(Catalog::default())),
            published: watch::channel(0).0,
            invalid: Mutex::new(HashSet::new()),
        };
        sites.set_configs(configs);
        sites
    }

    /// Replaces the configured sites (config reload); takes effect at the
    /// next [`Sites::publish`].
    pub fn set_configs(&self, configs: &[SiteConfig]) {
        let map = configs
            .iter()
            .map(|s| (SiteName::new(&s.hostname), s.clone()))
            .collect();
        *self.configs.write().unwrap_or_else(PoisonError::into_inner) = map;
    }

    fn config(&self, site: &SiteName) -> Option<SiteConfig> {
        self.configs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(site)
            .cloned()
    }

    /// The published catalog (readers `load()` a lock-free snapshot).
    pub fn catalog(&self) -> SharedCatalog {
        self.catalog.clone()
    }

    /// Publications of the catalog: the value counts them.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Offers a signed envelope for the site it names (unknown sites are
    /// refused with [`IngestError::UnknownSite`]).
    pub fn offer(&self, envelope: &[u8], now: u64) -> Result<Imported, IngestError> {
        let site = SiteName::new(&manifest::peek_site(envelope)?);
        self.offer_for(&site, envelope, now)
    }

    /// Offers a signed envelope that must be for `site`: verifies it once
    /// (owner signature, not expired, newer than any version held), records
    /// it, completes it at once when the store holds every blob, and
    /// publishes the catalog either way.
    pub fn offer_for(
        &self,
        site: &SiteName,
        envelope: &[u8],
        now: u64,
    ) -> Result<Imported, IngestError> {
        let sc = self
            .config(site)
            .ok_or_else(|| IngestError::UnknownSite(site.to_string()))?;
        let held = self.db.held_version(site.as_str())?;
        let vm = Arc::new(manifest::accept(
            envelope,
            Acceptance {
                site: site.as_str(),
                owner: &sc.owner_key,
                held_version: held,
                now,
            },
        )?);
        let m = &vm.manifest;
        let version = Version(m.version);
        let missing = self.missing(&vm);
        let mut stage = Stage::Offered;
        let step = stage.examined(missing.iter().copied());
        let state = if stage.is_complete() {
            ManifestState::Complete
        } else {
            ManifestState::Pending
        };
        if !self.db.insert_manifest(m, &vm.envelope, now, state)? {
            // Another offer of this or a newer version won the race.
            let held = self.db.held_version(site.as_str())?.unwrap_or(m.version);
            return Err(ManifestError::NotNewer {
                site: m.site.clone(),
                got: m.version,
                held,
            }
            .into());
        }
        self.track(site, version, vm.clone(), stage);
        if step != Transition::Completed {
            // The newest manifest changed: it decides authorization and
            // which version steering wants, so publish at once.
            self.publish(now);
            return Ok(Imported::Pending {
                version: version.0,
                missing,
            });
        }
        self.record_complete(site, version, now)?;
        tracing::info!(site = %site, version = %version, files = vm.manifest.files.len(), "manifest complete; now served");
        Ok(Imported::Complete { version: version.0 })
    }

    /// Blobs of `vm` the store does not hold.
    fn missing(&self, vm: &VerifiedManifest) -> Vec<BlobHash> {
        vm.blobs()
            .into_iter()
            .filter(|(h, size)| !self.store.contains(h, *size))
            .map(|(h, _)| h)
            .collect()
    }

    fn track(
        &self,
        site: &SiteName,
        version: Version,
        manifest: Arc<VerifiedManifest>,
        stage: Stage,
    ) {
        self.lock_versions()
            .insert((site.clone(), version), Tracked { manifest, stage });
    }

    fn lock_versions(&self) -> std::sync::MutexGuard<'_, HashMap<(SiteName, Version), Tracked>> {
        self.versions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The verified manifest of a stored row: verified on first sight (and
    /// again if the row's bytes ever differ), then served from memory; the
    /// expiry is checked on every call.
    pub fn verified(
        &self,
        row: &StoredManifest,
        now: u64,
    ) -> Result<Arc<VerifiedManifest>, IngestError> {
        let site = SiteName::new(&row.site);
        let key = (site.clone(), Version(row.version));
        let cached = self
            .lock_versions()
            .get(&key)
            .filter(|t| t.manifest.envelope == row.envelope)
            .map(|t| t.manifest.clone());
        let vm = match cached {
            Some(vm) => vm,
            None => {
                let sc = self
                    .config(&site)
                    .ok_or_else(|| IngestError::UnknownSite(site.to_string()))?;
                let vm = Arc::new(manifest::verify_signature(
                    &row.envelope,
                    site.as_str(),
                    &sc.owner_key,
                )?);
                let stage = match row.state {
                    ManifestState::Complete => Stage::Complete,
                    ManifestState::Retired => Stage::Retired,
                    ManifestState::Pending => {
                        let mut s = Stage::Offered;
                        s.examined(self.missing(&vm));
                        s
                    }
                };
                if stage != Stage::Retired {
                    self.track(&site, key.1, vm.clone(), stage);
                }
                vm
            }
        };
        manifest::check_time(&vm.manifest, now)?;
        Ok(vm)
    }

    /// A blob reached the store, verified: every pending version waiting
    /// for it advances, and those it completes are completed (and garbage
    /// collected). Returns the versions completed.
    pub fn blob_committed(&self, hash: &BlobHash, now: u64) -> Vec<(SiteName, Version)> {
        let done: Vec<(SiteName, Version)> = self
            .lock_versions()
            .iter_mut()
            .filter_map(|(k, t)| {
                (t.stage.blob_committed(hash) == Transition::Completed).then(|| k.clone())
            })
            .collect();
        for (site, version) in &done {
            if let Err(e) = self.complete(site, *version, now) {
                tracing::error!(site = %site, version = %version, error = %e, "could not mark version complete");
            }
        }
        done
    }

    /// Completes `site@version` once every blob is in the store: records
    /// the blobs, marks it complete and retires older versions (one
    /// transaction), publishes the catalog, then collects garbage. The one
    /// place a replicated version becomes served.
    pub fn complete(&self, site: &SiteName, version: Version, now: u64) -> Result<(), IngestError> {
        let vm = self
            .lock_versions()
            .get(&(site.clone(), version))
            .map(|t| t.manifest.clone());
        if let Some(vm) = &vm {
            for (h, s) in vm.blobs() {
                self.db.record_blob(&h, s, now)?;
            }
        }
        self.record_complete(site, version, now)?;
        tracing::info!(site = %site, version = %version, "replicated and verified; now serving");
        self.collect_garbage();
        Ok(())
    }

    /// Marks the version complete in the database and in memory, retires
    /// older versions, and publishes the catalog.
    fn record_complete(
        &self,
        site: &SiteName,
        version: Version,
        now: u64,
    ) -> Result<(), IngestError> {
        self.db.complete(site.as_str(), version.0)?;
        {
            let mut versions = self.lock_versions();
            if let Some(t) = versions.get_mut(&(site.clone(), version)) {
                t.stage.found_complete();
            }
            // Retired versions are never served again: drop their manifests.
            versions.retain(|(s, v), t| {
                let older = s == site && *v < version;
                if older {
                    t.stage.retire();
                }
                !older
            });
        }
        self.publish(now);
        Ok(())
    }

    /// Removes blobs that no pending or complete version references, and
    /// logs what it freed. Returns (files removed, bytes freed).
    pub fn collect_garbage(&self) -> (usize, u64) {
        match collect_garbage(&self.db, &self.store) {
            Ok((0, _)) => (0, 0),
            Ok((n, b)) => {
                tracing::info!(
                    removed = n,
                    bytes = b,
                    "garbage-collected blobs no held version references"
                );
                (n, b)
            }
            Err(e) => {
                tracing::warn!(error = %e, "garbage collection failed");
                (0, 0)
            }
        }
    }

    /// True when the newest known manifest of `site` authorizes `key`
    /// (lists it, or lists no mirrors); true for a site with no manifest.
    pub fn authorizes(&self, site: &str, key: &PublicKey) -> bool {
        self.catalog
            .load()
            .site(site)
            .and_then(|s| s.newest.as_ref())
            .is_none_or(|m| authorized(&m.manifest.mirrors, key))
    }

    /// Builds the catalog from the stored versions (each verified once,
    /// see [`Sites::verified`]) and publishes it. Returns the previous and
    /// the new snapshot.
    pub fn publish(&self, now: u64) -> (Arc<Catalog>, Arc<Catalog>) {
        let new = Arc::new(self.build(now));
        let old = self.catalog.swap(new.clone());
        self.published.send_modify(|n| *n = n.wrapping_add(1));
        (old, new)
    }

    /// The snapshot: for each configured site its newest valid manifest
    /// (deciding authorization) and the newest complete one it may serve.
    fn build(&self, now: u64) -> Catalog {
        let configs = self
            .configs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut sites: HashMap<SiteName, LiveSite> = configs
            .into_iter()
            .map(|(name, config)| {
                let site = LiveSite {
                    config,
                    current: None,
                    newest: None,
                    authorized: true,
                };
                (name, site)
            })
            .collect();
        let rows = match self.db.current_manifests() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read manifests; serving nothing until the database recovers");
                return Catalog::from_sites(sites);
            }
        };
        let mut invalid = vec![];
        let allowed = |vm: &VerifiedManifest| {
            self.me
                .as_ref()
                .is_none_or(|me| authorized(&vm.manifest.mirrors, me))
        };
        for site in sites.values_mut() {
            match self.db.newest_manifest(&site.config.hostname) {
                Ok(Some(row)) => match self.verified(&row, now) {
                    Ok(vm) => {
                        site.authorized = allowed(&vm);
                        site.newest = Some(vm);
                    }
                    Err(e) => invalid.push((
                        row.site.clone(),
                        row.version,
                        format!("newest stored manifest is not valid: {e}"),
                    )),
                },
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "cannot read manifests"),
            }
        }
        for row in rows {
            let Some(site) = sites.get_mut(row.site.as_str()) else {
                continue;
            };
            if !site.config.mirror {
                continue;
            }
            match self.verified(&row, now) {
                Ok(vm) => {
                    let newest_allows = site.newest.as_ref().is_none_or(|n| allowed(n));
                    if allowed(&vm) && newest_allows {
                        site.current = Some(vm);
                    } else {
                        // The instance's refresher warns once per change.
                        tracing::debug!(site = %row.site, version = row.version, "owner does not authorize this node to serve the site");
                    }
                }
                Err(e) => invalid.push((
                    row.site.clone(),
                    row.version,
                    format!("not serving stored manifest: {e}"),
                )),
            }
        }
        let _ = self.warn_invalid(invalid);
        Catalog::from_sites(sites)
    }

    /// Logs each invalid stored manifest once, not at every rebuild (again
    /// only after it was valid or gone for a rebuild). Returns how many
    /// were logged.
    fn warn_invalid(&self, now: Vec<(String, u64, String)>) -> usize {
        let now: HashSet<_> = now.into_iter().collect();
        let mut seen = self.invalid.lock().unwrap_or_else(PoisonError::into_inner);
        let mut logged = 0;
        for (site, version, what) in now.difference(&seen) {
            tracing::warn!(%site, version, "{what}");
            logged += 1;
        }
        *seen = now;
        logged
    }

    /// The stage of `site@version`, if this instance tracks it.
    pub fn stage(&self, site: &SiteName, version: Version) -> Option<Stage> {
        self.lock_versions()
            .get(&(site.clone(), version))
            .map(|t| t.stage.clone())
    }
}

/// Removes blobs that no pending or complete manifest references.
/// Returns (files removed, bytes freed).
fn collect_garbage(db: &Db, store: &BlobStore) -> Result<(usize, u64), IngestError> {
    let mut keep: HashSet<BlobHash> = HashSet::new();
    for row in db.live_manifests()? {
        // Parse without verification: GC must keep whatever a live row names.
        let Ok(m) = manifest::peek_manifest(&row.envelope) else {
            continue;
        };
        keep.extend(m.files.iter().map(|f| f.blake3));
    }
    Ok(store.gc(&keep)?)
}

#[cfg(test)]
mod tests;
