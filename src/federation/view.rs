//! The steering view: per site, the candidate mirrors with health, load,
//! location and held version, rebuilt a few times a second from the
//! federation state, so a DNS query only does a geo lookup and a pure
//! [`steer`](crate::steer::steer) call over a small vector.
//!
//! A rebuilt view replaces the current one only when it would steer
//! differently ([`SteerView::steers_as`]), when the explore slot turns,
//! when a peer's health changed or the configuration was reloaded, or when
//! the current view's answer cache is full. Otherwise the current view,
//! with the answers it has computed and the DNS threads' first-level
//! caches keyed on its generation, stays.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::rr::LowerName;
use tokio::sync::watch;

use super::Federation;
use crate::catalog::{unix_now, SharedCatalog};
use crate::dns::server::{Steered, SteeredWire, Steering};
use crate::dns::template::Template;
use crate::geo::Geo;
use crate::latency::ClientNet;
use crate::sites::authorized;
use crate::steer::ttl::{self, TtlPolicy};
use crate::steer::{self, Candidate, ClientInfo, Family, Policy};

/// Candidates for one site.
#[derive(Debug, Clone, Default)]
pub struct SiteView {
    /// Newest manifest version known.
    pub target: Option<u64>,
    /// Every mirror that could serve it.
    pub candidates: Vec<Candidate>,
}

/// All sites' candidates, and the steering answers computed from this
/// snapshot so far (a view lives from 250 ms until what it steers changes,
/// at most one explore slot of `dns.answer_ttl` seconds; resolvers and ECS
/// prefixes repeat, so most queries are one hash lookup instead of a geo
/// lookup and a ranking).
#[derive(Debug)]
pub struct SteerView {
    /// Distinct for every view built in this process (see
    /// [`Steering::generation`]).
    generation: u64,
    sites: HashMap<String, SiteView>,
    /// Client network → (mirror id, RTT ms) from every mirror's signed
    /// report (only networks with enough samples are reported).
    rtts: HashMap<ClientNet, Vec<([u8; 32], f64)>>,
    /// Site name as DNS asks it → (site number, host key of `sites`).
    by_name: HashMap<LowerName, (usize, String)>,
    answers: AnswerCache,
}

/// (site number, IPv6 asked, the address steering located: ECS address or client).
type AnswerKey = (usize, bool, IpAddr);

/// One steering answer: the addresses, their TTL, and the same as
/// pre-encoded answer records for the DNS fast path.
#[derive(Debug)]
struct CachedAnswer {
    addrs: Vec<IpAddr>,
    ttl: u32,
    wire: Option<Arc<Template>>,
}

/// Most answers cached per view (a flood of distinct client addresses
/// then only costs the uncached path). Each entry is a key, the addresses
/// and their encoded records (about 360 bytes held, measured by
/// `tests/dns_alloc.rs`), so a view holds at most about 6 MB of answers,
/// whatever the number of client prefixes or ECS subnets; at most two views
/// are alive at a time.
const MAX_CACHED_ANSWERS: usize = 16_384;
/// Cache shards (the DNS threads look up concurrently).
const SHARDS: usize = 16;

/// The answers computed from one view, sharded by key.
#[derive(Debug)]
struct AnswerCache {
    shards: Vec<std::sync::Mutex<HashMap<AnswerKey, Arc<CachedAnswer>>>>,
}

impl Default for AnswerCache {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Default::default()).collect(),
        }
    }
}

impl AnswerCache {
    fn shard(
        &self,
        key: &AnswerKey,
    ) -> Option<&std::sync::Mutex<HashMap<AnswerKey, Arc<CachedAnswer>>>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        self.shards.get(h.finish() as usize % SHARDS)
    }

    fn get(&self, key: &AnswerKey) -> Option<Arc<CachedAnswer>> {
        self.shard(key)?.lock().ok()?.get(key).cloned()
    }

    fn insert(&self, key: AnswerKey, a: Arc<CachedAnswer>) {
        if let Some(Ok(mut m)) = self.shard(&key).map(|s| s.lock()) {
            if m.len() < MAX_CACHED_ANSWERS / SHARDS {
                m.insert(key, a);
            }
        }
    }

    /// Whether some shard takes no more answers (a poisoned shard counts
    /// as full).
    fn is_full(&self) -> bool {
        self.shards.iter().any(|s| {
            !s.lock()
                .is_ok_and(|m| m.len() < MAX_CACHED_ANSWERS / SHARDS)
        })
    }
}

/// The rules a view is steered by, for comparing views.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// Ranking policy.
    pub policy: &'a Policy,
    /// Answer TTL policy.
    pub ttl: &'a TtlPolicy,
}

impl Rules<'_> {
    /// Loads that no rule tells apart: equal, or both idle for ranking
    /// ([`steer::load_is_idle`]) and neither busy for the TTL
    /// ([`TtlPolicy::is_busy`]). A mirror's load moves a little all the
    /// time; only crossing a threshold changes an answer.
    fn loads_alike(&self, a: f64, b: f64) -> bool {
        a == b
            || (steer::load_is_idle(a, self.policy)
                && steer::load_is_idle(b, self.policy)
                && !self.ttl.is_busy(a)
                && !self.ttl.is_busy(b))
    }
}

/// Whether two candidates steer alike under `rules`: every field equal,
/// except loads ([`Rules::loads_alike`]) and uptimes, compared by their
/// step on the TTL ramp ([`TtlPolicy::ramp_step`]; nothing else reads the
/// uptime).
fn candidate_steers_as(a: &Candidate, b: &Candidate, rules: Rules<'_>) -> bool {
    // Destructured so that a new field must be considered here.
    let Candidate {
        id,
        addrs,
        point,
        rtt_ms,
        load,
        healthy,
        authorized,
        version,
        up_secs,
        flaps,
    } = a;
    *id == b.id
        && *addrs == b.addrs
        && *point == b.point
        && *rtt_ms == b.rtt_ms
        && rules.loads_alike(*load, b.load)
        && *healthy == b.healthy
        && *authorized == b.authorized
        && *version == b.version
        && rules.ttl.ramp_step(*up_secs) == rules.ttl.ramp_step(b.up_secs)
        && *flaps == b.flaps
}

/// Source of [`SteerView::generation`]: every view built takes the next number.
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Default for SteerView {
    fn default() -> Self {
        Self::from_sites(HashMap::new())
    }
}

/// The DNS names of the sites, numbered.
fn name_index(sites: &HashMap<String, SiteView>) -> HashMap<LowerName, (usize, String)> {
    sites
        .keys()
        .enumerate()
        .filter_map(|(i, host)| {
            let n = LowerName::from_str(&format!("{host}.")).ok()?;
            Some((n, (i, host.clone())))
        })
        .collect()
}

impl SteerView {
    /// Builds the view from the catalog and the federation's peers.
    pub fn build(fed: &Federation, catalog: &SharedCatalog) -> Self {
        let now = unix_now();
        let cfg = fed.config();
        let cat = catalog.load();
        let peers = fed.peers();
        let probe_secs = cfg.federation.probe_interval_ms as f64 / 1000.0;
        let own_up = fed.started.elapsed().as_secs();
        let (rps, bps) = fed.load.rates();
        let own_load = crate::report::Load {
            rps,
            bps,
            connections: 0,
        }
        .fraction(&crate::report::Capacity {
            rps: cfg.node.capacity_rps,
            bps: cfg.node.capacity_bps,
        });
        let mut rtts: HashMap<ClientNet, Vec<([u8; 32], f64)>> = HashMap::new();
        let own = fed.own_report();
        let reports = own.iter().map(|r| (*fed.me.as_bytes(), &r.report)).chain(
            peers
                .iter()
                .filter_map(|p| Some((*p.key.as_bytes(), &p.report.as_ref()?.report))),
        );
        for (id, r) in reports {
            for n in &r.client_rtt {
                rtts.entry(n.net).or_default().push((id, n.rtt_ms));
            }
        }
        let mut sites = HashMap::new();
        for live in cat.sites() {
            let host = &live.config.hostname;
            let mirrors = live
                .newest
                .as_ref()
                .map(|m| m.manifest.mirrors.clone())
                .unwrap_or_default();
            let mut candidates = vec![];
            let margin = cfg.steering.cert_margin_secs;
            // TLS: never steer to a mirror without a certificate for the
            // site that stays valid beyond the margin.
            let own_cert_ok = fed.certs().is_none_or(|store| {
                store
                    .valid_for(host, now)
                    .is_some_and(|c| c.not_after > now.saturating_add(margin))
            });
            if live.config.mirror && own_cert_ok {
                candidates.push(Candidate {
                    id: *fed.me.as_bytes(),
                    addrs: cfg.node.addresses.clone(),
                    point: cfg.node.location,
                    rtt_ms: None,
                    load: own_load,
                    healthy: true,
                    authorized: authorized(&mirrors, &fed.me),
                    version: live.current.as_ref().map(|m| m.manifest.version),
                    up_secs: own_up,
                    flaps: 0,
                });
            }
            for p in &peers {
                let Some(r) = p.report.as_ref().map(|r| &r.report) else {
                    continue;
                };
                if !r.cert_ok(host, now, margin) {
                    continue;
                }
                candidates.push(Candidate {
                    id: *p.key.as_bytes(),
                    addrs: fed.answerable_addresses(p),
                    point: fed.peer_location(p),
                    rtt_ms: None,
                    load: r.load.fraction(&r.capacity),
                    healthy: p.healthy(now),
                    authorized: authorized(&mirrors, &p.key),
                    version: p.holds(host, now),
                    // Steadily up for this many probes.
                    up_secs: (f64::from(p.probe.ok_streak()) * probe_secs) as u64,
                    flaps: p.probe.flaps(),
                });
            }
            sites.insert(
                host.clone(),
                SiteView {
                    target: live.newest.as_ref().map(|m| m.manifest.version),
                    candidates,
                },
            );
        }
        Self {
            generation: next_generation(),
            by_name: name_index(&sites),
            sites,
            rtts,
            answers: Default::default(),
        }
    }

    /// A view of the given sites (no federation state; for tests and tools).
    pub fn from_sites(sites: HashMap<String, SiteView>) -> Self {
        Self {
            generation: next_generation(),
            by_name: name_index(&sites),
            sites,
            rtts: HashMap::new(),
            answers: Default::default(),
        }
    }

    /// The same view with mirrors' RTT measurements, by client network
    /// (for tests and tools).
    pub fn with_rtts(mut self, rtts: HashMap<ClientNet, Vec<([u8; 32], f64)>>) -> Self {
        self.rtts = rtts;
        self
    }

    /// A site's candidates with the RTTs measured to `ip`'s network, if
    /// any mirror has measured it (else borrowed as they are).
    fn measured<'a>(&self, sv: &'a SiteView, ip: IpAddr) -> std::borrow::Cow<'a, [Candidate]> {
        let Some(list) = self.rtts.get(&ClientNet::of(ip)) else {
            return std::borrow::Cow::Borrowed(&sv.candidates);
        };
        let mut c = sv.candidates.clone();
        for m in &mut c {
            m.rtt_ms = list.iter().find(|(id, _)| *id == m.id).map(|(_, r)| *r);
        }
        std::borrow::Cow::Owned(c)
    }

    /// This view's number: distinct for every view built in this process.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether this view steers every query as `other` does, given the
    /// same parameters and explore slot: the same sites with the same
    /// target versions and candidates (in the same order, alike under
    /// `rules`: [`candidate_steers_as`]) and the same measured RTTs. A NaN
    /// RTT makes views differ.
    pub fn steers_as(&self, other: &SteerView, rules: Rules<'_>) -> bool {
        self.rtts == other.rtts
            && self.sites.len() == other.sites.len()
            && self.sites.iter().all(|(host, a)| {
                other.sites.get(host).is_some_and(|b| {
                    a.target == b.target
                        && a.candidates.len() == b.candidates.len()
                        && a.candidates
                            .iter()
                            .zip(&b.candidates)
                            .all(|(x, y)| candidate_steers_as(x, y, rules))
                })
            })
    }

    /// A site's view.
    pub fn site(&self, host: &str) -> Option<&SiteView> {
        self.sites.get(host)
    }
}

/// What steering decides with besides the view: the geolocation database
/// (with the operator's prefix overrides) and the policy knobs. Swapped
/// whole by a configuration reload.
#[derive(Clone)]
pub struct SteerParams {
    /// Geolocation database, if configured.
    pub geo: Option<Arc<Geo>>,
    /// Ranking policy.
    pub policy: Policy,
    /// Answer TTL policy.
    pub ttl: TtlPolicy,
    /// One answer slot in this many per client network explores (0: never).
    pub explore_every: u32,
}

/// DNS steering backed by the view and the geolocation database.
pub struct FederatedSteering {
    view: Arc<ArcSwap<SteerView>>,
    params: ArcSwap<SteerParams>,
}

impl FederatedSteering {
    /// Creates the steering front and the shared view. One answer slot (of
    /// `ttl.standard` seconds) in `explore_every` per client network
    /// explores (0: never).
    pub fn new(
        geo: Option<Arc<Geo>>,
        policy: Policy,
        ttl: TtlPolicy,
        explore_every: u32,
    ) -> (Self, Arc<ArcSwap<SteerView>>) {
        let view = Arc::new(ArcSwap::from_pointee(SteerView::default()));
        (
            Self {
                view: view.clone(),
                params: ArcSwap::from_pointee(SteerParams {
                    geo,
                    policy,
                    ttl,
                    explore_every,
                }),
            },
            view,
        )
    }

    /// Steers with `params` from now on. Answers already computed from the
    /// current view stay until the next view, which the reload asks for at
    /// once (`health_changed`).
    pub fn set_params(&self, params: SteerParams) {
        self.params.store(Arc::new(params));
    }

    /// The steering decision and its TTL for a client located at `ip`.
    fn answer(
        &self,
        view: &SteerView,
        sv: &SiteView,
        ip: IpAddr,
        v6: bool,
        now: u64,
    ) -> (Vec<IpAddr>, u32) {
        let p = self.params.load();
        let point = p
            .geo
            .as_ref()
            .and_then(|g| g.lookup(ip))
            .and_then(|l| l.point);
        let prefix_key = prefix_key(ip);
        let slot = now / u64::from(p.ttl.standard.max(1));
        let ci = ClientInfo {
            point,
            prefix_key,
            explore: steer::explore_seed(prefix_key, slot, p.explore_every),
        };
        let family = if v6 { Family::V6 } else { Family::V4 };
        let candidates = view.measured(sv, ip);
        let d = steer::decide(&ci, &candidates, sv.target, &p.policy, family);
        let ttl = ttl::choose(&p.ttl, &d, &candidates);
        (d.addrs(), ttl.secs)
    }
}

/// A stable key for the client's /24 (IPv4) or /56 (IPv6), for tie spreading.
pub fn prefix_key(ip: IpAddr) -> u64 {
    let masked: IpAddr = match ip {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) & 0xffff_ff00).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 72) - 1)).into()),
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    masked.hash(&mut h);
    h.finish()
}

impl FederatedSteering {
    /// The answer for `site` from the current view's cache, computed and
    /// cached on a miss (no allocation on a hit).
    fn cached(
        &self,
        site: &LowerName,
        v6: bool,
        client: IpAddr,
        subnet: Option<(IpAddr, u8)>,
    ) -> Option<Arc<CachedAnswer>> {
        let view = self.view.load();
        let (idx, host) = view.by_name.get(site)?;
        let sv = view.site(host)?;
        let ip = subnet.map_or(client, |s| s.0);
        let key: AnswerKey = (*idx, v6, ip);
        if let Some(a) = view.answers.get(&key) {
            return Some(a);
        }
        let (addrs, ttl) = self.answer(&view, sv, ip, v6, unix_now());
        let wire = Template::steered(site, v6, &addrs, ttl).map(Arc::new);
        let a = Arc::new(CachedAnswer { addrs, ttl, wire });
        view.answers.insert(key, Arc::clone(&a));
        Some(a)
    }
}

/// RFC 7871: the answer depends on the client's network, at most /24 or /56.
fn ecs_scope(subnet: Option<(IpAddr, u8)>) -> u8 {
    subnet.map_or(0, |(a, p)| p.min(if a.is_ipv4() { 24 } else { 56 }))
}

impl Steering for FederatedSteering {
    fn generation(&self) -> Option<u64> {
        Some(self.view.load().generation)
    }

    fn addresses(
        &self,
        site: &LowerName,
        v6: bool,
        client: IpAddr,
        subnet: Option<(IpAddr, u8)>,
    ) -> Option<Steered> {
        let a = self.cached(site, v6, client, subnet)?;
        if a.addrs.is_empty() {
            return None;
        }
        Some(Steered {
            addrs: a.addrs.clone(),
            scope: ecs_scope(subnet),
            ttl: a.ttl,
        })
    }

    fn steered_wire(
        &self,
        site: &LowerName,
        v6: bool,
        client: IpAddr,
        subnet: Option<(IpAddr, u8)>,
    ) -> SteeredWire {
        match self
            .cached(site, v6, client, subnet)
            .and_then(|a| a.wire.clone())
        {
            Some(records) => SteeredWire::Answer {
                records,
                scope: ecs_scope(subnet),
            },
            None => SteeredWire::NoAnswer,
        }
    }
}

/// Rebuilds the view every 250 ms, and at once when a peer's health
/// changes (or the configuration was reloaded), until shutdown. A rebuilt
/// view replaces the current one when [`replace_view`] says so.
pub async fn run(
    fed: Arc<Federation>,
    catalog: SharedCatalog,
    view: Arc<ArcSwap<SteerView>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut forced = true;
    let mut slot = None;
    loop {
        let cfg = fed.config();
        let (policy, ttl) = (
            crate::reload::steer_policy(&cfg),
            crate::reload::ttl_policy(&cfg),
        );
        let rules = Rules {
            policy: &policy,
            ttl: &ttl,
        };
        let now_slot = unix_now() / u64::from(ttl.standard.max(1));
        let new = SteerView::build(&fed, &catalog);
        if replace_view(&view.load(), &new, forced, slot == Some(now_slot), rules) {
            view.store(Arc::new(new));
            slot = Some(now_slot);
            fed.metrics.steer_views.inc();
        }
        forced = tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => false,
            // A mirror went down or came up, or a reload changed the
            // steering parameters: answer accordingly at once.
            _ = fed.health_changed.notified() => true,
            _ = stop.changed() => break,
        };
    }
}

/// Whether `new` replaces the `current` view. It does when asked to
/// (`forced`: health change, reload, start), when the explore slot of the
/// current view's answers has passed (answers depend on it,
/// [`steer::explore_seed`]), when `current`'s answer cache is full (so a
/// flood of distinct clients is answered from fresh caches, as before), or
/// when `new` would steer differently. Keeping `current` keeps its cached
/// answers and the DNS threads' caches, which a new generation empties.
pub fn replace_view(
    current: &SteerView,
    new: &SteerView,
    forced: bool,
    same_slot: bool,
    rules: Rules<'_>,
) -> bool {
    forced || !same_slot || current.answers.is_full() || !new.steers_as(current, rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::GeoPoint;
    use std::str::FromStr;

    const CITIES: [(f64, f64); 5] = [
        (50.11, 8.68),
        (40.71, -74.01),
        (1.35, 103.82),
        (-23.55, -46.63),
        (-33.87, 151.21),
    ];

    fn view(healthy: [bool; 5]) -> SteerView {
        let candidates = CITIES
            .iter()
            .enumerate()
            .map(|(i, &(lat, lon))| Candidate {
                id: [i as u8 + 1; 32],
                addrs: vec![IpAddr::from([10, i as u8 + 1, 0, 1])],
                point: Some(GeoPoint { lat, lon }),
                rtt_ms: None,
                load: 0.1,
                healthy: healthy[i],
                authorized: true,
                version: Some(7),
                up_secs: 3600,
                flaps: 0,
            })
            .collect();
        let mut sites = HashMap::new();
        sites.insert(
            "www.t.test".to_string(),
            SiteView {
                target: Some(7),
                candidates,
            },
        );
        SteerView::from_sites(sites)
    }

    #[test]
    fn cached_answers_equal_computed_ones_and_follow_new_views() {
        let db = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("geodata/test/steering-test-city.mmdb"),
        )
        .unwrap();
        let geo = Arc::new(Geo::from_bytes(db, vec![]).unwrap());
        let (steering, shared) = FederatedSteering::new(
            Some(geo.clone()),
            Policy::default(),
            TtlPolicy::default(),
            0,
        );
        shared.store(Arc::new(view([true; 5])));
        let site = LowerName::from_str("www.t.test.").unwrap();
        let direct = |v: &SteerView, ip: IpAddr| {
            let sv = v.site("www.t.test").unwrap();
            let ci = ClientInfo {
                point: geo.lookup(ip).and_then(|l| l.point),
                prefix_key: prefix_key(ip),
                explore: None,
            };
            steer::steer(
                &ci,
                &sv.candidates,
                sv.target,
                &Policy::default(),
                Family::V4,
            )
        };
        let clients: Vec<IpAddr> = (1..=5u8)
            .flat_map(|c| [IpAddr::from([127, c, 0, 9]), IpAddr::from([127, c, 3, 200])])
            .collect();
        for round in 0..3 {
            for &ip in &clients {
                let got = steering.addresses(&site, false, ip, None).unwrap();
                assert_eq!(got.addrs, direct(&shared.load(), ip), "round {round}, {ip}");
                assert_eq!(got.scope, 0);
                // The same answer through ECS, with its scope.
                let ecs = steering
                    .addresses(&site, false, IpAddr::from([192, 0, 2, 1]), Some((ip, 24)))
                    .unwrap();
                assert_eq!(ecs.addrs, got.addrs);
                assert_eq!(ecs.scope, 24);
            }
        }
        // Singapore's clients get Singapore first; once a new view marks it
        // unhealthy, the cached answer of the old view is not used.
        let sg = IpAddr::from([127, 3, 0, 9]);
        assert_eq!(
            steering.addresses(&site, false, sg, None).unwrap().addrs[0],
            IpAddr::from([10, 3, 0, 1])
        );
        shared.store(Arc::new(view([true, true, false, true, true])));
        let after = steering.addresses(&site, false, sg, None).unwrap().addrs;
        assert!(!after.contains(&IpAddr::from([10, 3, 0, 1])), "{after:?}");
        assert_eq!(after, direct(&shared.load(), sg));
        // No IPv6 addresses: no answer (the zone's fallback applies).
        assert!(steering.addresses(&site, true, sg, None).is_none());
        assert!(steering
            .addresses(
                &LowerName::from_str("other.t.test.").unwrap(),
                false,
                sg,
                None
            )
            .is_none());
    }

    #[test]
    fn measured_rtts_from_reports_steer_where_they_exist() {
        let db = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("geodata/test/steering-test-city.mmdb"),
        )
        .unwrap();
        let geo = Arc::new(Geo::from_bytes(db, vec![]).unwrap());
        let (steering, shared) =
            FederatedSteering::new(Some(geo), Policy::default(), TtlPolicy::default(), 0);
        let site = LowerName::from_str("www.t.test.").unwrap();
        let fra_client = IpAddr::from([127, 1, 0, 9]);
        let other_fra_net = IpAddr::from([127, 1, 3, 200]);
        let net: ClientNet = ClientNet::of(fra_client);
        // Frankfurt measured Frankfurt's clients at 200 ms (a bad route), New
        // York at 70 ms (light allows 62), Sydney "at 1 ms" (impossible).
        let mut rtts = HashMap::new();
        rtts.insert(net, vec![([1; 32], 200.0), ([2; 32], 70.0), ([5; 32], 1.0)]);
        shared.store(Arc::new(view([true; 5]).with_rtts(rtts)));
        let got = steering.addresses(&site, false, fra_client, None).unwrap();
        assert_eq!(got.addrs, vec![IpAddr::from([10, 2, 0, 1])]);
        // Through ECS for the same /24, too.
        let ecs = steering
            .addresses(
                &site,
                false,
                IpAddr::from([192, 0, 2, 1]),
                Some((fra_client, 24)),
            )
            .unwrap();
        assert_eq!(ecs.addrs, got.addrs);
        // Another Frankfurt network has no measurements: distance decides.
        let got = steering
            .addresses(&site, false, other_fra_net, None)
            .unwrap();
        assert_eq!(got.addrs, vec![IpAddr::from([10, 1, 0, 1])]);
        // Stable mirrors, a clear decision: the standard TTL.
        assert_eq!(got.ttl, TtlPolicy::default().standard);
    }

    /// `view` with `f` applied to its site's candidates.
    fn edited(f: impl FnOnce(&mut Vec<Candidate>)) -> SteerView {
        let mut v = view([true; 5]);
        if let Some(sv) = v.sites.get_mut("www.t.test") {
            f(&mut sv.candidates);
        }
        v
    }

    #[test]
    fn views_that_steer_alike_are_recognized() {
        let (policy, ttl) = (Policy::default(), TtlPolicy::default());
        let rules = Rules {
            policy: &policy,
            ttl: &ttl,
        };
        let a = view([true; 5]);
        assert!(view([true; 5]).steers_as(&a, rules));
        // Uptimes past the end of the TTL ramp are alike.
        let older = edited(|c| c[2].up_secs = 7200);
        assert!(older.steers_as(&a, rules));
        // Within the ramp, uptimes on the same step are alike (default
        // ramp: 5 s to 30 s over 300 s, a step every 12 s); on different
        // steps they are not (the TTL differs).
        let step = |up| edited(|c| c[2].up_secs = up);
        assert!(step(12).steers_as(&step(23), rules));
        assert!(!step(11).steers_as(&step(12), rules));
        assert!(!step(299).steers_as(&step(300), rules));
        // Loads below the spill threshold (0.8) and the busy load (0.8)
        // are alike, NaN and negative ones count as idle.
        for load in [0.0, 0.2, 0.79, f64::NAN, -1.0] {
            assert!(
                edited(|c| c[0].load = load).steers_as(&a, rules),
                "load {load}"
            );
        }
        let loaded = edited(|c| c[0].load = 0.85);
        assert!(loaded.steers_as(&edited(|c| c[0].load = 0.85), rules));
        type Edit<'a> = &'a dyn Fn(&mut Vec<Candidate>);
        let differs: [Edit<'_>; 10] = [
            &|c| c[0].load = 0.8,
            &|c| c[0].load = 0.85,
            &|c| c[0].load = 1.5,
            &|c| c[1].healthy = false,
            &|c| c[1].version = Some(8),
            &|c| c[3].authorized = false,
            &|c| c[3].flaps = 1,
            &|c| c[4].addrs.push(IpAddr::from([10, 9, 9, 9])),
            &|c| c[4].rtt_ms = Some(12.0),
            &|c| {
                c.pop();
            },
        ];
        for (i, f) in differs.iter().enumerate() {
            let b = edited(|c| f(c));
            assert!(!b.steers_as(&a, rules), "change {i} went unnoticed");
            assert!(
                !a.steers_as(&b, rules),
                "change {i} went unnoticed (reversed)"
            );
        }
        let mut target = view([true; 5]);
        if let Some(sv) = target.sites.get_mut("www.t.test") {
            sv.target = Some(8);
        }
        assert!(!target.steers_as(&a, rules));
        let mut more = view([true; 5]);
        more.sites
            .insert("other.t.test".into(), SiteView::default());
        assert!(!more.steers_as(&a, rules) && !a.steers_as(&more, rules));
        let net = ClientNet::of(IpAddr::from([127, 3, 0, 9]));
        let rtt = view([true; 5]).with_rtts(HashMap::from([(net, vec![([1; 32], 80.0)])]));
        assert!(!rtt.steers_as(&a, rules));
        // Two loaded mirrors are compared exactly (the penalty grows).
        assert!(!loaded.steers_as(&edited(|c| c[0].load = 0.86), rules));
        // A spill threshold of 1 or more turns the penalty off: loads up to
        // capacity are then alike for ranking, still not for the TTL.
        let lax = Policy {
            spill_threshold: 1.0,
            ..Policy::default()
        };
        let lax_ttl = TtlPolicy {
            busy_load: 2.0,
            ..TtlPolicy::default()
        };
        let lax = Rules {
            policy: &lax,
            ttl: &lax_ttl,
        };
        assert!(loaded.steers_as(&a, lax));
        assert!(!edited(|c| c[0].load = 1.01).steers_as(&a, lax));
    }

    #[test]
    fn the_current_view_and_its_answers_stay_while_nothing_changes() {
        let (policy, ttl) = (Policy::default(), TtlPolicy::default());
        let rules = Rules {
            policy: &policy,
            ttl: &ttl,
        };
        let (steering, shared) =
            FederatedSteering::new(None, Policy::default(), TtlPolicy::default(), 0);
        shared.store(Arc::new(view([true; 5])));
        let site = LowerName::from_str("www.t.test.").unwrap();
        let client = IpAddr::from([127, 3, 0, 9]);
        let first = steering.cached(&site, false, client, None).unwrap();
        let current = shared.load_full();
        // An equal rebuild is not swapped in: the cached answer stays.
        assert!(!replace_view(
            &current,
            &view([true; 5]),
            false,
            true,
            rules
        ));
        let again = steering.cached(&site, false, client, None).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        // Forced (health change, reload), a new explore slot, or a view
        // that steers differently replaces it.
        assert!(replace_view(&current, &view([true; 5]), true, true, rules));
        assert!(replace_view(
            &current,
            &view([true; 5]),
            false,
            false,
            rules
        ));
        assert!(replace_view(
            &current,
            &view([false, true, true, true, true]),
            false,
            true,
            rules
        ));
        // So does a full answer cache (distinct clients then get fresh
        // caches every rebuild, as before views were kept).
        for i in 0..u32::try_from(MAX_CACHED_ANSWERS * 2).unwrap() {
            let ip = IpAddr::from((10u32 << 24 | i).to_be_bytes());
            steering.cached(&site, false, ip, None).unwrap();
        }
        assert!(current.answers.is_full());
        assert!(replace_view(&current, &view([true; 5]), false, true, rules));
    }
}
