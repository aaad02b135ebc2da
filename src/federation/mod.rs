//! The federation agent: peers, bindings, signed reports, anti-entropy,
//! health probes and replication.
//!
//! Trust model (DESIGN.md §3): a peer's node key is bound to its DNS name by
//! fetching `/.well-known/p2pcdn/v1/node` over a TLS connection verified for
//! that name, with the peer signing a fresh challenge with that key
//! ([`binding`]); a binding changes only on a new such proof. Reports are
//! accepted only from bound keys, only with a higher sequence than held, and
//! only until they expire; reports from keys nobody vouches for (not bound,
//! not authorized by a manifest held) are not stored and cost at most a few
//! signature checks per bundle ([`UNVOUCHED_PER_BUNDLE`]). Manifests are accepted only
//! for configured sites, verified with the pinned owner key (`sites`).
//! Everything is verified before it is stored or relayed.
//!
//! State here is in memory and rebuilt from peers after a restart (reports
//! expire within seconds anyway); manifests and blobs persist in `db`/`store`.

pub mod addrcheck;
pub mod agent;
pub mod binding;
pub mod bindq;
pub mod challenge;
pub mod failover;
pub mod gossip;
pub mod holding;
pub mod membership;
pub mod memory;
pub mod pace;
pub mod plausible;
pub mod probe;
pub mod replicate;
pub mod sources;
pub mod swim;
pub mod view;
pub mod wire;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::catalog::{unix_now, SharedCatalog};
use crate::config::{normalize_url, Config};
use crate::db::Db;
use crate::keys::{PublicKey, SecretKey};
use crate::manifest::{self, ManifestError};
use crate::report::{self, SignedReport, VerifiedReport};
use crate::sites::{Imported, IngestError, SiteName, Sites};
use crate::store::BlobStore;
use bindq::{BindQueue, Offer};
use gossip::{ShortId, PROTOCOL};
use probe::ProbeState;
use sources::SourceBook;
use wire::{Bundle, NodeDoc, PushRequest, SyncRequest, SyncResponse};

/// Federation setup errors.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The node key could not be read.
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    /// The CA file could not be used.
    #[error("{path}: {message}")]
    Ca {
        /// File.
        path: String,
        /// Why.
        message: String,
    },
    /// HTTP client setup.
    #[error("HTTP client: {0}")]
    Client(String),
}

/// An error with its causes ("error sending request: … : connection
/// refused"), skipping causes its parent already quotes: reqwest's own text
/// names no cause. (Give reqwest errors `without_url()`: the URL is said
/// by the caller, and a challenge nonce in it would make every error new.)
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        cause = c.source();
    }
    msg
}

/// What we know about one bound peer.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Node key.
    pub key: PublicKey,
    /// DNS name (bound).
    pub name: String,
    /// HTTPS base URL.
    pub url: String,
    /// Newest accepted report.
    pub report: Option<VerifiedReport>,
    /// Health probe state.
    pub probe: ProbeState,
    /// Sites this peer claimed to hold but failed a spot-check for, with the
    /// unix time until which its claims for them are ignored.
    pub distrusted: HashMap<String, u64>,
}

impl Peer {
    /// Healthy: probes say up and its report has not expired.
    pub fn healthy(&self, now: u64) -> bool {
        self.probe.is_up() && self.report.as_ref().is_some_and(|r| r.report.expires > now)
    }

    /// The version of `site` this peer holds, unless a spot-check caught it lying.
    pub fn holds(&self, site: &str, now: u64) -> Option<u64> {
        if self.distrusted.get(site).is_some_and(|until| *until > now) {
            return None;
        }
        self.report.as_ref()?.report.holds_version(site)
    }
}

/// Resolves peer host names: configured addresses first, then addresses from
/// peers' reports, then the system resolver. TLS still verifies the name, so a
/// wrong address can only make a connection fail, never bind a wrong key.
#[derive(Debug, Default)]
pub struct PeerResolver {
    map: RwLock<HashMap<String, Vec<IpAddr>>>,
    pinned: RwLock<HashSet<String>>,
}

impl PeerResolver {
    fn pin(&self, host: &str, addr: IpAddr) {
        if let Ok(mut m) = self.map.write() {
            m.insert(host.to_string(), vec![addr]);
        }
        if let Ok(mut p) = self.pinned.write() {
            p.insert(host.to_string());
        }
    }

    /// Addresses known for `host` (configured or learned), if any.
    fn addresses(&self, host: &str) -> Vec<IpAddr> {
        self.map
            .read()
            .ok()
            .and_then(|m| m.get(host).cloned())
            .unwrap_or_default()
    }

    fn learn(&self, host: &str, addrs: &[IpAddr]) {
        if addrs.is_empty() || self.pinned.read().is_ok_and(|p| p.contains(host)) {
            return;
        }
        if let Ok(mut m) = self.map.write() {
            m.insert(host.to_string(), addrs.to_vec());
        }
    }
}

impl reqwest::dns::Resolve for PeerResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let known = self.map.read().ok().and_then(|m| m.get(&host).cloned());
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match known {
                Some(ips) => ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect(),
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Request/byte counters and their smoothed rates (this node's load).
#[derive(Debug, Default)]
pub struct LoadMeter {
    requests: AtomicU64,
    bytes: AtomicU64,
    rates: Mutex<(u64, u64, f64, f64)>,
}

impl LoadMeter {
    /// Counts one request that sent `bytes` body bytes.
    pub fn record(&self, bytes: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Updates the EWMA rates; call once per `secs` seconds. Returns (rps, bps).
    pub fn tick(&self, secs: f64) -> (f64, f64) {
        let r = self.requests.load(Ordering::Relaxed);
        let b = self.bytes.load(Ordering::Relaxed);
        let Ok(mut g) = self.rates.lock() else {
            return (0.0, 0.0);
        };
        let (lr, lb, rps, bps) = *g;
        let secs = secs.max(0.001);
        let nr = r.saturating_sub(lr) as f64 / secs;
        let nb = b.saturating_sub(lb) as f64 / secs;
        let a = 0.5;
        let out = (rps * (1.0 - a) + nr * a, bps * (1.0 - a) + nb * a);
        *g = (r, b, out.0, out.1);
        out
    }

    /// Current smoothed (rps, bps).
    pub fn rates(&self) -> (f64, f64) {
        self.rates.lock().map(|g| (g.2, g.3)).unwrap_or((0.0, 0.0))
    }
}

/// The HTTPS client used towards peers and owners' domains: trusts WebPKI
/// roots (unless disabled) and the configured CA file, and resolves bootstrap
/// peers' names to their configured addresses.
pub fn http_client(cfg: &Config) -> Result<(reqwest::Client, Arc<PeerResolver>), FederationError> {
    let resolver = Arc::new(PeerResolver::default());
    for p in &cfg.federation.peers {
        if let Some(a) = p.address {
            resolver.pin(&p.host, a);
        }
    }
    let http = client_builder(cfg)?
        .dns_resolver(resolver.clone())
        .build()
        .map_err(|e| FederationError::Client(e.to_string()))?;
    Ok((http, resolver))
}

/// The peer client's settings (roots, timeouts, no redirects), without a resolver.
fn client_builder(cfg: &Config) -> Result<reqwest::ClientBuilder, FederationError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(cfg.federation.webpki_roots)
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("p2pcdn/", env!("CARGO_PKG_VERSION")))
        .local_address(cfg.federation.source_address);
    if let Some(ca) = &cfg.federation.ca_file {
        let err = |message: String| FederationError::Ca {
            path: ca.display().to_string(),
            message,
        };
        let pem = std::fs::read(ca).map_err(|e| err(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no certificates in file".into()));
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    Ok(builder)
}

/// Reports from unvouched keys verified per bundle, at most.
pub const UNVOUCHED_PER_BUNDLE: usize = 8;
/// Reports of unbound (manifest-authorized) keys held while binding, at most.
pub const UNBOUND_HELD: usize = 1_000;

/// Unix time in milliseconds.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The federation agent's shared state.
pub struct Federation {
    /// This node's key.
    pub me: PublicKey,
    key: SecretKey,
    /// This node's DNS name.
    pub name: String,
    /// This node's HTTPS base URL.
    pub url: String,
    cfg: arc_swap::ArcSwap<Config>,
    http: reqwest::Client,
    resolver: Arc<PeerResolver>,
    peers: RwLock<HashMap<PublicKey, Peer>>,
    /// Reports from keys not yet bound but authorized by a manifest we
    /// hold, waiting for binding (at most [`UNBOUND_HELD`]).
    unbound: Mutex<HashMap<PublicKey, VerifiedReport>>,
    /// URLs still to bind (bootstrap peers and URLs learned from reports).
    to_bind: Mutex<BindQueue>,
    /// The last error of each URL that failed to bind and is not bound
    /// yet (logged at WARN when it changes; shown by `status`).
    bind_errors: Mutex<HashMap<String, String>>,
    /// The last sync error per peer URL (WARN once per distinct error).
    sync_errors: Mutex<HashMap<String, String>>,
    /// Blob pull outcomes per source (back-off of misbehaving sources).
    sources: Mutex<SourceBook>,
    /// Last check of each (peer, advertised address) ([`addrcheck`]).
    addr_checks: Mutex<HashMap<(PublicKey, IpAddr), addrcheck::AddrCheck>>,
    /// Address checks running now.
    addr_checking: Mutex<HashSet<(PublicKey, IpAddr)>>,
    /// Clients pinned to one (SNI, address), for address checks.
    addr_clients: Mutex<HashMap<(String, SocketAddr), reqwest::Client>>,
    /// Bytes of sync responses held at once, in units of
    /// [`agent::RESPONSE_BUDGET_UNIT`] (96 MiB in total).
    pub response_budget: Arc<tokio::sync::Semaphore>,
    /// Consecutive failed proof-of-holding checks per (peer, site).
    holding: Mutex<HashMap<(PublicKey, String), u32>>,
    own_report: RwLock<Option<VerifiedReport>>,
    db: Arc<Db>,
    store: BlobStore,
    catalog: SharedCatalog,
    /// Each site's version lifecycle (offers, completion, the catalog).
    pub sites: Arc<Sites>,
    /// Wakes the catalog refresher.
    pub refresh: Arc<tokio::sync::Notify>,
    /// Wakes the replicator.
    pub replicate_now: Arc<tokio::sync::Notify>,
    /// Wakes the steering view when a peer's health changed.
    pub health_changed: Arc<tokio::sync::Notify>,
    /// When this agent started (its own mirror's age, for answer TTLs).
    pub started: std::time::Instant,
    /// This node's load counters.
    pub load: Arc<LoadMeter>,
    /// Open HTTP connections.
    pub connections: Arc<crate::http::listen::ConnCounter>,
    /// Operational metrics of this instance (shared with DNS and HTTP).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// SWIM membership of the bound peers ([`swim`]).
    pub membership: swim::Membership,
    /// Client RTT aggregates: the HTTP(S) listeners feed them, this node's
    /// report carries their snapshot.
    pub client_rtt: Arc<crate::http::rtt::ClientRtt>,
    /// Recent peer health changes (the status page's failovers).
    pub health_log: failover::HealthLog,
    /// Accepted ACME challenge values this node serves in DNS.
    txt: Arc<crate::challenge::book::TxtBook>,
    /// The zones this node answers for (attached by `instance`).
    dns_data: std::sync::OnceLock<crate::dns::server::SharedDnsData>,
    /// The HTTPS certificates this node serves (attached by `instance`).
    certs: std::sync::OnceLock<Arc<crate::http::tls::CertStore>>,
}

impl Federation {
    /// Builds the agent (no tasks started; see [`agent::spawn`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: Arc<Config>,
        db: Arc<Db>,
        store: BlobStore,
        sites: Arc<Sites>,
        refresh: Arc<tokio::sync::Notify>,
        connections: Arc<crate::http::listen::ConnCounter>,
        https_port: Option<u16>,
    ) -> Result<Self, FederationError> {
        let key = SecretKey::read(&cfg.node.key)?;
        let me = key.public();
        let url = cfg.node.url.clone().unwrap_or_else(|| match https_port {
            Some(443) | None => format!("https://{}", cfg.node.name),
            Some(p) => format!("https://{}:{p}", cfg.node.name),
        });
        let (http, resolver) = http_client(&cfg)?;
        let mut to_bind = BindQueue::new(cfg.federation.peers.iter().map(|p| p.url.clone()));
        // Peers bound in an earlier run: the way back in when the
        // bootstrap peers are down.
        let remembered = db.remembered_peers(memory::AT_START).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read remembered peers");
            vec![]
        });
        let mut queued = 0;
        for p in remembered.iter().filter(|p| p.url != url) {
            resolver.learn(&p.name, &p.addresses);
            to_bind.remember(&p.url, unix_millis());
            queued += 1;
        }
        if queued > 0 {
            tracing::info!(
                peers = queued,
                "rejoining through peers remembered from the last run (and the configured ones)"
            );
        }
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let cfg_probe_ms = cfg.federation.probe_interval_ms;
        Ok(Self {
            me,
            key,
            name: cfg.node.name.clone(),
            url,
            cfg: arc_swap::ArcSwap::new(cfg),
            http,
            resolver,
            peers: RwLock::new(HashMap::new()),
            unbound: Mutex::new(HashMap::new()),
            to_bind: Mutex::new(to_bind),
            bind_errors: Mutex::new(HashMap::new()),
            sync_errors: Mutex::new(HashMap::new()),
            sources: Mutex::new(SourceBook::default()),
            holding: Mutex::new(HashMap::new()),
            response_budget: Arc::new(tokio::sync::Semaphore::new(
                (96 << 20) / agent::RESPONSE_BUDGET_UNIT,
            )),
            addr_checks: Mutex::new(HashMap::new()),
            addr_checking: Mutex::new(HashSet::new()),
            addr_clients: Mutex::new(HashMap::new()),
            own_report: RwLock::new(None),
            db,
            store,
            catalog: sites.catalog(),
            sites,
            refresh,
            replicate_now: Arc::new(tokio::sync::Notify::new()),
            health_changed: Arc::new(tokio::sync::Notify::new()),
            started: std::time::Instant::now(),
            load: Arc::new(LoadMeter::default()),
            connections,
            membership: swim::Membership::new(&me, Duration::from_millis(cfg_probe_ms)),
            client_rtt: Arc::new(crate::http::rtt::ClientRtt::new(metrics.clone())),
            metrics,
            health_log: failover::HealthLog::default(),
            txt: Arc::new(crate::challenge::book::TxtBook::new(Default::default())),
            dns_data: std::sync::OnceLock::new(),
            certs: std::sync::OnceLock::new(),
        })
    }

    /// Gives the agent the zones this node answers for (challenge checks,
    /// zone authorities). Later calls are ignored.
    pub fn attach_dns(&self, dns: crate::dns::server::SharedDnsData) {
        let _ = self.dns_data.set(dns);
    }

    /// Gives the agent the certificates this node serves (reports, status).
    /// Later calls are ignored.
    pub fn attach_certs(&self, certs: Arc<crate::http::tls::CertStore>) {
        let _ = self.certs.set(certs);
    }

    /// The certificates this node serves, once attached.
    pub fn certs(&self) -> Option<&Arc<crate::http::tls::CertStore>> {
        self.certs.get()
    }

    /// The current catalog snapshot.
    pub fn catalog(&self) -> arc_swap::Guard<Arc<crate::catalog::Catalog>> {
        self.catalog.load()
    }

    /// This node's secret key (signing challenge requests).
    pub(crate) fn node_key(&self) -> &SecretKey {
        &self.key
    }

    /// This node's identity document; with a binder's `challenge`, signed
    /// as proof of possession of the node key ([`binding`]).
    pub fn node_doc(&self, challenge: Option<&binding::Nonce>) -> NodeDoc {
        NodeDoc {
            name: self.name.clone(),
            key: self.me.to_string(),
            url: self.url.clone(),
            protocol: Some(PROTOCOL),
            proof: challenge.map(|n| binding::prove(&self.key, n, &self.name, &self.url)),
        }
    }

    /// A snapshot of bound peers.
    pub fn peers(&self) -> Vec<Peer> {
        let mut v: Vec<Peer> = self
            .peers
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// This node's newest signed report.
    pub fn own_report(&self) -> Option<VerifiedReport> {
        self.own_report.read().ok().and_then(|r| r.clone())
    }

    /// The configuration in effect.
    pub fn config(&self) -> Arc<Config> {
        self.cfg.load_full()
    }

    /// Runs with `cfg` from now on (a configuration reload; keys that need
    /// a restart were already kept at their running values). Bootstrap
    /// peers new in `cfg` are queued for binding; removed ones stay bound
    /// if they are, as peers learned from reports do.
    pub fn set_config(&self, cfg: Arc<Config>) {
        let old = self.cfg.swap(cfg.clone());
        for p in &cfg.federation.peers {
            if old.federation.peers.contains(p) {
                continue;
            }
            if let Some(a) = p.address {
                self.resolver.pin(&p.host, a);
            }
            if let Ok(mut q) = self.to_bind.lock() {
                q.add_pinned(&p.url);
            }
        }
    }

    /// Binds `url`'s host to the node key served there over verified TLS,
    /// once the peer signed a fresh challenge with that key. A key already
    /// bound elsewhere moves only on such a proof (never on a report).
    pub async fn bind(&self, url: &str) -> Result<PublicKey, String> {
        let (url, host) = normalize_url(url)?;
        let nonce = binding::Nonce::random();
        let doc: NodeDoc = self
            .http
            .get(format!(
                "{url}/.well-known/p2pcdn/v1/node?challenge={}",
                nonce.encode()
            ))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(|e| format!("{url}: {}", error_chain(&e.without_url())))?
            .error_for_status()
            .map_err(|e| format!("{url}: {}", error_chain(&e.without_url())))?
            .json()
            .await
            .map_err(|e| {
                format!(
                    "{url}: bad node document: {}",
                    error_chain(&e.without_url())
                )
            })?;
        let key: PublicKey = doc.key.parse().map_err(|e| format!("{url}: {e}"))?;
        let (doc_url, _) = normalize_url(&doc.url)?;
        if manifest::normalize_site(&doc.name) != host || doc_url != url {
            return Err(format!(
                "{url}: node document names {} at {}, not this URL",
                doc.name, doc.url
            ));
        }
        if key == self.me {
            return Err(format!("{url} is this node"));
        }
        let theirs = doc.protocol.unwrap_or(1);
        if theirs != PROTOCOL {
            tracing::warn!(%url, peer_protocol = theirs, our_protocol = PROTOCOL, "peer speaks another federation protocol version; not bound (see docs/PROTOCOL.md, Versioning)");
            return Err(format!("{url}: {}", wire::version_refusal(theirs)));
        }
        let Some(proof) = doc.proof.as_deref() else {
            return Err(format!(
                "{url}: the node document carries no proof of possession of its key \
                 (a peer older than binding proofs, or not a p2pcdn node); not bound"
            ));
        };
        if !binding::check(&key, &nonce, &doc.name, &doc.url, proof) {
            tracing::warn!(%url, claimed_key = %key, "binding refused: the peer could not prove it holds the node key it names");
            return Err(format!(
                "{url}: proof of possession of {key} does not verify"
            ));
        }
        let fresh = {
            let Ok(mut peers) = self.peers.write() else {
                return Err("peer table poisoned".into());
            };
            let fresh = !peers.contains_key(&key);
            if let Some(old) = peers.get(&key) {
                if old.name != host || old.url != url {
                    tracing::warn!(key = %key, from = %old.url, to = %url, "bound node key moved to another name (the key holder proved it)");
                }
            }
            let entry = peers.entry(key).or_insert_with(|| Peer {
                key,
                name: host.clone(),
                url: url.clone(),
                report: None,
                probe: ProbeState::default(),
                distrusted: HashMap::new(),
            });
            entry.name = host.clone();
            entry.url = url.clone();
            fresh
        };
        if fresh {
            tracing::info!(peer = %host, key = %key, "bound peer: node key verified over TLS for its name");
        }
        // A report that arrived before binding can be accepted now.
        let waiting = self.unbound.lock().ok().and_then(|mut u| u.remove(&key));
        if let Some(r) = waiting {
            self.accept_report(r, true, &self.interest());
        }
        Ok(key)
    }

    /// Records a verified report (sequence, binding and name checks here).
    /// `vouched`: an unbound key is authorized by a manifest we hold, so its
    /// report is held until the binding succeeds; other unbound reports
    /// only offer their URL to the bind queue.
    fn accept_report(&self, r: VerifiedReport, vouched: bool, interest: &gossip::Interest) -> bool {
        let rep = &r.report;
        if rep.node == self.me {
            return false;
        }
        // Partial view: reports about sites this node has nothing to do
        // with are not kept (their URL may still be bound below).
        let keep = gossip::interested(rep, interest);
        let (url, host) = match normalize_url(&rep.url) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "report with a bad URL dropped");
                return false;
            }
        };
        let Ok(mut peers) = self.peers.write() else {
            return false;
        };
        match peers.get_mut(&rep.node) {
            Some(p) if p.name == host && p.url == url => {
                // Only the key bound to a name says where that name lives.
                self.resolver.learn(&host, &rep.addresses);
                let held = p.report.as_ref().map_or(0, |o| o.report.seq);
                if rep.seq <= held || !keep {
                    tracing::trace!(peer = %p.name, seq = rep.seq, held, keep, "stale, replayed or uninteresting report dropped");
                    return false;
                }
                p.report = Some(r);
                true
            }
            Some(p) => {
                tracing::warn!(peer = %p.name, claimed = %host, "report names a different host than the bound one; dropped");
                false
            }
            None => {
                // A stranger may name a bound peer's host: it must not
                // redirect connections to that peer.
                let host_bound = peers.values().any(|p| p.name == host);
                drop(peers);
                let offer = self
                    .to_bind
                    .lock()
                    .map(|mut tb| tb.offer(&url, &host, unix_millis()))
                    .unwrap_or(Offer::Full);
                if offer == Offer::Queued && !host_bound {
                    self.resolver.learn(&host, &rep.addresses);
                }
                if offer != Offer::Queued && offer != Offer::Known {
                    tracing::debug!(%url, ?offer, "URL from an unbound key's report not queued for binding");
                }
                if vouched && keep {
                    if let Ok(mut u) = self.unbound.lock() {
                        let newer = u.get(&rep.node).is_none_or(|o| o.report.seq < rep.seq);
                        if newer && (u.len() < UNBOUND_HELD || u.contains_key(&rep.node)) {
                            u.insert(rep.node, r);
                        }
                    }
                }
                false
            }
        }
    }

    /// This node's interest: its configured sites (partial view,
    /// [`gossip`]). A site whose zone this node does not answer for (it is
    /// not in the zone's NS set) is followed thinly when its manifest
    /// authorizes more than [`gossip::FOLLOW_PER_SITE`] mirrors: only the
    /// [`gossip::core`] of them; the zone's authorities follow them all.
    pub fn interest(&self) -> gossip::Interest {
        let cfg = self.cfg.load();
        let cat = self.catalog.load();
        let me = ShortId::of(&self.me);
        let mut interest = gossip::Interest::default();
        for s in &cfg.sites {
            interest.sites.insert(s.hostname.clone());
            if self.answers_for(&s.hostname) {
                continue;
            }
            let Some(m) = cat.site(&s.hostname).and_then(|l| l.newest.as_ref()) else {
                continue;
            };
            let ids: Vec<ShortId> = m.manifest.mirrors.iter().map(ShortId::of).collect();
            if let Some(core) = gossip::core(&s.hostname, &ids, me) {
                interest.follow.insert(s.hostname.clone(), core);
            }
        }
        interest
    }

    /// The NS names (lowercase, no trailing dot) of the zones of this
    /// node's configured sites, from its zone data.
    pub fn zone_authority_names(&self) -> HashSet<String> {
        let mut out = HashSet::new();
        let Some(dns) = self.dns_data.get() else {
            return out;
        };
        let data = dns.load();
        for s in &self.cfg.load().sites {
            let Some(zone) = challenge::lower(&s.hostname).and_then(|n| data.zones.find(&n)) else {
                continue;
            };
            for r in zone.rrset(zone.origin(), hickory_proto::rr::RecordType::NS) {
                if let hickory_proto::rr::RData::NS(ns) = r.data() {
                    out.insert(ns.0.to_string().trim_end_matches('.').to_ascii_lowercase());
                }
            }
        }
        out
    }

    /// Whether this node answers for the zone of `site`: its name is in
    /// the zone's NS set, or it has no zone data saying otherwise.
    fn answers_for(&self, site: &str) -> bool {
        let (Some(dns), Some(n)) = (self.dns_data.get(), challenge::lower(site)) else {
            return true;
        };
        let data = dns.load();
        let Some(zone) = data.zones.find(&n) else {
            return true;
        };
        let own = self.name.trim_end_matches('.');
        let mut any = false;
        for r in zone.rrset(zone.origin(), hickory_proto::rr::RecordType::NS) {
            let hickory_proto::rr::RData::NS(ns) = r.data() else {
                continue;
            };
            any = true;
            if ns
                .0
                .to_string()
                .trim_end_matches('.')
                .eq_ignore_ascii_case(own)
            {
                return true;
            }
        }
        !any
    }

    /// Newest manifest version held per configured site (0: none).
    fn site_versions(&self) -> BTreeMap<String, u64> {
        self.cfg
            .load()
            .sites
            .iter()
            .map(|s| {
                let v = self
                    .db
                    .held_version(&s.hostname)
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                (s.hostname.clone(), v)
            })
            .collect()
    }

    /// The manifest gossip offers for `site` (the newest stored) if it is
    /// `version`, still valid and authorizes this node to mirror it: what
    /// the catalog serves as newest once it reloads.
    pub fn offered_manifest(
        &self,
        site: &str,
        version: u64,
    ) -> Option<Arc<crate::manifest::VerifiedManifest>> {
        let site = crate::manifest::normalize_site(site);
        let row = self.db.newest_manifest(&site).ok().flatten()?;
        if row.version != version {
            return None;
        }
        let vm = self.sites.verified(&row, crate::catalog::unix_now()).ok()?;
        replicate::authorized(&vm.manifest.mirrors, &self.me).then_some(vm)
    }

    /// Manifest envelopes (base64) of configured sites newer than `theirs`.
    fn manifests_newer(&self, theirs: &BTreeMap<String, u64>) -> Vec<String> {
        let mut out = vec![];
        for (site, their_v) in theirs {
            if self.cfg.load().site(site).is_none() {
                continue;
            }
            if let Ok(Some(row)) = self.db.newest_manifest(site) {
                if row.version > *their_v {
                    out.push(STANDARD.encode(&row.envelope));
                }
            }
        }
        out
    }

    /// Every report held: our own and bound peers'.
    fn all_reports(&self) -> Vec<VerifiedReport> {
        let mut all: Vec<VerifiedReport> = self.own_report().into_iter().collect();
        if let Ok(p) = self.peers.read() {
            all.extend(p.values().filter_map(|p| p.report.clone()));
        }
        all
    }

    /// The opening of an exchange: our site versions and the fingerprint
    /// of the reports we hold for our sites.
    pub fn sync_request(&self) -> SyncRequest {
        let all = self.all_reports();
        let interest = self.interest();
        let me = ShortId::of(&self.me);
        let view = gossip::without(gossip::view(&all, &interest, unix_now()), me);
        let fp = gossip::fingerprint(gossip::entries(&view));
        SyncRequest {
            v: PROTOCOL,
            sites: self.site_versions(),
            fp: fp.fp,
            n: fp.n,
            buckets: None,
            me: self.own_report().map(|r| gossip::Entry(me, r.report.seq)),
            follow: interest.follow_wire(),
        }
    }

    /// The buckets whose fingerprints differ from a responder's.
    pub fn differing_buckets(&self, theirs: &[gossip::Fingerprint]) -> Vec<u8> {
        let all = self.all_reports();
        let view = gossip::without(
            gossip::view(&all, &self.interest(), unix_now()),
            ShortId::of(&self.me),
        );
        gossip::differing_buckets(theirs, &view)
    }

    /// Answers a sync request: manifests the caller lacks, our site
    /// versions, and our digest of the caller's sites unless the
    /// fingerprints agree.
    pub fn answer_sync(&self, req: &SyncRequest) -> SyncResponse {
        let all = self.all_reports();
        let their_interest = gossip::Interest::from_wire(req.sites.keys().cloned(), &req.follow);
        let mut view = gossip::view(&all, &their_interest, unix_now());
        let interest = self.interest();
        let mut want_me = false;
        if let Some(gossip::Entry(id, seq)) = req.me {
            view = gossip::without(view, id);
            let held = all
                .iter()
                .find(|r| ShortId::of(&r.report.node) == id)
                .map_or(0, |r| r.report.seq);
            want_me =
                held < seq && id != ShortId::of(&self.me) && interest.keeps(id, req.sites.keys());
        }
        let (reports, buckets) =
            gossip::answer(&req.fingerprint(), req.buckets.as_deref(), &view).into_fields();
        SyncResponse {
            v: PROTOCOL,
            sites: self.site_versions(),
            manifests: self.manifests_newer(&req.sites),
            reports,
            buckets,
            follow: interest.follow_wire(),
            want_me,
        }
    }

    /// The push that follows a sync response: manifests and reports the
    /// responder lacks, and the ids of reports it holds newer than ours
    /// (within `buckets` when the digest covers only those).
    pub fn plan_push(&self, resp: &SyncResponse, buckets: Option<&[u8]>) -> PushRequest {
        let mut push = PushRequest {
            v: PROTOCOL,
            manifests: self.manifests_newer(&resp.sites),
            reports: vec![],
            want: vec![],
        };
        if let Some(digest) = &resp.reports {
            let all = self.all_reports();
            let view = gossip::restrict(
                gossip::without(
                    gossip::view(&all, &self.interest(), unix_now()),
                    ShortId::of(&self.me),
                ),
                buckets,
            );
            let their_interest =
                gossip::Interest::from_wire(resp.sites.keys().cloned(), &resp.follow);
            (push.reports, push.want) = gossip::plan(digest, &their_interest, &view);
        }
        if resp.want_me {
            if let Some(own) = self.own_report() {
                push.reports.push(own.signed);
            }
        }
        push
    }

    /// Takes in a push and answers the reports it wants.
    pub fn answer_push<S: AsRef<str>>(
        &self,
        manifests: &[S],
        reports: Vec<SignedReport>,
        want: &[ShortId],
    ) -> Bundle {
        self.ingest_docs(manifests, reports);
        if want.is_empty() {
            return Bundle::default();
        }
        let all = self.all_reports();
        let view = gossip::view(&all, &gossip::Interest::default(), unix_now());
        Bundle {
            reports: gossip::serve(want, &view),
        }
    }

    /// Keys authorized as mirrors by a manifest we hold (newest or served).
    fn manifest_keys(&self) -> HashSet<PublicKey> {
        let cat = self.catalog.load();
        cat.sites()
            .flat_map(|s| [s.newest.as_ref(), s.current.as_ref()])
            .flatten()
            .flat_map(|m| m.manifest.mirrors.iter().copied())
            .collect()
    }

    /// Verifies and takes in documents from a peer. Returns (manifests
    /// accepted, reports accepted).
    ///
    /// Work per report is bounded before any signature check: a report
    /// whose `seq` is not newer than the one held is skipped after a peek
    /// ([`gossip::triage`]); a report from a key nobody vouches for (not
    /// bound, not authorized by a manifest we hold) is verified only for
    /// the first [`UNVOUCHED_PER_BUNDLE`] of the bundle, and then only
    /// offers its URL to the bounded bind queue, never stored.
    pub fn ingest_docs<S: AsRef<str>>(
        &self,
        manifests: &[S],
        reports: Vec<SignedReport>,
    ) -> (usize, usize) {
        let now = unix_now();
        let mut nr = 0;
        let mut unvouched_budget = UNVOUCHED_PER_BUNDLE;
        let manifest_keys = self.manifest_keys();
        let interest = self.interest();
        for r in reports.into_iter().take(10_000) {
            let Some((node, _seq)) = gossip::triage(&r, |k| self.known_seq(k), &self.me) else {
                tracing::trace!("duplicate, own or unreadable report dropped unverified");
                continue;
            };
            let vouched = manifest_keys.contains(&node) || self.is_bound(&node);
            if !vouched {
                if unvouched_budget == 0 {
                    continue;
                }
                unvouched_budget -= 1;
            }
            match report::verify_signed(r, now) {
                Ok(v) => nr += usize::from(self.accept_report(v, vouched, &interest)),
                Err(e) => tracing::debug!(error = %e, "report refused"),
            }
        }
        let mut nm = 0;
        for m in manifests.iter().take(1_000) {
            let Ok(bytes) = STANDARD.decode(m.as_ref().as_bytes()) else {
                continue;
            };
            match self.ingest_manifest(&bytes) {
                Ok(Some(_)) => nm += 1,
                Ok(None) => {}
                Err(e) => tracing::info!(error = %e, "manifest from peer refused"),
            }
        }
        if nm > 0 {
            self.refresh.notify_one();
            self.replicate_now.notify_one();
        }
        (nm, nr)
    }

    /// Verifies and stores one manifest envelope. `Ok(None)`: not newer (ignored) or unknown site.
    pub fn ingest_manifest(&self, envelope: &[u8]) -> Result<Option<Imported>, IngestError> {
        let site = manifest::peek_site(envelope).map_err(IngestError::Manifest)?;
        let site = SiteName::new(&site);
        if self.cfg.load().site(site.as_str()).is_none() {
            return Ok(None);
        }
        match self.sites.offer_for(&site, envelope, unix_now()) {
            Ok(i) => {
                tracing::info!(site = %site, outcome = ?i, "accepted manifest from the federation");
                Ok(Some(i))
            }
            Err(IngestError::Manifest(ManifestError::NotNewer { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn is_bound(&self, node: &PublicKey) -> bool {
        self.peers.read().is_ok_and(|p| p.contains_key(node))
    }

    /// Whether a blob source is not backed off.
    pub fn source_usable(&self, key: &PublicKey) -> bool {
        self.sources
            .lock()
            .map(|s| s.usable(key, unix_millis()))
            .unwrap_or(true)
    }

    /// Whether a source already delivered verified bytes of `site`.
    pub fn source_delivered(&self, key: &PublicKey, site: &str) -> bool {
        self.sources.lock().is_ok_and(|s| s.delivered(key, site))
    }

    /// Records a verified blob delivery from `key` for `site`.
    pub fn source_succeeded(&self, key: &PublicKey, site: &str) {
        if let Ok(mut s) = self.sources.lock() {
            s.success(key, site);
        }
    }

    /// Records a failed pull from `key`; returns its back-off.
    pub fn source_failed(&self, key: &PublicKey) -> Duration {
        self.sources
            .lock()
            .map(|mut s| s.failure(key, unix_millis()))
            .unwrap_or(sources::BASE_BACKOFF)
    }

    /// Up to `max` URLs due for a binding attempt (bound ones are dropped).
    fn binds_due(&self, max: usize) -> Vec<String> {
        let bound: HashSet<String> = self.peers().into_iter().map(|p| p.url).collect();
        let Ok(mut q) = self.to_bind.lock() else {
            return vec![];
        };
        for u in q.due(unix_millis(), usize::MAX) {
            if bound.contains(&u) || u == self.url {
                q.done(&u);
            }
        }
        q.due(unix_millis(), max)
    }

    fn bind_finished(&self, url: &str, result: &Result<PublicKey, String>) {
        if let Ok(mut q) = self.to_bind.lock() {
            if result.is_ok() {
                q.done(url);
            } else {
                q.failed(url, unix_millis());
            }
        }
        let bootstrap = self
            .cfg
            .load()
            .federation
            .peers
            .iter()
            .any(|p| p.url == url);
        let Ok(mut errors) = self.bind_errors.lock() else {
            return;
        };
        match result {
            Ok(key) => {
                if let Ok((url, host)) = normalize_url(url) {
                    memory::remember(self, &[self.remembered(&url, &host, key)]);
                }
                if errors.remove(url).is_some() {
                    tracing::info!(%url, "bound after earlier failures");
                }
            }
            Err(e) => {
                // A configured peer that cannot be bound is the operator's
                // to fix (host, port, address, certificate): WARN with the
                // cause, once per distinct error. URLs learned from reports
                // are anyone's claims: DEBUG.
                let changed = errors.get(url) != Some(e);
                if bootstrap && changed {
                    tracing::warn!(%url, error = %e, "cannot bind configured peer (will retry)");
                } else {
                    tracing::debug!(%url, error = %e, "binding failed; will retry");
                }
                if bootstrap || errors.len() < 256 || errors.contains_key(url) {
                    errors.insert(url.to_string(), e.clone());
                }
            }
        }
    }

    /// The row to remember for a bound peer (its addresses as resolved now).
    pub fn remembered(&self, url: &str, name: &str, key: &PublicKey) -> crate::db::RememberedPeer {
        crate::db::RememberedPeer {
            url: url.to_string(),
            name: name.to_string(),
            key: key.to_string(),
            addresses: self.resolver.addresses(name),
        }
    }

    /// Records a sync outcome with `url` (`None`: it worked). True when it
    /// changed: a new or different error, or the first success after one.
    pub fn note_sync_error(&self, url: &str, error: Option<&str>) -> bool {
        let Ok(mut errors) = self.sync_errors.lock() else {
            return false;
        };
        match error {
            None => errors.remove(url).is_some(),
            Some(e) => {
                if errors.get(url).map(String::as_str) == Some(e) {
                    return false;
                }
                errors.insert(url.to_string(), e.to_string());
                true
            }
        }
    }

    /// Configured peers not bound yet, with the last error of each.
    pub fn unbound_bootstrap_peers(&self) -> Vec<(String, Option<String>)> {
        let bound: HashSet<String> = self.peers().into_iter().map(|p| p.url).collect();
        let errors = self
            .bind_errors
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default();
        self.cfg
            .load()
            .federation
            .peers
            .iter()
            .filter(|p| !bound.contains(&p.url))
            .map(|p| (p.url.clone(), errors.get(&p.url).cloned()))
            .collect()
    }

    /// URLs waiting to be bound.
    pub fn bind_queue_len(&self) -> usize {
        self.to_bind.lock().map_or(0, |q| q.len())
    }

    /// Newest report sequence held for a node (0 if none).
    fn known_seq(&self, node: &PublicKey) -> u64 {
        self.peers
            .read()
            .ok()
            .and_then(|p| {
                p.get(node)
                    .and_then(|p| p.report.as_ref().map(|r| r.report.seq))
            })
            .unwrap_or(0)
    }

    /// The lowest RTTs measured to peers (at most
    /// [`report::MAX_PEER_RTTS`]), by short id, to 0.1 ms.
    pub fn rtts(&self) -> BTreeMap<String, f64> {
        let mut v: Vec<(f64, ShortId)> = self
            .peers()
            .into_iter()
            .filter_map(|p| p.probe.rtt_ms().map(|r| (r, ShortId::of(&p.key))))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v.into_iter()
            .take(report::MAX_PEER_RTTS)
            .map(|(r, id)| (id.to_string(), report::round_to(r, 1)))
            .collect()
    }

    fn set_own_report(&self, r: VerifiedReport) {
        if let Ok(mut o) = self.own_report.write() {
            *o = Some(r);
        }
    }

    /// Records a proof-of-holding check of `key`'s claim for `site`;
    /// ignores the claim for a while when [`holding::verdict`] says so.
    pub fn holding_checked(&self, key: &PublicKey, site: &str, outcome: &holding::Outcome) {
        let failures = {
            let Ok(mut h) = self.holding.lock() else {
                return;
            };
            let before = h.get(&(*key, site.to_string())).copied().unwrap_or(0);
            let (after, distrust) = holding::verdict(before, outcome);
            if after == 0 {
                h.remove(&(*key, site.to_string()));
            } else if h.len() < 100_000 {
                h.insert((*key, site.to_string()), after);
            }
            if !distrust {
                if after > 0 {
                    tracing::info!(key = %key, %site, ?outcome, failures = after, "proof-of-holding check failed");
                }
                return;
            }
            after
        };
        tracing::info!(key = %key, %site, ?outcome, failures, "proof-of-holding check failed");
        self.distrust(key, site, holding::DISTRUST_SECS);
        self.health_changed.notify_one();
    }

    /// Whether `p`'s claimed location is possible given the RTT measured to
    /// it ([`plausible`]); None when unknown.
    pub fn location_plausible(&self, p: &Peer) -> Option<bool> {
        let own = self.cfg.load().node.location;
        let claimed = p.report.as_ref().and_then(|r| r.report.location);
        plausible::location_plausible(own, claimed, p.probe.rtt_ms())
    }

    /// The location steering uses for `p`: its claim, unless
    /// `location_check` is on and the claim is impossible.
    pub fn peer_location(&self, p: &Peer) -> Option<crate::geo::GeoPoint> {
        if self.cfg.load().federation.location_check && self.location_plausible(p) == Some(false) {
            return None;
        }
        p.report.as_ref().and_then(|r| r.report.location)
    }

    /// The addresses of `p`'s report that this node verified reach `p`
    /// (see [`addrcheck`]): the only ones steering may answer.
    pub fn answerable_addresses(&self, p: &Peer) -> Vec<IpAddr> {
        let Some(r) = &p.report else {
            return vec![];
        };
        let now = unix_millis();
        let Ok(m) = self.addr_checks.lock() else {
            return vec![];
        };
        addrcheck::filter(&r.report.addresses, |a| m.get(&(p.key, a)).copied(), now)
    }

    /// Addresses of `p` due for a check (not running already); marks them running.
    fn addresses_due(&self, p: &Peer) -> Vec<IpAddr> {
        let Some(r) = &p.report else {
            return vec![];
        };
        let now = unix_millis();
        let (Ok(m), Ok(mut running)) = (self.addr_checks.lock(), self.addr_checking.lock()) else {
            return vec![];
        };
        r.report
            .addresses
            .iter()
            .take(addrcheck::MAX_CHECKED_PER_PEER)
            .copied()
            .filter(|a| addrcheck::due(m.get(&(p.key, *a)).copied(), now))
            .filter(|a| running.insert((p.key, *a)))
            .collect()
    }

    /// Checks that `ip` reaches `p`: HTTPS with `sni` to `ip` at the port
    /// of `p`'s URL, the certificate verified for `sni`, and `p`'s key
    /// signing a fresh challenge there. Records the outcome; true if it
    /// changed whether the address is answered.
    async fn check_address(&self, p: &Peer, sni: &str, ip: IpAddr) -> bool {
        let port = p
            .url
            .strip_prefix("https://")
            .and_then(|r| r.rsplit_once(':'))
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .unwrap_or(443);
        let sa = SocketAddr::new(ip, port);
        let client = {
            let cached = self
                .addr_clients
                .lock()
                .ok()
                .and_then(|c| c.get(&(sni.to_string(), sa)).cloned());
            match cached {
                Some(c) => Some(c),
                None => client_builder(&self.cfg.load())
                    .ok()
                    .and_then(|b| b.resolve(sni, sa).build().ok())
                    .inspect(|c| {
                        if let Ok(mut m) = self.addr_clients.lock() {
                            if m.len() > 1024 {
                                m.clear();
                            }
                            m.insert((sni.to_string(), sa), c.clone());
                        }
                    }),
            }
        };
        let nonce = binding::Nonce::random();
        let ok = match client {
            None => false,
            Some(c) => {
                let doc = async {
                    c.get(format!(
                        "https://{sni}:{port}/.well-known/p2pcdn/v1/node?challenge={}",
                        nonce.encode()
                    ))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .ok()?
                    .json::<NodeDoc>()
                    .await
                    .ok()
                }
                .await;
                doc.is_some_and(|d| {
                    d.key.parse::<PublicKey>().ok() == Some(p.key)
                        && d.proof
                            .as_deref()
                            .is_some_and(|pr| binding::check(&p.key, &nonce, &d.name, &d.url, pr))
                })
            }
        };
        let now = unix_millis();
        let mut changed = false;
        if let Ok(mut m) = self.addr_checks.lock() {
            let before = m.insert((p.key, ip), addrcheck::AddrCheck { ok, at_ms: now });
            changed = before.map(|b| b.ok) != Some(ok);
            if !ok && before.is_none_or(|b| b.ok) {
                tracing::warn!(peer = %p.name, address = %ip, %sni, "advertised address does not reach the peer; not answering it");
            }
            if m.len() > 100_000 {
                m.clear();
            }
        }
        if let Ok(mut r) = self.addr_checking.lock() {
            r.remove(&(p.key, ip));
        }
        changed
    }

    /// Ignores `key`'s claims about `site` for `secs` seconds.
    pub fn distrust(&self, key: &PublicKey, site: &str, secs: u64) {
        if let Ok(mut peers) = self.peers.write() {
            if let Some(p) = peers.get_mut(key) {
                tracing::warn!(peer = %p.name, %site, "peer failed a spot-check: it does not have what it claims; ignoring its claim");
                p.distrusted.insert(site.to_string(), unix_now() + secs);
            }
        }
    }

    fn record_probe(&self, key: &PublicKey, outcome: Option<f64>) {
        if let Ok(mut peers) = self.peers.write() {
            if let Some(p) = peers.get_mut(key) {
                let was = p.probe.is_up();
                p.probe = p.probe.observe(outcome);
                if was != p.probe.is_up() {
                    tracing::info!(peer = %p.name, up = p.probe.is_up(), "peer health changed");
                    self.health_log.push(failover::HealthChange {
                        at: unix_now(),
                        peer: p.name.clone(),
                        up: p.probe.is_up(),
                    });
                    self.health_changed.notify_one();
                }
            }
            let up = peers.values().filter(|p| p.probe.is_up()).count();
            self.metrics
                .peers_up
                .set(i64::try_from(up).unwrap_or(i64::MAX));
            self.metrics
                .peers
                .set(i64::try_from(peers.len()).unwrap_or(i64::MAX));
        }
    }
}
