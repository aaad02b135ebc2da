//! When to renew a certificate and how long to wait after a failure (pure).
//!
//! - Renewal at about two thirds of the lifetime, moved by up to ±1/30 of
//!   the lifetime (jitter, so mirrors that got certificates together do not
//!   all renew together).
//! - After a failed attempt: exponential back-off from [`FIRST_BACKOFF`],
//!   doubling up to [`MAX_BACKOFF`], and never earlier than a `Retry-After`
//!   the CA sent (capped at a day).

use std::time::Duration;

/// Wait after the first failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait between attempts (unless the CA asks for more).
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86400);

/// Unix second at which to renew a certificate valid from `not_before` to
/// `not_after`; `jitter` in `0.0..=1.0` picks the point in the window.
pub fn renew_at(not_before: u64, not_after: u64, jitter: f64) -> u64 {
    let life = not_after.saturating_sub(not_before) as f64;
    let j = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let offset = life * 2.0 / 3.0 + (j * 2.0 - 1.0) * life / 30.0;
    not_before + offset.max(0.0) as u64
}

/// How long to wait after the `failures`-th failure in a row (1 = first),
/// given the CA's `Retry-After`, if it sent one.
pub fn backoff(failures: u32, retry_after: Option<Duration>) -> Duration {
    let exp = FIRST_BACKOFF
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(MAX_BACKOFF);
    match retry_after {
        Some(r) => exp.max(r.min(MAX_RETRY_AFTER)),
        None => exp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn renews_at_two_thirds() {
        // 90-day certificate: day 60, ± 3 days.
        let day = 86400;
        assert_eq!(renew_at(0, 90 * day, 0.5), 60 * day);
        assert_eq!(renew_at(0, 90 * day, 0.0), 57 * day);
        assert_eq!(renew_at(0, 90 * day, 1.0), 63 * day);
        assert_eq!(renew_at(1000, 1090, 0.5), 1060);
    }

    #[test]
    fn backs_off_exponentially_and_honours_retry_after() {
        assert_eq!(backoff(1, None), Duration::from_secs(5));
        assert_eq!(backoff(2, None), Duration::from_secs(10));
        assert_eq!(backoff(5, None), Duration::from_secs(80));
        assert_eq!(backoff(40, None), MAX_BACKOFF);
        assert_eq!(
            backoff(1, Some(Duration::from_secs(120))),
            Duration::from_secs(120)
        );
        assert_eq!(
            backoff(5, Some(Duration::from_secs(1))),
            Duration::from_secs(80)
        );
        assert_eq!(
            backoff(1, Some(Duration::from_secs(10 * 86400))),
            MAX_RETRY_AFTER
        );
    }

    proptest! {
        #[test]
        fn renewal_is_inside_the_lifetime(nb in 0u64..4_000_000_000, life in 1u64..100_000_000, j in -1.0f64..2.0) {
            let at = renew_at(nb, nb + life, j);
            prop_assert!(at >= nb && at < nb + life);
            prop_assert!((at - nb) as f64 >= life as f64 * 0.6 - 1.0);
            prop_assert!((at - nb) as f64 <= life as f64 * 0.7 + 1.0);
        }
    }
}
