//! Anti-entropy of signed reports, sans I/O: the decisions of one `/sync`
//! exchange (protocol [`PROTOCOL`]) as pure functions, driven by the agent
//! over HTTPS and by the simulation benchmark (`benches/sim.rs`) over a
//! virtual network.
//!
//! An exchange costs O(1) when views agree: the caller sends a
//! [`Fingerprint`] of the reports it holds for the sites it is interested
//! in; the responder computes the same over its own reports restricted to
//! that interest and, only when they differ, answers a digest of short
//! node ids and sequence numbers ([`Entry`]). The caller then pushes what
//! the responder lacks and names the ids it wants, in one more request.
//!
//! Partial view: a node keeps and relays only reports of nodes that mirror
//! or hold a site it is interested in (its configured sites), plus reports
//! naming no site at all ([`interested`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::keys::PublicKey;
use crate::report::{self, Report, SignedReport, VerifiedReport};

/// The federation protocol version this code speaks (`/sync`, `/push` and
/// the node document carry it; other versions are refused clearly).
pub const PROTOCOL: u32 = 2;
/// Most reports served for one `want` list.
pub const MAX_WANT: usize = 4_096;
/// Buckets of a bucketed digest (by the top 4 bits of the short id).
pub const BUCKETS: usize = 16;
/// Views larger than this answer a differing fingerprint with bucket
/// fingerprints first; smaller ones with their whole digest.
pub const BUCKET_ABOVE: usize = 32;

/// A short node id: the first 8 bytes of blake3 of the node key, written
/// as 16 hex digits on the wire (instead of the 51-character key text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ShortId(pub u64);

impl ShortId {
    /// The short id of a node key.
    pub fn of(key: &PublicKey) -> Self {
        let h = blake3::hash(key.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        Self(u64::from_be_bytes(b))
    }
}

impl fmt::Display for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for ShortId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(Self)
    }
}

impl Serialize for ShortId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ShortId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.len() != 16 {
            return Err(serde::de::Error::custom("short id: expected 16 hex digits"));
        }
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One digest entry: a node's short id and the newest report sequence held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry(pub ShortId, pub u64);

/// An order-independent summary of a set of (id, seq): the XOR of a
/// 64-bit hash of each entry, and the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Fingerprint {
    /// XOR of the entries' hashes, 16 hex digits.
    pub fp: ShortId,
    /// Number of entries.
    pub n: u32,
}

/// The fingerprint of a set of entries.
pub fn fingerprint(entries: impl IntoIterator<Item = Entry>) -> Fingerprint {
    let mut acc = 0u64;
    let mut n = 0u32;
    for Entry(id, seq) in entries {
        let mut buf = [0u8; 16];
        buf[..8].copy_from_slice(&id.0.to_be_bytes());
        buf[8..].copy_from_slice(&seq.to_be_bytes());
        let h = blake3::hash(&buf);
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        acc ^= u64::from_be_bytes(b);
        n = n.saturating_add(1);
    }
    Fingerprint {
        fp: ShortId(acc),
        n,
    }
}

/// Co-mirrors of a site a mirror follows when it does not answer for the
/// site's zone: enough replication sources (at least twice the
/// replicator's parallel pulls, 4) and a few to spare for ones that died
/// or are backed off. Authorities follow every mirror of their sites.
pub const FOLLOW_PER_SITE: usize = 8;
// Enough sources for the replicator's parallel pulls, twice over.
const _: () = assert!(FOLLOW_PER_SITE >= 2 * super::replicate::PARALLEL);

/// Most ids accepted in one site's follow list on the wire.
pub const MAX_FOLLOW: usize = 64;

/// What a node keeps and relays (its partial view): reports of nodes that
/// mirror or hold one of `sites`, restricted for the sites in `follow` to
/// the listed ids, plus reports naming no site. Empty `sites`: everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interest {
    /// Site names.
    pub sites: BTreeSet<String>,
    /// Sites followed thinly: the only ids kept for them.
    pub follow: BTreeMap<String, BTreeSet<ShortId>>,
}

impl From<BTreeSet<String>> for Interest {
    fn from(sites: BTreeSet<String>) -> Self {
        Self {
            sites,
            follow: BTreeMap::new(),
        }
    }
}

impl Interest {
    /// An interest read from the wire: `sites`, and the follow lists of
    /// those of them followed thinly (at most [`MAX_FOLLOW`] ids each; lists
    /// for other sites are ignored).
    pub fn from_wire(
        sites: impl IntoIterator<Item = String>,
        follow: &BTreeMap<String, Vec<ShortId>>,
    ) -> Self {
        let sites: BTreeSet<String> = sites.into_iter().collect();
        let follow = follow
            .iter()
            .filter(|(s, _)| sites.contains(*s))
            .map(|(s, ids)| (s.clone(), ids.iter().take(MAX_FOLLOW).copied().collect()))
            .collect();
        Self { sites, follow }
    }

    /// The follow lists as sent on the wire.
    pub fn follow_wire(&self) -> BTreeMap<String, Vec<ShortId>> {
        self.follow
            .iter()
            .map(|(s, ids)| (s.clone(), ids.iter().copied().collect()))
            .collect()
    }

    /// Whether a node with this interest keeps the report of `id`, which
    /// serves `sites` (known without the report itself: the caller of an
    /// exchange states only its id and sites).
    pub fn keeps<'a>(&self, id: ShortId, mut sites: impl Iterator<Item = &'a String>) -> bool {
        self.sites.is_empty()
            || sites.any(|s| {
                self.sites.contains(s) && self.follow.get(s).is_none_or(|f| f.contains(&id))
            })
    }
}

/// The co-mirrors of `site` a node `me` follows thinly: the
/// [`FOLLOW_PER_SITE`] of `mirrors` (the site's authorized mirrors, as
/// short ids) ranked first by rendezvous hash of (site, id), so every
/// mirror of the site follows the same few; `None` when there are no
/// more than that (follow them all).
pub fn core(site: &str, mirrors: &[ShortId], me: ShortId) -> Option<BTreeSet<ShortId>> {
    let mut ranked: Vec<(u64, ShortId)> = mirrors
        .iter()
        .filter(|id| **id != me)
        .map(|id| {
            let mut h = blake3::Hasher::new();
            h.update(site.as_bytes());
            h.update(&id.0.to_be_bytes());
            let mut b = [0u8; 8];
            b.copy_from_slice(&h.finalize().as_bytes()[..8]);
            (u64::from_be_bytes(b), *id)
        })
        .collect();
    if ranked.len() <= FOLLOW_PER_SITE {
        return None;
    }
    ranked.sort_unstable();
    ranked.dedup();
    Some(
        ranked
            .into_iter()
            .take(FOLLOW_PER_SITE)
            .map(|(_, id)| id)
            .collect(),
    )
}

/// Whether a node with `interest` keeps and relays `r`: it mirrors or
/// holds one of its sites (and, for a site followed thinly, is listed), or
/// names no site (membership only). An empty interest takes everything.
pub fn interested(r: &Report, interest: &Interest) -> bool {
    interest.sites.is_empty()
        || (r.mirrors.is_empty() && r.holds.is_empty())
        || interest.keeps(
            ShortId::of(&r.node),
            r.mirrors.iter().chain(r.holds.iter().map(|h| &h.site)),
        )
}

/// The reports of `all` a peer with `interest` should see, unexpired at
/// `now`, ordered by short id.
pub fn view<'a>(
    all: impl IntoIterator<Item = &'a VerifiedReport>,
    interest: &Interest,
    now: u64,
) -> Vec<(ShortId, &'a VerifiedReport)> {
    let mut v: Vec<(ShortId, &VerifiedReport)> = all
        .into_iter()
        .filter(|r| r.report.expires > now && interested(&r.report, interest))
        .map(|r| (ShortId::of(&r.report.node), r))
        .collect();
    v.sort_by_key(|(id, _)| *id);
    v
}

/// A view without the report of `id` (an exchange's caller states its own
/// report apart, so the fingerprints of two mirrors of one site agree
/// whether or not each follows the other).
pub fn without(v: Vec<(ShortId, &VerifiedReport)>, id: ShortId) -> Vec<(ShortId, &VerifiedReport)> {
    v.into_iter().filter(|(i, _)| *i != id).collect()
}

/// Digest entries of a view.
pub fn entries<'a>(v: &'a [(ShortId, &VerifiedReport)]) -> impl Iterator<Item = Entry> + 'a {
    v.iter().map(|(id, r)| Entry(*id, r.report.seq))
}

/// The responder's answer to a fingerprint: `None` when the views agree,
/// else its digest of the view restricted to the caller's interest.
pub fn respond(theirs: &Fingerprint, mine: &[(ShortId, &VerifiedReport)]) -> Option<Vec<Entry>> {
    let own = fingerprint(entries(mine));
    (own != *theirs).then(|| entries(mine).collect())
}

/// The bucket of a short id (its top 4 bits).
pub fn bucket(id: ShortId) -> u8 {
    (id.0 >> 60) as u8
}

/// The fingerprint of each of the [`BUCKETS`] buckets of a view.
pub fn bucket_fingerprints(v: &[(ShortId, &VerifiedReport)]) -> Vec<Fingerprint> {
    (0..BUCKETS as u8)
        .map(|b| fingerprint(entries(v).filter(|e| bucket(e.0) == b)))
        .collect()
}

/// The buckets whose fingerprints differ between `theirs` and our view.
pub fn differing_buckets(theirs: &[Fingerprint], mine: &[(ShortId, &VerifiedReport)]) -> Vec<u8> {
    let ours = bucket_fingerprints(mine);
    (0..BUCKETS)
        .filter(|b| theirs.get(*b) != ours.get(*b))
        .map(|b| b as u8)
        .collect()
}

/// A view restricted to some buckets (all of them when `None`).
pub fn restrict<'a>(
    v: Vec<(ShortId, &'a VerifiedReport)>,
    buckets: Option<&[u8]>,
) -> Vec<(ShortId, &'a VerifiedReport)> {
    match buckets {
        None => v,
        Some(bs) => v
            .into_iter()
            .filter(|(id, _)| bs.contains(&bucket(*id)))
            .collect(),
    }
}

/// The responder's answer to a sync request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The fingerprints agree.
    Agree,
    /// They differ and the view is large: per-bucket fingerprints.
    Buckets(Vec<Fingerprint>),
    /// The digest of the view (or of the buckets asked for).
    Entries(Vec<Entry>),
}

impl Answer {
    /// The answer as the sync response's `(reports, buckets)` fields.
    pub fn into_fields(self) -> (Option<Vec<Entry>>, Option<Vec<Fingerprint>>) {
        match self {
            Answer::Agree => (None, None),
            Answer::Buckets(b) => (None, Some(b)),
            Answer::Entries(e) => (Some(e), None),
        }
    }
}

/// Answers a sync request: the entries of the buckets asked for, if any;
/// else nothing when the fingerprints agree; else bucket fingerprints for
/// a view over [`BUCKET_ABOVE`] entries, or the whole digest.
pub fn answer(
    theirs: &Fingerprint,
    buckets: Option<&[u8]>,
    mine: &[(ShortId, &VerifiedReport)],
) -> Answer {
    if let Some(bs) = buckets {
        return Answer::Entries(
            entries(mine)
                .filter(|e| bs.contains(&bucket(e.0)))
                .collect(),
        );
    }
    if fingerprint(entries(mine)) == *theirs {
        Answer::Agree
    } else if mine.len() > BUCKET_ABOVE {
        Answer::Buckets(bucket_fingerprints(mine))
    } else {
        Answer::Entries(entries(mine).collect())
    }
}

/// What the caller does with a responder's digest: the reports it holds
/// that the responder lacks or holds older (restricted to the responder's
/// interest), and the ids whose reports the responder holds newer.
pub fn plan(
    their_digest: &[Entry],
    their_interest: &Interest,
    mine: &[(ShortId, &VerifiedReport)],
) -> (Vec<SignedReport>, Vec<ShortId>) {
    let theirs: BTreeMap<ShortId, u64> = their_digest.iter().map(|e| (e.0, e.1)).collect();
    let push = mine
        .iter()
        .filter(|(id, r)| {
            theirs.get(id).is_none_or(|s| *s < r.report.seq)
                && interested(&r.report, their_interest)
        })
        .map(|(_, r)| r.signed.clone())
        .collect();
    let held: BTreeMap<ShortId, u64> = entries(mine).map(|e| (e.0, e.1)).collect();
    let want = theirs
        .iter()
        .filter(|(id, seq)| held.get(id).is_none_or(|s| s < seq))
        .map(|(id, _)| *id)
        .take(MAX_WANT)
        .collect();
    (push, want)
}

/// The reports named in a `want` list (at most [`MAX_WANT`]).
pub fn serve(want: &[ShortId], mine: &[(ShortId, &VerifiedReport)]) -> Vec<SignedReport> {
    let want: BTreeSet<ShortId> = want.iter().take(MAX_WANT).copied().collect();
    mine.iter()
        .filter(|(id, _)| want.contains(id))
        .map(|(_, r)| r.signed.clone())
        .collect()
}

/// The cheap check before any signature work: the signer and sequence of
/// `s`, if it is readable and newer than `held(signer)`; `None` means
/// drop it unverified (a duplicate, a replay, or junk).
pub fn triage(
    s: &SignedReport,
    held: impl Fn(&PublicKey) -> u64,
    me: &PublicKey,
) -> Option<(PublicKey, u64)> {
    let (node, seq) = report::peek_signed(s)?;
    (node != *me && seq > held(&node)).then_some((node, seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use crate::report::{Capacity, Held, Load};

    fn signed(key: &SecretKey, seq: u64, site: &str) -> VerifiedReport {
        let r = Report {
            format: report::FORMAT,
            node: key.public(),
            name: "m.example.net".into(),
            url: "https://m.example.net".into(),
            addresses: vec![],
            location: None,
            capacity: Capacity { rps: 1.0, bps: 1.0 },
            load: Load::default(),
            holds: vec![Held {
                site: site.into(),
                version: 1,
            }],
            mirrors: vec![site.into()],
            rtt_ms: Default::default(),
            client_rtt: vec![],
            certs: None,
            seq,
            issued: 100,
            expires: 200,
        };
        report::verify_signed(report::sign_report(&r, key).unwrap(), 150).unwrap()
    }

    fn set(s: &[&str]) -> Interest {
        s.iter()
            .map(|x| x.to_string())
            .collect::<BTreeSet<String>>()
            .into()
    }

    #[test]
    fn short_ids_roundtrip_as_16_hex_digits() {
        let k = SecretKey::generate().unwrap().public();
        let id = ShortId::of(&k);
        let text = serde_json::to_string(&id).unwrap();
        assert_eq!(text.len(), 18);
        assert_eq!(serde_json::from_str::<ShortId>(&text).unwrap(), id);
        assert!(serde_json::from_str::<ShortId>("\"abc\"").is_err());
        assert!(serde_json::from_str::<ShortId>("\"zzzzzzzzzzzzzzzz\"").is_err());
    }

    #[test]
    fn agreeing_views_cost_one_fingerprint_and_differing_ones_converge() {
        let keys: Vec<SecretKey> = (0..6).map(|_| SecretKey::generate().unwrap()).collect();
        let a_reports: Vec<VerifiedReport> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| signed(k, 10, if i % 2 == 0 { "a" } else { "b" }))
            .collect();
        let mut b_reports = a_reports.clone();
        let interest = set(&["a"]);
        let a = view(&a_reports, &interest, 150);
        let b = view(&b_reports, &interest, 150);
        assert_eq!(a.len(), 3, "only site a's mirrors");
        // Same view: nothing but the fingerprint.
        let fp = fingerprint(entries(&a));
        assert_eq!(respond(&fp, &b), None);
        // B has a newer report of keys[0], A has a newer one of keys[2];
        // keys[4]'s report only A has.
        b_reports[0] = signed(&keys[0], 11, "a");
        b_reports.remove(4);
        let mut a_reports2 = a_reports.clone();
        a_reports2[2] = signed(&keys[2], 12, "a");
        let a = view(&a_reports2, &interest, 150);
        let b = view(&b_reports, &interest, 150);
        let digest = respond(&fingerprint(entries(&a)), &b).expect("views differ");
        let (push, want) = plan(&digest, &set(&["a", "b"]), &a);
        assert_eq!(want, vec![ShortId::of(&keys[0].public())]);
        let pushed: Vec<u64> = push
            .iter()
            .map(|s| report::peek_signed(s).unwrap().1)
            .collect();
        assert_eq!(pushed.len(), 2, "keys[2]@12 and keys[4]@10");
        assert!(pushed.contains(&12));
        let got = serve(&want, &b);
        assert_eq!(report::peek_signed(&got[0]).unwrap().1, 11);
        // A responder interested only in b is pushed nothing about a.
        let (push, _) = plan(&digest, &set(&["b"]), &a);
        assert!(push.is_empty());
        // Expired reports leave the view.
        assert!(view(&a_reports, &interest, 200).is_empty());
    }

    #[test]
    fn triage_drops_duplicates_and_own_reports_before_verification() {
        let k = SecretKey::generate().unwrap();
        let me = SecretKey::generate().unwrap().public();
        let s = signed(&k, 10, "a").signed;
        assert_eq!(triage(&s, |_| 9, &me), Some((k.public(), 10)));
        assert_eq!(triage(&s, |_| 10, &me), None);
        assert_eq!(triage(&s, |_| 0, &k.public()), None);
        let junk = SignedReport {
            report: "{".into(),
            sig: String::new(),
        };
        assert_eq!(triage(&junk, |_| 0, &me), None);
    }

    #[test]
    fn interest_keeps_mirrors_of_its_sites_and_siteless_reports() {
        let k = SecretKey::generate().unwrap();
        let mut r = signed(&k, 1, "a").report;
        assert!(interested(&r, &set(&["a"])));
        assert!(!interested(&r, &set(&["b"])));
        assert!(interested(&r, &set(&[])));
        r.mirrors.clear();
        r.holds.clear();
        assert!(interested(&r, &set(&["b"])));
    }

    /// A small federation running the exchange with random partners:
    /// every node ends up holding the newest report of every node of its
    /// interest, and then exchanges carry nothing but fingerprints.
    #[test]
    fn a_small_federation_converges_and_then_only_fingerprints_travel() {
        use std::collections::HashMap;
        let n = 12;
        let keys: Vec<SecretKey> = (0..n).map(|_| SecretKey::generate().unwrap()).collect();
        let sites = ["a", "b", "c"];
        let interest: Vec<Interest> = (0..n).map(|i| set(&[sites[i % 3]])).collect();
        // Each node starts with only its own report, seq 10 + i.
        let own: Vec<VerifiedReport> = (0..n)
            .map(|i| signed(&keys[i], 10 + i as u64, sites[i % 3]))
            .collect();
        let mut held: Vec<HashMap<PublicKey, VerifiedReport>> = vec![HashMap::new(); n];
        let all = |held: &HashMap<PublicKey, VerifiedReport>, i: usize| -> Vec<VerifiedReport> {
            std::iter::once(own[i].clone())
                .chain(held.values().cloned())
                .collect()
        };
        let ingest = |held: &mut HashMap<PublicKey, VerifiedReport>,
                      me: &PublicKey,
                      interest: &Interest,
                      docs: Vec<SignedReport>| {
            for s in docs {
                let seqs: HashMap<PublicKey, u64> =
                    held.iter().map(|(k, v)| (*k, v.report.seq)).collect();
                if triage(&s, |k| seqs.get(k).copied().unwrap_or(0), me).is_none() {
                    continue;
                }
                let v = report::verify_signed(s, 150).unwrap();
                if interested(&v.report, interest) {
                    held.insert(v.report.node, v);
                }
            }
        };
        let mut quiet_rounds = 0;
        let mut x = 7u64;
        for _round in 0..40 {
            let mut traffic = 0;
            for c in 0..n {
                // A partner of the same interest (as the agent prefers).
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = (c + 3 * (1 + (x >> 33) as usize % (n / 3 - 1))) % n;
                let (ca, ra) = (all(&held[c], c), all(&held[r], r));
                let cv = view(&ca, &interest[c], 150);
                let rv = view(&ra, &interest[c], 150);
                let Some(digest) = respond(&fingerprint(entries(&cv)), &rv) else {
                    continue;
                };
                let (push, want) = plan(&digest, &interest[r], &cv);
                traffic += push.len() + want.len();
                let back = serve(&want, &view(&ra, &Interest::default(), 150));
                ingest(&mut held[r], &keys[r].public(), &interest[r], push);
                ingest(&mut held[c], &keys[c].public(), &interest[c], back);
            }
            quiet_rounds = if traffic == 0 { quiet_rounds + 1 } else { 0 };
        }
        assert!(quiet_rounds >= 5, "exchanges went quiet");
        for (i, h) in held.iter().enumerate() {
            let want: BTreeSet<ShortId> = (0..n)
                .filter(|j| *j != i && j % 3 == i % 3)
                .map(|j| ShortId::of(&keys[j].public()))
                .collect();
            let got: BTreeSet<ShortId> = h.keys().map(ShortId::of).collect();
            assert_eq!(got, want, "node {i} holds exactly its interest");
        }
    }

    #[test]
    fn thin_followers_keep_the_same_core_and_agree_without_their_own_reports() {
        let keys: Vec<SecretKey> = (0..20).map(|_| SecretKey::generate().unwrap()).collect();
        let ids: Vec<ShortId> = keys.iter().map(|k| ShortId::of(&k.public())).collect();
        assert_eq!(core("a", &ids[..FOLLOW_PER_SITE + 1], ids[0]), None);
        // The site's core as seen by a non-mirror (an id not in the list).
        let c0 = core("a", &ids, ShortId(0)).expect("more mirrors than the core");
        assert_eq!(c0.len(), FOLLOW_PER_SITE);
        // Every mirror outside the core computes the same core; one inside
        // leaves itself out and takes the next.
        let outside: Vec<usize> = (0..20).filter(|i| !c0.contains(&ids[*i])).collect();
        for &o in &outside {
            assert_eq!(core("a", &ids, ids[o]).as_ref(), Some(&c0));
        }
        let inside = (0..20).find(|i| c0.contains(&ids[*i])).unwrap();
        let ci = core("a", &ids, ids[inside]).unwrap();
        assert!(!ci.contains(&ids[inside]) && ci.len() == FOLLOW_PER_SITE);
        assert_eq!(ci.intersection(&c0).count(), FOLLOW_PER_SITE - 1);
        // Another site ranks differently.
        assert_ne!(core("b", &ids, ShortId(0)), Some(c0.clone()));
        let c1 = c0.clone();

        let reports: Vec<VerifiedReport> = keys.iter().map(|k| signed(k, 10, "a")).collect();
        let thin = |me: usize| Interest {
            sites: ["a".to_string()].into(),
            follow: [("a".to_string(), core("a", &ids, ids[me]).unwrap())].into(),
        };
        let (i, j) = (outside[0], outside[1]);
        for r in &reports {
            let id = ShortId::of(&r.report.node);
            assert_eq!(interested(&r.report, &thin(i)), c1.contains(&id));
        }
        // i and j (both outside the core) hold the core and their own
        // report; their views without their own reports agree.
        let held = |me: usize| -> Vec<VerifiedReport> {
            reports
                .iter()
                .enumerate()
                .filter(|(k, r)| *k == me || interested(&r.report, &thin(me)))
                .map(|(_, r)| r.clone())
                .collect()
        };
        let (hi, hj) = (held(i), held(j));
        let caller = without(view(&hi, &thin(i), 150), ids[i]);
        let responder = without(view(&hj, &thin(i), 150), ids[i]);
        assert_eq!(caller.len(), FOLLOW_PER_SITE);
        assert_eq!(respond(&fingerprint(entries(&caller)), &responder), None);
        // The wire form round-trips and caps list length.
        let w = thin(i).follow_wire();
        assert_eq!(Interest::from_wire(["a".to_string()], &w), thin(i));
        let long: BTreeMap<String, Vec<ShortId>> =
            [("a".to_string(), (0..100).map(ShortId).collect())].into();
        let capped = Interest::from_wire(["a".to_string()], &long);
        assert_eq!(capped.follow["a"].len(), MAX_FOLLOW);
        assert!(Interest::from_wire(["b".to_string()], &long)
            .follow
            .is_empty());
        // An authority (no follow list) keeps every mirror.
        assert!(set(&["a"]).keeps(ids[j], ["a".to_string()].iter()));
        assert!(!thin(i).keeps(ids[j], ["a".to_string()].iter()));
    }

    #[test]
    fn large_views_narrow_to_differing_buckets() {
        let keys: Vec<SecretKey> = (0..40).map(|_| SecretKey::generate().unwrap()).collect();
        let a_reports: Vec<VerifiedReport> = keys.iter().map(|k| signed(k, 10, "a")).collect();
        let mut b_reports = a_reports.clone();
        b_reports[7] = signed(&keys[7], 11, "a");
        let interest = set(&["a"]);
        let a = view(&a_reports, &interest, 150);
        let b = view(&b_reports, &interest, 150);
        let fp = fingerprint(entries(&a));
        assert_eq!(answer(&fp, None, &a), Answer::Agree);
        let Answer::Buckets(fps) = answer(&fp, None, &b) else {
            panic!("a view of 40 answers with buckets");
        };
        let diff = differing_buckets(&fps, &a);
        assert_eq!(diff, vec![bucket(ShortId::of(&keys[7].public()))]);
        let Answer::Entries(digest) = answer(&fp, Some(&diff), &b) else {
            panic!("entries of the buckets asked for");
        };
        assert!(digest.len() < 40 && digest.iter().all(|e| diff.contains(&bucket(e.0))));
        let (push, want) = plan(&digest, &interest, &restrict(a.clone(), Some(&diff)));
        assert!(push.is_empty(), "nothing outside the buckets is pushed");
        assert_eq!(want, vec![ShortId::of(&keys[7].public())]);
        // Small views answer with the whole digest at once.
        let small = view(&a_reports[..5], &interest, 150);
        assert!(matches!(answer(&fp, None, &small), Answer::Entries(e) if e.len() == 5));
    }
}
