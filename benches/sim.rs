//! Simulation benchmark of the federation at scale: an in-process network
//! of N instances (N = 10, 100, 1,000, 3,000), 20 of them authorities, 50
//! sites, with a virtual clock. Run with:
//!
//! ```text
//! cargo bench --bench sim            # all sizes
//! cargo bench --bench sim -- 100     # one size
//! cargo bench --bench sim -- --ttl=60 # report_ttl_secs = 60 (default 15)
//! ```
//!
//! It runs the real protocol code and wire types: reports are signed and
//! verified with ed25519 (`report::sign_report`, `report::verify_signed`),
//! re-signed on `agent::report_due`; every exchange is the protocol 2
//! `/sync` (a second one for the differing buckets of a large view) +
//! `/push` built from `federation::gossip` (fingerprint, answer, buckets,
//! plan, serve, triage) and serialized to and parsed from the JSON of
//! `federation::wire`; membership is `federation::membership::Swim`; the
//! authorities' health probes fold outcomes with `probe::ProbeState` on the
//! agent's schedule (one round per second, suspects rechecked every
//! `agent::suspect_recheck`). What is simulated: time, the network (an
//! exchange completes at once; membership messages take 10 ms; a dead
//! instance refuses connections) and HTTP/TLS framing (a fixed overhead per
//! request and response, below).
//!
//! World: instances 0..20 are authorities; the 50 sites form 10 zones of 5
//! sites, each zone served by 4 authorities (each authority answers for 2
//! zones, 10 sites); every other instance mirrors one site (the k-th mirror
//! mirrors site k mod 50; at N = 10, 5 authorities and 5 mirrors). A mirror's interest is its site,
//! followed thinly (the site's core of `gossip::FOLLOW_PER_SITE` co-mirrors,
//! as an instance outside the zone's NS set does); an authority's, its 10
//! sites, in full. Gossip partners are the peers of a node's sites and the
//! authorities of their zones (`agent::gossip_partner`). SWIM runs with the
//! agent's timing (`SwimConfig::with_period`). Reports live
//! `report_ttl_secs` = 15 s (the default), so an unchanged report is
//! re-signed every 5 s.
//!
//! Steady state is measured after a warm-up, over a window in which one
//! mirror changes its holdings (a material change: its new report must
//! reach its zone's authorities) and one mirror dies (its zone's
//! authorities must stop answering it; SWIM must declare it dead at all 20
//! authorities). Bounded: 26 simulated seconds per size (about 4 minutes
//! of wall time in all, most of it N = 3,000).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use p2pcdn::federation::agent::{report_due, suspect_recheck};
use p2pcdn::federation::gossip::{self, Entry, Interest, ShortId, PROTOCOL};
use p2pcdn::federation::membership::{Msg, State, Swim, SwimConfig};
use p2pcdn::federation::probe::ProbeState;
use p2pcdn::federation::wire::{Bundle, PushRequest, SyncRequest, SyncResponse};
use p2pcdn::keys::{PublicKey, SecretKey};
use p2pcdn::report::{self, Capacity, Held, Load, Point, Report, VerifiedReport};

const AUTHORITIES: usize = 20;
const SITES: usize = 50;
const ZONES: usize = 10;
const AUTH_PER_ZONE: usize = 4;
/// `report_ttl_secs` (15, the default, unless `--ttl=S` is given).
static TTL_S: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(15);
/// Simulated time at which the world starts (ms), past any stagger.
const START: u64 = 60_000;

fn ttl() -> u64 {
    TTL_S.load(std::sync::atomic::Ordering::Relaxed)
}
const FANOUT: usize = 3;
const EPOCH: u64 = 1_750_000_000;
const STEP_MS: u64 = 50;
const ROUND_MS: u64 = 1000;
const SWIM_LATENCY_MS: u64 = 10;
/// HTTP/1.1 request line and headers of a peer request (POST with
/// content-type and length), and of a response; TLS records add ~29 B each.
const HTTP_REQUEST: usize = 200 + 29;
const HTTP_RESPONSE: usize = 130 + 29;
/// A health probe: `GET /.well-known/p2pcdn/v1/health` and its JSON answer.
const PROBE_REQUEST: usize = 110 + 29;
const PROBE_RESPONSE: usize = 130 + 120 + 29;
/// A membership message as a UDP datagram (IP + UDP headers).
const DATAGRAM: usize = 28;

fn site(i: usize) -> String {
    format!("s{i}.z{}.example", i / (SITES / ZONES))
}

/// splitmix64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[derive(Default, Clone, Copy)]
struct Counters {
    bytes: u64,
    verified: u64,
    probes: u64,
    /// Of `probes`, SWIM pings and ping-reqs (the rest: authorities'
    /// health probes of the mirrors they answer for).
    swim: u64,
}

struct Node {
    key: SecretKey,
    id: ShortId,
    interest: Interest,
    /// Sites whose mirrors this node steers to (authorities).
    answers: BTreeSet<String>,
    current: Report,
    own: Rc<VerifiedReport>,
    held: HashMap<ShortId, Rc<VerifiedReport>>,
    swim: Swim,
    probes: BTreeMap<usize, ProbeState>,
    alive: bool,
    phase: u64,
    c: Counters,
}

struct World {
    nodes: Vec<Node>,
    by_id: HashMap<ShortId, usize>,
    /// Per site: the mirrors (instance indexes).
    mirrors: Vec<Vec<usize>>,
    /// Per node: the instances it has an interest in (for partner choice).
    peers_of: Vec<Vec<usize>>,
    swim_queue: Vec<(u64, usize, usize, Msg)>,
    rng: Rng,
}

fn unix(now_ms: u64) -> u64 {
    EPOCH + now_ms / 1000
}

fn make_report(key: &SecretKey, i: usize, mirrors: Option<usize>, version: u64) -> Report {
    let name = format!("n{i}.example.net");
    Report {
        format: report::FORMAT,
        node: key.public(),
        url: format!("https://{name}"),
        name,
        addresses: vec![std::net::IpAddr::from([
            10,
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        ])],
        location: Some(Point {
            lat: (i % 170) as f64 - 85.0,
            lon: (i % 359) as f64 - 179.0,
        }),
        capacity: Capacity {
            rps: 5000.0,
            bps: 1.25e9,
        },
        load: Load {
            rps: report::round_to((i % 97) as f64 * 13.7, 2),
            bps: report::round_to((i % 89) as f64 * 1.1e6, 0),
            connections: (i % 50) as u64,
        },
        holds: mirrors
            .map(|s| Held {
                site: site(s),
                version,
            })
            .into_iter()
            .collect(),
        mirrors: mirrors.map(site).into_iter().collect(),
        rtt_ms: BTreeMap::new(),
        client_rtt: vec![],
        certs: None,
        seq: 0,
        issued: 0,
        expires: 0,
    }
}

fn sign(key: &SecretKey, mut r: Report, now_ms: u64, seq: u64) -> Rc<VerifiedReport> {
    r.seq = seq;
    r.issued = unix(now_ms);
    r.expires = r.issued + ttl();
    let s = report::sign_report(&r, key).expect("sign");
    Rc::new(report::verify_signed(s, unix(now_ms)).expect("own report verifies"))
}

fn zone_authorities(z: usize) -> Vec<usize> {
    (0..AUTH_PER_ZONE)
        .map(|j| (z * 2 + j) % AUTHORITIES)
        .collect()
}

impl World {
    fn new(n: usize, seed: u64) -> Self {
        let mut rng = Rng(seed);
        let keys: Vec<SecretKey> = (0..n)
            .map(|_| SecretKey::generate().expect("key"))
            .collect();
        let ids: Vec<ShortId> = keys.iter().map(|k| ShortId::of(&k.public())).collect();
        let na = AUTHORITIES.min(n / 2);
        let mut answers = vec![BTreeSet::new(); n];
        for z in 0..ZONES {
            for a in zone_authorities(z) {
                if a < na {
                    for s in 0..SITES / ZONES {
                        answers[a].insert(site(z * (SITES / ZONES) + s));
                    }
                }
            }
        }
        let mut mirrors = vec![vec![]; SITES];
        let mirrored: Vec<Option<usize>> = (0..n)
            .map(|i| (i >= na).then_some((i - na) % SITES))
            .collect();
        for (i, m) in mirrored.iter().enumerate() {
            if let Some(s) = m {
                mirrors[*s].push(i);
            }
        }
        // The agent's membership timing (`swim::Membership::new`).
        let cfg = SwimConfig::with_period(ROUND_MS);
        let mut nodes: Vec<Node> = Vec::with_capacity(n);
        for (i, key) in keys.into_iter().enumerate() {
            let current = make_report(&key, i, mirrored[i], 1);
            // A mirror follows its site thinly (the site's core of
            // `gossip::FOLLOW_PER_SITE` co-mirrors, as `Federation::interest`
            // does for a site whose zone it does not answer for); an
            // authority follows every mirror of its sites.
            let interest = match mirrored[i] {
                Some(s) => {
                    let mut it = Interest::from(BTreeSet::from([site(s)]));
                    let co: Vec<ShortId> = mirrors[s].iter().map(|m| ids[*m]).collect();
                    if let Some(core) = gossip::core(&site(s), &co, ids[i]) {
                        it.follow.insert(site(s), core);
                    }
                    it
                }
                None => Interest::from(answers[i].clone()),
            };
            // Staggered: every node signed its last report at a random
            // point of the previous refresh period.
            let refresh_ms = ttl().div_ceil(3) * 1000;
            let back = rng.next() % refresh_ms;
            let at = START - back;
            let own = sign(&key, current.clone(), at, at);
            nodes.push(Node {
                id: ids[i],
                key,
                interest,
                answers: answers[i].clone(),
                current,
                own,
                held: HashMap::new(),
                swim: Swim::new(ids[i], ids.iter().copied(), cfg, seed ^ i as u64, START),
                probes: BTreeMap::new(),
                alive: true,
                phase: rng.next() % ROUND_MS,
                c: Counters::default(),
            });
        }
        // Steady state: every node holds the reports of its interest, and
        // authorities see every mirror of their sites up.
        let all: Vec<Rc<VerifiedReport>> = nodes.iter().map(|x| x.own.clone()).collect();
        let mut peers_of = vec![vec![]; n];
        for (i, node) in nodes.iter_mut().enumerate() {
            // Gossip partners (`agent::gossip_partner`): held reports of
            // mirrors of its sites, and the authorities of its sites' zones
            // (not every authority whose siteless report it keeps).
            let my_auths: BTreeSet<usize> = node
                .interest
                .sites
                .iter()
                .filter_map(|s| s.split(".z").nth(1)?.split('.').next()?.parse().ok())
                .flat_map(zone_authorities)
                .collect();
            for (j, r) in all.iter().enumerate() {
                if i != j && gossip::interested(&r.report, &node.interest) {
                    node.held.insert(ids[j], r.clone());
                    if j >= na || my_auths.contains(&j) {
                        peers_of[i].push(j);
                    }
                }
            }
            for s in &node.answers {
                let idx: usize = s[1..s.find('.').unwrap_or(1)].parse().unwrap_or(0);
                for &m in &mirrors[idx] {
                    node.probes.insert(
                        m,
                        ProbeState::default().observe(Some(5.0)).observe(Some(5.0)),
                    );
                }
            }
        }
        let by_id = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        World {
            nodes,
            by_id,
            mirrors,
            peers_of,
            swim_queue: vec![],
            rng,
        }
    }

    fn sync_request(&self, i: usize, now: u64) -> SyncRequest {
        let n = &self.nodes[i];
        let all: Vec<&VerifiedReport> = std::iter::once(&*n.own)
            .chain(n.held.values().map(|r| &**r))
            .collect();
        let view = gossip::without(gossip::view(all, &n.interest, unix(now)), n.id);
        let fp = gossip::fingerprint(gossip::entries(&view));
        SyncRequest {
            v: PROTOCOL,
            sites: n.interest.sites.iter().map(|s| (s.clone(), 1)).collect(),
            fp: fp.fp,
            n: fp.n,
            buckets: None,
            me: Some(Entry(n.id, n.own.report.seq)),
            follow: n.interest.follow_wire(),
        }
    }

    fn differing(&self, i: usize, theirs: &[gossip::Fingerprint], now: u64) -> Vec<u8> {
        let n = &self.nodes[i];
        let all: Vec<&VerifiedReport> = std::iter::once(&*n.own)
            .chain(n.held.values().map(|r| &**r))
            .collect();
        gossip::differing_buckets(
            theirs,
            &gossip::without(gossip::view(all, &n.interest, unix(now)), n.id),
        )
    }

    fn answer_sync(&self, i: usize, req: &SyncRequest, now: u64) -> SyncResponse {
        let n = &self.nodes[i];
        let all: Vec<&VerifiedReport> = std::iter::once(&*n.own)
            .chain(n.held.values().map(|r| &**r))
            .collect();
        // As `Federation::answer_sync`.
        let theirs = Interest::from_wire(req.sites.keys().cloned(), &req.follow);
        let mut view = gossip::view(all, &theirs, unix(now));
        let mut want_me = false;
        if let Some(Entry(id, seq)) = req.me {
            view = gossip::without(view, id);
            let held = n.held.get(&id).map_or(0, |r| r.report.seq);
            want_me = held < seq && id != n.id && n.interest.keeps(id, req.sites.keys());
        }
        let (reports, buckets) =
            gossip::answer(&req.fingerprint(), req.buckets.as_deref(), &view).into_fields();
        SyncResponse {
            v: PROTOCOL,
            sites: n.interest.sites.iter().map(|s| (s.clone(), 1)).collect(),
            manifests: vec![],
            reports,
            buckets,
            follow: n.interest.follow_wire(),
            want_me,
        }
    }

    fn plan_push(
        &self,
        i: usize,
        resp: &SyncResponse,
        buckets: Option<&[u8]>,
        now: u64,
    ) -> PushRequest {
        let n = &self.nodes[i];
        let mut push = PushRequest {
            v: PROTOCOL,
            ..Default::default()
        };
        if let Some(d) = &resp.reports {
            let all: Vec<&VerifiedReport> = std::iter::once(&*n.own)
                .chain(n.held.values().map(|r| &**r))
                .collect();
            let view = gossip::restrict(
                gossip::without(gossip::view(all, &n.interest, unix(now)), n.id),
                buckets,
            );
            let theirs = Interest::from_wire(resp.sites.keys().cloned(), &resp.follow);
            (push.reports, push.want) = gossip::plan(d, &theirs, &view);
        }
        if resp.want_me {
            push.reports.push(n.own.signed.clone());
        }
        push
    }

    fn serve(&self, i: usize, want: &[ShortId], now: u64) -> Bundle {
        let n = &self.nodes[i];
        let all: Vec<&VerifiedReport> = std::iter::once(&*n.own)
            .chain(n.held.values().map(|r| &**r))
            .collect();
        let view = gossip::view(all, &Interest::default(), unix(now));
        Bundle {
            reports: gossip::serve(want, &view),
        }
    }

    /// What `Federation::ingest_docs` does with reports: triage, verify,
    /// keep if of interest and newer.
    fn ingest(&mut self, i: usize, reports: Vec<report::SignedReport>, now: u64) {
        let node = &mut self.nodes[i];
        let me = node.key.public();
        for s in reports {
            let held = |k: &PublicKey| node.held.get(&ShortId::of(k)).map_or(0, |r| r.report.seq);
            if gossip::triage(&s, held, &me).is_none() {
                continue;
            }
            node.c.verified += 1;
            let Ok(v) = report::verify_signed(s, unix(now)) else {
                continue;
            };
            if gossip::interested(&v.report, &node.interest) {
                node.held.insert(ShortId::of(&v.report.node), Rc::new(v));
            }
        }
    }

    /// One `/sync` round trip (bytes counted at each sender).
    fn sync(&mut self, c: usize, r: usize, req: &SyncRequest, now: u64) -> SyncResponse {
        let body = serde_json::to_vec(req).expect("json");
        self.nodes[c].c.bytes += (HTTP_REQUEST + body.len()) as u64;
        let req: SyncRequest = serde_json::from_slice(&body).expect("parse");
        let resp = self.answer_sync(r, &req, now);
        let body = serde_json::to_vec(&resp).expect("json");
        self.nodes[r].c.bytes += (HTTP_RESPONSE + body.len()) as u64;
        serde_json::from_slice(&body).expect("parse")
    }

    fn exchange(&mut self, c: usize, r: usize, now: u64) {
        let req = self.sync_request(c, now);
        if !self.nodes[r].alive {
            let body = serde_json::to_vec(&req).expect("json");
            self.nodes[c].c.bytes += (HTTP_REQUEST + body.len()) as u64;
            return;
        }
        let mut resp = self.sync(c, r, &req, now);
        let mut buckets = None;
        if let Some(theirs) = resp.buckets.take() {
            let diff = self.differing(c, &theirs, now);
            if !diff.is_empty() {
                let mut req = req.clone();
                req.buckets = Some(diff.clone());
                resp = self.sync(c, r, &req, now);
                buckets = Some(diff);
            }
        }
        let push = self.plan_push(c, &resp, buckets.as_deref(), now);
        if push.reports.is_empty() && push.want.is_empty() {
            return;
        }
        let body = serde_json::to_vec(&push).expect("json");
        self.nodes[c].c.bytes += (HTTP_REQUEST + body.len()) as u64;
        let push: PushRequest = serde_json::from_slice(&body).expect("parse");
        let want = push.want.clone();
        self.ingest(r, push.reports, now);
        let bundle = self.serve(r, &want, now);
        let body = serde_json::to_vec(&bundle).expect("json");
        self.nodes[r].c.bytes += (HTTP_RESPONSE + body.len()) as u64;
        let bundle: Bundle = serde_json::from_slice(&body).expect("parse");
        self.ingest(c, bundle.reports, now);
    }

    fn partners(&mut self, i: usize) -> Vec<usize> {
        let peers = &self.peers_of[i];
        let mut out: Vec<usize> = vec![];
        for _ in 0..FANOUT * 3 {
            if out.len() >= FANOUT.min(peers.len()) {
                break;
            }
            let p = peers[self.rng.below(peers.len())];
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }

    fn probe(&mut self, a: usize, m: usize) {
        let up = self.nodes[m].alive;
        let node = &mut self.nodes[a];
        node.c.bytes += PROBE_REQUEST as u64;
        node.c.probes += 1;
        if up {
            self.nodes[m].c.bytes += PROBE_RESPONSE as u64;
        }
        let node = &mut self.nodes[a];
        if let Some(p) = node.probes.get_mut(&m) {
            *p = p.observe(up.then_some(5.0));
        }
    }

    fn send_swim(&mut self, from: usize, to: ShortId, msg: Msg, now: u64) {
        let len = serde_json::to_vec(&msg).expect("json").len();
        let node = &mut self.nodes[from];
        node.c.bytes += (DATAGRAM + len) as u64;
        if matches!(msg, Msg::Ping { .. } | Msg::PingReq { .. }) {
            node.c.probes += 1;
            node.c.swim += 1;
        }
        if let Some(&j) = self.by_id.get(&to) {
            self.swim_queue.push((now + SWIM_LATENCY_MS, from, j, msg));
        }
    }

    fn step(&mut self, now: u64) {
        let n = self.nodes.len();
        let recheck = suspect_recheck(Duration::from_millis(ROUND_MS)).as_millis() as u64;
        for i in 0..n {
            if !self.nodes[i].alive {
                continue;
            }
            let t = (now + self.nodes[i].phase) % ROUND_MS;
            if t < STEP_MS {
                // Report loop (every second).
                let node = &self.nodes[i];
                if report_due(Some(&node.own.report), &node.current, unix(now), ttl()) {
                    let seq = now.max(node.own.report.seq + 1);
                    let own = sign(&node.key, node.current.clone(), now, seq);
                    self.nodes[i].own = own;
                }
                // Gossip round.
                for p in self.partners(i) {
                    self.exchange(i, p, now);
                }
                // Authority probe round: every mirror it answers for.
                let targets: Vec<usize> = self.nodes[i].probes.keys().copied().collect();
                for m in targets {
                    self.probe(i, m);
                }
            } else if t % recheck < STEP_MS && t + recheck < ROUND_MS {
                // Suspects are rechecked within the round.
                let suspects: Vec<usize> = self.nodes[i]
                    .probes
                    .iter()
                    .filter(|(_, p)| p.suspect())
                    .map(|(m, _)| *m)
                    .collect();
                for m in suspects {
                    self.probe(i, m);
                }
            }
            let outs = self.nodes[i].swim.tick(now);
            for o in outs {
                self.send_swim(i, o.to, o.msg, now);
            }
        }
        let due: Vec<(u64, usize, usize, Msg)> = {
            let (d, rest): (Vec<_>, Vec<_>) = self.swim_queue.drain(..).partition(|m| m.0 <= now);
            self.swim_queue = rest;
            d
        };
        for (_, from, to, msg) in due {
            if !self.nodes[to].alive {
                continue;
            }
            let from_id = self.nodes[from].id;
            let outs = self.nodes[to].swim.receive(from_id, msg, now);
            for o in outs {
                self.send_swim(to, o.to, o.msg, now);
            }
        }
    }

    fn totals(&self) -> Counters {
        self.nodes
            .iter()
            .fold(Counters::default(), |a, n| Counters {
                bytes: a.bytes + n.c.bytes,
                verified: a.verified + n.c.verified,
                probes: a.probes + n.c.probes,
                swim: a.swim + n.c.swim,
            })
    }
}

struct Row {
    n: usize,
    secs: f64,
    bytes: f64,
    bytes_max: f64,
    verified: f64,
    verified_max: f64,
    probes: f64,
    swim: f64,
    change_ms: Option<u64>,
    death_swim_ms: Option<u64>,
    dead_out_ms: Option<u64>,
    wall: Duration,
}

fn run(n: usize, measure_s: u64) -> Row {
    let wall = Instant::now();
    let mut w = World::new(n, 0x5eed_0000 + n as u64);
    let warm = START + 6_000;
    let end = warm + measure_s * 1000;
    let change_at = warm + 500;
    let kill_at = warm + 1_000;
    // The changer and the victim: mirrors of sites in zone 0.
    let changer = w.mirrors[0].first().copied();
    let victim = w.mirrors[1].first().copied();
    let na = AUTHORITIES.min(n / 2);
    let zone0: Vec<usize> = zone_authorities(0)
        .into_iter()
        .filter(|a| *a < na)
        .collect();
    let auths: Vec<usize> = (0..na).collect();
    let mut base = Counters::default();
    let mut per_node_base = vec![Counters::default(); n];
    let (mut change_ms, mut death_swim_ms, mut dead_out_ms) = (None, None, None);
    let mut change_seq = 0;
    let mut now = START;
    while now < end {
        if now == warm {
            base = w.totals();
            per_node_base = w.nodes.iter().map(|x| x.c).collect();
        }
        if now == change_at {
            if let Some(c) = changer {
                w.nodes[c].current.holds[0].version = 2;
            }
        }
        if now == kill_at {
            if let Some(v) = victim {
                w.nodes[v].alive = false;
            }
        }
        w.step(now);
        if let Some(c) = changer {
            if now >= change_at && change_seq == 0 && w.nodes[c].own.report.holds[0].version == 2 {
                change_seq = w.nodes[c].own.report.seq;
            }
            let id = w.nodes[c].id;
            if change_ms.is_none()
                && change_seq > 0
                && zone0.iter().all(|a| {
                    w.nodes[*a]
                        .held
                        .get(&id)
                        .is_some_and(|r| r.report.seq >= change_seq)
                })
            {
                change_ms = Some(now - change_at);
            }
        }
        if let Some(v) = victim {
            if now >= kill_at {
                if dead_out_ms.is_none()
                    && zone0
                        .iter()
                        .all(|a| w.nodes[*a].probes.get(&v).is_none_or(|p| !p.is_up()))
                {
                    dead_out_ms = Some(now - kill_at);
                }
                let vid = w.nodes[v].id;
                if death_swim_ms.is_none()
                    && auths
                        .iter()
                        .all(|a| w.nodes[*a].swim.state(&vid) == Some(State::Dead))
                {
                    death_swim_ms = Some(now - kill_at);
                }
            }
        }
        now += STEP_MS;
    }
    let t = w.totals();
    let secs = (end - warm) as f64 / 1000.0;
    let per = |x: u64, y: u64| (x - y) as f64 / n as f64 / secs;
    let max = |f: fn(&Counters) -> u64| {
        w.nodes
            .iter()
            .zip(&per_node_base)
            .map(|(x, b)| (f(&x.c) - f(b)) as f64 / secs)
            .fold(0.0, f64::max)
    };
    Row {
        n,
        secs,
        bytes: per(t.bytes, base.bytes),
        bytes_max: max(|c| c.bytes),
        verified: per(t.verified, base.verified),
        verified_max: max(|c| c.verified),
        probes: per(t.probes, base.probes),
        swim: per(t.swim, base.swim),
        change_ms,
        death_swim_ms,
        dead_out_ms,
        wall: wall.elapsed(),
    }
}

fn ms(x: Option<u64>) -> String {
    x.map_or("not within the run".into(), |v| {
        format!("{:.2} s", v as f64 / 1000.0)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let only: Option<usize> = args.iter().find_map(|a| a.parse().ok());
    if let Some(t) = args
        .iter()
        .find_map(|a| a.strip_prefix("--ttl=")?.parse::<u64>().ok())
    {
        TTL_S.store(t.clamp(3, 3600), std::sync::atomic::Ordering::Relaxed);
    }
    let sizes: Vec<(usize, u64)> = [(10, 20), (100, 20), (1000, 20), (3000, 20)]
        .into_iter()
        .filter(|(n, _)| only.is_none_or(|o| o == *n))
        .collect();
    let start = Instant::now();
    println!("# p2pcdn federation simulation (protocol {PROTOCOL})\n");
    println!("{AUTHORITIES} authorities, {SITES} sites in {ZONES} zones of {} sites, {AUTH_PER_ZONE} authorities per zone, fanout {FANOUT}, report TTL {} s, 1 s gossip/probe/SWIM period. Per instance per second, steady state (mean over all instances; max = busiest instance, an authority).\n", SITES / ZONES, ttl());
    println!("| N | simulated s | bytes sent / instance / s (mean) | max | signatures verified / instance / s (mean) | max | probes sent / instance / s | of which SWIM | material change → all zone authorities | death → SWIM dead at all 20 authorities | dead mirror out of every zone authority's answers | wall time |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut rows = vec![];
    for (n, secs) in sizes {
        let r = run(n, secs);
        println!(
            "| {} | {:.0} | {:.0} B | {:.0} B | {:.2} | {:.1} | {:.2} | {:.2} | {} | {} | {} | {:.1} s |",
            r.n,
            r.secs,
            r.bytes,
            r.bytes_max,
            r.verified,
            r.verified_max,
            r.probes,
            r.swim,
            ms(r.change_ms),
            ms(r.death_swim_ms),
            ms(r.dead_out_ms),
            r.wall.as_secs_f64()
        );
        rows.push(r);
    }
    let by_n = |n: usize| rows.iter().find(|r| r.n == n).map(|r| r.bytes);
    if let (Some(a), Some(b)) = (by_n(100), by_n(3000)) {
        println!(
            "\nGrowth of bytes per instance from N = 100 to N = 3,000: {:.2}×",
            b / a
        );
    }
    println!("\nTotal wall time: {:.1} s", start.elapsed().as_secs_f64());
}
