//! Which peers a mirror pulls blobs from, and for how long a peer that
//! misbehaved as a source is left out (pure: values in, values out).
//!
//! Rules:
//! - a peer is a source for a site only if the manifest being replicated
//!   authorizes it (its key is in `mirrors`, or `mirrors` is empty), or it
//!   already delivered verified bytes of that site to this node;
//! - a source that stalls, trickles, sends bad bytes or too many bytes is
//!   skipped for `BASE_BACKOFF × 2^(failures − 1)`, at most `MAX_BACKOFF`;
//!   one verified delivery clears its record.
//!
//! State is in memory only; after a restart every source starts clean.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::keys::PublicKey;

/// First back-off after a failed pull.
pub const BASE_BACKOFF: Duration = Duration::from_secs(5);
/// Longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Minimum average transfer rate of a blob pull, bytes per second, enforced
/// after [`PULL_GRACE`]; it also bounds a pull's total time to
/// `max(PULL_GRACE, size / MIN_PULL_RATE)`.
pub const MIN_PULL_RATE: u64 = 64 * 1024;
/// Time a pull may take before [`MIN_PULL_RATE`] applies (connection set-up,
/// first bytes).
pub const PULL_GRACE: Duration = Duration::from_secs(2);

/// Whether a pull that has moved `bytes` in `elapsed` is too slow: after the
/// grace period its average rate must be at least [`MIN_PULL_RATE`].
pub fn too_slow(bytes: u64, elapsed: Duration) -> bool {
    if elapsed <= PULL_GRACE {
        return false;
    }
    let needed = (MIN_PULL_RATE as f64 * elapsed.as_secs_f64()) as u64;
    bytes < needed
}

/// Back-off after `failures` consecutive failures (≥ 1).
pub fn backoff(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    BASE_BACKOFF.saturating_mul(1u32 << shift).min(MAX_BACKOFF)
}

/// Whether `key` may be asked for a site's blobs: authorized by the
/// manifest being replicated, or already delivered verified bytes of it.
pub fn eligible(mirrors: &[PublicKey], key: &PublicKey, delivered: bool) -> bool {
    mirrors.is_empty() || mirrors.contains(key) || delivered
}

#[derive(Debug, Clone, Default)]
struct Record {
    failures: u32,
    /// Milliseconds (caller's clock) until which the source is skipped.
    until_ms: u64,
}

/// Per-source pull outcomes: back-off for failing sources and the sites each
/// source delivered verified bytes for.
#[derive(Debug, Default)]
pub struct SourceBook {
    records: HashMap<PublicKey, Record>,
    delivered: HashSet<(PublicKey, String)>,
}

impl SourceBook {
    /// Whether `key` is not backed off at `now_ms`.
    pub fn usable(&self, key: &PublicKey, now_ms: u64) -> bool {
        self.records.get(key).is_none_or(|r| r.until_ms <= now_ms)
    }

    /// Whether `key` delivered verified bytes of `site`.
    pub fn delivered(&self, key: &PublicKey, site: &str) -> bool {
        self.delivered.contains(&(*key, site.to_string()))
    }

    /// Records a verified delivery: clears the source's failures.
    pub fn success(&mut self, key: &PublicKey, site: &str) {
        self.records.remove(key);
        if self.delivered.len() < 100_000 {
            self.delivered.insert((*key, site.to_string()));
        }
    }

    /// Records a failure at `now_ms`; returns the back-off now applied.
    pub fn failure(&mut self, key: &PublicKey, now_ms: u64) -> Duration {
        let r = self.records.entry(*key).or_default();
        r.failures = r.failures.saturating_add(1);
        let b = backoff(r.failures);
        r.until_ms = now_ms.saturating_add(b.as_millis() as u64);
        b
    }

    /// Consecutive failures recorded for `key`.
    pub fn failures(&self, key: &PublicKey) -> u32 {
        self.records.get(key).map_or(0, |r| r.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn slow_transfers_are_cut_after_the_grace_period() {
        assert!(!too_slow(0, Duration::from_secs(1)));
        assert!(!too_slow(0, PULL_GRACE));
        // One byte every 20 s: cut just after the grace period.
        assert!(too_slow(1, Duration::from_millis(2100)));
        assert!(!too_slow(MIN_PULL_RATE * 3, Duration::from_secs(3)));
        assert!(too_slow(MIN_PULL_RATE * 3 - 1, Duration::from_secs(3)));
    }

    #[test]
    fn failing_sources_are_skipped_until_their_backoff_ends() {
        let k = SecretKey::generate().unwrap().public();
        let mut b = SourceBook::default();
        assert!(b.usable(&k, 0));
        assert_eq!(b.failure(&k, 1_000), Duration::from_secs(5));
        assert!(!b.usable(&k, 5_999));
        assert!(b.usable(&k, 6_000));
        assert_eq!(b.failure(&k, 6_000), Duration::from_secs(10));
        assert_eq!(b.failures(&k), 2);
        b.success(&k, "s");
        assert!(b.usable(&k, 6_001));
        assert!(b.delivered(&k, "s"));
        assert!(!b.delivered(&k, "t"));
    }

    #[test]
    fn only_authorized_or_proven_sources_are_eligible() {
        let a = SecretKey::generate().unwrap().public();
        let r = SecretKey::generate().unwrap().public();
        assert!(eligible(&[a], &a, false));
        assert!(!eligible(&[a], &r, false));
        assert!(eligible(&[a], &r, true));
        assert!(
            eligible(&[], &r, false),
            "an empty list authorizes everyone"
        );
    }
}
