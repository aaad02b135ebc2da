//! A version's lifecycle as a typed state machine (pure, no I/O):
//!
//! ```text
//! Offered ──examined──> Pending {missing} ──last blob committed──> Complete ──newer complete──> Retired
//!    └──────examined (nothing missing)────────────────────────────────^
//! ```
//!
//! `Offered`: the envelope verified (owner signature, not expired, newer
//! than anything held); `Pending`: recorded, waiting for the listed blobs;
//! `Complete`: every blob is in the store, verified, and the version may be
//! served; `Retired`: a newer version completed, so this one is never
//! served again (its blobs are garbage unless shared).

use std::collections::BTreeSet;

use crate::hash::BlobHash;

/// Where a version stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Verified, not yet compared with the store.
    Offered,
    /// Recorded; these blobs are still missing.
    Pending {
        /// Blobs not yet in the store.
        missing: BTreeSet<BlobHash>,
    },
    /// Every blob present and verified: servable.
    Complete,
    /// Superseded by a newer complete version.
    Retired,
}

/// What a transition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The stage did not change.
    Unchanged,
    /// The stage changed, and the version is not complete yet.
    Advanced,
    /// The version just became complete: record it, retire older versions,
    /// publish the catalog, collect garbage.
    Completed,
}

impl Stage {
    /// Offered → Pending {missing} (or Complete when nothing is missing).
    /// Any other stage is left alone.
    pub fn examined(&mut self, missing: impl IntoIterator<Item = BlobHash>) -> Transition {
        if *self != Stage::Offered {
            return Transition::Unchanged;
        }
        let missing: BTreeSet<BlobHash> = missing.into_iter().collect();
        if missing.is_empty() {
            *self = Stage::Complete;
            Transition::Completed
        } else {
            *self = Stage::Pending { missing };
            Transition::Advanced
        }
    }

    /// A blob reached the store, verified: Pending loses it from its missing
    /// set, and completes with the last one.
    pub fn blob_committed(&mut self, hash: &BlobHash) -> Transition {
        let Stage::Pending { missing } = self else {
            return Transition::Unchanged;
        };
        if !missing.remove(hash) {
            return Transition::Unchanged;
        }
        if missing.is_empty() {
            *self = Stage::Complete;
            Transition::Completed
        } else {
            Transition::Advanced
        }
    }

    /// Pending → Complete once the store holds everything (found by a
    /// check rather than by commits, e.g. blobs shared with another site).
    pub fn found_complete(&mut self) -> Transition {
        match self {
            Stage::Pending { .. } | Stage::Offered => {
                *self = Stage::Complete;
                Transition::Completed
            }
            Stage::Complete | Stage::Retired => Transition::Unchanged,
        }
    }

    /// A newer version completed: this one is retired (from any stage).
    pub fn retire(&mut self) -> Transition {
        if *self == Stage::Retired {
            Transition::Unchanged
        } else {
            *self = Stage::Retired;
            Transition::Advanced
        }
    }

    /// True when the version may be served.
    pub fn is_complete(&self) -> bool {
        *self == Stage::Complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> BlobHash {
        BlobHash::of(&[n])
    }

    #[test]
    fn offered_pending_complete_retired() {
        let mut s = Stage::Offered;
        assert_eq!(s.examined([h(1), h(2)]), Transition::Advanced);
        assert!(matches!(&s, Stage::Pending { missing } if missing.len() == 2));
        assert_eq!(s.blob_committed(&h(3)), Transition::Unchanged);
        assert_eq!(s.blob_committed(&h(1)), Transition::Advanced);
        assert_eq!(s.blob_committed(&h(1)), Transition::Unchanged);
        assert!(!s.is_complete());
        assert_eq!(s.blob_committed(&h(2)), Transition::Completed);
        assert!(s.is_complete());
        assert_eq!(s.blob_committed(&h(2)), Transition::Unchanged);
        assert_eq!(s.retire(), Transition::Advanced);
        assert_eq!(s, Stage::Retired);
        assert_eq!(s.retire(), Transition::Unchanged);
        // A retired version never comes back.
        assert_eq!(s.examined([]), Transition::Unchanged);
        assert_eq!(s.found_complete(), Transition::Unchanged);
        assert!(!s.is_complete());
    }

    #[test]
    fn nothing_missing_completes_at_once() {
        let mut s = Stage::Offered;
        assert_eq!(s.examined([]), Transition::Completed);
        assert!(s.is_complete());
        assert_eq!(s.examined([h(1)]), Transition::Unchanged);
    }

    #[test]
    fn a_check_completes_a_pending_version() {
        let mut s = Stage::Offered;
        s.examined([h(1)]);
        assert_eq!(s.found_complete(), Transition::Completed);
        assert_eq!(s.found_complete(), Transition::Unchanged);
    }
}
