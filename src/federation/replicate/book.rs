//! What a replicating mirror remembers between rounds about the version it
//! replicates (pure: the caller passes the clock): each peer's last
//! availability bitmap, whether it was ever seen replicating (so it is not
//! an origin), when it last made progress, when to poll it again, and since
//! when each blob has been wanted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::have::Bitmap;
use crate::keys::PublicKey;

/// A peer's availability answer counts this long.
pub const FRESH: Duration = Duration::from_secs(3);
/// A replicator whose bitmap has not grown for this long is not live: its
/// share of first fetches goes to the others.
pub const STALL: Duration = Duration::from_secs(15);
/// Shortest time between two availability polls of one peer.
pub const POLL_EVERY: Duration = Duration::from_millis(400);
/// Longest back-off of a peer whose availability poll failed.
const MAX_POLL_BACKOFF: Duration = Duration::from_secs(30);
/// A blob waiting for its first fetcher longer than this (plus its size at
/// [`PATIENCE_RATE`]) may be pulled from an origin by anyone.
const PATIENCE: Duration = Duration::from_secs(20);
/// Bytes per second assumed for a first fetcher's pull when waiting for it.
const PATIENCE_RATE: u64 = 4 << 20;

#[derive(Debug, Clone)]
struct PeerTrack {
    have: Option<Bitmap>,
    answered: Option<Instant>,
    progress: Instant,
    best: usize,
    seen_replicating: bool,
    failures: u32,
    poll_after: Option<Instant>,
}

/// One site's version being replicated.
#[derive(Debug, Clone)]
pub struct Track {
    version: u64,
    started: Instant,
    peers: HashMap<PublicKey, PeerTrack>,
    wanted_since: HashMap<usize, Instant>,
}

/// Tracks per site.
#[derive(Debug, Default)]
pub struct SwarmBook {
    tracks: HashMap<String, Track>,
}

impl SwarmBook {
    /// The track of `site`, started afresh when `version` is new.
    pub fn track(&mut self, site: &str, version: u64, now: Instant) -> &mut Track {
        let t = self
            .tracks
            .entry(site.to_string())
            .or_insert_with(|| Track {
                version,
                started: now,
                peers: HashMap::new(),
                wanted_since: HashMap::new(),
            });
        if t.version != version {
            *t = Track {
                version,
                started: now,
                peers: HashMap::new(),
                wanted_since: HashMap::new(),
            };
        }
        t
    }

    /// Forgets `site` (its version completed).
    pub fn done(&mut self, site: &str) {
        self.tracks.remove(site);
    }
}

impl Track {
    fn peer(&mut self, key: &PublicKey, now: Instant) -> &mut PeerTrack {
        self.peers.entry(*key).or_insert(PeerTrack {
            have: None,
            answered: None,
            progress: now,
            best: 0,
            seen_replicating: false,
            failures: 0,
            poll_after: None,
        })
    }

    /// Whether the track began at least `settle` ago (the other
    /// replicators had time to receive the manifest and answer polls).
    pub fn settled(&self, now: Instant, settle: Duration) -> bool {
        now.saturating_duration_since(self.started) >= settle
    }

    /// Whether `key` should be polled now.
    pub fn poll_due(&self, key: &PublicKey, now: Instant) -> bool {
        self.peers
            .get(key)
            .and_then(|p| p.poll_after)
            .is_none_or(|t| now >= t)
    }

    /// Records an availability answer: a bitmap, or None when the peer does
    /// not replicate this version (404).
    pub fn answered(&mut self, key: &PublicKey, have: Option<Bitmap>, now: Instant) {
        let p = self.peer(key, now);
        p.failures = 0;
        p.poll_after = Some(now + POLL_EVERY);
        p.answered = Some(now);
        if let Some(b) = &have {
            if !b.complete() {
                p.seen_replicating = true;
            }
            if b.count() > p.best {
                p.best = b.count();
                p.progress = now;
            }
        }
        p.have = have;
    }

    /// Records a failed poll: the peer is polled again after a back-off
    /// and its bitmap no longer counts.
    pub fn poll_failed(&mut self, key: &PublicKey, now: Instant) {
        let p = self.peer(key, now);
        p.failures = p.failures.saturating_add(1);
        let wait = POLL_EVERY
            .saturating_mul(1u32 << p.failures.min(8))
            .min(MAX_POLL_BACKOFF);
        p.poll_after = Some(now + wait);
        p.have = None;
    }

    /// The last bitmap of `key`, if it answered recently.
    pub fn holding(&self, key: &PublicKey, now: Instant) -> Option<&Bitmap> {
        let p = self.peers.get(key)?;
        let fresh = p
            .answered
            .is_some_and(|t| now.saturating_duration_since(t) <= FRESH);
        if fresh {
            p.have.as_ref()
        } else {
            None
        }
    }

    /// Whether `key` was ever seen replicating this version (so holding it
    /// now does not make it an origin).
    pub fn seen_replicating(&self, key: &PublicKey) -> bool {
        self.peers.get(key).is_some_and(|p| p.seen_replicating)
    }

    /// Live replicators: answered recently with an incomplete bitmap and
    /// made progress within [`STALL`].
    pub fn replicators(&self, now: Instant) -> Vec<PublicKey> {
        let mut v: Vec<PublicKey> = self
            .peers
            .iter()
            .filter(|(k, p)| {
                self.holding(k, now).is_some_and(|b| !b.complete())
                    && now.saturating_duration_since(p.progress) <= STALL
            })
            .map(|(k, _)| *k)
            .collect();
        v.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        v
    }

    /// Notes the blobs (index, size) missing now; returns those that have
    /// waited longer than their patience (anyone may ask an origin).
    pub fn overdue(&mut self, missing: &[(usize, u64)], now: Instant) -> Vec<usize> {
        self.wanted_since
            .retain(|i, _| missing.iter().any(|(m, _)| m == i));
        missing
            .iter()
            .filter(|(i, size)| {
                let since = *self.wanted_since.entry(*i).or_insert(now);
                let patience = PATIENCE + Duration::from_secs(size / PATIENCE_RATE);
                now.saturating_duration_since(since) > patience
            })
            .map(|(i, _)| *i)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    #[test]
    fn replicators_are_live_and_incomplete() {
        let t0 = Instant::now();
        let mut b = SwarmBook::default();
        let (a, c, d) = (
            SecretKey::generate().unwrap().public(),
            SecretKey::generate().unwrap().public(),
            SecretKey::generate().unwrap().public(),
        );
        let t = b.track("s", 2, t0);
        t.answered(&a, Some(Bitmap::from_flags([false, false])), t0);
        t.answered(&c, Some(Bitmap::from_flags([true, true])), t0);
        t.answered(&d, None, t0);
        assert_eq!(t.replicators(t0), vec![a]);
        assert!(t.seen_replicating(&a) && !t.seen_replicating(&c));
        assert!(!t.poll_due(&a, t0) && t.poll_due(&a, t0 + POLL_EVERY));
        // Silent for longer than FRESH: not live, bitmap not trusted.
        assert!(t
            .replicators(t0 + FRESH + Duration::from_millis(1))
            .is_empty());
        // Answers but never progresses: dropped after STALL.
        let later = t0 + STALL + Duration::from_secs(1);
        t.answered(&a, Some(Bitmap::from_flags([false, false])), later);
        assert!(t.replicators(later).is_empty());
        t.answered(&a, Some(Bitmap::from_flags([true, false])), later);
        assert_eq!(t.replicators(later), vec![a]);
        t.poll_failed(&a, later);
        assert!(t.replicators(later).is_empty());
        assert!(!t.poll_due(&a, later + POLL_EVERY));
        // A new version starts over.
        assert!(!b.track("s", 3, later).seen_replicating(&a));
    }

    #[test]
    fn blobs_become_overdue_after_their_patience() {
        let t0 = Instant::now();
        let mut b = SwarmBook::default();
        let t = b.track("s", 1, t0);
        assert!(t.overdue(&[(0, 10), (1, 400 << 20)], t0).is_empty());
        let at = t0 + PATIENCE + Duration::from_secs(1);
        assert_eq!(t.overdue(&[(0, 10), (1, 400 << 20)], at), vec![0]);
        assert_eq!(
            t.overdue(&[(0, 10), (1, 400 << 20)], at + Duration::from_secs(100)),
            vec![0, 1]
        );
        // A blob that arrived and went missing again waits afresh.
        t.overdue(&[(1, 400 << 20)], at);
        assert!(t.overdue(&[(0, 10)], at).is_empty());
        assert!(!t.settled(t0, Duration::from_secs(1)));
        assert!(t.settled(at, Duration::from_secs(1)));
    }
}
