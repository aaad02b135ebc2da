//! The swarming planner (pure): which missing blob to fetch from whom, so
//! that the origin sends each byte about once.
//!
//! Roles, per version being replicated:
//! - **origin**: a peer that held the whole version before anyone was seen
//!   replicating it (the publishing instance, or a mirror that finished
//!   before this node started);
//! - **replicators**: this node and the peers that answered the availability
//!   endpoint with an incomplete bitmap recently and are making progress
//!   (and, while a version is new, every authorized peer without it: the
//!   caller presumes them, so the split holds from the first round);
//! - **helpers**: non-origin peers known to hold a blob (a replicator that
//!   has it, or a mirror that finished).
//!
//! Rules, per missing blob:
//! 1. helpers holding it come first, least-assigned (in this plan) first,
//!    then by cost (RTT, weighted by load): several blobs are pulled in
//!    parallel from different peers;
//! 2. an origin is asked only by the blob's **first fetcher**
//!    ([`first_fetchers`]): the version's blobs, largest first, each go to
//!    the live replicator with the fewest bytes assigned so far, ties to the
//!    highest rendezvous score `BLAKE3(blob ‖ key)`; every replicator
//!    computes the same owners from the same manifest and replicator set, so
//!    each blob leaves the origin once and every replicator gets an even
//!    share of the first fetches (a plain rendezvous split of 8 blobs over
//!    4 replicators was seen at 6/1/1/0). Anyone asks an origin once the
//!    caller opens it (the blob waited too long: the first fetcher is
//!    stuck) — `origin_open`;
//! 3. peers that may hold the blob through an older version come last, and
//!    only where an origin may be asked;
//! 4. a blob with no allowed source waits for the next round.

use crate::hash::BlobHash;
use crate::keys::PublicKey;

use super::have::Bitmap;

/// What a candidate source holds of the version.
#[derive(Debug, Clone)]
pub enum Holding {
    /// The whole version (its signed report says so).
    All,
    /// The blobs its availability bitmap lists.
    Some(Bitmap),
    /// Unknown: it holds an older version, which may share blobs.
    Maybe,
}

impl Holding {
    fn has(&self, i: usize) -> bool {
        match self {
            Self::All => true,
            Self::Some(b) => b.has(i),
            Self::Maybe => false,
        }
    }
}

/// A peer that may serve blobs of the version.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Node key.
    pub key: PublicKey,
    /// Held the whole version before anyone was seen replicating it.
    pub origin: bool,
    /// Measured RTT, milliseconds (None: not measured).
    pub rtt_ms: Option<f64>,
    /// Self-reported load, fraction of capacity.
    pub load: f64,
    /// What it holds.
    pub holding: Holding,
}

impl Candidate {
    /// Lower is better: RTT (1 s when unknown) scaled up by load.
    fn cost(&self) -> f64 {
        let rtt = self.rtt_ms.unwrap_or(1000.0).max(0.01);
        let load = if self.load.is_finite() {
            self.load.clamp(0.0, 4.0)
        } else {
            4.0
        };
        rtt * (1.0 + load)
    }
}

/// Everything the planner looks at.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// This node.
    pub me: PublicKey,
    /// The version's blobs (hash, size), in manifest order.
    pub blobs: &'a [(BlobHash, u64)],
    /// Indexes (into `blobs`) of the blobs this node lacks.
    pub missing: &'a [usize],
    /// Peers that may serve blobs.
    pub candidates: &'a [Candidate],
    /// Live replicators other than this node.
    pub replicators: &'a [PublicKey],
    /// Indexes (into `blobs`) of blobs any node may ask an origin for.
    pub origin_open: &'a [usize],
}

/// One blob to fetch: candidates (indexes into `Input::candidates`) in the
/// order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// Index into `Input::blobs`.
    pub blob: usize,
    /// Sources, best first.
    pub sources: Vec<usize>,
}

/// The planner's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Blobs to fetch now.
    pub fetch: Vec<Fetch>,
    /// Blobs with no allowed source yet.
    pub waiting: Vec<usize>,
}

/// Rendezvous score of `key` for `blob`.
fn score(blob: &BlobHash, key: &PublicKey) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(blob.as_bytes());
    h.update(key.as_bytes());
    let out = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&out.as_bytes()[..8]);
    u64::from_be_bytes(b)
}

/// The replicator among `me` and `others` that pulls each of `blobs` (hash,
/// size; the whole version, in manifest order) from an origin: blobs in
/// order of size (largest first, then hash), each to the replicator with the
/// fewest bytes assigned so far, ties to the highest rendezvous score. The
/// answer depends only on the blob list and the set of replicators (not on
/// their order, nor on who asks), so every replicator computes the same owners.
pub fn first_fetchers(
    blobs: &[(BlobHash, u64)],
    me: &PublicKey,
    others: &[PublicKey],
) -> Vec<PublicKey> {
    let mut keys: Vec<PublicKey> = std::iter::once(*me).chain(others.iter().copied()).collect();
    keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    keys.dedup();
    let mut order: Vec<usize> = (0..blobs.len()).collect();
    order.sort_by(|&a, &b| {
        let ((ha, sa), (hb, sb)) = (&blobs[a], &blobs[b]);
        sb.cmp(sa).then_with(|| ha.as_bytes().cmp(hb.as_bytes()))
    });
    let mut assigned = vec![0u64; keys.len()];
    let mut owner: std::collections::HashMap<BlobHash, usize> = std::collections::HashMap::new();
    let mut out = vec![*me; blobs.len()];
    for i in order {
        let (hash, size) = blobs[i];
        // A blob listed twice has one owner.
        let k = match owner.get(&hash) {
            Some(&k) => k,
            None => {
                let Some(k) = (0..keys.len()).min_by(|&a, &b| {
                    assigned[a].cmp(&assigned[b]).then_with(|| {
                        (score(&hash, &keys[b]), keys[b].as_bytes())
                            .cmp(&(score(&hash, &keys[a]), keys[a].as_bytes()))
                    })
                }) else {
                    continue;
                };
                assigned[k] = assigned[k].saturating_add(size.max(1));
                owner.insert(hash, k);
                k
            }
        };
        out[i] = keys[k];
    }
    out
}

/// Decides who fetches what from whom. See the module documentation.
pub fn plan(input: &Input<'_>) -> Plan {
    let mut assigned = vec![0usize; input.candidates.len()];
    let by_cost = |a: &usize, b: &usize| {
        let (ca, cb) = (&input.candidates[*a], &input.candidates[*b]);
        ca.cost().total_cmp(&cb.cost())
    };
    let mut origins: Vec<usize> = (0..input.candidates.len())
        .filter(|&k| input.candidates[k].origin)
        .collect();
    origins.sort_by(by_cost);
    let mut maybes: Vec<usize> = (0..input.candidates.len())
        .filter(|&k| {
            !input.candidates[k].origin && matches!(input.candidates[k].holding, Holding::Maybe)
        })
        .collect();
    maybes.sort_by(by_cost);
    let owners = first_fetchers(input.blobs, &input.me, input.replicators);
    let mut out = Plan::default();
    for &i in input.missing {
        let Some(owner) = owners.get(i) else {
            continue;
        };
        let mut helpers: Vec<usize> = (0..input.candidates.len())
            .filter(|&k| {
                let c = &input.candidates[k];
                !c.origin && c.holding.has(i)
            })
            .collect();
        helpers.sort_by(|a, b| assigned[*a].cmp(&assigned[*b]).then_with(|| by_cost(a, b)));
        let origin_allowed = input.origin_open.contains(&i) || *owner == input.me;
        let mut sources = helpers;
        if origin_allowed {
            sources.extend(
                origins
                    .iter()
                    .filter(|&&k| input.candidates[k].holding.has(i)),
            );
            sources.extend(maybes.iter().copied());
        }
        match sources.first() {
            Some(&first) => {
                if let Some(n) = assigned.get_mut(first) {
                    *n += 1;
                }
                out.fetch.push(Fetch { blob: i, sources });
            }
            None => out.waiting.push(i),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use proptest::prelude::*;

    fn key() -> PublicKey {
        SecretKey::generate().unwrap().public()
    }

    fn hashes(n: usize) -> Vec<(BlobHash, u64)> {
        (0..n)
            .map(|i| (BlobHash::of(&i.to_be_bytes()), 1000))
            .collect()
    }

    fn cand(key: PublicKey, origin: bool, rtt: f64, holding: Holding) -> Candidate {
        Candidate {
            key,
            origin,
            rtt_ms: Some(rtt),
            load: 0.0,
            holding,
        }
    }

    #[test]
    fn each_blob_has_one_first_fetcher_and_shares_are_even() {
        let ks: Vec<PublicKey> = (0..4).map(|_| key()).collect();
        let blobs = hashes(400);
        let views: Vec<Vec<PublicKey>> = (0..4)
            .map(|m| {
                let mut others: Vec<PublicKey> =
                    (0..4).filter(|&o| o != m).map(|o| ks[o]).collect();
                others.reverse();
                first_fetchers(&blobs, &ks[m], &others)
            })
            .collect();
        assert!(views.iter().all(|v| *v == views[0]), "all agree");
        for k in &ks {
            assert_eq!(views[0].iter().filter(|o| *o == k).count(), 100);
        }
        // The benchmark's shape: 8 blobs of 128 MiB and 4 small ones over
        // 4 replicators: two large blobs each.
        let mut blobs: Vec<(BlobHash, u64)> =
            (0..8u8).map(|i| (BlobHash::of(&[i]), 128 << 20)).collect();
        blobs.extend((0..4u8).map(|i| (BlobHash::of(&[100, i]), 1000)));
        let owners = first_fetchers(&blobs, &ks[0], &ks[1..]);
        for k in &ks {
            let large = (0..8).filter(|&i| owners[i] == *k).count();
            assert_eq!(large, 2, "{k:?}");
        }
    }

    #[test]
    fn only_the_first_fetcher_asks_the_origin_others_wait_then_use_helpers() {
        let (me, other) = (key(), key());
        let origin = key();
        let blobs = hashes(64);
        let missing: Vec<usize> = (0..64).collect();
        let cands = vec![cand(origin, true, 1.0, Holding::All)];
        let p = plan(&Input {
            me,
            blobs: &blobs,
            missing: &missing,
            candidates: &cands,
            replicators: &[other],
            origin_open: &[],
        });
        assert_eq!(p.fetch.len() + p.waiting.len(), 64);
        let owners = first_fetchers(&blobs, &me, &[other]);
        for f in &p.fetch {
            assert_eq!(owners[f.blob], me);
            assert_eq!(f.sources, vec![0]);
        }
        for &w in &p.waiting {
            assert_eq!(owners[w], other);
        }
        assert_eq!(p.fetch.len(), 32, "an even split");
        assert!(!p.fetch.is_empty() && !p.waiting.is_empty());
        // The other replicator now holds its share: fetched from it, never the origin.
        let theirs = Bitmap::from_flags((0..64).map(|i| p.waiting.contains(&i)));
        let cands = vec![
            cand(origin, true, 1.0, Holding::All),
            cand(other, false, 50.0, Holding::Some(theirs)),
        ];
        let p2 = plan(&Input {
            me,
            blobs: &blobs,
            missing: &p.waiting,
            candidates: &cands,
            replicators: &[other],
            origin_open: &[],
        });
        assert!(p2.waiting.is_empty());
        assert!(p2.fetch.iter().all(|f| f.sources == vec![1]), "{p2:?}");
        // The first fetcher is down (no longer a live replicator): this node
        // takes its blobs from the origin.
        let p3 = plan(&Input {
            me,
            blobs: &blobs,
            missing: &p.waiting,
            candidates: &cands[..1],
            replicators: &[],
            origin_open: &[],
        });
        assert!(p3.waiting.is_empty());
        // Opened after a timeout: the origin is allowed, after helpers.
        let p4 = plan(&Input {
            me,
            blobs: &blobs,
            missing: &p.waiting,
            candidates: &cands[..1],
            replicators: &[other],
            origin_open: &p.waiting,
        });
        assert!(p4.fetch.iter().all(|f| f.sources == vec![0]));
    }

    #[test]
    fn close_lightly_loaded_helpers_first_and_spread() {
        let me = key();
        let blobs = hashes(8);
        let missing: Vec<usize> = (0..8).collect();
        let mut far = cand(key(), false, 80.0, Holding::All);
        far.load = 0.1;
        let near = cand(key(), false, 2.0, Holding::All);
        let mut busy = cand(key(), false, 2.0, Holding::All);
        busy.load = 3.0;
        let origin = cand(key(), true, 0.5, Holding::All);
        let cands = vec![far, near, busy, origin];
        let p = plan(&Input {
            me,
            blobs: &blobs,
            missing: &missing,
            candidates: &cands,
            replicators: &[],
            origin_open: &[],
        });
        // Round robin over helpers, cheapest first; the origin is last.
        assert_eq!(p.fetch[0].sources, vec![1, 2, 0, 3]);
        assert_eq!(p.fetch[1].sources[0], 2);
        assert_eq!(p.fetch[2].sources[0], 0);
        assert_eq!(p.fetch[3].sources[0], 1);
    }

    #[test]
    fn older_version_holders_are_a_last_resort() {
        let me = key();
        let blobs = hashes(2);
        let cands = vec![
            cand(key(), false, 1.0, Holding::Maybe),
            cand(key(), true, 9.0, Holding::All),
        ];
        let p = plan(&Input {
            me,
            blobs: &blobs,
            missing: &[0, 1],
            candidates: &cands,
            replicators: &[],
            origin_open: &[],
        });
        assert!(p.fetch.iter().all(|f| f.sources == vec![1, 0]));
    }

    proptest! {
        /// Over any availability, every missing blob is either fetched or
        /// waiting, exactly once; sources hold (or may hold) the blob; an
        /// origin appears only for the first fetcher or an opened blob; a
        /// blob waits only when no helper holds it and this node may not ask
        /// an origin.
        #[test]
        fn plans_are_sound(
            n in 1usize..40,
            seeds in proptest::collection::vec((any::<bool>(), 0.1f64..100.0, 0.0f64..2.0, proptest::collection::vec(any::<bool>(), 40)), 0..6),
            reps in 0usize..4,
            open_mask in proptest::collection::vec(any::<bool>(), 40),
        ) {
            let me = key();
            let blobs = hashes(n);
            let missing: Vec<usize> = (0..n).collect();
            let cands: Vec<Candidate> = seeds.iter().map(|(origin, rtt, load, bits)| Candidate {
                key: key(),
                origin: *origin,
                rtt_ms: Some(*rtt),
                load: *load,
                holding: if *origin { Holding::All } else { Holding::Some(Bitmap::from_flags(bits[..n].iter().copied())) },
            }).collect();
            let replicators: Vec<PublicKey> = (0..reps).map(|_| key()).collect();
            let open: Vec<usize> = (0..n).filter(|&i| open_mask[i]).collect();
            let p = plan(&Input { me, blobs: &blobs, missing: &missing, candidates: &cands, replicators: &replicators, origin_open: &open });
            let owners = first_fetchers(&blobs, &me, &replicators);
            let mut seen: Vec<usize> = p.fetch.iter().map(|f| f.blob).chain(p.waiting.iter().copied()).collect();
            seen.sort();
            prop_assert_eq!(seen, missing.clone());
            for f in &p.fetch {
                let mine = owners[f.blob] == me;
                for &s in &f.sources {
                    prop_assert!(cands[s].holding.has(f.blob));
                    if cands[s].origin {
                        prop_assert!(mine || open.contains(&f.blob));
                    }
                }
                let mut u = f.sources.clone();
                u.sort();
                u.dedup();
                prop_assert_eq!(u.len(), f.sources.len());
            }
            for &w in &p.waiting {
                prop_assert!(!cands.iter().any(|c| !c.origin && c.holding.has(w)));
                let mine = owners[w] == me;
                prop_assert!(!(mine || open.contains(&w)) || !cands.iter().any(|c| c.origin));
            }
        }

        /// Every replicator computes the same owners whatever the order it
        /// knows the others in, and the bytes assigned differ by at most one
        /// blob's size.
        #[test]
        fn first_fetchers_agree_and_balance(
            sizes in proptest::collection::vec(0u64..1_000_000, 1..40),
            n in 1usize..6,
        ) {
            let ks: Vec<PublicKey> = (0..n).map(|_| key()).collect();
            let blobs: Vec<(BlobHash, u64)> = sizes
                .iter()
                .enumerate()
                .map(|(i, s)| (BlobHash::of(&(i as u64).to_be_bytes()), *s))
                .collect();
            let first = first_fetchers(&blobs, &ks[0], &ks[1..]);
            for m in 1..n {
                let mut others: Vec<PublicKey> = ks.iter().copied().filter(|k| *k != ks[m]).collect();
                others.reverse();
                prop_assert_eq!(&first_fetchers(&blobs, &ks[m], &others), &first);
            }
            let per: Vec<u64> = ks
                .iter()
                .map(|k| (0..blobs.len()).filter(|&i| first[i] == *k).map(|i| blobs[i].1.max(1)).sum())
                .collect();
            let largest = sizes.iter().map(|s| (*s).max(1)).max().unwrap_or(1);
            let (lo, hi) = (per.iter().min().copied().unwrap_or(0), per.iter().max().copied().unwrap_or(0));
            prop_assert!(hi - lo <= largest, "{per:?}");
        }
    }
}
