//! One running instance: opens the store and database, loads zones, starts
//! DNS (UDP+TCP), HTTP and HTTPS listeners and the catalog refresher, and
//! shuts all of it down on request.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::rr::{LowerName, Name};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::catalog::{unix_now, Catalog, SharedCatalog};
use crate::config::Config;
use crate::db::Db;
use crate::dns::server::{DnsData, DnsServer, DnsSettings, Handler, SharedDnsData};
use crate::dns::zone::{Zone, ZoneSet};
use crate::federation::{self, Federation};
use crate::http::{self, listen, AppState};
use crate::sites::Sites;
use crate::store::BlobStore;

/// Startup errors.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Data directory problem.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Store.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Database.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// Zones.
    #[error(transparent)]
    Zone(#[from] crate::dns::zone::ZoneError),
    /// TLS.
    #[error(transparent)]
    Tls(#[from] http::tls::TlsError),
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Which listener.
        what: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// Bad name.
    #[error("invalid DNS name {0}")]
    Name(String),
    /// Federation setup.
    #[error(transparent)]
    Federation(#[from] crate::federation::FederationError),
    /// Owner key discovery.
    #[error(transparent)]
    OwnerKey(#[from] crate::owner::OwnerKeyError),
    /// Geolocation database.
    #[error(transparent)]
    Geo(#[from] crate::geo::GeoError),
}

/// Problems found while building the DNS data, each logged at WARN once
/// until it goes away (the data is rebuilt at every catalog change).
#[derive(Debug, Default)]
struct DnsWarnings {
    warned: HashSet<String>,
}

impl DnsWarnings {
    /// The problems in `now` not reported since they last appeared; the
    /// ones gone are forgotten, so they are reported again if they return.
    fn fresh(&mut self, now: Vec<DnsProblem>) -> Vec<DnsProblem> {
        let keys: HashSet<String> = now.iter().map(DnsProblem::key).collect();
        let fresh = now
            .into_iter()
            .filter(|p| !self.warned.contains(&p.key()))
            .collect();
        self.warned = keys;
        fresh
    }

    /// Logs the fresh problems of `now` at WARN.
    fn log(&mut self, now: Vec<DnsProblem>) {
        for p in self.fresh(now) {
            match &p {
                DnsProblem::ZoneDoesNotLoad { zone, error } => {
                    tracing::warn!(%zone, %error, "owner-signed zone does not load")
                }
                DnsProblem::NoZone { site, zone } => {
                    tracing::warn!(%site, %zone, "no zone file and no owner-signed zone yet: not answering for this site")
                }
            }
        }
    }
}

/// Why part of the configuration is not answered in DNS.
#[derive(Debug)]
enum DnsProblem {
    /// An owner-signed zone from a manifest failed to parse.
    ZoneDoesNotLoad { zone: String, error: String },
    /// A site's zone is neither a zone file nor an owner-signed zone.
    NoZone { site: String, zone: String },
}

impl DnsProblem {
    fn key(&self) -> String {
        match self {
            Self::ZoneDoesNotLoad { zone, error } => format!("zone {zone}: {error}"),
            Self::NoZone { site, zone } => format!("site {site} in {zone}"),
        }
    }
}

/// Zones (local files first, then owner-signed zones from manifests) and the
/// steered names, with what could not be answered (a site whose zone is in
/// neither, an owner-signed zone that does not parse).
fn build_dns_data(cfg: &Config, local: &ZoneSet, catalog: &Catalog) -> (DnsData, Vec<DnsProblem>) {
    let mut problems = vec![];
    let mut zones: Vec<Zone> = local.zones().to_vec();
    for live in catalog.sites() {
        let Some(doc) = live.newest.as_ref().and_then(|m| m.manifest.zone.clone()) else {
            continue;
        };
        if doc.origin != live.config.zone {
            continue;
        }
        let Ok(origin) = Name::from_ascii(format!("{}.", doc.origin)) else {
            continue;
        };
        if zones.iter().any(|z| *z.origin() == LowerName::new(&origin)) {
            continue;
        }
        match Zone::parse_untrusted(
            &doc.text,
            &origin,
            std::path::Path::new(&format!("<manifest of {}>", live.config.hostname)),
        ) {
            Ok(z) => zones.push(z),
            Err(e) => problems.push(DnsProblem::ZoneDoesNotLoad {
                zone: doc.origin.clone(),
                error: e.to_string(),
            }),
        }
    }
    let mut set = ZoneSet::new(zones);
    let mut steered = HashSet::new();
    for s in &cfg.sites {
        let (Ok(name), Ok(zone)) = (
            Name::from_ascii(format!("{}.", s.hostname)),
            Name::from_ascii(format!("{}.", s.zone)),
        ) else {
            continue;
        };
        let lname = LowerName::new(&name);
        match set.find_mut(&lname) {
            Some(z) if *z.origin() == LowerName::new(&zone) => {
                z.add_name(&lname);
                steered.insert(lname);
            }
            _ => problems.push(DnsProblem::NoZone {
                site: s.hostname.clone(),
                zone: s.zone.clone(),
            }),
        }
    }
    (
        DnsData {
            zones: set,
            steered,
        },
        problems,
    )
}

/// A running instance.
pub struct Instance {
    /// Bound DNS addresses (UDP and TCP).
    pub dns_addrs: Vec<SocketAddr>,
    /// Bound plain HTTP addresses.
    pub http_addrs: Vec<SocketAddr>,
    /// Bound HTTPS addresses.
    pub https_addrs: Vec<SocketAddr>,
    /// Bound metrics addresses.
    pub metrics_addrs: Vec<SocketAddr>,
    /// The served catalog.
    pub catalog: SharedCatalog,
    /// The federation agent.
    pub federation: Arc<Federation>,
    dns: Option<DnsServer>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Instance {
    /// Starts everything described by `cfg`.
    pub async fn start(mut cfg: Config) -> Result<Self, StartError> {
        // First: from here on a SIGHUP reloads instead of ending the process.
        let hup = crate::reload::hangup();
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| StartError::DataDir {
            path: cfg.data_dir.display().to_string(),
            source,
        })?;
        crate::owner::resolve(&mut cfg).await?;
        let store = BlobStore::open(&cfg.data_dir)?;
        let db = Arc::new(Db::open(&cfg.data_dir.join("p2pcdn.db"))?);
        let local_zones = crate::reload::load_zones(&cfg)?;
        for z in local_zones.zones() {
            tracing::info!(zone = %z.origin(), "loaded zone file");
        }

        let me = crate::keys::SecretKey::read(&cfg.node.key)
            .map_err(crate::federation::FederationError::from)?
            .public();
        let sites = Arc::new(Sites::new(&cfg.sites, db.clone(), store.clone(), Some(me)));
        sites.publish(unix_now());
        let catalog: SharedCatalog = sites.catalog();
        for (site, version) in catalog.load().versions() {
            tracing::info!(%site, version, "serving site");
        }
        let params = crate::reload::steer_params(&cfg)?;
        let (steering, steer_view) = federation::view::FederatedSteering::new(
            params.geo,
            params.policy,
            params.ttl,
            params.explore_every,
        );
        let steering = Arc::new(steering);
        let mut dns_warnings = DnsWarnings::default();
        let (data, problems) = build_dns_data(&cfg, &local_zones, &catalog.load());
        dns_warnings.log(problems);
        let dns_data: SharedDnsData = Arc::new(ArcSwap::from_pointee(data));
        let local_zones = Arc::new(ArcSwap::from_pointee(local_zones));
        let shared_cfg: crate::reload::SharedConfig = Arc::new(ArcSwap::from_pointee(cfg.clone()));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();

        // HTTP(S).
        let tls = http::tls::server_config(&cfg)?;
        let cert_store = tls.as_ref().map(|(_, store)| store.clone());
        let (https_listeners, https_addrs) = if tls.is_some() {
            bind_tcp(&cfg.https_listen, "https").await?
        } else {
            if !cfg.https_listen.is_empty() {
                tracing::warn!("https.listen is set but no site has a certificate: HTTPS disabled");
            }
            (vec![], vec![])
        };
        let (http_listeners, http_addrs) = bind_tcp(&cfg.http_listen, "http").await?;
        let (metrics_listeners, metrics_addrs) = bind_tcp(&cfg.metrics_listen, "metrics").await?;
        let connections = Arc::new(listen::ConnCounter::default());
        let refresh = Arc::new(tokio::sync::Notify::new());
        let cfg_arc = Arc::new(cfg.clone());
        let fed = Arc::new(Federation::new(
            cfg_arc,
            db.clone(),
            store.clone(),
            sites.clone(),
            refresh.clone(),
            connections.clone(),
            https_addrs.first().map(|a| a.port()),
        )?);
        fed.attach_dns(dns_data.clone());
        if let Some(store) = &cert_store {
            fed.attach_certs(store.clone());
        }
        let app = http::router(AppState {
            catalog: catalog.clone(),
            store: store.clone(),
            https_port: https_addrs.first().map(|a| a.port()),
            node_name: cfg.node.name.clone().into(),
            connections: connections.clone(),
            load: fed.load.clone(),
            fed: Some(fed.clone()),
            intake: Arc::new(http::intake::Intake::new(Default::default())),
            metrics: fed.metrics.clone(),
            uploads: Some(Arc::new(http::upload::UploadService {
                uploads: crate::upload::Uploads::new(crate::upload::Limits {
                    max_total: cfg.max_upload_bytes,
                    ..Default::default()
                }),
                cfg: shared_cfg.clone(),
                db: db.clone(),
                store: store.clone(),
                sites: sites.clone(),
            })),
        });
        // The first steering view is built before DNS answers anything, so a
        // site already held is steered from the first query.
        steer_view.store(Arc::new(federation::view::SteerView::build(&fed, &catalog)));
        // DNS.
        let handler = Handler::new(
            dns_data.clone(),
            steering.clone(),
            DnsSettings {
                fallback_ttl: params.ttl.fallback().secs,
                max_udp_payload: cfg.dns.max_udp_payload,
                rrl: (cfg.dns.rrl_rate > 0).then(|| {
                    Arc::new(crate::dns::rrl::RateLimiter::new(
                        cfg.dns.rrl_rate,
                        cfg.dns.rrl_slip,
                        cfg.dns.rrl_exempt.clone(),
                    ))
                }),
                metrics: fed.metrics.clone(),
            },
        )
        .with_challenges(fed.txt_book().clone());
        let dns = DnsServer::bind(
            handler,
            &cfg.dns.listen,
            crate::dns::tcp::TcpLimits {
                max_connections: cfg.dns.tcp_max_connections,
                idle_timeout: Duration::from_secs(cfg.dns.tcp_idle_timeout_secs),
            },
            crate::dns::server::udp_threads(cfg.dns.udp_threads),
        )
        .await
        .map_err(|source| StartError::Bind {
            addr: cfg
                .dns
                .listen
                .first()
                .copied()
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            what: "dns",
            source,
        })?;
        let dns_addrs = dns.addrs.clone();
        let limits = listen::Limits {
            max_connections: cfg.http_limits.max_connections,
            handshake_timeout: Duration::from_secs(cfg.http_limits.header_timeout_secs),
            header_timeout: Duration::from_secs(cfg.http_limits.header_timeout_secs),
            idle_timeout: Duration::from_secs(cfg.http_limits.idle_timeout_secs),
            max_per_address: cfg.http_limits.max_connections_per_address,
        };
        for l in http_listeners {
            tasks.spawn(listen::serve(
                l,
                None,
                app.clone(),
                limits,
                connections.clone(),
                fed.client_rtt.clone(),
                shutdown_rx.clone(),
            ));
        }
        // SIGHUP reloads the configuration, zones, geodata and
        // certificates; it never stops the process.
        tasks.spawn(
            crate::reload::Reloader {
                cfg: shared_cfg.clone(),
                zones: local_zones.clone(),
                steering,
                fed: fed.clone(),
                sites: sites.clone(),
                certs: cert_store.clone(),
                refresh: refresh.clone(),
            }
            .run(hup, shutdown_rx.clone()),
        );
        if let Some((tls, store)) = tls {
            if let Some(acme) = cfg.acme.clone() {
                match crate::acme::AcmeClient::new(fed.clone(), acme, store) {
                    Ok(client) => {
                        // Stored certificates are served from the first connection.
                        client.load_stored();
                        tasks.spawn(Arc::new(client).run(shutdown_rx.clone()));
                    }
                    Err(e) => tracing::error!(error = %e, "ACME client disabled"),
                }
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            for l in https_listeners {
                tasks.spawn(listen::serve(
                    l,
                    Some(acceptor.clone()),
                    app.clone(),
                    limits,
                    connections.clone(),
                    fed.client_rtt.clone(),
                    shutdown_rx.clone(),
                ));
            }
        }

        // Catalog refresher: picks up publishes (another process writing the
        // database) within ~0.5 s, in-process changes (replication) at once,
        // and applies expiry every minute.
        {
            let catalog = catalog.clone();
            let sites = sites.clone();
            let db = db.clone();
            let shared_cfg = shared_cfg.clone();
            let local_zones = local_zones.clone();
            let mut rx = shutdown_rx.clone();
            let refresh = refresh.clone();
            let dns_data = dns_data.clone();
            let metrics = fed.metrics.clone();
            metrics.set_served(&catalog.load().versions());
            let node_key = me;
            tasks.spawn(async move {
                let mut last = db.data_version().ok();
                let mut ticks = 0u32;
                let mut warned = HashSet::new();
                warn_unauthorized(&catalog.load(), &node_key, &mut warned);
                let mut expiry_warned = HashSet::new();
                let expiries = crate::expiry::of_catalog(
                    &catalog.load(),
                    unix_now(),
                    shared_cfg.load().expiry_warning_days,
                );
                metrics.set_expiry(&expiries);
                crate::expiry::warn_once(&expiries, &mut expiry_warned);
                let mut published = sites.subscribe();
                let mut served = catalog.load().versions();
                loop {
                    let mut forced = false;
                    let mut fresh = false;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = refresh.notified() => forced = true,
                        // `sites` published a version that changed state.
                        r = published.changed() => fresh = r.is_ok(),
                        _ = rx.changed() => break,
                    }
                    ticks = ticks.wrapping_add(1);
                    let dv = db.data_version().ok();
                    let new = if forced || dv != last || ticks % 120 == 0 {
                        last = dv;
                        let s = sites.clone();
                        match tokio::task::spawn_blocking(move || s.publish(unix_now()).1).await {
                            Ok(new) => new,
                            Err(_) => continue,
                        }
                    } else if fresh {
                        catalog.load_full()
                    } else {
                        continue;
                    };
                    published.mark_unchanged();
                    let cfg = shared_cfg.load_full();
                    let now = new.versions();
                    if served != now {
                        tracing::info!(versions = ?now, "catalog updated");
                        metrics.set_served(&now);
                        served = now;
                    }
                    warn_unauthorized(&new, &node_key, &mut warned);
                    let expiries =
                        crate::expiry::of_catalog(&new, unix_now(), cfg.expiry_warning_days);
                    metrics.set_expiry(&expiries);
                    crate::expiry::warn_once(&expiries, &mut expiry_warned);
                    let (data, problems) = build_dns_data(&cfg, &local_zones.load(), &new);
                    dns_warnings.log(problems);
                    dns_data.store(Arc::new(data));
                }
            });
        }
        federation::agent::spawn(fed.clone(), &mut tasks, shutdown_rx.clone());
        tasks.spawn(federation::view::run(
            fed.clone(),
            catalog.clone(),
            steer_view,
            shutdown_rx.clone(),
        ));

        // Metrics: GET /metrics on its own listeners (meant for a private
        // address; nothing client-specific is exposed).
        for l in metrics_listeners {
            let metrics = fed.metrics.clone();
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let m = metrics.clone();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            m.render(),
                        )
                    }
                }),
            );
            let mut rx = shutdown_rx.clone();
            tasks.spawn(async move {
                let stop = async move {
                    let _ = rx.changed().await;
                };
                if let Err(e) = axum::serve(l, app).with_graceful_shutdown(stop).await {
                    tracing::warn!(error = %e, "metrics listener failed");
                }
            });
        }

        tracing::info!(
            dns = ?dns_addrs,
            http = ?http_addrs,
            https = ?https_addrs,
            metrics = ?metrics_addrs,
            "p2pcdn instance ready"
        );
        Ok(Self {
            dns_addrs,
            http_addrs,
            https_addrs,
            metrics_addrs,
            catalog,
            federation: fed,
            dns: Some(dns),
            shutdown,
            tasks,
        })
    }

    /// Stops all listeners and background tasks.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(dns) = self.dns.take() {
            dns.shutdown().await;
        }
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Binds a TCP listener on each address; returns them with the addresses
/// actually bound (port 0 resolved).
async fn bind_tcp(
    addrs: &[SocketAddr],
    what: &'static str,
) -> Result<(Vec<TcpListener>, Vec<SocketAddr>), StartError> {
    let mut listeners = Vec::with_capacity(addrs.len());
    for a in addrs {
        let l = TcpListener::bind(a)
            .await
            .map_err(|source| StartError::Bind {
                addr: *a,
                what,
                source,
            })?;
        listeners.push(l);
    }
    let bound = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    Ok((listeners, bound))
}

/// Warns once (per site, until it changes) that the owner does not
/// authorize this node: it then serves the site to nobody, and only the
/// owner can change that.
fn warn_unauthorized(cat: &Catalog, me: &crate::keys::PublicKey, warned: &mut HashSet<String>) {
    let now: Vec<(String, u64)> = cat.unauthorized();
    for (site, version) in &now {
        if warned.insert(site.clone()) {
            tracing::warn!(
                %site,
                version,
                node_key = %me,
                "the site's owner does not authorize this node: its key is not among the manifest's mirrors, so it serves nothing for this site (the owner adds it with `p2pcdn publish --mirror {me}`)"
            );
        }
    }
    warned.retain(|s| now.iter().any(|(n, _)| n == s));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_zone(site: &str) -> DnsProblem {
        DnsProblem::NoZone {
            site: site.into(),
            zone: "t.test".into(),
        }
    }

    #[test]
    fn a_dns_problem_is_warned_once_until_it_goes_away() {
        let keys = |v: Vec<DnsProblem>| v.iter().map(DnsProblem::key).collect::<Vec<_>>();
        let mut w = DnsWarnings::default();
        assert_eq!(keys(w.fresh(vec![no_zone("a.t.test")])).len(), 1);
        // Still there: only the new one is reported.
        assert_eq!(
            keys(w.fresh(vec![no_zone("a.t.test"), no_zone("b.t.test")])),
            [no_zone("b.t.test").key()]
        );
        assert!(w
            .fresh(vec![no_zone("a.t.test"), no_zone("b.t.test")])
            .is_empty());
        // Gone, then back: reported again.
        assert!(w.fresh(vec![no_zone("b.t.test")]).is_empty());
        assert_eq!(
            keys(w.fresh(vec![no_zone("a.t.test"), no_zone("b.t.test")])),
            [no_zone("a.t.test").key()]
        );
    }
}
