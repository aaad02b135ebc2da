//! Proof-of-holding checks: what to ask a peer that claims a version, and
//! what its answer means (pure: values in, values out).
//!
//! A check asks for real bytes of a random blob and verifies them: a blob of
//! at most [`WHOLE_MAX`] bytes is fetched whole and re-hashed; of a larger
//! blob that this node holds itself, a random range (at most [`RANGE_MAX`]
//! bytes, uniformly placed) is compared with its own verified copy; a larger
//! blob it does not hold is not checkable without an outboard (skipped). Wrong bytes are
//! proof of lying: the peer's claim for that site is ignored at once.
//! Any other failure (404, error status, short body, timeout) counts; after
//! [`FAILURES_TO_DISTRUST`] in a row the claim is ignored too. A claim is
//! ignored for [`DISTRUST_SECS`]: the peer leaves the site's answers.

/// Longest range asked for when comparing with a local copy.
pub const RANGE_MAX: u64 = 64 * 1024;
/// Largest blob fetched whole (and re-hashed) when not held locally.
pub const WHOLE_MAX: u64 = 1024 * 1024;
/// Consecutive failures (other than wrong bytes) that remove a claim.
pub const FAILURES_TO_DISTRUST: u32 = 2;
/// How long a failed claim is ignored, seconds.
pub const DISTRUST_SECS: u64 = 600;

/// What to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// `bytes=start-(start+len-1)`, compared with the local copy.
    Range {
        /// First byte.
        start: u64,
        /// Length (≥ 1).
        len: u64,
    },
    /// The whole blob, re-hashed.
    Whole,
}

/// Chooses the check for a blob of `size` bytes; `held`: this node holds a
/// verified copy. `r1`, `r2`: random numbers. None: nothing checkable.
pub fn plan(size: u64, held: bool, r1: u64, r2: u64) -> Option<Plan> {
    if size == 0 {
        return None;
    }
    if size <= WHOLE_MAX {
        return Some(Plan::Whole);
    }
    if !held {
        return None;
    }
    let len = 1 + r1 % size.min(RANGE_MAX);
    let start = r2 % (size - len + 1);
    Some(Plan::Range { start, len })
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The bytes verified.
    Passed,
    /// The peer sent bytes that are not the blob's.
    WrongBytes,
    /// Anything else: 404 or another status, short body, timeout, connection failure.
    Failed(String),
}

/// The new consecutive-failure count after `outcome`, and whether the
/// peer's claim must now be ignored.
pub fn verdict(failures: u32, outcome: &Outcome) -> (u32, bool) {
    match outcome {
        Outcome::Passed => (0, false),
        Outcome::WrongBytes => (failures.saturating_add(1), true),
        Outcome::Failed(_) => {
            let f = failures.saturating_add(1);
            (f, f >= FAILURES_TO_DISTRUST)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wrong_bytes_remove_at_once_other_failures_on_repeat() {
        assert_eq!(verdict(0, &Outcome::WrongBytes), (1, true));
        assert_eq!(verdict(0, &Outcome::Failed("timeout".into())), (1, false));
        assert_eq!(verdict(1, &Outcome::Failed("404".into())), (2, true));
        assert_eq!(verdict(1, &Outcome::Passed), (0, false));
    }

    #[test]
    fn plans() {
        assert_eq!(plan(0, true, 1, 2), None);
        assert_eq!(plan(WHOLE_MAX + 1, false, 1, 2), None);
        assert_eq!(plan(10, false, 1, 2), Some(Plan::Whole));
        assert_eq!(plan(10, true, 1, 2), Some(Plan::Whole));
        assert_eq!(
            plan(WHOLE_MAX + 10, true, 0, 9),
            Some(Plan::Range { start: 9, len: 1 })
        );
    }

    proptest! {
        /// A range plan always lies inside the blob and is not empty.
        #[test]
        fn ranges_inside_the_blob(size in WHOLE_MAX + 1..100_000_000, r1: u64, r2: u64) {
            match plan(size, true, r1, r2) {
                Some(Plan::Range { start, len }) => {
                    prop_assert!((1..=RANGE_MAX).contains(&len));
                    prop_assert!(start + len <= size);
                }
                other => prop_assert!(false, "{other:?}"),
            }
        }
    }
}
