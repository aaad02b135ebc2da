//! Per-thread state of a DNS worker (one UDP thread): the zone snapshot a
//! batch of queries is answered from, a first-level cache of steered
//! answers keyed on the question as it arrives on the wire, and the
//! responses counted during the batch, added to the metrics once per batch.
//!
//! The first-level cache is two-way set-associative: [`L1_SLOTS`] slots in
//! pairs (a new key goes to the first slot of its pair, the previous first
//! moves to the second and the second is evicted), each holding
//! a key (the lowercased wire name of at most [`L1_NAME`] bytes, the query
//! type, the client's address and the Client Subnet address and source
//! prefix) and the answer (the steered records, an `Arc` shared with the
//! steering view's own cache, and the ECS scope). A new key evicts whatever
//! its slot held, so the cache never grows: at most [`L1_SLOTS`] entries
//! (about 100 bytes each, ≈ 100 KiB per thread) plus the templates they
//! share with the steering view. A hit skips the zone lookup, the site-name
//! index (hickory `LowerName` hashing), the view cache's SipHash, shard
//! mutex and reference counts.
//!
//! Entries are valid for one zone snapshot and one steering generation
//! ([`Steering::generation`](super::server::Steering::generation)):
//! [`Worker::begin`], called before each batch, empties the cache when
//! either changed, so a steering change is seen by the next batch. A
//! steering front without generations is never cached.

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;

use super::precomputed::Precomputed;
use super::server::Handler;
use super::template::Template;

/// Slots of the first-level cache (a power of two).
pub const L1_SLOTS: usize = 1024;
/// Longest wire name (with the root byte) the first-level cache keeps.
pub const L1_NAME: usize = 64;

/// The question as the first-level cache keys it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    name: [u8; L1_NAME],
    len: u8,
    qtype: u16,
    client: IpAddr,
    subnet: Option<(IpAddr, u8)>,
}

impl Key {
    /// The key of a question; `None` when the name is too long to cache.
    pub(super) fn new(
        lower_name: &[u8],
        qtype: u16,
        client: IpAddr,
        subnet: Option<(IpAddr, u8)>,
    ) -> Option<Self> {
        let len = u8::try_from(lower_name.len())
            .ok()
            .filter(|l| usize::from(*l) <= L1_NAME)?;
        let mut name = [0u8; L1_NAME];
        name.get_mut(..lower_name.len())?
            .copy_from_slice(lower_name);
        Some(Self {
            name,
            len,
            qtype,
            client,
            subnet,
        })
    }

    fn name(&self) -> &[u8] {
        self.name.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write(self.name());
        h.write_u16(self.qtype);
        self.client.hash(h);
        self.subnet.hash(h);
    }
}

/// One cached steered answer.
struct Slot {
    key: Key,
    records: Arc<Template>,
    scope: u8,
}

/// The first-level cache.
struct L1 {
    slots: Box<[Option<Slot>]>,
    hasher: foldhash::fast::RandomState,
    used: usize,
    hits: u64,
}

impl L1 {
    /// The first slot of the key's pair.
    fn index(&self, key: &Key) -> usize {
        (self.hasher.hash_one(key) as usize) & (L1_SLOTS - 2)
    }

    fn clear(&mut self) {
        if self.used > 0 {
            self.slots.iter_mut().for_each(|s| *s = None);
            self.used = 0;
        }
    }
}

/// The state one worker thread keeps between queries (see the module docs).
pub struct Worker {
    pre: Option<Arc<Precomputed>>,
    generation: Option<u64>,
    l1: Option<L1>,
    /// Responses by transport (UDP, TCP) and response code, not yet added
    /// to the metrics.
    tally: [[u64; 16]; 2],
}

impl Default for Worker {
    fn default() -> Self {
        Self::new()
    }
}

impl Worker {
    /// A worker with a first-level cache (allocated here, once).
    pub fn new() -> Self {
        let mut slots = Vec::with_capacity(L1_SLOTS);
        slots.resize_with(L1_SLOTS, || None);
        Self {
            l1: Some(L1 {
                slots: slots.into_boxed_slice(),
                hasher: foldhash::fast::RandomState::default(),
                used: 0,
                hits: 0,
            }),
            ..Self::without_cache()
        }
    }

    /// A worker without a first-level cache (one query at a time).
    pub fn without_cache() -> Self {
        Self {
            pre: None,
            generation: None,
            l1: None,
            tally: [[0; 16]; 2],
        }
    }

    /// Starts a batch: takes the handler's current zone snapshot and
    /// steering generation, and empties the first-level cache when either
    /// changed since the last batch.
    pub fn begin(&mut self, h: &Handler) {
        let pre = h.precomputed();
        let generation = h.steering.generation();
        let same = match (&self.pre, &pre) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        } && generation.is_some()
            && generation == self.generation;
        if !same {
            if let Some(l1) = &mut self.l1 {
                l1.clear();
            }
        }
        self.pre = pre;
        self.generation = generation;
    }

    /// Ends a batch: adds the responses it counted to the handler's metrics.
    pub fn finish(&mut self, h: &Handler) {
        for (t, transport) in ["udp", "tcp"].into_iter().enumerate() {
            let Some(row) = self.tally.get_mut(t) else {
                continue;
            };
            for (code, n) in row.iter_mut().enumerate() {
                if *n > 0 {
                    h.metrics()
                        .dns_n(transport, ResponseCode::from_low(code as u8), *n);
                    *n = 0;
                }
            }
        }
    }

    /// Entries in the first-level cache.
    pub fn cached(&self) -> usize {
        self.l1.as_ref().map_or(0, |l| l.used)
    }

    /// Answers taken from the first-level cache so far.
    pub fn hits(&self) -> u64 {
        self.l1.as_ref().map_or(0, |l| l.hits)
    }

    /// The batch's zone snapshot (`None`: being rebuilt, use the reference path).
    pub(super) fn pre(&self) -> Option<&Precomputed> {
        self.pre.as_deref()
    }

    /// The cached steered answer for `key`, if the first-level cache is on
    /// and holds it: the records and the ECS scope.
    pub(super) fn get(&mut self, key: &Key) -> Option<(&Template, u8)> {
        self.generation?;
        let l1 = self.l1.as_mut()?;
        let i = l1.index(key);
        let slot = l1
            .slots
            .get(i..i + 2)?
            .iter()
            .flatten()
            .find(|s| s.key == *key)?;
        l1.hits += 1;
        Some((&*slot.records, slot.scope))
    }

    /// Remembers a steered answer (evicting what its slot held).
    pub(super) fn put(&mut self, key: Key, records: &Arc<Template>, scope: u8) {
        if self.generation.is_none() || self.pre.is_none() {
            return;
        }
        let Some(l1) = self.l1.as_mut() else {
            return;
        };
        let i = l1.index(&key);
        let Some(pair) = l1.slots.get_mut(i..i + 2) else {
            return;
        };
        let new = Some(Slot {
            key,
            records: Arc::clone(records),
            scope,
        });
        let added = match pair {
            [first @ None, _] => {
                *first = new;
                1
            }
            [Some(f), _] if f.key == key => {
                pair[0] = new;
                0
            }
            [first, second] => {
                let added = usize::from(second.is_none());
                *second = std::mem::replace(first, new);
                added
            }
            _ => 0,
        };
        l1.used += added;
    }

    /// Counts one response.
    pub(super) fn count(&mut self, tcp: bool, rcode: u8) {
        if let Some(n) = self
            .tally
            .get_mut(usize::from(tcp))
            .and_then(|r| r.get_mut(usize::from(rcode & 0x0F)))
        {
            *n += 1;
        }
    }
}
