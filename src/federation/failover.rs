//! Recent peer health changes ("failovers"), for the status page: a small
//! bounded ring in memory, newest last. Lost on restart, like the probe state
//! it records.

use std::collections::VecDeque;
use std::sync::Mutex;

/// How many changes are kept.
pub const KEEP: usize = 20;

/// One peer going down or coming back, as this node's probes saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChange {
    /// Unix seconds of the change.
    pub at: u64,
    /// The peer's bound DNS name.
    pub peer: String,
    /// True: it came up; false: it went down.
    pub up: bool,
}

/// The last [`KEEP`] health changes.
#[derive(Debug, Default)]
pub struct HealthLog {
    ring: Mutex<VecDeque<HealthChange>>,
}

impl HealthLog {
    /// Records a change, forgetting the oldest beyond [`KEEP`].
    pub fn push(&self, change: HealthChange) {
        if let Ok(mut r) = self.ring.lock() {
            while r.len() >= KEEP {
                r.pop_front();
            }
            r.push_back(change);
        }
    }

    /// The kept changes, newest first.
    pub fn recent(&self) -> Vec<HealthChange> {
        self.ring
            .lock()
            .map(|r| r.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_first_and_bounded() {
        let log = HealthLog::default();
        for i in 0..(KEEP as u64 + 5) {
            log.push(HealthChange {
                at: i,
                peer: format!("p{i}"),
                up: i % 2 == 0,
            });
        }
        let r = log.recent();
        assert_eq!(r.len(), KEEP);
        assert_eq!(r[0].at, KEEP as u64 + 4);
        assert_eq!(r[KEEP - 1].at, 5);
    }
}
