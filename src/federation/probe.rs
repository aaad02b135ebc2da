//! Health-probe state machine (pure): a peer is up after [`UP_AFTER`]
//! consecutive successful probes and down after [`DOWN_AFTER`] consecutive
//! misses; RTT is an exponentially weighted moving average. It also counts
//! health changes (flaps, forgotten one per [`FLAP_DECAY`] successes in a
//! row) and successes in a row, which the TTL choice uses.
//!
//! The agent probes only the peers whose reports it keeps (the mirrors of
//! its sites: bounded by zone size); the rest of the federation is watched
//! by SWIM membership (`swim`).

/// Successes needed to mark a peer up.
pub const UP_AFTER: u32 = 2;
/// Misses needed to mark a peer down.
pub const DOWN_AFTER: u32 = 3;
/// Successes in a row that forget one flap.
pub const FLAP_DECAY: u32 = 60;
/// EWMA weight of a new RTT sample.
const ALPHA: f64 = 0.3;

/// Probe history of one peer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProbeState {
    up: bool,
    ok_streak: u32,
    fail_streak: u32,
    rtt_ms: Option<f64>,
    flaps: u32,
}

impl ProbeState {
    /// Folds in one probe outcome: `Some(rtt_ms)` for success, `None` for a miss.
    pub fn observe(self, outcome: Option<f64>) -> Self {
        match outcome {
            Some(rtt) if rtt.is_finite() && rtt >= 0.0 => {
                let ok = self.ok_streak.saturating_add(1);
                let up = self.up || ok >= UP_AFTER;
                let mut flaps = self.flaps;
                if up != self.up {
                    flaps = flaps.saturating_add(1);
                } else if up && ok % FLAP_DECAY == 0 {
                    flaps = flaps.saturating_sub(1);
                }
                Self {
                    up,
                    ok_streak: ok,
                    fail_streak: 0,
                    rtt_ms: Some(
                        self.rtt_ms
                            .map_or(rtt, |old| old * (1.0 - ALPHA) + rtt * ALPHA),
                    ),
                    flaps,
                }
            }
            _ => {
                let fails = self.fail_streak.saturating_add(1);
                let up = self.up && fails < DOWN_AFTER;
                Self {
                    up,
                    ok_streak: 0,
                    fail_streak: fails,
                    rtt_ms: self.rtt_ms,
                    flaps: self.flaps.saturating_add(u32::from(up != self.up)),
                }
            }
        }
    }

    /// True when the peer is considered up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// True when the most recent probe missed (the peer may still count as
    /// up until [`DOWN_AFTER`] misses in a row).
    pub fn last_missed(&self) -> bool {
        self.fail_streak > 0
    }

    /// True when the peer is up but its last probe missed: probe it again
    /// soon rather than at the next round.
    pub fn suspect(&self) -> bool {
        self.up && self.fail_streak > 0
    }

    /// Successful probes in a row (how long it has been steadily up, in
    /// probe intervals).
    pub fn ok_streak(&self) -> u32 {
        self.ok_streak
    }

    /// Recent health changes.
    pub fn flaps(&self) -> u32 {
        self.flaps
    }

    /// Smoothed RTT, if ever measured.
    pub fn rtt_ms(&self) -> Option<f64> {
        self.rtt_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn up_and_down_with_hysteresis() {
        let s = ProbeState::default();
        assert!(!s.is_up());
        let s = s.observe(Some(1.0));
        assert!(!s.is_up());
        let s = s.observe(Some(3.0));
        assert!(s.is_up());
        assert!(!s.last_missed());
        let s = s.observe(None);
        assert!(s.is_up(), "one miss is tolerated");
        assert!(s.last_missed());
        let s = s.observe(Some(1.0)).observe(None).observe(None);
        assert!(s.is_up(), "two misses are tolerated");
        let s = s.observe(None);
        assert!(!s.is_up());
        assert!(s.rtt_ms().unwrap() > 1.0);
    }

    #[test]
    fn flaps_count_changes_and_decay_while_stable() {
        let up = |s: ProbeState| s.observe(Some(1.0)).observe(Some(1.0));
        let down = |s: ProbeState| s.observe(None).observe(None).observe(None);
        let s = up(ProbeState::default());
        assert_eq!((s.flaps(), s.ok_streak()), (1, 2));
        assert!(!s.suspect());
        let s = s.observe(None);
        assert!(s.suspect());
        let s = up(down(s));
        assert_eq!(s.flaps(), 3);
        assert!(!s.suspect());
        let s = (0..FLAP_DECAY).fold(s, |s, _| s.observe(Some(1.0)));
        assert_eq!(s.flaps(), 2);
        let s = (0..2 * FLAP_DECAY).fold(s, |s, _| s.observe(Some(1.0)));
        assert_eq!(s.flaps(), 0);
    }

    proptest! {
        #[test]
        fn trailing_streaks_decide(outcomes in proptest::collection::vec(proptest::option::of(0.0f64..100.0), 0..50)) {
            let s = outcomes.iter().fold(ProbeState::default(), |s, o| s.observe(*o));
            let n = outcomes.len();
            if n >= 2 && outcomes[n-1].is_some() && outcomes[n-2].is_some() { prop_assert!(s.is_up()); }
            if n >= 3 && outcomes[n-1].is_none() && outcomes[n-2].is_none() && outcomes[n-3].is_none() { prop_assert!(!s.is_up()); }
        }
    }
}
