//! The in-memory view of what this instance serves: for each configured site,
//! its newest complete, verified, unexpired manifest.
//!
//! Rebuilt from the database whenever it changes (or every minute, so expiry
//! takes effect); readers get a lock-free snapshot (`arc_swap`). Rebuilding
//! re-checks every manifest's signature against the pinned owner key, so a
//! tampered database row is never served.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{Config, SiteConfig};
use crate::db::Db;
use crate::federation::replicate::authorized;
use crate::keys::PublicKey;
use crate::manifest::{self, VerifiedManifest};

/// A site and the manifest currently served for it.
#[derive(Debug, Clone)]
pub struct LiveSite {
    /// Configuration.
    pub config: SiteConfig,
    /// The served manifest (None: nothing complete, valid and authorized).
    pub current: Option<Arc<VerifiedManifest>>,
    /// The newest valid manifest known (may still be replicating; decides
    /// which mirrors are authorized and which version steering wants).
    pub newest: Option<Arc<VerifiedManifest>>,
    /// False when the newest manifest lists mirrors and this node is not
    /// among them: the owner does not let it serve the site.
    pub authorized: bool,
}

impl LiveSite {
    /// `Last-Modified` of the site's files: the manifest's issue time.
    pub fn last_modified(&self) -> SystemTime {
        self.current.as_ref().map_or(UNIX_EPOCH, |m| {
            UNIX_EPOCH + Duration::from_secs(m.manifest.issued)
        })
    }
}

/// Snapshot of all sites.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    sites: HashMap<String, LiveSite>,
}

impl Catalog {
    /// Builds the snapshot from the database. `me` is this node's key: a
    /// version is served only if its manifest authorizes `me` (or lists no
    /// mirrors at all) and the newest known manifest still does.
    pub fn build(cfg: &Config, db: &Db, now: u64, me: Option<&PublicKey>) -> Self {
        let mut sites: HashMap<String, LiveSite> = cfg
            .sites
            .iter()
            .map(|s| {
                (
                    s.hostname.clone(),
                    LiveSite {
                        config: s.clone(),
                        current: None,
                        newest: None,
                        authorized: true,
                    },
                )
            })
            .collect();
        let rows = match db.current_manifests() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read manifests; serving nothing until the database recovers");
                return Self { sites };
            }
        };
        let valid = |site: &LiveSite, envelope: &[u8]| {
            manifest::verify_signature(envelope, &site.config.hostname, &site.config.owner_key)
                .and_then(|vm| manifest::check_time(&vm.manifest, now).map(|()| vm))
        };
        let allowed =
            |vm: &VerifiedManifest| me.is_none_or(|me| authorized(&vm.manifest.mirrors, me));
        for site in sites.values_mut() {
            match db.newest_manifest(&site.config.hostname) {
                Ok(Some(row)) => match valid(site, &row.envelope) {
                    Ok(vm) => {
                        site.authorized = allowed(&vm);
                        site.newest = Some(Arc::new(vm));
                    }
                    Err(e) => {
                        tracing::warn!(site = %row.site, version = row.version, error = %e, "newest stored manifest is not valid")
                    }
                },
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "cannot read manifests"),
            }
        }
        for row in rows {
            let Some(site) = sites.get_mut(&row.site) else {
                continue;
            };
            if !site.config.mirror {
                continue;
            }
            match valid(site, &row.envelope) {
                Ok(vm) => {
                    let newest_allows = site.newest.as_ref().is_none_or(|n| allowed(n));
                    if allowed(&vm) && newest_allows {
                        site.current = Some(Arc::new(vm));
                    } else {
                        // The instance's refresher warns once per change.
                        tracing::debug!(site = %row.site, version = row.version, "owner does not authorize this node to serve the site");
                    }
                }
                Err(e) => {
                    tracing::warn!(site = %row.site, version = row.version, error = %e, "not serving stored manifest")
                }
            }
        }
        Self { sites }
    }

    /// The site for a (normalized) hostname.
    pub fn site(&self, host: &str) -> Option<&LiveSite> {
        self.sites.get(host)
    }

    /// True when this instance holds a verified, current copy of `host`.
    pub fn serving(&self, host: &str) -> bool {
        self.sites.get(host).is_some_and(|s| s.current.is_some())
    }

    /// Sites whose owner does not authorize this node, with the newest
    /// version (the one that says so).
    pub fn unauthorized(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .sites
            .values()
            .filter(|s| !s.authorized)
            .filter_map(|s| {
                Some((
                    s.config.hostname.clone(),
                    s.newest.as_ref()?.manifest.version,
                ))
            })
            .collect();
        v.sort();
        v
    }

    /// All sites.
    pub fn sites(&self) -> impl Iterator<Item = &LiveSite> {
        self.sites.values()
    }

    /// (site, version) pairs currently served.
    pub fn versions(&self) -> Vec<(String, u64)> {
        let mut v: Vec<_> = self
            .sites
            .values()
            .filter_map(|s| {
                s.current
                    .as_ref()
                    .map(|m| (s.config.hostname.clone(), m.manifest.version))
            })
            .collect();
        v.sort();
        v
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Shared, swappable catalog.
pub type SharedCatalog = Arc<arc_swap::ArcSwap<Catalog>>;
