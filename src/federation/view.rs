//! The steering view: per site, the candidate mirrors with health, load,
//! location and held version, rebuilt a few times a second from the
//! federation state, so a DNS query only does a geo lookup and a pure
//! [`steer`](crate::steer::steer) call over a small vector.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::rr::LowerName;
use tokio::sync::watch;

use super::replicate::authorized;
use super::Federation;
use crate::catalog::{unix_now, SharedCatalog};
use crate::dns::server::{Steered, Steering};
use crate::geo::{Geo, GeoPoint};
use crate::steer::{self, Candidate, ClientInfo, Family, Policy};

/// Candidates for one site.
#[derive(Debug, Clone, Default)]
pub struct SiteView {
    /// Newest manifest version known.
    pub target: Option<u64>,
    /// Every mirror that could serve it.
    pub candidates: Vec<Candidate>,
}

/// All sites' candidates.
#[derive(Debug, Clone, Default)]
pub struct SteerView {
    sites: HashMap<String, SiteView>,
}

impl SteerView {
    /// Builds the view from the catalog and the federation's peers.
    pub fn build(fed: &Federation, catalog: &SharedCatalog) -> Self {
        let now = unix_now();
        let cfg = fed.config();
        let cat = catalog.load();
        let peers = fed.peers();
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
        let mut sites = HashMap::new();
        for live in cat.sites() {
            let host = &live.config.hostname;
            let mirrors = live
                .newest
                .as_ref()
                .map(|m| m.manifest.mirrors.clone())
                .unwrap_or_default();
            let mut candidates = vec![];
            if live.config.mirror {
                candidates.push(Candidate {
                    id: *fed.me.as_bytes(),
                    addrs: cfg.node.addresses.clone(),
                    point: cfg.node.location.map(|(lat, lon)| GeoPoint { lat, lon }),
                    rtt_ms: None,
                    load: own_load,
                    healthy: true,
                    authorized: authorized(&mirrors, &fed.me),
                    version: live.current.as_ref().map(|m| m.manifest.version),
                });
            }
            for p in &peers {
                let Some(r) = p.report.as_ref().map(|r| &r.report) else {
                    continue;
                };
                candidates.push(Candidate {
                    id: *p.key.as_bytes(),
                    addrs: r.addresses.clone(),
                    point: r.location.map(|l| GeoPoint {
                        lat: l.lat,
                        lon: l.lon,
                    }),
                    rtt_ms: None,
                    load: r.load.fraction(&r.capacity),
                    healthy: p.healthy(now),
                    authorized: authorized(&mirrors, &p.key),
                    version: p.holds(host, now),
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
        Self { sites }
    }

    /// A site's view.
    pub fn site(&self, host: &str) -> Option<&SiteView> {
        self.sites.get(host)
    }
}

/// DNS steering backed by the view and the geolocation database.
pub struct FederatedSteering {
    view: Arc<ArcSwap<SteerView>>,
    geo: Option<Arc<Geo>>,
    policy: Policy,
}

impl FederatedSteering {
    /// Creates the steering front and the shared view.
    pub fn new(geo: Option<Arc<Geo>>, policy: Policy) -> (Self, Arc<ArcSwap<SteerView>>) {
        let view = Arc::new(ArcSwap::from_pointee(SteerView::default()));
        (
            Self {
                view: view.clone(),
                geo,
                policy,
            },
            view,
        )
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

impl Steering for FederatedSteering {
    fn addresses(
        &self,
        site: &LowerName,
        v6: bool,
        client: IpAddr,
        subnet: Option<(IpAddr, u8)>,
    ) -> Option<Steered> {
        let host = site.to_string();
        let host = host.trim_end_matches('.');
        let view = self.view.load();
        let sv = view.site(host)?;
        let ip = subnet.map_or(client, |s| s.0);
        let point = self
            .geo
            .as_ref()
            .and_then(|g| g.lookup(ip))
            .and_then(|l| l.point);
        let ci = ClientInfo {
            point,
            prefix_key: prefix_key(ip),
        };
        let family = if v6 { Family::V6 } else { Family::V4 };
        let addrs = steer::steer(&ci, &sv.candidates, sv.target, &self.policy, family);
        if addrs.is_empty() {
            return None;
        }
        // RFC 7871: the answer depends on the client's network, at most /24 or /56.
        let scope = subnet.map_or(0, |(a, p)| p.min(if a.is_ipv4() { 24 } else { 56 }));
        Some(Steered { addrs, scope })
    }
}

/// Rebuilds the view every 250 ms until shutdown.
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
            _ = stop.changed() => break,
        }
    }
}
