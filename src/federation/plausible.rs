//! Is a peer's claimed location possible, given the RTT this node measured
//! to it? (pure)
//!
//! A round trip cannot beat light in vacuum: a peer `d` km away has an RTT
//! of at least `d / KM_PER_RTT_MS` ms. A claim farther from this node's own
//! configured location than the measured RTT allows (beyond [`SLACK_MS`]) is
//! impossible: the claim is flagged in `status`, and with
//! `[federation] location_check = true` ignored (the peer is ranked as of
//! unknown location).

use crate::geo::{distance_km, GeoPoint};

/// Kilometres of distance per millisecond of RTT at the speed of light in
/// vacuum (≈ 300 km/ms one way, halved for the round trip).
pub const KM_PER_RTT_MS: f64 = 149.896;
/// Measurement slack, ms (timer and scheduling noise).
pub const SLACK_MS: f64 = 1.0;

/// Whether a peer claiming `claimed` can be where it says, seen from `own`
/// with a smoothed RTT of `rtt_ms`. None when anything is unknown.
pub fn location_plausible(
    own: Option<GeoPoint>,
    claimed: Option<GeoPoint>,
    rtt_ms: Option<f64>,
) -> Option<bool> {
    let (own, claimed, rtt) = (own?, claimed?, rtt_ms?);
    let d = distance_km(own, claimed);
    if !d.is_finite() || !rtt.is_finite() || rtt < 0.0 {
        return None;
    }
    Some(d <= (rtt + SLACK_MS) * KM_PER_RTT_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FRA: GeoPoint = GeoPoint {
        lat: 50.11,
        lon: 8.68,
    };
    const SYD: GeoPoint = GeoPoint {
        lat: -33.87,
        lon: 151.21,
    };

    #[test]
    fn sydney_is_not_a_millisecond_from_frankfurt() {
        // ~16,500 km: at least ~110 ms round trip.
        assert_eq!(
            location_plausible(Some(FRA), Some(SYD), Some(0.3)),
            Some(false)
        );
        assert_eq!(
            location_plausible(Some(FRA), Some(SYD), Some(100.0)),
            Some(false)
        );
        assert_eq!(
            location_plausible(Some(FRA), Some(SYD), Some(112.0)),
            Some(true)
        );
        assert_eq!(
            location_plausible(Some(FRA), Some(FRA), Some(0.1)),
            Some(true)
        );
        assert_eq!(location_plausible(None, Some(SYD), Some(0.3)), None);
        assert_eq!(location_plausible(Some(FRA), Some(SYD), None), None);
        assert_eq!(
            location_plausible(Some(FRA), Some(SYD), Some(f64::NAN)),
            None
        );
    }

    proptest! {
        /// A larger RTT never makes a plausible claim implausible.
        #[test]
        fn monotone_in_rtt(lat in -90.0f64..90.0, lon in -180.0f64..180.0, rtt in 0.0f64..500.0, more in 0.0f64..500.0) {
            let p = GeoPoint { lat, lon };
            if location_plausible(Some(FRA), Some(p), Some(rtt)) == Some(true) {
                prop_assert_eq!(location_plausible(Some(FRA), Some(p), Some(rtt + more)), Some(true));
            }
        }
    }
}
