//! Checks of the addresses peers advertise (pure: values in, values out).
//!
//! An authority answers a peer's address only after it reached that
//! address itself: HTTPS to `<address>:<port of the peer's URL>` with the
//! site's name as SNI (the certificate must verify for it), asking for the
//! node document with a fresh challenge that the peer's own key must sign
//! (`binding`). A third party's address fails (another key, or no valid
//! certificate for the site), so it is never answered. A passed check is
//! good for [`VALID`]; addresses are re-checked every [`RECHECK_OK`] (or
//! [`RECHECK_FAILED`] after a failure). Only the first
//! [`MAX_CHECKED_PER_PEER`] addresses of a report are considered.

use std::net::IpAddr;
use std::time::Duration;

/// A passed check lets the address be answered for this long.
pub const VALID: Duration = Duration::from_secs(30);
/// Re-check interval of an address that passed.
pub const RECHECK_OK: Duration = Duration::from_secs(10);
/// Re-check interval of an address that failed.
pub const RECHECK_FAILED: Duration = Duration::from_secs(2);
/// Addresses of one report checked (and answerable), at most.
pub const MAX_CHECKED_PER_PEER: usize = 8;

/// The last check of one (peer, address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrCheck {
    /// Whether it passed.
    pub ok: bool,
    /// When, unix milliseconds.
    pub at_ms: u64,
}

/// Whether an address with this last check should be checked now.
pub fn due(last: Option<AddrCheck>, now_ms: u64) -> bool {
    match last {
        None => true,
        Some(c) => {
            let every = if c.ok { RECHECK_OK } else { RECHECK_FAILED };
            now_ms.saturating_sub(c.at_ms) >= every.as_millis() as u64
        }
    }
}

/// Whether an address with this last check may be answered.
pub fn answerable(last: Option<AddrCheck>, now_ms: u64) -> bool {
    last.is_some_and(|c| c.ok && now_ms.saturating_sub(c.at_ms) < VALID.as_millis() as u64)
}

/// The advertised addresses that may be answered, in the report's order.
pub fn filter(
    advertised: &[IpAddr],
    last: impl Fn(IpAddr) -> Option<AddrCheck>,
    now_ms: u64,
) -> Vec<IpAddr> {
    advertised
        .iter()
        .take(MAX_CHECKED_PER_PEER)
        .copied()
        .filter(|a| answerable(last(*a), now_ms))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_recently_verified_addresses_are_answered() {
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [198, 51, 100, 7].into();
        let checks = |ip: IpAddr| {
            (ip == a).then_some(AddrCheck {
                ok: true,
                at_ms: 1_000,
            })
        };
        assert_eq!(
            filter(&[b, a], checks, 2_000),
            vec![a],
            "unchecked third party left out"
        );
        assert!(
            filter(&[a], checks, 1_000 + VALID.as_millis() as u64).is_empty(),
            "stale"
        );
        let failed = Some(AddrCheck {
            ok: false,
            at_ms: 0,
        });
        assert!(!answerable(failed, 1));
        assert!(due(None, 0));
        assert!(!due(failed, 1_999));
        assert!(due(failed, 2_000));
        assert!(!due(Some(AddrCheck { ok: true, at_ms: 0 }), 9_999));
    }
}
