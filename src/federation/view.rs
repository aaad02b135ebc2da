//! The steering view: per site, the candidate mirrors with health, load,
//! location and held version, rebuilt a few times a second from the
//! federation state, so a DNS query only does a geo lookup and a pure
//! [`steer`](crate::steer::steer) call over a small vector.

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
/// snapshot so far (a view lives 250 ms; resolvers and ECS prefixes repeat,
/// so most queries are one hash lookup instead of a geo lookup and a
/// ranking).
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
    /// current view (at most 250 ms old) stay until the next view.
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
/// changes, until shutdown.
pub async fn run(
    fed: Arc<Federation>,
    catalog: SharedCatalog,
    view: Arc<ArcSwap<SteerView>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        view.store(Arc::new(SteerView::build(&fed, &catalog)));
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            // A mirror went down or came up: answer accordingly at once.
            _ = fed.health_changed.notified() => {}
            _ = stop.changed() => break,
        }
    }
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
}
