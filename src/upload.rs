//! Remote publish, instance side: upload sessions opened by an owner-signed
//! manifest, and the rules that decide what an upload may store.
//!
//! Flow (see `docs/PROTOCOL.md`, "Remote publish"): the client POSTs a signed
//! manifest; the HTTP layer verifies it in full against the site's pinned
//! owner key ([`crate::manifest::accept`]) and opens a [`Session`] here,
//! listing the blobs this instance lacks. Blobs are then PUT by hash: only a
//! hash an open session lists is admitted, with exactly the size the manifest
//! gives. When the last listed blob is stored, the session closes and hands
//! back the envelope to import.
//!
//! Pure bookkeeping: no disk, no network; the caller passes `Instant`s.
//! Sessions live in memory only: a restart forgets them, and the client
//! simply POSTs its manifest again (blobs already stored are not asked for).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::hash::BlobHash;
use crate::manifest::ManifestError;

/// Bounds on remote uploads.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest total of missing blob bytes one manifest may ask to upload.
    pub max_total: u64,
    /// Concurrent blob uploads from one source address.
    pub per_source: usize,
    /// Concurrent blob uploads overall.
    pub max_concurrent: usize,
    /// A session untouched this long is forgotten.
    pub session_ttl: Duration,
    /// Slowest accepted body rate, bytes per second (sets each PUT's deadline).
    pub min_rate: u64,
    /// Longest wait for the next body chunk.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_total: 16 * 1024 * 1024 * 1024,
            per_source: 4,
            max_concurrent: 32,
            session_ttl: Duration::from_secs(3600),
            min_rate: 16 * 1024,
            idle: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// How long a PUT of `size` bytes may take in all.
    pub fn deadline(&self, size: u64) -> Duration {
        self.idle
            .saturating_add(Duration::from_secs(size / self.min_rate.max(1)))
    }
}

/// Why an upload step was refused. [`UploadError::status`] maps each to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// This instance does not accept remote publishes.
    #[error("remote publish is disabled on this instance (publish.remote = false)")]
    Disabled,
    /// The site is not configured here, so no owner key is pinned for it.
    #[error("site {0} is not configured on this instance: no owner key is pinned for it")]
    UnknownSite(String),
    /// The manifest failed verification (signature, key, version, expiry, ...).
    #[error("manifest refused: {0}")]
    Manifest(#[from] ManifestError),
    /// The manifest asks to upload more than the instance allows.
    #[error("this version needs {total} bytes of new blobs; this instance accepts at most {limit} per publish")]
    TooLarge {
        /// Bytes missing.
        total: u64,
        /// The bound.
        limit: u64,
    },
    /// A newer version is being uploaded for the site.
    #[error("version {got} of {site} is older than version {active}, whose upload is in progress")]
    Superseded {
        /// Site.
        site: String,
        /// Version offered.
        got: u64,
        /// Version being uploaded.
        active: u64,
    },
    /// The blob is not listed by any verified manifest upload for the site.
    #[error("blob {hash} is not listed as missing by a verified manifest upload for {site}; POST the owner-signed manifest first")]
    NotListed {
        /// Site.
        site: String,
        /// Hash.
        hash: BlobHash,
    },
    /// More bytes than the manifest's size for the blob.
    #[error("blob {hash} is larger than the {size} bytes the manifest lists")]
    BlobTooLarge {
        /// Hash.
        hash: BlobHash,
        /// Size in the manifest.
        size: u64,
    },
    /// Fewer bytes than the manifest's size for the blob.
    #[error("blob {hash} is truncated: {got} of {size} bytes")]
    Truncated {
        /// Hash.
        hash: BlobHash,
        /// Bytes received.
        got: u64,
        /// Size in the manifest.
        size: u64,
    },
    /// The bytes do not hash to the blob's name.
    #[error("blob bytes hash to {actual}, not {hash}: refused")]
    HashMismatch {
        /// Expected hash.
        hash: BlobHash,
        /// Hash of the bytes received.
        actual: BlobHash,
    },
    /// A `Content-Range` that is not the rest of the blob.
    #[error("bad Content-Range {0:?}: expected bytes <start>-<size-1>/<size>")]
    BadRange(String),
    /// The upload resumes at an offset other than the bytes held.
    #[error("blob {hash}: this instance holds {held} bytes of an interrupted upload, not {asked}; resume at {held} or send it whole")]
    Offset {
        /// Hash.
        hash: BlobHash,
        /// Bytes held.
        held: u64,
        /// The offset the request started at.
        asked: u64,
    },
    /// The same blob is being uploaded already.
    #[error("blob {0} is being uploaded by another request")]
    InProgress(BlobHash),
    /// Too many uploads at once (from this source or overall).
    #[error("too many concurrent uploads; retry later")]
    Busy,
    /// The body came too slowly.
    #[error("upload too slow: body not received within its deadline")]
    Slow,
    /// The body stream broke off.
    #[error("upload interrupted: {0}")]
    Interrupted(String),
    /// Storage or database failure on this instance.
    #[error("instance error: {0}")]
    Internal(String),
}

impl UploadError {
    /// The HTTP status for this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Self::Disabled => 403,
            Self::UnknownSite(_) => 404,
            Self::Manifest(m) => match m {
                ManifestError::NotNewer { .. } => 409,
                ManifestError::WrongKey { .. } | ManifestError::BadSignature => 403,
                _ => 422,
            },
            Self::TooLarge { .. } | Self::BlobTooLarge { .. } => 413,
            Self::Superseded { .. } | Self::InProgress(_) | Self::Offset { .. } => 409,
            Self::NotListed { .. } => 403,
            Self::Truncated { .. } | Self::HashMismatch { .. } => 422,
            Self::Busy => 429,
            Self::Slow => 408,
            Self::Interrupted(_) | Self::BadRange(_) => 400,
            Self::Internal(_) => 500,
        }
    }
}

/// An open upload: a verified manifest and the blobs still wanted for it.
#[derive(Debug, Clone)]
pub struct Session {
    /// Version being uploaded.
    pub version: u64,
    /// The verified envelope, imported once every blob is present.
    pub envelope: Vec<u8>,
    /// Blobs still wanted, with the size the manifest gives.
    pub wanted: HashMap<BlobHash, u64>,
    in_flight: HashSet<BlobHash>,
    touched: Instant,
}

/// Decides whether a manifest may open a session, given the one open for its
/// site (if any). Same or newer versions replace an open session.
pub fn decide_open(
    site: &str,
    active: Option<u64>,
    version: u64,
    missing_total: u64,
    limits: &Limits,
) -> Result<(), UploadError> {
    if let Some(active) = active.filter(|a| *a > version) {
        return Err(UploadError::Superseded {
            site: site.to_string(),
            got: version,
            active,
        });
    }
    if missing_total > limits.max_total {
        return Err(UploadError::TooLarge {
            total: missing_total,
            limit: limits.max_total,
        });
    }
    Ok(())
}

/// Decides whether blob `hash` may be uploaded for `site`; returns its size.
pub fn decide_blob(
    site: &str,
    session: Option<&Session>,
    hash: &BlobHash,
) -> Result<u64, UploadError> {
    let not_listed = || UploadError::NotListed {
        site: site.to_string(),
        hash: *hash,
    };
    let s = session.ok_or_else(not_listed)?;
    let size = *s.wanted.get(hash).ok_or_else(not_listed)?;
    if s.in_flight.contains(hash) {
        return Err(UploadError::InProgress(*hash));
    }
    Ok(size)
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    sources: HashMap<IpAddr, usize>,
    active: usize,
}

/// The open sessions of one instance. Cheap to clone.
#[derive(Clone)]
pub struct Uploads {
    limits: Limits,
    state: Arc<Mutex<State>>,
}

/// Admission of one blob upload; dropping it frees its slot.
pub struct BlobPermit {
    uploads: Uploads,
    site: String,
    hash: BlobHash,
    source: Option<IpAddr>,
    /// Size the manifest gives for the blob.
    pub size: u64,
}

impl Drop for BlobPermit {
    fn drop(&mut self) {
        self.uploads.with(|st| {
            if let Some(s) = st.sessions.get_mut(&self.site) {
                s.in_flight.remove(&self.hash);
            }
            st.active = st.active.saturating_sub(1);
            if let Some(ip) = self.source {
                if let Some(n) = st.sources.get_mut(&ip) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        st.sources.remove(&ip);
                    }
                }
            }
        });
    }
}

impl Uploads {
    /// No sessions yet.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: Arc::default(),
        }
    }

    /// The bounds in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut g = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    fn expire(st: &mut State, ttl: Duration, now: Instant) {
        st.sessions
            .retain(|_, s| !s.in_flight.is_empty() || now.duration_since(s.touched) < ttl);
    }

    /// Opens (or replaces) the session for `site` with a verified manifest.
    pub fn open(
        &self,
        site: &str,
        version: u64,
        envelope: Vec<u8>,
        missing: &[(BlobHash, u64)],
        now: Instant,
    ) -> Result<(), UploadError> {
        let total = missing.iter().fold(0u64, |a, (_, n)| a.saturating_add(*n));
        self.with(|st| {
            Self::expire(st, self.limits.session_ttl, now);
            let active = st.sessions.get(site).map(|s| s.version);
            decide_open(site, active, version, total, &self.limits)?;
            let in_flight = st
                .sessions
                .remove(site)
                .map(|s| s.in_flight)
                .unwrap_or_default();
            st.sessions.insert(
                site.to_string(),
                Session {
                    version,
                    envelope,
                    wanted: missing.iter().copied().collect(),
                    in_flight,
                    touched: now,
                },
            );
            Ok(())
        })
    }

    /// Admits one blob upload from `source`, or says why not.
    pub fn begin(
        &self,
        site: &str,
        hash: &BlobHash,
        source: Option<IpAddr>,
        now: Instant,
    ) -> Result<BlobPermit, UploadError> {
        self.with(|st| {
            Self::expire(st, self.limits.session_ttl, now);
            let size = decide_blob(site, st.sessions.get(site), hash)?;
            if st.active >= self.limits.max_concurrent {
                return Err(UploadError::Busy);
            }
            if let Some(ip) = source {
                let n = st.sources.entry(ip).or_default();
                if *n >= self.limits.per_source {
                    return Err(UploadError::Busy);
                }
                *n += 1;
            }
            st.active += 1;
            if let Some(s) = st.sessions.get_mut(site) {
                s.in_flight.insert(*hash);
                s.touched = now;
            }
            Ok(BlobPermit {
                uploads: self.clone(),
                site: site.to_string(),
                hash: *hash,
                source,
                size,
            })
        })
    }

    /// Records that `hash` is stored. When it was the last wanted blob, the
    /// session closes and its envelope is returned for import.
    pub fn stored(&self, site: &str, hash: &BlobHash) -> Option<Vec<u8>> {
        self.with(|st| {
            let s = st.sessions.get_mut(site)?;
            s.wanted.remove(hash);
            if s.wanted.is_empty() {
                st.sessions.remove(site).map(|s| s.envelope)
            } else {
                None
            }
        })
    }

    /// Closes `site`'s session, if open (nothing left to wait for).
    pub fn close(&self, site: &str) {
        self.with(|st| st.sessions.remove(site));
    }

    /// Blobs still wanted for `site`'s open session.
    pub fn remaining(&self, site: &str) -> usize {
        self.with(|st| st.sessions.get(site).map_or(0, |s| s.wanted.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> BlobHash {
        BlobHash::of(&[n])
    }

    #[test]
    fn only_listed_blobs_are_admitted() {
        let u = Uploads::new(Limits::default());
        let now = Instant::now();
        assert!(matches!(
            u.begin("a.test", &h(1), None, now),
            Err(UploadError::NotListed { .. })
        ));
        u.open("a.test", 5, b"env".to_vec(), &[(h(1), 10), (h(2), 20)], now)
            .unwrap();
        assert!(matches!(
            u.begin("a.test", &h(3), None, now),
            Err(UploadError::NotListed { .. })
        ));
        assert!(matches!(
            u.begin("b.test", &h(1), None, now),
            Err(UploadError::NotListed { .. })
        ));
        let p = u.begin("a.test", &h(1), None, now).unwrap();
        assert_eq!(p.size, 10);
        assert!(matches!(
            u.begin("a.test", &h(1), None, now),
            Err(UploadError::InProgress(_))
        ));
        drop(p);
        assert_eq!(u.stored("a.test", &h(1)), None);
        assert_eq!(u.stored("a.test", &h(2)), Some(b"env".to_vec()));
        // Closed: nothing more is admitted.
        assert!(u.begin("a.test", &h(2), None, now).is_err());
    }

    #[test]
    fn older_versions_do_not_replace_a_newer_session() {
        let u = Uploads::new(Limits::default());
        let now = Instant::now();
        u.open("a.test", 5, vec![], &[(h(1), 1)], now).unwrap();
        assert!(matches!(
            u.open("a.test", 4, vec![], &[(h(2), 1)], now),
            Err(UploadError::Superseded { active: 5, .. })
        ));
        u.open("a.test", 5, vec![], &[(h(2), 1)], now).unwrap();
        assert!(u.begin("a.test", &h(1), None, now).is_err());
        assert!(u.begin("a.test", &h(2), None, now).is_ok());
    }

    #[test]
    fn totals_and_concurrency_are_bounded() {
        let limits = Limits {
            max_total: 100,
            per_source: 1,
            ..Limits::default()
        };
        let u = Uploads::new(limits);
        let now = Instant::now();
        assert!(matches!(
            u.open("a.test", 1, vec![], &[(h(1), 60), (h(2), 41)], now),
            Err(UploadError::TooLarge { total: 101, .. })
        ));
        u.open("a.test", 1, vec![], &[(h(1), 60), (h(2), 40)], now)
            .unwrap();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let p = u.begin("a.test", &h(1), Some(ip), now).unwrap();
        assert!(matches!(
            u.begin("a.test", &h(2), Some(ip), now),
            Err(UploadError::Busy)
        ));
        assert!(u
            .begin("a.test", &h(2), Some([10, 0, 0, 2].into()), now)
            .is_ok());
        drop(p);
        assert!(u.begin("a.test", &h(1), Some(ip), now).is_ok());
    }

    #[test]
    fn idle_sessions_expire() {
        let u = Uploads::new(Limits::default());
        let t0 = Instant::now();
        u.open("a.test", 1, vec![], &[(h(1), 1)], t0).unwrap();
        let later = t0 + Duration::from_secs(3601);
        assert!(u.begin("a.test", &h(1), None, later).is_err());
    }

    #[test]
    fn statuses() {
        assert_eq!(UploadError::Busy.status(), 429);
        assert_eq!(
            UploadError::Manifest(ManifestError::BadSignature).status(),
            403
        );
        assert_eq!(
            UploadError::Truncated {
                hash: h(1),
                got: 1,
                size: 2
            }
            .status(),
            422
        );
    }
}
