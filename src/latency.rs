//! Client round-trip times aggregated per client network. Pure: no I/O, no
//! clock (every call takes `now`, unix seconds).
//!
//! The HTTP(S) listeners feed one sample per client connection, the kernel's
//! smoothed RTT of that connection (see `http::rtt`). The [`Aggregator`]
//! folds samples into per-network state; a node's signed report carries
//! [`Aggregator::snapshot`] as `client_rtt`, and steering looks a client up
//! with [`rtt_for`].
//!
//! Invariants:
//! - A client network is an IPv4 /24 or an IPv6 /48 ([`ClientNet`]);
//!   IPv4-mapped IPv6 addresses count as IPv4.
//! - Nothing per client is kept: the state is keyed by network, and holds
//!   only per-minute sample counts and the last [`RECENT`] RTT values of the
//!   network, with the minute they were taken. Two clients of one network
//!   that send the same samples leave exactly the same state.
//! - Samples older than [`WINDOW_SECS`] do not count and are dropped.
//! - At most [`MAX_NETWORKS`] networks are held; a new network evicts the
//!   one with the fewest samples in the window (then the longest unseen,
//!   then the lowest network), so established networks survive a flood of
//!   new ones.
//! - A snapshot lists only networks with at least [`MIN_SAMPLES`] samples in
//!   the window, at most [`MAX_REPORTED`] of them, the most sampled first
//!   (ties by network), RTT rounded up to 0.1 ms.
//!
//! Nothing survives a restart: the state lives in memory only.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Samples count for this long, seconds.
pub const WINDOW_SECS: u64 = 600;
/// Width of one counting slot, seconds.
const SLOT_SECS: u64 = 60;
/// Slots in the window.
const SLOTS: usize = (WINDOW_SECS / SLOT_SECS) as usize;
/// Samples a network needs in the window before it is reported.
pub const MIN_SAMPLES: u32 = 5;
/// Networks held at most.
pub const MAX_NETWORKS: usize = 4096;
/// Networks in one snapshot (and in one report) at most.
pub const MAX_REPORTED: usize = 256;
/// RTT values kept per network for the median.
pub const RECENT: usize = 16;
/// Largest RTT accepted in a sample or a report, milliseconds.
pub const MAX_RTT_MS: f64 = 60_000.0;
/// Largest RTT accepted in a sample, microseconds.
const MAX_RTT_US: u32 = 60_000_000;

/// Why a client network or an aggregate list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LatencyError {
    /// Not `<IPv4>/24` or `<IPv6>/48` with the host bits zero.
    #[error("invalid client network {0:?}: want a.b.c.0/24 or an IPv6 /48")]
    BadNet(String),
    /// More aggregates than [`MAX_REPORTED`].
    #[error("{0} client RTT aggregates, at most {MAX_REPORTED} allowed")]
    TooMany(usize),
    /// An RTT that is not finite, negative or above [`MAX_RTT_MS`].
    #[error("client RTT {rtt_ms} ms for {net} is not in 0..={MAX_RTT_MS}")]
    BadRtt {
        /// Network.
        net: ClientNet,
        /// The RTT given, as text.
        rtt_ms: String,
    },
    /// A sample count of zero.
    #[error("client RTT aggregate for {0} has no samples")]
    NoSamples(ClientNet),
    /// The same network listed twice.
    #[error("client network {0} listed twice")]
    Duplicate(ClientNet),
}

/// A client's network: an IPv4 /24 or an IPv6 /48.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientNet {
    /// The first three octets of an IPv4 address.
    V4([u8; 3]),
    /// The first six octets of an IPv6 address.
    V6([u8; 6]),
}

impl ClientNet {
    /// The network of `ip` (IPv4-mapped IPv6 counts as IPv4).
    pub fn of(ip: IpAddr) -> Self {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                Self::V4([a, b, c])
            }
            IpAddr::V6(v6) => {
                let o = v6.octets();
                Self::V6([o[0], o[1], o[2], o[3], o[4], o[5]])
            }
        }
    }

    /// True if `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Self::of(ip) == *self
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> IpAddr {
        match *self {
            Self::V4([a, b, c]) => IpAddr::V4(Ipv4Addr::new(a, b, c, 0)),
            Self::V6(p) => {
                let mut o = [0u8; 16];
                o[..6].copy_from_slice(&p);
                IpAddr::V6(Ipv6Addr::from(o))
            }
        }
    }

    /// 24 or 48.
    pub fn prefix_len(&self) -> u8 {
        match self {
            Self::V4(_) => 24,
            Self::V6(_) => 48,
        }
    }
}

impl fmt::Display for ClientNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix_len())
    }
}

impl FromStr for ClientNet {
    type Err = LatencyError;

    /// Parses `a.b.c.0/24` or `<IPv6 with only the first 48 bits set>/48`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || LatencyError::BadNet(s.chars().take(64).collect());
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        let net = match (ip, len) {
            (IpAddr::V4(_), "24") => Self::of(ip),
            // A mapped address would silently turn into an IPv4 network.
            (IpAddr::V6(v6), "48") if v6.to_ipv4_mapped().is_none() => Self::of(ip),
            _ => return Err(bad()),
        };
        if net.network() != ip {
            return Err(bad());
        }
        Ok(net)
    }
}

impl Serialize for ClientNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClientNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One network's measured RTT, as reported. Wire form: a JSON array
/// `["10.3.1.0/24", 12.5, 40]` (network, RTT in ms, samples in the window).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "NetRttWire", into = "NetRttWire")]
pub struct NetRtt {
    /// The client network.
    pub net: ClientNet,
    /// Median smoothed RTT of the network's recent connections, ms, rounded
    /// up to a multiple of 0.1.
    pub rtt_ms: f64,
    /// Samples (client connections) in the window.
    pub samples: u32,
}

type NetRttWire = (ClientNet, f64, u32);

impl From<NetRttWire> for NetRtt {
    fn from((net, rtt_ms, samples): NetRttWire) -> Self {
        Self {
            net,
            rtt_ms,
            samples,
        }
    }
}

impl From<NetRtt> for NetRttWire {
    fn from(n: NetRtt) -> Self {
        (n.net, n.rtt_ms, n.samples)
    }
}

/// The aggregate for `ip`'s network in `aggs`, if there is one.
pub fn rtt_for(aggs: &[NetRtt], ip: IpAddr) -> Option<&NetRtt> {
    let net = ClientNet::of(ip);
    aggs.iter().find(|a| a.net == net)
}

/// Checks a received aggregate list: at most [`MAX_REPORTED`] entries, each
/// network once, RTT finite in `0..=MAX_RTT_MS`, at least one sample.
pub fn validate(aggs: &[NetRtt]) -> Result<(), LatencyError> {
    if aggs.len() > MAX_REPORTED {
        return Err(LatencyError::TooMany(aggs.len()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for a in aggs {
        if !(a.rtt_ms.is_finite() && (0.0..=MAX_RTT_MS).contains(&a.rtt_ms)) {
            return Err(LatencyError::BadRtt {
                net: a.net,
                rtt_ms: a.rtt_ms.to_string(),
            });
        }
        if a.samples == 0 {
            return Err(LatencyError::NoSamples(a.net));
        }
        if !seen.insert(a.net) {
            return Err(LatencyError::Duplicate(a.net));
        }
    }
    Ok(())
}

/// Microseconds to milliseconds, rounded up to a multiple of 0.1 (so a
/// measured RTT is never reported as 0).
fn round_up_ms(us: u32) -> f64 {
    f64::from(us.div_ceil(100)) / 10.0
}

fn minute(now: u64) -> u64 {
    now / SLOT_SECS
}

/// True if a sample taken in minute `at` still counts in minute `now_min`.
fn in_window(at: u64, now_min: u64) -> bool {
    now_min.saturating_sub(at) < SLOTS as u64
}

/// One network's samples: counts per minute slot and the last RTTs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NetState {
    /// `(minute, count)`, slot `minute % SLOTS`.
    counts: [(u64, u32); SLOTS],
    /// The last [`RECENT`] samples, `(minute, rtt µs)`, oldest first.
    recent: Vec<(u64, u32)>,
    /// Minute of the newest sample.
    last: u64,
}

impl NetState {
    fn new() -> Self {
        Self {
            counts: [(0, 0); SLOTS],
            recent: Vec::with_capacity(RECENT),
            last: 0,
        }
    }

    fn add(&mut self, rtt_us: u32, now_min: u64) {
        let slot = &mut self.counts[(now_min % SLOTS as u64) as usize];
        if slot.0 != now_min {
            *slot = (now_min, 0);
        }
        slot.1 = slot.1.saturating_add(1);
        if self.recent.len() >= RECENT {
            self.recent.remove(0);
        }
        self.recent.push((now_min, rtt_us));
        self.last = self.last.max(now_min);
    }

    /// Samples in the window ending at `now_min`.
    fn count(&self, now_min: u64) -> u32 {
        self.counts
            .iter()
            .filter(|(m, _)| in_window(*m, now_min))
            .fold(0u32, |acc, (_, c)| acc.saturating_add(*c))
    }

    /// Median (lower middle) of the recent RTTs still in the window, µs.
    fn median_us(&self, now_min: u64) -> Option<u32> {
        let mut v: Vec<u32> = self
            .recent
            .iter()
            .filter(|(m, _)| in_window(*m, now_min))
            .map(|(_, us)| *us)
            .collect();
        v.sort_unstable();
        v.get(v.len().checked_sub(1)? / 2).copied()
    }
}

/// Per-network RTT aggregates with bounded memory (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregator {
    nets: BTreeMap<ClientNet, NetState>,
    limit: usize,
}

impl Default for Aggregator {
    fn default() -> Self {
        Self::new()
    }
}

impl Aggregator {
    /// An empty aggregator holding up to [`MAX_NETWORKS`] networks.
    pub fn new() -> Self {
        Self::with_limit(MAX_NETWORKS)
    }

    /// An empty aggregator holding up to `limit` (at least 1) networks.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            nets: BTreeMap::new(),
            limit: limit.max(1),
        }
    }

    /// Networks held (reported or not).
    pub fn len(&self) -> usize {
        self.nets.len()
    }

    /// True if no network is held.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Folds in one connection's smoothed RTT. Returns false (and keeps
    /// nothing) for a zero or implausible (> [`MAX_RTT_MS`]) value.
    pub fn record(&mut self, ip: IpAddr, srtt_us: u32, now: u64) -> bool {
        if srtt_us == 0 || srtt_us > MAX_RTT_US {
            return false;
        }
        let net = ClientNet::of(ip);
        let now_min = minute(now);
        if !self.nets.contains_key(&net) && self.nets.len() >= self.limit {
            self.make_room(now_min);
        }
        self.nets
            .entry(net)
            .or_insert_with(NetState::new)
            .add(srtt_us, now_min);
        true
    }

    /// Drops networks with no sample in the window.
    pub fn expire(&mut self, now: u64) {
        let now_min = minute(now);
        self.nets.retain(|_, s| in_window(s.last, now_min));
    }

    /// Frees one place: expired networks first, else the least sampled.
    fn make_room(&mut self, now_min: u64) {
        self.nets.retain(|_, s| in_window(s.last, now_min));
        if self.nets.len() < self.limit {
            return;
        }
        let victim = self
            .nets
            .iter()
            .min_by_key(|(net, s)| (s.count(now_min), s.last, **net))
            .map(|(net, _)| *net);
        if let Some(net) = victim {
            self.nets.remove(&net);
        }
    }

    /// The reportable aggregates at `now`: networks with at least
    /// [`MIN_SAMPLES`] samples in the window, the most sampled first (ties
    /// by network), at most [`MAX_REPORTED`].
    pub fn snapshot(&self, now: u64) -> Vec<NetRtt> {
        let now_min = minute(now);
        let mut v: Vec<NetRtt> = self
            .nets
            .iter()
            .filter_map(|(net, s)| {
                let samples = s.count(now_min);
                if samples < MIN_SAMPLES {
                    return None;
                }
                Some(NetRtt {
                    net: *net,
                    rtt_ms: round_up_ms(s.median_us(now_min)?),
                    samples,
                })
            })
            .collect();
        v.sort_by(|a, b| b.samples.cmp(&a.samples).then(a.net.cmp(&b.net)));
        v.truncate(MAX_REPORTED);
        v
    }
}

#[cfg(test)]
mod tests;
