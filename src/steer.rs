//! Pure mirror steering: which mirrors' addresses a DNS answer should carry.
//!
//! No I/O, no clock, no randomness: the same inputs always give the same
//! answer. The caller supplies the client's estimated location, the candidate
//! mirrors (with health, authorization, verified content version, load and
//! optionally a measured RTT) and a [`Policy`]; [`steer`] returns up to
//! `policy.k` addresses, best first. An empty answer means "serve the zone's
//! fallback records".
//!
//! Ranking, in order:
//! 1. Version: if an authorized, healthy mirror holds `target_version`, only
//!    that version is served; otherwise the highest version any authorized,
//!    healthy mirror holds (a rollout in progress).
//! 2. Eligible: authorized, healthy, holds that version, has an address of
//!    the requested family.
//! 3. Score in ms: measured RTT, else distance / `km_per_ms`, else `unknown_ms`.
//! 4. Load: above `spill_threshold` a penalty grows linearly to
//!    `spill_penalty_ms` at full load; mirrors above 100 % are dropped unless
//!    all eligible mirrors are.
//! 5. Order by `floor(score / tie_ms)`, then a hash of (client prefix, mirror
//!    id) so equal mirrors share clients evenly but stably, then id.
//! 6. At most `k` mirrors, one address each, no repeated mirror or address.

use std::net::IpAddr;

use crate::geo::{distance_km, GeoPoint};

/// A mirror that could be put in an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Node key bytes: stable identity, also used for tie spreading.
    pub id: [u8; 32],
    /// The mirror's public addresses (IPv4 and/or IPv6).
    pub addrs: Vec<IpAddr>,
    /// Mirror location, if known.
    pub point: Option<GeoPoint>,
    /// Measured latency estimate client region → mirror, if known.
    pub rtt_ms: Option<f64>,
    /// Current load as a fraction of declared capacity (0.0 idle, 1.0 full);
    /// non-finite or negative counts as 0.
    pub load: f64,
    /// Passing health checks.
    pub healthy: bool,
    /// Listed in the site's signed manifest.
    pub authorized: bool,
    /// Newest version of the site this mirror holds, verified.
    pub version: Option<u64>,
}

/// What is known about the querying client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientInfo {
    /// Estimated client location, if known.
    pub point: Option<GeoPoint>,
    /// Stable hash of the client's /24 (IPv4) or /56 (IPv6) prefix.
    pub prefix_key: u64,
}

/// Address family asked for (A or AAAA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 (A records).
    V4,
    /// IPv6 (AAAA records).
    V6,
}

impl Family {
    /// True when `addr` belongs to this family.
    pub fn matches(self, addr: &IpAddr) -> bool {
        match self {
            Family::V4 => addr.is_ipv4(),
            Family::V6 => addr.is_ipv6(),
        }
    }
}

/// Steering knobs. Non-finite or negative values (and `km_per_ms` = 0) fall
/// back to the defaults, except `tie_ms`: a non-positive or non-finite
/// `tie_ms` orders by exact score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Maximum number of addresses per answer (default 2).
    pub k: usize,
    /// Load fraction above which the spill penalty starts (default 0.8).
    pub spill_threshold: f64,
    /// Extra ms at 100 % load (default 500).
    pub spill_penalty_ms: f64,
    /// Distance-based RTT estimate: km / km_per_ms (default 100).
    pub km_per_ms: f64,
    /// Score when neither RTT nor both locations are known (default 10 000).
    pub unknown_ms: f64,
    /// Scores in the same `tie_ms` bucket count as equal (default 1).
    pub tie_ms: f64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            k: 2,
            spill_threshold: 0.8,
            spill_penalty_ms: 500.0,
            km_per_ms: 100.0,
            unknown_ms: 10_000.0,
            tie_ms: 1.0,
        }
    }
}

/// Policy values after sanitizing.
struct Knobs {
    threshold: f64,
    penalty_ms: f64,
    km_per_ms: f64,
    unknown_ms: f64,
    /// `None`: order by exact score.
    tie_ms: Option<f64>,
}

impl Knobs {
    fn from(policy: &Policy) -> Knobs {
        let d = Policy::default();
        let nonneg = |v: f64, default: f64| {
            if v.is_finite() && v >= 0.0 {
                v
            } else {
                default
            }
        };
        let positive = |v: f64, default: f64| if v.is_finite() && v > 0.0 { v } else { default };
        Knobs {
            threshold: nonneg(policy.spill_threshold, d.spill_threshold),
            penalty_ms: nonneg(policy.spill_penalty_ms, d.spill_penalty_ms),
            km_per_ms: positive(policy.km_per_ms, d.km_per_ms),
            unknown_ms: nonneg(policy.unknown_ms, d.unknown_ms),
            tie_ms: (policy.tie_ms.is_finite() && policy.tie_ms > 0.0).then_some(policy.tie_ms),
        }
    }
}

/// Load as used for ranking: non-finite or negative → 0.
fn sanitized_load(load: f64) -> f64 {
    if load.is_finite() && load > 0.0 {
        load
    } else {
        0.0
    }
}

/// Authorized and healthy: may serve, version permitting.
fn live(c: &Candidate) -> bool {
    c.authorized && c.healthy
}

/// The version to serve (rule 1), or `None` when no live mirror holds any.
fn chosen_version(candidates: &[Candidate], target_version: Option<u64>) -> Option<u64> {
    let held = candidates
        .iter()
        .filter(|c| live(c))
        .filter_map(|c| c.version);
    match target_version {
        Some(t) if held.clone().any(|v| v == t) => Some(t),
        _ => held.max(),
    }
}

/// Latency-like base score in ms (rule 3); always finite and ≥ 0.
fn base_score(client: &ClientInfo, c: &Candidate, knobs: &Knobs) -> f64 {
    if let Some(rtt) = c.rtt_ms.filter(|r| r.is_finite() && *r >= 0.0) {
        return rtt;
    }
    if let (Some(a), Some(b)) = (client.point, c.point) {
        let ms = distance_km(a, b) / knobs.km_per_ms;
        if ms.is_finite() && ms >= 0.0 {
            return ms;
        }
    }
    knobs.unknown_ms
}

/// Spill penalty in ms for a load above the threshold (rule 4).
fn spill_penalty(load: f64, knobs: &Knobs) -> f64 {
    if load <= knobs.threshold || knobs.threshold >= 1.0 {
        return 0.0;
    }
    (load.min(1.0) - knobs.threshold) / (1.0 - knobs.threshold) * knobs.penalty_ms
}

/// splitmix64 finalizer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Deterministic tie-break hash of (client prefix, mirror id): FNV-1a over
/// the bytes, then a splitmix64 finalizer for good bit spread.
fn tie_hash(prefix_key: u64, id: &[u8; 32]) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let h = prefix_key
        .to_le_bytes()
        .iter()
        .chain(id.iter())
        .fold(FNV_OFFSET, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
        });
    mix64(h)
}

/// A scored eligible candidate.
struct Scored<'a> {
    index: usize,
    score: f64,
    /// Primary sort key: tie bucket (or the exact score).
    bucket: f64,
    hash: u64,
    candidate: &'a Candidate,
    addr: IpAddr,
}

/// Full ranking: every answerable mirror, best first, with its answer address.
fn ranked<'a>(
    client: &ClientInfo,
    candidates: &'a [Candidate],
    target_version: Option<u64>,
    policy: &Policy,
    family: Family,
    limit: usize,
) -> Vec<Scored<'a>> {
    let Some(version) = chosen_version(candidates, target_version) else {
        return Vec::new();
    };
    let knobs = Knobs::from(policy);
    // (index, candidate, answer address, sanitized load)
    let eligible: Vec<(usize, &Candidate, IpAddr, f64)> = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| live(c) && c.version == Some(version))
        .filter_map(|(i, c)| {
            let addr = c.addrs.iter().copied().find(|a| family.matches(a))?;
            Some((i, c, addr, sanitized_load(c.load)))
        })
        .collect();
    let all_over = eligible.iter().all(|e| e.3 > 1.0);
    let mut scored: Vec<Scored<'a>> = eligible
        .into_iter()
        .filter(|e| all_over || e.3 <= 1.0)
        .map(|(index, candidate, addr, load)| {
            let mut score = base_score(client, candidate, &knobs) + spill_penalty(load, &knobs);
            if all_over {
                // Everyone is past capacity: least loaded first.
                score += load * knobs.penalty_ms;
            }
            let bucket = match knobs.tie_ms {
                Some(t) => (score / t).floor(),
                None => score,
            };
            Scored {
                index,
                score,
                bucket,
                hash: tie_hash(client.prefix_key, &candidate.id),
                candidate,
                addr,
            }
        })
        .collect();
    let order = |a: &Scored<'_>, b: &Scored<'_>| {
        a.bucket
            .total_cmp(&b.bucket)
            .then(a.hash.cmp(&b.hash))
            .then(a.candidate.id.cmp(&b.candidate.id))
            .then(a.index.cmp(&b.index))
    };
    // One entry per mirror id and per address; the better-ranked one stays.
    // Stops at `limit`, so this is O(n·k), not O(n²).
    let dedup = |sorted: Vec<Scored<'a>>| -> Vec<Scored<'a>> {
        let mut out: Vec<Scored<'a>> = Vec::with_capacity(limit.min(sorted.len()));
        for s in sorted {
            if out.len() >= limit {
                break;
            }
            let seen = out
                .iter()
                .any(|o| o.candidate.id == s.candidate.id || o.addr == s.addr);
            if !seen {
                out.push(s);
            }
        }
        out
    };
    // Only the best few matter: partition them to the front and sort just
    // those; fall back to a full sort if duplicates leave fewer than `limit`.
    let window = limit.saturating_mul(4).saturating_add(8);
    if scored.len() > window {
        let mut head: Vec<Scored<'a>> = {
            let mut all = scored;
            all.select_nth_unstable_by(window, order);
            let rest = all.split_off(window);
            scored = rest;
            all
        };
        head.sort_by(order);
        let out = dedup(head);
        if out.len() >= limit {
            return out;
        }
        let mut all = out;
        all.append(&mut scored);
        all.sort_by(order);
        return dedup(all);
    }
    scored.sort_by(order);
    dedup(scored)
}

/// Ordered answer addresses (at most policy.k, one per mirror, first address of the requested family).
///
/// Empty means no mirror can serve: answer the zone's fallback records.
pub fn steer(
    client: &ClientInfo,
    candidates: &[Candidate],
    target_version: Option<u64>,
    policy: &Policy,
    family: Family,
) -> Vec<IpAddr> {
    ranked(client, candidates, target_version, policy, family, policy.k)
        .into_iter()
        .take(policy.k)
        .map(|s| s.addr)
        .collect()
}

/// Same, but returns (candidate index, score_ms) for diagnostics and tests.
///
/// Entry `i` corresponds to address `i` of [`steer`]'s answer; the score
/// includes load penalties.
pub fn rank(
    client: &ClientInfo,
    candidates: &[Candidate],
    target_version: Option<u64>,
    policy: &Policy,
    family: Family,
) -> Vec<(usize, f64)> {
    ranked(client, candidates, target_version, policy, family, policy.k)
        .into_iter()
        .take(policy.k)
        .map(|s| (s.index, s.score))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const FRANKFURT: GeoPoint = GeoPoint {
        lat: 50.11,
        lon: 8.68,
    };
    const NEW_YORK: GeoPoint = GeoPoint {
        lat: 40.71,
        lon: -74.01,
    };
    const SINGAPORE: GeoPoint = GeoPoint {
        lat: 1.35,
        lon: 103.82,
    };
    const SAO_PAULO: GeoPoint = GeoPoint {
        lat: -23.55,
        lon: -46.63,
    };
    const SYDNEY: GeoPoint = GeoPoint {
        lat: -33.87,
        lon: 151.21,
    };
    const MOSCOW: GeoPoint = GeoPoint {
        lat: 55.7558,
        lon: 37.6173,
    };

    fn v4(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    fn v6(n: u8) -> IpAddr {
        IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(n)])
    }

    fn mirror(n: u8, point: GeoPoint) -> Candidate {
        Candidate {
            id: [n; 32],
            addrs: vec![v4(n), v6(n)],
            point: Some(point),
            rtt_ms: None,
            load: 0.1,
            healthy: true,
            authorized: true,
            version: Some(7),
        }
    }

    fn cities() -> Vec<Candidate> {
        [FRANKFURT, NEW_YORK, SINGAPORE, SAO_PAULO, SYDNEY]
            .into_iter()
            .zip(1..)
            .map(|(p, n)| mirror(n, p))
            .collect()
    }

    fn at(point: GeoPoint) -> ClientInfo {
        ClientInfo {
            point: Some(point),
            prefix_key: 42,
        }
    }

    fn go(client: ClientInfo, cands: &[Candidate], family: Family) -> Vec<IpAddr> {
        steer(&client, cands, Some(7), &Policy::default(), family)
    }

    #[test]
    fn nearest_first() {
        let c = cities();
        assert_eq!(go(at(SINGAPORE), &c, Family::V4), vec![v4(3), v4(5)]);
        assert_eq!(go(at(SYDNEY), &c, Family::V4)[0], v4(5));
        assert_eq!(go(at(SYDNEY), &c, Family::V6)[0], v6(5));
        assert_eq!(go(at(NEW_YORK), &c, Family::V4)[0], v4(2));
        let ranked = rank(&at(FRANKFURT), &c, Some(7), &Policy::default(), Family::V4);
        assert_eq!(ranked.first().map(|r| r.0), Some(0));
        assert!(ranked[0].1 < 1.0);
    }

    #[test]
    fn located_via_geo_database() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("geodata/test/steering-test-city.mmdb");
        let geo = crate::geo::Geo::open(&path, vec![]).unwrap();
        let c = cities();
        for (ip, want) in [("127.3.0.9", 3), ("10.5.1.1", 5), ("fd00:1::1", 1)] {
            let point = geo.lookup(ip.parse().unwrap()).and_then(|l| l.point);
            let client = ClientInfo {
                point,
                prefix_key: 1,
            };
            assert_eq!(go(client, &c, Family::V4)[0], v4(want), "{ip}");
        }
    }

    #[test]
    fn measured_rtt_beats_distance() {
        let mut c = cities();
        // From Moscow, Frankfurt is nearest (~20 ms by distance)...
        assert_eq!(go(at(MOSCOW), &c, Family::V4)[0], v4(1));
        // ...but Sydney measured at 3 ms wins.
        c[4].rtt_ms = Some(3.0);
        assert_eq!(go(at(MOSCOW), &c, Family::V4)[0], v4(5));
        // A measured slow RTT also beats a short distance.
        c[4].rtt_ms = None;
        c[0].rtt_ms = Some(400.0);
        assert_eq!(go(at(FRANKFURT), &c, Family::V4)[0], v4(2));
        // Invalid RTTs fall back to distance.
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            c[0].rtt_ms = Some(bad);
            assert_eq!(go(at(FRANKFURT), &c, Family::V4)[0], v4(1));
        }
    }

    #[test]
    fn unknown_location_ranks_last() {
        let mut c = cities();
        c[0].point = None;
        let client = at(FRANKFURT);
        let order = rank(
            &client,
            &c,
            Some(7),
            &Policy {
                k: 5,
                ..Policy::default()
            },
            Family::V4,
        );
        assert_eq!(order.last().map(|r| (r.0, r.1)), Some((0, 10_000.0)));
    }

    #[test]
    fn ineligible_never_returned() {
        let mut c = cities();
        c[0].authorized = false;
        c[1].healthy = false;
        c[2].version = Some(6);
        c[3].addrs = vec![v6(4)];
        c[4].version = None;
        let all = Policy {
            k: 5,
            ..Policy::default()
        };
        for p in [FRANKFURT, NEW_YORK, SINGAPORE, SAO_PAULO, SYDNEY] {
            assert!(steer(&at(p), &c, Some(7), &all, Family::V4).is_empty());
        }
        // Only the Sao Paulo mirror has an IPv6 address left eligible.
        assert_eq!(
            steer(&at(SYDNEY), &c, Some(7), &all, Family::V6),
            vec![v6(4)]
        );
        assert!(steer(&at(SYDNEY), &[], Some(7), &all, Family::V6).is_empty());
    }

    #[test]
    fn rollout_serves_highest_held_version() {
        let mut c = cities();
        for (m, v) in c.iter_mut().zip([5, 6, 6, 5, 4]) {
            m.version = Some(v);
        }
        let all = Policy {
            k: 5,
            ..Policy::default()
        };
        // Nobody holds 7 yet: version 6 (New York, Singapore) is served.
        let got = steer(&at(FRANKFURT), &c, Some(7), &all, Family::V4);
        assert_eq!(got, vec![v4(2), v4(3)]);
        assert_eq!(steer(&at(FRANKFURT), &c, None, &all, Family::V4), got);
        // A version 8 on an unauthorized mirror does not count.
        c[0].version = Some(8);
        c[0].authorized = false;
        assert_eq!(steer(&at(FRANKFURT), &c, Some(7), &all, Family::V4), got);
        // Once one live mirror holds the target, only it is served.
        c[4].version = Some(7);
        assert_eq!(
            steer(&at(FRANKFURT), &c, Some(7), &all, Family::V4),
            vec![v4(5)]
        );
        // Nobody holds anything: empty (fallback records).
        for m in &mut c {
            m.version = None;
        }
        assert!(steer(&at(FRANKFURT), &c, Some(7), &all, Family::V4).is_empty());
    }

    #[test]
    fn spill_to_farther_mirror() {
        let mut near = mirror(1, FRANKFURT);
        near.load = 0.95;
        let far = mirror(2, MOSCOW);
        let d = crate::geo::distance_km(FRANKFURT, MOSCOW);
        assert!((1900.0..2200.0).contains(&d), "{d}");
        let c = vec![near.clone(), far.clone()];
        assert_eq!(go(at(FRANKFURT), &c, Family::V4), vec![v4(2), v4(1)]);
        let r = rank(&at(FRANKFURT), &c, Some(7), &Policy::default(), Family::V4);
        assert!((r[1].1 - 375.0).abs() < 1e-6, "{r:?}");
        // At 0.8 there is no penalty yet.
        let mut c = c;
        c[0].load = 0.8;
        assert_eq!(go(at(FRANKFURT), &c, Family::V4)[0], v4(1));
        // A threshold of 1 or more disables the penalty without dividing by zero.
        c[0].load = 0.99;
        let policy = Policy {
            spill_threshold: 1.0,
            ..Policy::default()
        };
        let r = rank(&at(FRANKFURT), &c, Some(7), &policy, Family::V4);
        assert_eq!(r[0].0, 0);
        assert!(r[0].1.is_finite());
    }

    #[test]
    fn overloaded_excluded_unless_all_are() {
        let mut c = cities();
        c[0].load = 1.2;
        let all = Policy {
            k: 5,
            ..Policy::default()
        };
        let got = steer(&at(FRANKFURT), &c, Some(7), &all, Family::V4);
        assert_eq!(got.len(), 4);
        assert!(!got.contains(&v4(1)));
        // Everyone over capacity: still answer, least loaded first.
        for (m, l) in c.iter_mut().zip([1.2, 3.0, 1.5, 2.0, 1.1]) {
            m.load = l;
        }
        let got = steer(&at(FRANKFURT), &c, Some(7), &all, Family::V4);
        assert_eq!(got, vec![v4(1), v4(5), v4(3), v4(4), v4(2)]);
        // NaN and negative loads count as idle.
        c[2].load = f64::NAN;
        c[3].load = -3.0;
        let got = steer(&at(FRANKFURT), &c, Some(7), &all, Family::V4);
        assert_eq!(got, vec![v4(4), v4(3)]);
    }

    #[test]
    fn ties_spread_across_prefixes() {
        // Two mirrors at the same place and load: identical scores.
        let c = vec![mirror(1, FRANKFURT), mirror(2, FRANKFURT)];
        let mut first_a = 0;
        for key in 0..1000u64 {
            let client = ClientInfo {
                point: Some(NEW_YORK),
                prefix_key: key,
            };
            let got = go(client, &c, Family::V4);
            assert_eq!(got.len(), 2);
            if got[0] == v4(1) {
                first_a += 1;
            }
            // Stable per prefix.
            for _ in 0..3 {
                assert_eq!(go(client, &c, Family::V4), got);
            }
            // Input order does not matter.
            let rev: Vec<_> = c.iter().rev().cloned().collect();
            assert_eq!(go(client, &rev, Family::V4), got);
        }
        assert!((350..=650).contains(&first_a), "{first_a}");
    }

    #[test]
    fn tie_bucket_width() {
        // 0.5 ms apart: same bucket with tie_ms = 1, distinct with tie_ms = 0.
        let mut a = mirror(1, FRANKFURT);
        let mut b = mirror(2, FRANKFURT);
        a.rtt_ms = Some(10.2);
        b.rtt_ms = Some(10.7);
        let c = vec![a, b];
        let exact = Policy {
            tie_ms: 0.0,
            ..Policy::default()
        };
        let mut seen_b_first = false;
        for key in 0..64 {
            let client = ClientInfo {
                point: None,
                prefix_key: key,
            };
            assert_eq!(steer(&client, &c, Some(7), &exact, Family::V4)[0], v4(1));
            seen_b_first |= steer(&client, &c, Some(7), &Policy::default(), Family::V4)[0] == v4(2);
        }
        assert!(seen_b_first);
    }

    #[test]
    fn k_respected_and_duplicates_dropped() {
        let c = cities();
        for k in 0..7 {
            let policy = Policy {
                k,
                ..Policy::default()
            };
            let got = steer(&at(FRANKFURT), &c, Some(7), &policy, Family::V6);
            assert_eq!(got.len(), k.min(5));
            assert_eq!(
                rank(&at(FRANKFURT), &c, Some(7), &policy, Family::V6).len(),
                k.min(5)
            );
        }
        // Same id twice, or two mirrors sharing an address: one entry each.
        let mut c = cities();
        c[1].id = c[0].id;
        c[3].addrs = c[2].addrs.clone();
        let all = Policy {
            k: 5,
            ..Policy::default()
        };
        assert_eq!(
            steer(&at(FRANKFURT), &c, Some(7), &all, Family::V4).len(),
            3
        );
    }

    #[test]
    fn bad_policy_values_are_sanitized() {
        let c = cities();
        let weird = Policy {
            k: 3,
            spill_threshold: f64::NAN,
            spill_penalty_ms: -1.0,
            km_per_ms: 0.0,
            unknown_ms: f64::INFINITY,
            tie_ms: f64::NAN,
        };
        let got = steer(&at(SINGAPORE), &c, Some(7), &weird, Family::V4);
        assert_eq!(got, vec![v4(3), v4(5), v4(1)]);
        assert!(rank(&at(SINGAPORE), &c, Some(7), &weird, Family::V4)
            .iter()
            .all(|r| r.1.is_finite()));
    }

    #[test]
    fn tie_hash_is_spread() {
        let id = [9u8; 32];
        let hashes: HashSet<u64> = (0..10_000).map(|k| tie_hash(k, &id)).collect();
        assert_eq!(hashes.len(), 10_000);
    }

    // ---- property tests ----

    fn any_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(0.0),
            Just(1.0),
            Just(1e308),
            -2.0..3.0f64,
            any::<f64>(),
        ]
    }

    fn any_point() -> impl Strategy<Value = Option<GeoPoint>> {
        prop_oneof![
            Just(None),
            (-90.0..=90.0f64, -180.0..=180.0f64).prop_map(|(lat, lon)| Some(GeoPoint { lat, lon })),
            (any_f64(), any_f64()).prop_map(|(lat, lon)| Some(GeoPoint { lat, lon })),
        ]
    }

    fn any_addr() -> impl Strategy<Value = IpAddr> {
        // A small pool so duplicates across candidates happen.
        (any::<bool>(), 0u8..12).prop_map(|(six, n)| if six { v6(n) } else { v4(n) })
    }

    fn any_candidate() -> impl Strategy<Value = Candidate> {
        (
            (0u8..10, prop::collection::vec(any_addr(), 0..4)),
            any_point(),
            prop::option::of(any_f64()),
            any_f64(),
            (any::<bool>(), any::<bool>()),
            prop::option::of(0u64..4),
        )
            .prop_map(
                |((id, addrs), point, rtt_ms, load, (healthy, authorized), version)| Candidate {
                    id: [id; 32],
                    addrs,
                    point,
                    rtt_ms,
                    load,
                    healthy,
                    authorized,
                    version,
                },
            )
    }

    fn any_policy() -> impl Strategy<Value = Policy> {
        (
            0usize..=5,
            any_f64(),
            any_f64(),
            any_f64(),
            any_f64(),
            any_f64(),
        )
            .prop_map(
                |(k, spill_threshold, spill_penalty_ms, km_per_ms, unknown_ms, tie_ms)| Policy {
                    k,
                    spill_threshold,
                    spill_penalty_ms,
                    km_per_ms,
                    unknown_ms,
                    tie_ms,
                },
            )
    }

    fn any_policy_or_default() -> impl Strategy<Value = Policy> {
        prop_oneof![
            (0usize..=5).prop_map(|k| Policy {
                k,
                ..Policy::default()
            }),
            any_policy(),
        ]
    }

    /// Independent statement of rules 1 and 2.
    fn eligible_oracle(c: &[Candidate], target: Option<u64>, family: Family) -> Vec<usize> {
        let live: Vec<&Candidate> = c.iter().filter(|m| m.authorized && m.healthy).collect();
        let version = if target.is_some() && live.iter().any(|m| m.version == target) {
            target
        } else {
            live.iter().filter_map(|m| m.version).max()
        };
        if version.is_none() {
            return vec![];
        }
        (0..c.len())
            .filter(|&i| {
                let m = &c[i];
                m.authorized
                    && m.healthy
                    && m.version == version
                    && m.addrs.iter().any(|a| family.matches(a))
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn steering_properties(
            client_point in any_point(),
            prefix_key in any::<u64>(),
            cands in prop::collection::vec(any_candidate(), 0..=20),
            target in prop::option::of(0u64..5),
            policy in any_policy_or_default(),
            six in any::<bool>(),
        ) {
            let family = if six { Family::V6 } else { Family::V4 };
            let client = ClientInfo { point: client_point, prefix_key };
            let got = steer(&client, &cands, target, &policy, family);
            let ranked = rank(&client, &cands, target, &policy, family);

            // Length bound and agreement between steer and rank.
            prop_assert!(got.len() <= policy.k);
            prop_assert_eq!(got.len(), ranked.len());

            // No duplicate addresses or mirrors.
            let unique: HashSet<&IpAddr> = got.iter().collect();
            prop_assert_eq!(unique.len(), got.len());
            let ids: HashSet<[u8; 32]> = ranked.iter().map(|r| cands[r.0].id).collect();
            prop_assert_eq!(ids.len(), ranked.len());

            // Only eligible candidates, answering with their first address of the family.
            let eligible = eligible_oracle(&cands, target, family);
            for (&(i, score), addr) in ranked.iter().zip(&got) {
                prop_assert!(eligible.contains(&i));
                prop_assert!(family.matches(addr));
                prop_assert_eq!(cands[i].addrs.iter().find(|a| family.matches(a)), Some(addr));
                prop_assert!(!score.is_nan() && score >= 0.0);
            }
            let eligible_addrs: HashSet<IpAddr> = eligible
                .iter()
                .flat_map(|&i| cands[i].addrs.iter().copied())
                .collect();
            prop_assert!(got.iter().all(|a| eligible_addrs.contains(a)));

            // Something eligible and k > 0: something is answered.
            if !eligible.is_empty() && policy.k > 0 {
                prop_assert!(!got.is_empty());
            }

            // Overloaded mirrors only when every eligible one is overloaded.
            let load = |i: usize| sanitized_load(cands[i].load);
            if eligible.iter().any(|&i| load(i) <= 1.0) {
                prop_assert!(ranked.iter().all(|r| load(r.0) <= 1.0));
            }

            // Deterministic, and independent of candidate order.
            prop_assert_eq!(&steer(&client, &cands, target, &policy, family), &got);
            let mut rev = cands.clone();
            rev.reverse();
            let got_rev = steer(&client, &rev, target, &policy, family);
            if ids_unique_and_addrs_disjoint(&cands) {
                prop_assert_eq!(got_rev, got);
            }
        }
    }

    /// Order independence only holds when no id or address is shared (then
    /// which duplicate is kept may depend on the input order).
    fn ids_unique_and_addrs_disjoint(c: &[Candidate]) -> bool {
        let ids: HashSet<[u8; 32]> = c.iter().map(|m| m.id).collect();
        let addrs: Vec<IpAddr> = c.iter().flat_map(|m| m.addrs.iter().copied()).collect();
        let unique_addrs: HashSet<IpAddr> = addrs.iter().copied().collect();
        ids.len() == c.len() && unique_addrs.len() == addrs.len()
    }
}
