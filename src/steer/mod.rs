//! Pure mirror steering: which mirrors' addresses a DNS answer should carry.
//!
//! No I/O, no clock, no randomness: the same inputs always give the same
//! answer. The caller supplies the client's estimated location, the candidate
//! mirrors (with health, authorization, verified content version, load and
//! optionally an RTT measured to the client's network) and a [`Policy`];
//! [`decide`] returns the answer set. An empty answer means "serve the zone's
//! fallback records". [`ttl`] chooses the answer's TTL from the same facts.
//!
//! Ranking, in order:
//! 1. Version: if an authorized, healthy mirror holds `target_version`, only
//!    that version is served; otherwise the highest version any authorized,
//!    healthy mirror holds (a rollout in progress).
//! 2. Eligible: authorized, healthy, holds that version, has an address of
//!    the requested family.
//! 3. Score in ms: the RTT measured to the client's network, else distance /
//!    `km_per_ms` (light in fibre) times this network's path inflation (the
//!    least ratio measured RTT ÷ distance estimate among its measured
//!    mirrors, within 1..=4; 1 without measurements), else `unknown_ms`. A
//!    measurement faster than light allows over the great-circle distance
//!    (by more than `rtt_slack_ms`) is ignored: one of the two locations is
//!    wrong, and distance is used.
//! 4. Load: above `spill_threshold` a penalty grows linearly to
//!    `spill_penalty_ms` at full load; mirrors above 100 % are dropped unless
//!    all eligible mirrors are.
//! 5. Order by `floor(score / tie_ms)`, then a hash of (client prefix, mirror
//!    id) so equal mirrors share clients evenly but stably, then id.
//!
//! Answer composition: **every address in an answer is a first choice.**
//! Recursive resolvers reorder RRsets and stub resolvers sort addresses
//! (RFC 6724), so any address in the answer may be the one a client uses.
//! The best mirror is always answered; another one only when its score is
//! within `band_ms` of the best (e.g. two mirrors in one city), at most `k`
//! mirrors, one address each, no repeated mirror or address.
//!
//! Exploration: a mirror only measures the clients steered to it, so RTTs
//! alone would only ever confirm today's choice. When the caller marks a
//! query as exploring ([`ClientInfo::explore`], a small deterministic share
//! chosen by [`explore_seed`]), the answer is instead one mirror that has no
//! measurement for the client's network and whose optimistic latency (the
//! distance at the speed of light in fibre, minus `rtt_slack_ms`) could beat
//! the best mirror's score. When no such mirror exists the normal answer is
//! given: a client whose best mirror is as close as physics allows is never
//! sent elsewhere.

pub mod ttl;

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
    /// Latency measured between the mirror and the client's network, if
    /// enough samples exist.
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
    /// Seconds since the mirror last became healthy (new or recovered).
    pub up_secs: u64,
    /// Recent health changes (up→down or down→up), decaying while stable.
    pub flaps: u32,
}

/// What is known about the querying client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientInfo {
    /// Estimated client location, if known.
    pub point: Option<GeoPoint>,
    /// Stable hash of the client's /24 (IPv4) or /56 (IPv6) prefix.
    pub prefix_key: u64,
    /// `Some(seed)`: this answer explores (see [`explore_seed`]).
    pub explore: Option<u64>,
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
    /// Distance-based RTT estimate: km / km_per_ms (default 100: light in
    /// fibre, there and back, on the great circle).
    pub km_per_ms: f64,
    /// Score when neither RTT nor both locations are known (default 10 000).
    pub unknown_ms: f64,
    /// Scores in the same `tie_ms` bucket count as equal (default 1).
    pub tie_ms: f64,
    /// A second address joins the answer only within this many ms of the
    /// best score (default 3).
    pub band_ms: f64,
    /// Allowance for location error when checking a measured RTT against
    /// the distance, and when estimating how fast an unmeasured mirror
    /// could be (default 5).
    pub rtt_slack_ms: f64,
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
            band_ms: 3.0,
            rtt_slack_ms: 5.0,
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
    band_ms: f64,
    slack_ms: f64,
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
            band_ms: nonneg(policy.band_ms, d.band_ms),
            slack_ms: nonneg(policy.rtt_slack_ms, d.rtt_slack_ms),
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

/// Latency estimate of one mirror for this client (rule 3).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Estimate {
    /// Best estimate in ms; always finite and ≥ 0.
    ms: f64,
    /// From a (plausible) measurement.
    measured: bool,
    /// The least it could be: the measurement, else the speed-of-light
    /// distance less the slack, else `unknown_ms` (no location: nothing to
    /// explore on).
    floor: f64,
}

/// Shortest distance estimate (ms) over which a path inflation is measured:
/// below it (the same city) the ratio says nothing.
const MIN_INFLATION_BASE_MS: f64 = 1.0;
/// Largest path inflation believed.
const MAX_INFLATION: f64 = 4.0;

/// The client network's path inflation: the least measured RTT ÷ distance
/// estimate over its measured mirrors, within 1..=[`MAX_INFLATION`].
fn path_inflation(estimates: &[(Estimate, Option<f64>)]) -> f64 {
    estimates
        .iter()
        .filter_map(|(e, d)| match d {
            Some(d) if e.measured && *d >= MIN_INFLATION_BASE_MS => Some(e.ms / d),
            _ => None,
        })
        .min_by(f64::total_cmp)
        .map_or(1.0, |r| r.clamp(1.0, MAX_INFLATION))
}

/// Rule 3, with the plausibility check of measured RTTs; also returns the
/// distance estimate (light in fibre), if both locations are known.
fn estimate(client: &ClientInfo, c: &Candidate, knobs: &Knobs) -> (Estimate, Option<f64>) {
    let distance_ms = match (client.point, c.point) {
        (Some(a), Some(b)) => {
            Some(distance_km(a, b) / knobs.km_per_ms).filter(|ms| ms.is_finite() && *ms >= 0.0)
        }
        _ => None,
    };
    let rtt = c.rtt_ms.filter(|r| r.is_finite() && *r >= 0.0);
    // Faster than light over the claimed distance: a location is wrong.
    let plausible = |rtt: f64| distance_ms.is_none_or(|d| rtt + knobs.slack_ms >= d);
    let e = match (rtt.filter(|r| plausible(*r)), distance_ms) {
        (Some(ms), _) => Estimate {
            ms,
            measured: true,
            floor: ms,
        },
        (None, Some(d)) => Estimate {
            ms: d,
            measured: false,
            floor: (d - knobs.slack_ms).max(0.0),
        },
        (None, None) => Estimate {
            ms: knobs.unknown_ms,
            measured: false,
            floor: knobs.unknown_ms,
        },
    };
    (e, distance_ms)
}

/// Whether `load` is below every ranking rule that reads load: no spill
/// penalty (rule 4) and not past capacity. Candidates whose loads are both
/// idle rank alike, whatever the loads.
pub fn load_is_idle(load: f64, policy: &Policy) -> bool {
    let k = Knobs::from(policy);
    let l = sanitized_load(load);
    l <= 1.0 && (l <= k.threshold || k.threshold >= 1.0)
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

/// Whether a client network's answers explore in time slot `slot`, and with
/// which seed: one slot in `every` per network (0 or 1: never), chosen by a
/// hash of (prefix, slot), so the share is deterministic, bounded and spread
/// over time and networks. The caller picks the slot length (the standard
/// TTL: an exploring answer is cached about one slot).
pub fn explore_seed(prefix_key: u64, slot: u64, every: u32) -> Option<u64> {
    if every <= 1 {
        return None;
    }
    let h = mix64(prefix_key ^ mix64(slot.wrapping_add(0x9e37_79b9_7f4a_7c15)));
    (h % u64::from(every) == 0).then_some(h / u64::from(every))
}

/// A scored eligible candidate.
struct Scored<'a> {
    index: usize,
    score: f64,
    estimate: Estimate,
    /// Load penalty included in `score`.
    penalty: f64,
    /// Primary sort key: tie bucket (or the exact score).
    bucket: f64,
    hash: u64,
    candidate: &'a Candidate,
    addr: IpAddr,
}

/// One mirror in an answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pick {
    /// Index into the candidates.
    pub index: usize,
    /// The address answered.
    pub addr: IpAddr,
    /// Score in ms, load penalties included.
    pub score: f64,
    /// The score came from a measured RTT.
    pub measured: bool,
}

/// A steering decision: the answer and what the TTL choice needs to know.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    /// The answer, best first; empty: serve the zone's fallback records.
    pub picks: Vec<Pick>,
    /// How much worse (ms) the best eligible mirror left out of the band
    /// is than the best one; `None` when every eligible mirror is within it.
    pub margin_ms: Option<f64>,
    /// The answer is an exploration answer (one mirror that may be better
    /// but has no measurement yet).
    pub explored: bool,
    /// A rollout is in progress: some live mirror with an address of the
    /// family does not hold the version served yet (the answer will change
    /// as soon as it does).
    pub rollout: bool,
}

impl Decision {
    /// The answer's addresses, best first.
    pub fn addrs(&self) -> Vec<IpAddr> {
        self.picks.iter().map(|p| p.addr).collect()
    }
}

/// Scores every answerable mirror (rules 1–4), unsorted.
fn scored<'a>(
    client: &ClientInfo,
    candidates: &'a [Candidate],
    target_version: Option<u64>,
    knobs: &Knobs,
    family: Family,
) -> Vec<Scored<'a>> {
    let Some(version) = chosen_version(candidates, target_version) else {
        return Vec::new();
    };
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
    let estimates: Vec<(Estimate, Option<f64>)> = eligible
        .iter()
        .map(|e| estimate(client, e.1, knobs))
        .collect();
    let inflation = path_inflation(&estimates);
    eligible
        .into_iter()
        .zip(estimates)
        .filter(|(e, _)| all_over || e.3 <= 1.0)
        .map(
            |((index, candidate, addr, load), (mut estimate, distance_ms))| {
                if let (false, Some(d)) = (estimate.measured, distance_ms) {
                    estimate.ms = d * inflation;
                }
                let mut penalty = spill_penalty(load, knobs);
                if all_over {
                    // Everyone is past capacity: least loaded first.
                    penalty += load * knobs.penalty_ms;
                }
                let score = estimate.ms + penalty;
                let bucket = match knobs.tie_ms {
                    Some(t) => (score / t).floor(),
                    None => score,
                };
                Scored {
                    index,
                    score,
                    estimate,
                    penalty,
                    bucket,
                    hash: tie_hash(client.prefix_key, &candidate.id),
                    candidate,
                    addr,
                }
            },
        )
        .collect()
}

fn order(a: &Scored<'_>, b: &Scored<'_>) -> std::cmp::Ordering {
    a.bucket
        .total_cmp(&b.bucket)
        .then(a.hash.cmp(&b.hash))
        .then(a.candidate.id.cmp(&b.candidate.id))
        .then(a.index.cmp(&b.index))
}

/// The best `limit` mirrors, best first, one entry per mirror id and per
/// address (the better-ranked one stays).
fn top<'a>(mut scored: Vec<Scored<'a>>, limit: usize) -> Vec<Scored<'a>> {
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

fn pick(s: &Scored<'_>) -> Pick {
    Pick {
        index: s.index,
        addr: s.addr,
        score: s.score,
        measured: s.estimate.measured,
    }
}

/// The steering decision for one query: the answer set (every address a
/// first choice), the margin to the next-best mirror, and whether it explores.
pub fn decide(
    client: &ClientInfo,
    candidates: &[Candidate],
    target_version: Option<u64>,
    policy: &Policy,
    family: Family,
) -> Decision {
    let knobs = Knobs::from(policy);
    let all = scored(client, candidates, target_version, &knobs, family);
    if policy.k == 0 || all.is_empty() {
        return Decision::default();
    }
    let version = chosen_version(candidates, target_version);
    let rollout = candidates
        .iter()
        .any(|c| live(c) && c.version != version && c.addrs.iter().any(|a| family.matches(a)));
    let Some(best) = all.iter().min_by(|a, b| order(a, b)).map(|b| b.score) else {
        return Decision::default();
    };
    let cut = best + knobs.band_ms;
    let margin_ms = all
        .iter()
        .filter(|s| s.score > cut)
        .map(|s| s.score - best)
        .min_by(f64::total_cmp);
    if let Some(seed) = client.explore {
        // Unmeasured, not loaded, could be faster than the best: sorted by id
        // so the seed, not the input order, picks.
        let mut maybe: Vec<&Scored<'_>> = all
            .iter()
            .filter(|s| {
                !s.estimate.measured && s.penalty == 0.0 && s.score > cut && s.estimate.floor < best
            })
            .collect();
        maybe.sort_by(|a, b| {
            a.candidate
                .id
                .cmp(&b.candidate.id)
                .then(a.index.cmp(&b.index))
        });
        let n = maybe.len() as u64;
        if let Some(s) = n
            .checked_sub(1)
            .and_then(|_| maybe.get(usize::try_from(seed % n).unwrap_or(0)))
        {
            return Decision {
                picks: vec![pick(s)],
                margin_ms,
                explored: true,
                rollout,
            };
        }
    }
    let picks = top(all, policy.k)
        .iter()
        .filter(|s| s.score <= cut)
        .map(pick)
        .collect();
    Decision {
        picks,
        margin_ms,
        explored: false,
        rollout,
    }
}

/// Ordered answer addresses (see [`decide`]).
///
/// Empty means no mirror can serve: answer the zone's fallback records.
pub fn steer(
    client: &ClientInfo,
    candidates: &[Candidate],
    target_version: Option<u64>,
    policy: &Policy,
    family: Family,
) -> Vec<IpAddr> {
    decide(client, candidates, target_version, policy, family).addrs()
}

/// The full ranking for diagnostics and tests: (candidate index, score_ms)
/// of up to `policy.k` answerable mirrors, best first, band ignored.
pub fn rank(
    client: &ClientInfo,
    candidates: &[Candidate],
    target_version: Option<u64>,
    policy: &Policy,
    family: Family,
) -> Vec<(usize, f64)> {
    let knobs = Knobs::from(policy);
    top(
        scored(client, candidates, target_version, &knobs, family),
        policy.k,
    )
    .into_iter()
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
            up_secs: 3600,
            flaps: 0,
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
            explore: None,
        }
    }

    fn go(client: ClientInfo, cands: &[Candidate], family: Family) -> Vec<IpAddr> {
        steer(&client, cands, Some(7), &Policy::default(), family)
    }

    #[test]
    fn nearest_first() {
        let c = cities();
        // Only the nearest: Sydney is no first choice for Singapore.
        assert_eq!(go(at(SINGAPORE), &c, Family::V4), vec![v4(3)]);
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
                explore: None,
            };
            assert_eq!(go(client, &c, Family::V4)[0], v4(want), "{ip}");
        }
    }

    #[test]
    fn measured_rtt_beats_distance() {
        let mut c = cities();
        // From Moscow, Frankfurt is nearest (~20 ms by distance)...
        assert_eq!(go(at(MOSCOW), &c, Family::V4)[0], v4(1));
        // ...but measured at 90 ms (a bad route) against New York measured
        // at 80 ms, New York wins.
        c[0].rtt_ms = Some(90.0);
        c[1].rtt_ms = Some(80.0);
        assert_eq!(go(at(MOSCOW), &c, Family::V4), vec![v4(2)]);
        c[1].rtt_ms = None;
        // A measurement faster than light over the distance is ignored:
        // Sydney "at 3 ms" from Moscow does not win.
        c[0].rtt_ms = None;
        c[4].rtt_ms = Some(3.0);
        assert_eq!(go(at(MOSCOW), &c, Family::V4), vec![v4(1)]);
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
    fn path_inflation_calibrates_unmeasured_mirrors() {
        // Moscow's network reaches Frankfurt (~20 ms by distance) in 45 ms:
        // its paths are 2.2x the ideal. New York (~75 ms ideal) is then
        // expected at ~169 ms, so Frankfurt stays first; without the
        // calibration a mirror at 30 ms ideal would have won.
        let mut c = cities();
        let warsaw = GeoPoint {
            lat: 52.23,
            lon: 21.01,
        };
        let mut w = mirror(6, warsaw);
        c[0].rtt_ms = Some(45.0);
        let r = rank(&at(MOSCOW), &c, Some(7), &Policy::default(), Family::V4);
        assert_eq!(r[0].0, 0);
        assert!((r[1].1 / r[0].1) > 3.0, "{r:?}");
        // Warsaw (~11.5 ms ideal, ~25 ms calibrated) still beats a measured
        // 45 ms: an unmeasured nearer mirror gets its chance.
        w.rtt_ms = None;
        c.push(w);
        assert_eq!(go(at(MOSCOW), &c, Family::V4), vec![v4(6)]);
    }

    #[test]
    fn answers_hold_only_first_choices() {
        // Two mirrors in Frankfurt, one 200 km away, one 400 km away.
        let near = |n: u8, km: f64| {
            mirror(
                n,
                GeoPoint {
                    lat: 50.11 + km / 111.2,
                    lon: 8.68,
                },
            )
        };
        let c = vec![near(1, 0.0), near(2, 0.0), near(3, 200.0), near(4, 400.0)];
        let all = Policy {
            k: 4,
            ..Policy::default()
        };
        let mut got = steer(&at(FRANKFURT), &c, Some(7), &all, Family::V4);
        got.sort();
        assert_eq!(got, vec![v4(1), v4(2), v4(3)]);
        let d = decide(&at(FRANKFURT), &c, Some(7), &all, Family::V4);
        assert!((d.margin_ms.unwrap() - 4.0).abs() < 0.01, "{d:?}");
        assert!(!d.explored);
        // k = 1: one of the equals, spread over client prefixes.
        let one = Policy {
            k: 1,
            ..Policy::default()
        };
        let firsts: HashSet<IpAddr> = (0..64)
            .map(|key| {
                let client = ClientInfo {
                    prefix_key: key,
                    ..at(FRANKFURT)
                };
                steer(&client, &c, Some(7), &one, Family::V4)[0]
            })
            .collect();
        assert_eq!(firsts, [v4(1), v4(2)].into_iter().collect());
        // band 0: only exact equals.
        let tight = Policy {
            band_ms: 0.0,
            ..all
        };
        assert_eq!(
            steer(&at(FRANKFURT), &c, Some(7), &tight, Family::V4).len(),
            2
        );
        // The same mirror for both families.
        for key in 0..32 {
            let client = ClientInfo {
                prefix_key: key,
                ..at(FRANKFURT)
            };
            let a = decide(&client, &c, Some(7), &one, Family::V4).picks[0].index;
            let b = decide(&client, &c, Some(7), &one, Family::V6).picks[0].index;
            assert_eq!(a, b);
        }
    }

    #[test]
    fn exploration_only_where_a_mirror_could_be_better() {
        let c = cities();
        let exploring = |point, seed| ClientInfo {
            point: Some(point),
            prefix_key: 7,
            explore: Some(seed),
        };
        // Every city's own mirror is as close as light allows: never explore.
        for p in [FRANKFURT, NEW_YORK, SINGAPORE, SAO_PAULO, SYDNEY] {
            for seed in 0..8 {
                let d = decide(
                    &exploring(p, seed),
                    &c,
                    Some(7),
                    &Policy::default(),
                    Family::V4,
                );
                assert!(!d.explored);
                assert_eq!(d.picks.len(), 1);
            }
        }
        // Moscow's network measured Frankfurt (~20 ms ideal) at 21 ms.
        let mut c = cities();
        c[0].rtt_ms = Some(21.0);
        let d = decide(
            &exploring(MOSCOW, 0),
            &c,
            Some(7),
            &Policy::default(),
            Family::V4,
        );
        assert!(!d.explored, "nobody could beat 21 ms: {d:?}");
        let stockholm = GeoPoint {
            lat: 59.33,
            lon: 18.07,
        };
        c.push(mirror(6, stockholm)); // ~12 ms ideal, ~13 calibrated (21/20)
        c[0].rtt_ms = Some(21.0);
        let normal = decide(&at(MOSCOW), &c, Some(7), &Policy::default(), Family::V4);
        assert_eq!(normal.addrs(), vec![v4(6)]);
        // With Stockholm measured slow, exploring it is pointless; New York
        // (~75 ms) never could beat Frankfurt's 21 ms.
        c[5].rtt_ms = Some(30.0);
        for seed in 0..8 {
            let d = decide(
                &exploring(MOSCOW, seed),
                &c,
                Some(7),
                &Policy::default(),
                Family::V4,
            );
            assert_eq!((d.addrs(), d.explored), (vec![v4(1)], false));
        }
        // An unmeasured mirror ~22 ms away (ideal) loses to Frankfurt's
        // measured 18 ms, but light would allow it 17 ms: it is explored,
        // alone, whatever the seed.
        c[5].rtt_ms = None;
        c[0].rtt_ms = Some(18.0);
        c[5].point = Some(GeoPoint {
            lat: 35.97,
            lon: 37.62,
        });
        let d = decide(&at(MOSCOW), &c, Some(7), &Policy::default(), Family::V4);
        assert_eq!(d.addrs(), vec![v4(1)], "{d:?}");
        for seed in 0..4 {
            let d = decide(
                &exploring(MOSCOW, seed),
                &c,
                Some(7),
                &Policy::default(),
                Family::V4,
            );
            assert_eq!((d.addrs(), d.explored), (vec![v4(6)], true), "{d:?}");
        }
    }

    #[test]
    fn explore_share_is_bounded_and_deterministic() {
        for every in [0, 1] {
            assert!((0..1000).all(|s| explore_seed(3, s, every).is_none()));
        }
        let hits = (0..32_000u64)
            .filter(|s| explore_seed(12345, *s, 32).is_some())
            .count();
        assert!((800..1200).contains(&hits), "{hits}");
        assert_eq!(explore_seed(9, 77, 32), explore_seed(9, 77, 32));
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
        let ranked = |c: &[Candidate]| -> Vec<usize> {
            rank(&at(FRANKFURT), c, Some(7), &all, Family::V4)
                .iter()
                .map(|r| r.0)
                .collect()
        };
        assert_eq!(ranked(&c), vec![1, 2]);
        let got = steer(&at(FRANKFURT), &c, Some(7), &all, Family::V4);
        assert_eq!(got, vec![v4(2)]);
        assert_eq!(steer(&at(FRANKFURT), &c, None, &all, Family::V4), got);
        // A version 8 on an unauthorized mirror does not count.
        c[0].version = Some(8);
        c[0].authorized = false;
        assert_eq!(steer(&at(FRANKFURT), &c, Some(7), &all, Family::V4), got);
        assert_eq!(ranked(&c), vec![1, 2]);
        let d = decide(&at(FRANKFURT), &c, Some(7), &all, Family::V4);
        assert!(
            d.rollout,
            "mirrors on older versions: the answer will change"
        );
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
        assert_eq!(go(at(FRANKFURT), &c, Family::V4), vec![v4(2)]);
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
        let order = |c: &[Candidate]| -> Vec<usize> {
            rank(&at(FRANKFURT), c, Some(7), &all, Family::V4)
                .iter()
                .map(|r| r.0)
                .collect()
        };
        let got = order(&c);
        assert_eq!(got.len(), 4);
        assert!(!got.contains(&0));
        // Everyone over capacity: still answer, least loaded first.
        for (m, l) in c.iter_mut().zip([1.2, 3.0, 1.5, 2.0, 1.1]) {
            m.load = l;
        }
        assert_eq!(order(&c), vec![0, 4, 2, 3, 1]);
        assert_eq!(
            steer(&at(FRANKFURT), &c, Some(7), &all, Family::V4),
            vec![v4(1)]
        );
        // NaN and negative loads count as idle.
        c[2].load = f64::NAN;
        c[3].load = -3.0;
        assert_eq!(order(&c), vec![3, 2]);
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
                explore: None,
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
                explore: None,
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
            assert_eq!(got.len(), k.min(1));
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
        assert_eq!(rank(&at(FRANKFURT), &c, Some(7), &all, Family::V4).len(), 3);
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
            band_ms: f64::NAN,
            rtt_slack_ms: -4.0,
        };
        let got: Vec<usize> = rank(&at(SINGAPORE), &c, Some(7), &weird, Family::V4)
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(got, vec![2, 4, 0]);
        assert_eq!(
            steer(&at(SINGAPORE), &c, Some(7), &weird, Family::V4),
            vec![v4(3)]
        );
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
                    up_secs: u64::from(id) * 100,
                    flaps: u32::from(id % 3),
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
            (any_f64(), any_f64()),
        )
            .prop_map(
                |(
                    k,
                    spill_threshold,
                    spill_penalty_ms,
                    km_per_ms,
                    unknown_ms,
                    tie_ms,
                    (band_ms, rtt_slack_ms),
                )| Policy {
                    k,
                    spill_threshold,
                    spill_penalty_ms,
                    km_per_ms,
                    unknown_ms,
                    tie_ms,
                    band_ms,
                    rtt_slack_ms,
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
            explore in prop::option::of(any::<u64>()),
        ) {
            let family = if six { Family::V6 } else { Family::V4 };
            let plain = ClientInfo { point: client_point, prefix_key, explore: None };
            let client = ClientInfo { explore, ..plain };
            let decision = decide(&client, &cands, target, &policy, family);
            let got = decision.addrs();
            let ranked = rank(&plain, &cands, target, &policy, family);
            let knobs = Knobs::from(&policy);

            // Length bound; the answer is the head of the ranking, cut at
            // the band: no address ranked worse than the band is answered.
            prop_assert!(got.len() <= policy.k);
            if decision.explored {
                // One mirror, unmeasured, whose light-speed floor beats the best.
                prop_assert_eq!(got.len(), 1);
                prop_assert!(!decision.picks[0].measured);
                prop_assert!(decision.picks[0].score > ranked[0].1 + knobs.band_ms);
            } else {
                prop_assert!(got.len() <= ranked.len());
                if let (Some(first), Some(best)) = (decision.picks.first(), ranked.first()) {
                    prop_assert_eq!(first.index, best.0);
                    for p in &decision.picks {
                        prop_assert!(p.score <= best.1 + knobs.band_ms);
                    }
                }
                for (p, r) in decision.picks.iter().zip(&ranked) {
                    prop_assert_eq!(p.index, r.0);
                }
                if let Some(m) = decision.margin_ms {
                    prop_assert!(m > knobs.band_ms);
                }
            }
            let ranked: Vec<(usize, f64)> = decision.picks.iter().map(|p| (p.index, p.score)).collect();

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
