//! Every answer that does not depend on the client, pre-encoded once per
//! zone snapshot ([`DnsData`]): per existing name and record type (static
//! records, NODATA, CNAME chains, the fallback records of steered names),
//! NXDOMAIN per zone, and REFUSED.
//!
//! Each template is checked against hickory-proto's encoding of the
//! [`resolve`] answer when it is built; a name or type without a template
//! (delegations, wildcards, CNAME chains through steered names, RDATA the
//! templates do not encode) is answered by the reference path. Lookups key
//! on the lowercased wire name and allocate nothing.
//!
//! Memory: one entry per name that exists in the zones, each with one
//! template per record type present (plus ANY and NODATA); nothing is added
//! per query.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Name, RecordType};

use super::answer::{resolve, Answer, Question};
use super::server::DnsData;
use super::template::Template;

/// Query types the fast path answers (others go to the reference path).
pub fn fast_qtype(t: u16) -> bool {
    matches!(
        t,
        1 | 2 | 5 | 6 | 12 | 15 | 16 | 28 | 33 | 64 | 65 | 255 | 257
    )
}

const T_A: u16 = 1;
const T_AAAA: u16 = 28;
const T_ANY: u16 = 255;
/// A private-use type, for building NODATA answers.
const T_PROBE: u16 = 65280;

/// A word-at-a-time multiplicative hash for the (trusted) name keys.
#[derive(Default, Clone, Copy)]
pub struct NameHasher(u64);

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What is known about one existing name.
#[derive(Debug, Default)]
pub struct Entry {
    /// The name when its A/AAAA/ANY answers are steered.
    pub steered: Option<LowerName>,
    /// Per type present: its template, or None when none could be built.
    types: Vec<(u16, Option<Template>)>,
    other: Option<Template>,
}

impl Entry {
    /// The template for `qtype` (for a steered name and A/AAAA/ANY: the
    /// fallback when steering has no address), if one was built.
    pub fn template(&self, qtype: u16) -> Option<&Template> {
        match self.types.iter().find(|(t, _)| *t == qtype) {
            Some((_, t)) => t.as_ref(),
            None => self.other.as_ref(),
        }
    }

    /// True when `qtype` answers come from steering.
    pub fn is_steered(&self, qtype: u16) -> Option<&LowerName> {
        self.steered.as_ref().filter(|_| steerable_qtype(qtype))
    }
}

/// Query types whose answers a steered name takes from steering (A, AAAA, ANY).
pub fn steerable_qtype(t: u16) -> bool {
    matches!(t, T_A | T_AAAA | T_ANY)
}

struct ZoneInfo {
    /// Lowercased origin, wire form with the root byte.
    origin: Vec<u8>,
    labels: usize,
    /// Delegation points: (label count, lowercased wire name).
    cuts: Vec<(usize, Vec<u8>)>,
    /// NXDOMAIN answer (None: the zone has wildcards).
    nx: Option<Template>,
}

/// How the fast path answers a name.
pub enum Lookup<'a> {
    /// An existing name.
    Name(&'a Entry),
    /// A name that does not exist (NXDOMAIN) or is outside our zones (REFUSED).
    Fixed(&'a Template),
    /// The reference path must answer.
    Slow,
}

/// The pre-encoded answers of one [`DnsData`] snapshot.
pub struct Precomputed {
    data: Arc<DnsData>,
    names: HashMap<Vec<u8>, Entry, BuildHasherDefault<NameHasher>>,
    zones: Vec<ZoneInfo>,
    refused: Option<Template>,
}

fn wire(name: &LowerName) -> Vec<u8> {
    let mut v = vec![];
    for l in Name::from(name.clone()).iter() {
        v.push(l.len() as u8);
        v.extend_from_slice(l);
    }
    v.push(0);
    v
}

/// `resolve` without steering; `None` when its answer would depend on the
/// client (a CNAME chain reaches a steered name) unless `own_steered`.
fn answer(
    data: &DnsData,
    name: &LowerName,
    qtype: u16,
    fallback_ttl: u32,
    own_steered: bool,
) -> Option<Answer> {
    let asked = std::cell::Cell::new(0u32);
    let ans = resolve(
        &data.zones,
        &data.steered,
        &Question {
            name,
            qtype: RecordType::from(qtype),
        },
        fallback_ttl,
        &|n: &LowerName| {
            asked.set(asked.get() + if own_steered && n == name { 1 } else { 2 });
            None
        },
    );
    (asked.get() <= 1).then_some(ans)
}

fn checked(ans: &Answer, name: &LowerName, qtype: u16) -> Option<Template> {
    let t = Template::from_answer(ans)?;
    t.matches_reference(ans, &Name::from(name.clone()), RecordType::from(qtype))
        .then_some(t)
}

impl Precomputed {
    /// Pre-encodes the answers of `data` (`fallback_ttl` as the handler's).
    pub fn build(data: Arc<DnsData>, fallback_ttl: u32) -> Self {
        let mut names: HashMap<Vec<u8>, Entry, BuildHasherDefault<NameHasher>> = HashMap::default();
        let mut zones = vec![];
        for z in data.zones.zones() {
            for name in z.names() {
                let owner = data.zones.find(name).map(|f| f.origin());
                if owner != Some(z.origin()) || z.cut_above(name).is_some() {
                    names.entry(wire(name)).or_default();
                    continue;
                }
                let node = z.node(name).unwrap_or_default();
                let has_cname = node.iter().any(|r| r.record_type() == RecordType::CNAME);
                let steered = data.steered.contains(name);
                let mut e = Entry::default();
                if !(steered && has_cname) {
                    let mut types: Vec<u16> =
                        node.iter().map(|r| u16::from(r.record_type())).collect();
                    types.extend([T_ANY, T_A, T_AAAA]);
                    types.sort_unstable();
                    types.dedup();
                    for t in types {
                        let own = steered && matches!(t, T_A | T_AAAA | T_ANY);
                        let tpl = answer(&data, name, t, fallback_ttl, own)
                            .and_then(|a| checked(&a, name, t));
                        e.types.push((t, tpl));
                    }
                    if !has_cname && !node.iter().any(|r| u16::from(r.record_type()) == T_PROBE) {
                        e.other = answer(&data, name, T_PROBE, fallback_ttl, false)
                            .and_then(|a| checked(&a, name, T_PROBE));
                    }
                    e.steered = steered.then(|| name.clone());
                }
                names.insert(wire(name), e);
            }
            let probe = Name::from_str("nx--p2pcdn-probe")
                .ok()
                .and_then(|n| n.append_domain(&Name::from(z.origin().clone())).ok())
                .map(|n| LowerName::new(&n));
            let nx = probe.filter(|p| {
                !z.has_wildcards()
                    && !z.exists(p)
                    && !data.steered.contains(p)
                    && z.cut_above(p).is_none()
            });
            let nx = nx.and_then(|p| {
                let a = answer(&data, &p, T_A, fallback_ttl, false)?;
                (a.rcode == ResponseCode::NXDomain).then_some(())?;
                checked(&a, &p, T_A)
            });
            let origin = wire(z.origin());
            zones.push(ZoneInfo {
                cuts: z
                    .cuts()
                    .map(|c| (c.num_labels() as usize, wire(c)))
                    .collect(),
                labels: z.origin().num_labels() as usize,
                origin,
                nx,
            });
        }
        // Steered names outside the zones' names: the reference path.
        for s in &data.steered {
            names.entry(wire(s)).or_default();
        }
        let refused = Template::from_answer(&Answer {
            rcode: ResponseCode::Refused,
            authoritative: false,
            answers: vec![],
            authority: vec![],
            additional: vec![],
            steered: false,
        });
        Self {
            data,
            names,
            zones,
            refused,
        }
    }

    /// True when built from exactly this snapshot.
    pub fn is_for(&self, data: &Arc<DnsData>) -> bool {
        Arc::ptr_eq(&self.data, data)
    }

    /// How to answer the name whose lowercased wire form is `lower`, with
    /// `suffix(i)` its suffix from label `i` and `labels` labels.
    pub fn lookup<'a, 'q>(
        &'a self,
        lower: &'q [u8],
        labels: usize,
        suffix: impl Fn(usize) -> Option<&'q [u8]>,
    ) -> Lookup<'a> {
        if let Some(e) = self.names.get(lower) {
            return Lookup::Name(e);
        }
        // The most specific zone (zones are sorted longest origin first).
        for z in &self.zones {
            if z.labels > labels {
                continue;
            }
            if suffix(labels - z.labels) == Some(z.origin.as_slice()) {
                // Below a delegation: a referral, from the reference path.
                let below_cut = z
                    .cuts
                    .iter()
                    .any(|(n, c)| *n <= labels && suffix(labels - n) == Some(c.as_slice()));
                if below_cut {
                    return Lookup::Slow;
                }
                return z.nx.as_ref().map_or(Lookup::Slow, Lookup::Fixed);
            }
        }
        self.refused.as_ref().map_or(Lookup::Slow, Lookup::Fixed)
    }
}
