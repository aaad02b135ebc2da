//! Expiry warnings: a served manifest stops being served at its `expires`;
//! owners are warned `publish.expiry_warning_days` before (in `status`, the
//! `/metrics` gauge and a WARN log line once per site and version).
//!
//! Pure: the caller passes `now`.

use crate::catalog::Catalog;

/// The expiry of one served site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// Site.
    pub site: String,
    /// Version served.
    pub version: u64,
    /// Unix seconds when it expires.
    pub expires: u64,
    /// Seconds left (negative: expired).
    pub seconds_left: i64,
    /// Within the warning window.
    pub warn: bool,
}

/// True when a manifest expiring at `expires` is within `warn_days` of `now`.
pub fn due(now: u64, expires: u64, warn_days: u64) -> bool {
    expires <= now.saturating_add(warn_days.saturating_mul(86400))
}

/// Seconds from `now` to `expires`, negative once past.
pub fn seconds_left(now: u64, expires: u64) -> i64 {
    let left = i128::from(expires) - i128::from(now);
    i64::try_from(left).unwrap_or(if left < 0 { i64::MIN } else { i64::MAX })
}

/// The served sites' expiries, by site name.
pub fn of_catalog(cat: &Catalog, now: u64, warn_days: u64) -> Vec<Expiry> {
    let mut v: Vec<Expiry> = cat
        .sites()
        .filter_map(|s| {
            let m = &s.current.as_ref()?.manifest;
            Some(Expiry {
                site: m.site.clone(),
                version: m.version,
                expires: m.expires,
                seconds_left: seconds_left(now, m.expires),
                warn: due(now, m.expires, warn_days),
            })
        })
        .collect();
    v.sort_by(|a, b| a.site.cmp(&b.site));
    v
}

/// Logs a WARN for each expiring (site, version) not warned about before.
pub fn warn_once(expiries: &[Expiry], warned: &mut std::collections::HashSet<(String, u64)>) {
    for e in expiries.iter().filter(|e| e.warn) {
        if warned.insert((e.site.clone(), e.version)) {
            tracing::warn!(
                site = %e.site,
                version = e.version,
                days_left = e.seconds_left / 86400,
                "served manifest expires soon: the site stops being served then; run `p2pcdn resign` or publish again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_window() {
        let day = 86400;
        assert!(!due(0, 15 * day, 14));
        assert!(due(0, 14 * day, 14));
        assert!(due(0, 3 * day, 14));
        assert!(due(10 * day, 3 * day, 14));
        assert!(!due(0, 1, 0) || due(0, 0, 0));
        assert_eq!(seconds_left(10, 4), -6);
        assert_eq!(seconds_left(4, 10), 6);
    }
}
