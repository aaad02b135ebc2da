//! The in-memory view of what this instance serves: for each configured site,
//! its newest complete, verified, unexpired manifest.
//!
//! Built and published by [`crate::sites::Sites`] whenever a version
//! changes state (and every minute, so expiry takes effect); readers get a
//! lock-free snapshot (`arc_swap`). Every manifest in it was verified
//! against the pinned owner key (once per envelope: a database row whose
//! bytes changed is verified again), so a tampered row is never served.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::SiteConfig;
use crate::manifest::VerifiedManifest;
use crate::sites::SiteName;

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
    sites: HashMap<SiteName, LiveSite>,
}

impl Catalog {
    /// The snapshot of these sites (built by [`crate::sites::Sites`]).
    pub fn from_sites(sites: HashMap<SiteName, LiveSite>) -> Self {
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
