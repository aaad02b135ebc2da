//! Builds a [`StatusView`] from this node's catalog snapshot and federation
//! agent. Reads only memory, except the configured certificate files (small,
//! local; call it off the async runtime, e.g. in `spawn_blocking`).

use std::collections::HashMap;

use super::{cert, CertExpiry, Health, MirrorView, SiteView, StatusView};
use crate::catalog::Catalog;
use crate::federation::Federation;
use crate::report::Held;

/// The view of the federation from this node at `now` (unix seconds).
pub fn view(cat: &Catalog, fed: Option<&Federation>, node: &str, now: u64) -> StatusView {
    let mut mirrors = vec![this_node(cat, fed, node, now)];
    let mut names: HashMap<String, String> = HashMap::new();
    if let Some(fed) = fed {
        names.insert(fed.me.to_string(), node.to_string());
        for p in fed.peers() {
            names.insert(p.key.to_string(), p.name.clone());
            let Some(r) = p.report.as_ref().map(|r| &r.report) else {
                continue;
            };
            let healthy = p.healthy(now);
            mirrors.push(MirrorView {
                name: p.name.clone(),
                key: p.key.to_string(),
                this_node: false,
                health: if healthy { Health::Up } else { Health::Down },
                why_down: match (healthy, p.probe.is_up()) {
                    (true, _) => None,
                    (false, false) => Some("probes fail"),
                    (false, true) => Some("report expired"),
                },
                location: r.location,
                addresses: r.addresses.clone(),
                load: Some(r.load.fraction(&r.capacity)),
                rtt_ms: p.probe.rtt_ms(),
                report_age_s: Some(now.saturating_sub(r.issued)),
                holds: r.holds.clone(),
                mirrors: r.mirrors.clone(),
            });
        }
    }
    let default_cert = fed.and_then(|f| f.config().https_default_cert.clone());
    let mut sites: Vec<SiteView> = cat
        .sites()
        .map(|s| {
            let cert_file = s
                .config
                .tls
                .as_ref()
                .or(default_cert.as_ref())
                .map(|(c, _)| c);
            SiteView {
                hostname: s.config.hostname.clone(),
                serving: s.current.as_ref().map(|m| m.manifest.version),
                newest: s.newest.as_ref().map(|m| m.manifest.version),
                authorized: s
                    .newest
                    .as_ref()
                    .map(|m| {
                        m.manifest
                            .mirrors
                            .iter()
                            .map(|k| {
                                let k = k.to_string();
                                names.get(&k).cloned().unwrap_or(k)
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                authorized_here: s.authorized,
                cert: cert_file.map_or(CertExpiry::None, |c| cert::expiry_of_file(c)),
            }
        })
        .collect();
    sites.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    StatusView {
        node: node.to_string(),
        now,
        mirrors,
        sites,
        failovers: fed.map(|f| f.health_log.recent()).unwrap_or_default(),
    }
}

/// This node: always up (it is answering), described by its own report when
/// the federation runs, else by its catalog.
fn this_node(cat: &Catalog, fed: Option<&Federation>, node: &str, now: u64) -> MirrorView {
    let own = fed.and_then(|f| f.own_report());
    let r = own.as_ref().map(|r| &r.report);
    MirrorView {
        name: node.to_string(),
        key: fed.map(|f| f.me.to_string()).unwrap_or_default(),
        this_node: true,
        health: Health::Up,
        why_down: None,
        location: r.and_then(|r| r.location),
        addresses: r.map(|r| r.addresses.clone()).unwrap_or_default(),
        load: r.map(|r| r.load.fraction(&r.capacity)),
        rtt_ms: None,
        report_age_s: r.map(|r| now.saturating_sub(r.issued)),
        holds: r.map_or_else(
            || {
                cat.versions()
                    .into_iter()
                    .map(|(site, version)| Held { site, version })
                    .collect()
            },
            |r| r.holds.clone(),
        ),
        mirrors: r.map_or_else(
            || {
                cat.sites()
                    .filter(|s| s.config.mirror)
                    .map(|s| s.config.hostname.clone())
                    .collect()
            },
            |r| r.mirrors.clone(),
        ),
    }
}
