//! The TTL of a steered answer, chosen from the answer's state (pure).
//!
//! A resolver keeps an answer for its TTL, so the TTL is how long clients
//! may keep going to a mirror after it died: the failover budget is
//! detection time + TTL. A long TTL is only worth it when the answer is
//! unlikely to change: the standard TTL for a stable answer, a short one
//! while the chosen mirror is new or recently recovered (ramping up to the
//! standard over `settle_secs`), flapping, near capacity, when the decision
//! was close (the next mirror within `close_ms`), during a rollout (mirrors
//! still on an older version will take over as they complete it), for
//! exploration answers, and for fallback answers (no mirror could serve). Operator bounds clamp
//! the result.

use super::{Candidate, Decision};

/// TTL knobs (seconds unless stated).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TtlPolicy {
    /// TTL of a stable answer (`dns.answer_ttl`).
    pub standard: u32,
    /// TTL while the answer is uncertain.
    pub short: u32,
    /// Operator's lower bound.
    pub min: u32,
    /// Operator's upper bound.
    pub max: u32,
    /// A mirror up for less than this is new: its TTL ramps from `short`
    /// to `standard` over this time.
    pub settle_secs: u64,
    /// This many recent health changes make a mirror flapping.
    pub flap_limit: u32,
    /// Load fraction from which a mirror is near capacity.
    pub busy_load: f64,
    /// A next-best mirror within this many ms makes the decision close.
    pub close_ms: f64,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        Self {
            standard: 30,
            short: 5,
            min: 1,
            max: 3600,
            settle_secs: 300,
            flap_limit: 2,
            busy_load: 0.8,
            close_ms: 10.0,
        }
    }
}

/// Why an answer got a short TTL (for logs, metrics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Stable: the standard TTL.
    Stable,
    /// No mirror could serve: the zone's fallback records.
    Fallback,
    /// An exploration answer.
    Explored,
    /// A rollout is in progress: the answer changes as mirrors complete it.
    Rollout,
    /// A chosen mirror changed health recently, more than once.
    Flapping,
    /// A chosen mirror is near capacity.
    Busy,
    /// The next mirror is almost as good.
    Close,
    /// A chosen mirror is new or recently recovered (ramping).
    New,
}

/// The TTL and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl {
    /// Seconds.
    pub secs: u32,
    /// What decided it.
    pub reason: Reason,
}

impl TtlPolicy {
    /// Clamps to the operator's bounds (an inverted range counts as `min`).
    fn clamp(&self, secs: u32) -> u32 {
        secs.min(self.max).max(self.min)
    }

    fn short(&self) -> u32 {
        self.short.min(self.standard)
    }

    /// Where a mirror up for `up_secs` stands on the TTL ramp: `None` once
    /// settled, else the step that sets the ramp's TTL. Mirrors on the same
    /// step get the same TTL, so views compare uptimes by step.
    pub fn ramp_step(&self, up_secs: u64) -> Option<u64> {
        let span = u64::from(self.standard).saturating_sub(u64::from(self.short()));
        (up_secs < self.settle_secs).then(|| span * up_secs / self.settle_secs.max(1))
    }

    /// Whether a mirror at `load` makes an answer busy (short TTL).
    pub fn is_busy(&self, load: f64) -> bool {
        load.is_finite() && load >= self.busy_load
    }

    /// The TTL for fallback records (no mirror could serve).
    pub fn fallback(&self) -> Ttl {
        Ttl {
            secs: self.clamp(self.short()),
            reason: Reason::Fallback,
        }
    }
}

/// Chooses the TTL of a steered answer from the decision and the
/// candidates it picked from.
pub fn choose(policy: &TtlPolicy, decision: &Decision, candidates: &[Candidate]) -> Ttl {
    let chosen: Vec<&Candidate> = decision
        .picks
        .iter()
        .filter_map(|p| candidates.get(p.index))
        .collect();
    if chosen.is_empty() {
        return policy.fallback();
    }
    let short = |reason| Ttl {
        secs: policy.clamp(policy.short()),
        reason,
    };
    if decision.explored {
        return short(Reason::Explored);
    }
    if decision.rollout {
        return short(Reason::Rollout);
    }
    if chosen.iter().any(|c| c.flaps >= policy.flap_limit.max(1)) {
        return short(Reason::Flapping);
    }
    if chosen.iter().any(|c| policy.is_busy(c.load)) {
        return short(Reason::Busy);
    }
    // A NaN margin counts as close (unknown is not safe).
    let clear = |m: f64| {
        m.partial_cmp(&policy.close_ms.max(0.0))
            .is_some_and(|o| o.is_ge())
    };
    if decision.margin_ms.is_some_and(|m| !clear(m)) {
        return short(Reason::Close);
    }
    let youngest = chosen.iter().map(|c| c.up_secs).min().unwrap_or(0);
    let standard = policy.standard;
    if let Some(step) = policy.ramp_step(youngest) {
        // Linear ramp short → standard over settle_secs.
        let secs = u64::from(policy.short()) + step;
        return Ttl {
            secs: policy.clamp(u32::try_from(secs).unwrap_or(standard)),
            reason: Reason::New,
        };
    }
    Ttl {
        secs: policy.clamp(standard),
        reason: Reason::Stable,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Pick;
    use super::*;
    use proptest::prelude::*;
    use std::net::IpAddr;

    fn mirror(up_secs: u64, flaps: u32, load: f64) -> Candidate {
        Candidate {
            id: [1; 32],
            addrs: vec![IpAddr::from([192, 0, 2, 1])],
            point: None,
            rtt_ms: None,
            load,
            healthy: true,
            authorized: true,
            version: Some(1),
            up_secs,
            flaps,
        }
    }

    fn decision(margin_ms: Option<f64>, explored: bool) -> Decision {
        Decision {
            picks: vec![Pick {
                index: 0,
                addr: IpAddr::from([192, 0, 2, 1]),
                score: 1.0,
                measured: false,
            }],
            margin_ms,
            explored,
            rollout: false,
        }
    }

    fn ttl(c: Candidate, d: Decision) -> Ttl {
        choose(&TtlPolicy::default(), &d, &[c])
    }

    #[test]
    fn stable_answer_gets_the_standard_ttl() {
        let t = ttl(mirror(3600, 0, 0.2), decision(Some(80.0), false));
        assert_eq!((t.secs, t.reason), (30, Reason::Stable));
        // No alternative at all is not a close decision.
        let t = ttl(mirror(3600, 0, 0.2), decision(None, false));
        assert_eq!(t.reason, Reason::Stable);
    }

    #[test]
    fn uncertain_answers_get_the_short_ttl() {
        let cases = [
            (
                mirror(3600, 0, 0.2),
                decision(Some(80.0), true),
                Reason::Explored,
            ),
            (
                mirror(3600, 2, 0.2),
                decision(Some(80.0), false),
                Reason::Flapping,
            ),
            (
                mirror(3600, 0, 0.85),
                decision(Some(80.0), false),
                Reason::Busy,
            ),
            (
                mirror(3600, 0, 0.2),
                decision(Some(4.0), false),
                Reason::Close,
            ),
            (
                mirror(3600, 0, 0.2),
                decision(Some(f64::NAN), false),
                Reason::Close,
            ),
        ];
        for (c, d, why) in cases {
            assert_eq!(
                ttl(c, d),
                Ttl {
                    secs: 5,
                    reason: why
                }
            );
        }
        let rolling = Decision {
            rollout: true,
            ..decision(Some(80.0), false)
        };
        assert_eq!(ttl(mirror(3600, 0, 0.2), rolling).reason, Reason::Rollout);
        let none = Decision::default();
        assert_eq!(ttl(mirror(3600, 0, 0.2), none).reason, Reason::Fallback);
        assert_eq!(TtlPolicy::default().fallback().secs, 5);
    }

    #[test]
    fn new_mirror_ramps_up() {
        let at = |up| ttl(mirror(up, 0, 0.2), decision(Some(80.0), false));
        assert_eq!(
            at(0),
            Ttl {
                secs: 5,
                reason: Reason::New
            }
        );
        assert_eq!(at(150).secs, 17);
        assert_eq!(at(299).reason, Reason::New);
        assert_eq!(
            at(300),
            Ttl {
                secs: 30,
                reason: Reason::Stable
            }
        );
    }

    #[test]
    fn operator_bounds_clamp() {
        let p = TtlPolicy {
            min: 10,
            max: 20,
            ..TtlPolicy::default()
        };
        let c = [mirror(3600, 0, 0.2)];
        assert_eq!(choose(&p, &decision(Some(80.0), false), &c).secs, 20);
        assert_eq!(choose(&p, &decision(Some(1.0), false), &c).secs, 10);
        assert_eq!(p.fallback().secs, 10);
        // A short TTL above the standard is the standard.
        let p = TtlPolicy {
            standard: 3,
            short: 5,
            ..TtlPolicy::default()
        };
        assert_eq!(choose(&p, &decision(Some(1.0), false), &c).secs, 3);
    }

    proptest! {
        #[test]
        fn ttl_is_bounded_and_never_longer_when_uncertain(
            up in 0u64..10_000, flaps in 0u32..5, load in -1.0f64..2.0,
            margin in proptest::option::of(0.0f64..200.0), explored: bool,
            standard in 1u32..600, short in 1u32..60, min in 0u32..30, extra in 0u32..600,
        ) {
            let p = TtlPolicy { standard, short, min, max: min + extra, ..TtlPolicy::default() };
            let d = decision(margin, explored);
            let c = [mirror(up, flaps, load)];
            let t = choose(&p, &d, &c);
            prop_assert!(t.secs >= p.min && t.secs <= p.max.max(p.min));
            let stable = choose(&p, &decision(None, false), &[mirror(10_000, 0, 0.0)]);
            prop_assert!(t.secs <= stable.secs);
            if t.reason != Reason::Stable && t.reason != Reason::New {
                prop_assert_eq!(t.secs, p.clamp(short.min(standard)));
            }
        }

        /// Views compare uptimes by ramp step: equal steps must give equal
        /// TTLs, whatever else the candidates are.
        #[test]
        fn uptimes_on_the_same_ramp_step_get_the_same_ttl(
            a in 0u64..1_000, b in 0u64..1_000, flaps in 0u32..3, load in 0.0f64..1.0,
            margin in proptest::option::of(0.0f64..50.0),
            standard in 1u32..600, short in 1u32..60, settle in 0u64..600,
        ) {
            let p = TtlPolicy { standard, short, settle_secs: settle, ..TtlPolicy::default() };
            let d = decision(margin, false);
            let ta = choose(&p, &d, &[mirror(a, flaps, load)]);
            let tb = choose(&p, &d, &[mirror(b, flaps, load)]);
            if p.ramp_step(a) == p.ramp_step(b) {
                prop_assert_eq!(ta.secs, tb.secs);
            }
        }
    }
}
