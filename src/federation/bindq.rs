//! The queue of URLs waiting to be bound (pure: values in, values out).
//!
//! Bootstrap peers from the config are *pinned*: retried every round until
//! bound. Peers *remembered* from an earlier run (the `peers` table) are
//! retried until bound too, with pauses doubling up to
//! [`REMEMBERED_MAX_PAUSE`]: after a restart they are the way back in when
//! the bootstrap peers are down. URLs learned from reports are
//! attacker-controlled, so:
//! - the queue holds at most [`LEARNED_CAP`] of them (further offers are
//!   refused until entries leave);
//! - a learned URL whose host is an IP literal is refused (a binding needs a
//!   DNS name the peer's certificate covers);
//! - a learned URL is tried at most [`MAX_ATTEMPTS`] times, with doubling
//!   pauses from 1 s, and leaves the queue [`LEARNED_TTL`] after it was
//!   offered, bound or not;
//! - each gossip round binds at most [`BINDS_PER_ROUND`] URLs, those with
//!   the fewest failed attempts first, so a flood of names costs at most that
//!   many connections per round and down bootstrap peers (retried with
//!   pauses doubling up to [`PINNED_MAX_PAUSE`]) never starve the others.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// Learned (non-bootstrap) URLs held at most.
pub const LEARNED_CAP: usize = 64;
/// Binding attempts per gossip round, at most.
pub const BINDS_PER_ROUND: usize = 4;
/// Attempts per learned URL before it is dropped.
pub const MAX_ATTEMPTS: u32 = 3;
/// A learned URL leaves the queue this long after it was offered.
pub const LEARNED_TTL: Duration = Duration::from_secs(120);
/// Longest pause between attempts to bind a bootstrap peer.
pub const PINNED_MAX_PAUSE: Duration = Duration::from_secs(4);
/// Longest pause between attempts to bind a remembered peer.
pub const REMEMBERED_MAX_PAUSE: Duration = Duration::from_secs(30);

/// What became of an offered URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Added to the queue.
    Queued,
    /// Already queued.
    Known,
    /// The queue is full of learned URLs.
    Full,
    /// The host is an IP literal.
    IpLiteral,
}

/// Where a queued URL came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// A configured bootstrap peer.
    Bootstrap,
    /// A peer bound in an earlier run.
    Remembered,
    /// Named in a report.
    Learned,
}

#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    added_ms: u64,
    attempts: u32,
    next_ms: u64,
}

/// URLs to bind (normalized by the caller with `config::normalize_url`).
#[derive(Debug, Default)]
pub struct BindQueue {
    entries: BTreeMap<String, Entry>,
}

/// Whether `host` (a URL's host part) is an IP address literal.
pub fn is_ip_literal(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok()
}

impl BindQueue {
    /// A queue holding the bootstrap `urls`, pinned.
    pub fn new(urls: impl IntoIterator<Item = String>) -> Self {
        let entries = urls
            .into_iter()
            .map(|u| {
                let e = Entry {
                    kind: Kind::Bootstrap,
                    added_ms: 0,
                    attempts: 0,
                    next_ms: 0,
                };
                (u, e)
            })
            .collect();
        Self { entries }
    }

    fn learned(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.kind == Kind::Learned)
            .count()
    }

    /// Queues a peer remembered from an earlier run (the caller bounds how
    /// many); a URL already queued keeps its kind.
    pub fn remember(&mut self, url: &str, now_ms: u64) {
        self.entries.entry(url.to_string()).or_insert(Entry {
            kind: Kind::Remembered,
            added_ms: now_ms,
            attempts: 0,
            next_ms: now_ms,
        });
    }

    /// Offers a URL learned from a report; `host` is its host part.
    pub fn offer(&mut self, url: &str, host: &str, now_ms: u64) -> Offer {
        if self.entries.contains_key(url) {
            return Offer::Known;
        }
        if is_ip_literal(host) {
            return Offer::IpLiteral;
        }
        self.expire(now_ms);
        if self.learned() >= LEARNED_CAP {
            return Offer::Full;
        }
        self.entries.insert(
            url.to_string(),
            Entry {
                kind: Kind::Learned,
                added_ms: now_ms,
                attempts: 0,
                next_ms: now_ms,
            },
        );
        Offer::Queued
    }

    fn expire(&mut self, now_ms: u64) {
        let ttl = LEARNED_TTL.as_millis() as u64;
        self.entries
            .retain(|_, e| e.kind != Kind::Learned || now_ms.saturating_sub(e.added_ms) < ttl);
    }

    /// The URLs to try this round: due ones, the fewest failed attempts
    /// first (then bootstrap, remembered, learned ones, then the oldest), at most `max`. Expired
    /// entries are dropped first.
    pub fn due(&mut self, now_ms: u64, max: usize) -> Vec<String> {
        self.expire(now_ms);
        let mut v: Vec<(&String, &Entry)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.next_ms <= now_ms)
            .collect();
        v.sort_by_key(|(u, e)| (e.attempts, e.kind, e.added_ms, (*u).clone()));
        v.into_iter().take(max).map(|(u, _)| u.clone()).collect()
    }

    /// Records a failed attempt: pinned URLs are retried after 0.5, 1, 2 …
    /// s (at most [`PINNED_MAX_PAUSE`]), remembered ones after 1, 2, 4 … s
    /// (at most [`REMEMBERED_MAX_PAUSE`]), learned ones after 1, 2, 4 … s
    /// and dropped after [`MAX_ATTEMPTS`].
    pub fn failed(&mut self, url: &str, now_ms: u64) {
        let Some(e) = self.entries.get_mut(url) else {
            return;
        };
        e.attempts = e.attempts.saturating_add(1);
        let step = e.attempts.saturating_sub(1).min(10);
        match e.kind {
            Kind::Bootstrap => {
                let pause = (500u64 << step).min(PINNED_MAX_PAUSE.as_millis() as u64);
                e.next_ms = now_ms.saturating_add(pause);
                return;
            }
            Kind::Remembered => {
                let pause = (1000u64 << step).min(REMEMBERED_MAX_PAUSE.as_millis() as u64);
                e.next_ms = now_ms.saturating_add(pause);
                return;
            }
            Kind::Learned => {}
        }
        if e.attempts >= MAX_ATTEMPTS {
            self.entries.remove(url);
            return;
        }
        e.next_ms = now_ms.saturating_add(1000u64 << e.attempts.saturating_sub(1).min(10));
    }

    /// Adds a bootstrap URL (pinned: never expires, retried forever), due
    /// now; a URL already queued becomes pinned.
    pub fn add_pinned(&mut self, url: &str) {
        let e = self.entries.entry(url.to_string()).or_insert(Entry {
            kind: Kind::Bootstrap,
            added_ms: 0,
            attempts: 0,
            next_ms: 0,
        });
        e.kind = Kind::Bootstrap;
    }

    /// Removes a URL (bound, or bound already).
    pub fn done(&mut self, url: &str) {
        self.entries.remove(url);
    }

    /// URLs queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_bootstrap_url_added_later_is_due_at_once_and_kept() {
        let mut q = BindQueue::default();
        assert_eq!(q.offer("https://a.test", "a.test", 0), Offer::Queued);
        q.add_pinned("https://a.test");
        q.add_pinned("https://b.test");
        assert_eq!(q.len(), 2);
        let later = LEARNED_TTL.as_millis() as u64 * 2;
        let due = q.due(later, BINDS_PER_ROUND);
        assert!(due.contains(&"https://a.test".to_string()), "{due:?}");
        assert!(due.contains(&"https://b.test".to_string()), "{due:?}");
    }

    #[test]
    fn ip_literals_are_refused_and_names_queued_once() {
        let mut q = BindQueue::default();
        assert_eq!(
            q.offer("https://10.0.0.1:443", "10.0.0.1", 0),
            Offer::IpLiteral
        );
        assert_eq!(q.offer("https://[::1]:443", "[::1]", 0), Offer::IpLiteral);
        assert_eq!(q.offer("https://a.test", "a.test", 0), Offer::Queued);
        assert_eq!(q.offer("https://a.test", "a.test", 0), Offer::Known);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn learned_urls_are_capped_tried_a_few_times_and_expire() {
        let mut q = BindQueue::new(["https://boot.test".to_string()]);
        for i in 0..LEARNED_CAP + 10 {
            let u = format!("https://n{i}.test");
            let o = q.offer(&u, &format!("n{i}.test"), 0);
            assert_eq!(
                o,
                if i < LEARNED_CAP {
                    Offer::Queued
                } else {
                    Offer::Full
                }
            );
        }
        let first = q.due(0, BINDS_PER_ROUND);
        assert_eq!(first.len(), BINDS_PER_ROUND);
        assert_eq!(first[0], "https://boot.test", "bootstrap peers first");
        // Failed attempts back off, then drop the URL.
        let u = "https://n0.test";
        q.failed(u, 0);
        assert!(!q.due(500, 1000).contains(&u.to_string()));
        assert!(q.due(1000, 1000).contains(&u.to_string()));
        q.failed(u, 1000);
        q.failed(u, 3000);
        assert!(
            !q.due(100_000, 1000).contains(&u.to_string()),
            "dropped after MAX_ATTEMPTS"
        );
        // Pinned entries stay; learned ones expire.
        let later = LEARNED_TTL.as_millis() as u64;
        assert_eq!(q.due(later, 1000), vec!["https://boot.test".to_string()]);
        q.failed("https://boot.test", later);
        assert_eq!(q.len(), 1);
        // A failing bootstrap peer does not starve learned URLs.
        assert_eq!(
            q.offer("https://new.test", "new.test", later),
            Offer::Queued
        );
        assert_eq!(q.due(later, 1), vec!["https://new.test".to_string()]);
    }

    #[test]
    fn remembered_peers_stay_queued_and_back_off_to_a_ceiling() {
        let mut q = BindQueue::new(["https://boot.test".to_string()]);
        q.remember("https://old.test", 0);
        q.remember("https://boot.test", 0);
        assert_eq!(q.len(), 2, "a bootstrap URL stays a bootstrap entry");
        assert_eq!(
            q.due(0, 10),
            vec![
                "https://boot.test".to_string(),
                "https://old.test".to_string()
            ]
        );
        let mut now = 0;
        for _ in 0..20 {
            q.failed("https://old.test", now);
            now += REMEMBERED_MAX_PAUSE.as_millis() as u64;
            assert!(
                q.due(now, 10).contains(&"https://old.test".to_string()),
                "retried at least every REMEMBERED_MAX_PAUSE, never dropped"
            );
        }
        q.failed("https://old.test", now);
        assert!(!q
            .due(now + 999, 10)
            .contains(&"https://old.test".to_string()));
        // Remembered entries do not count against the learned cap.
        for i in 0..LEARNED_CAP {
            assert_eq!(
                q.offer(&format!("https://n{i}.test"), &format!("n{i}.test"), now),
                Offer::Queued
            );
        }
    }

    proptest! {
        /// Whatever is offered, learned entries never exceed the cap and a
        /// round never hands out more than asked.
        #[test]
        fn bounded(ops in proptest::collection::vec((0u16..500, 0u8..3, 0u64..200_000), 0..400)) {
            let mut q = BindQueue::new(["https://boot.test".to_string()]);
            let mut now = 0;
            for (n, op, dt) in ops {
                now += dt;
                let u = format!("https://h{n}.test");
                match op {
                    0 => { q.offer(&u, &format!("h{n}.test"), now); }
                    1 => { q.failed(&u, now); }
                    _ => { prop_assert!(q.due(now, BINDS_PER_ROUND).len() <= BINDS_PER_ROUND); }
                }
                prop_assert!(q.learned() <= LEARNED_CAP);
            }
        }
    }
}
