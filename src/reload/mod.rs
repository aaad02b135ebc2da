//! Configuration reload on SIGHUP: the config file, zone files, geodata and
//! certificates are read again and swapped in while listeners keep running,
//! so no connection or query is dropped. Everything is loaded and checked
//! before anything is swapped: a file that does not load rejects the whole
//! reload (logged at ERROR with its file, line and key) and the running
//! configuration stays. Keys that only take effect at a restart are logged
//! at WARN and keep their running value ([`plan`]).

pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};

use crate::config::Config;
use crate::dns::zone::ZoneSet;
use crate::federation::view::{FederatedSteering, SteerParams};
use crate::federation::Federation;
use crate::geo::Geo;
use crate::http::tls::CertStore;
use plan::{Change, Effect};

/// The configuration in effect, swapped by a reload.
pub type SharedConfig = Arc<ArcSwap<Config>>;

/// Why a reload was rejected (the running configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The config file does not parse or validate.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A site's owner key could not be discovered.
    #[error(transparent)]
    OwnerKey(#[from] crate::owner::OwnerKeyError),
    /// A zone file does not load.
    #[error(transparent)]
    Zone(#[from] crate::dns::zone::ZoneError),
    /// The geolocation database does not open.
    #[error(transparent)]
    Geo(#[from] crate::geo::GeoError),
    /// A certificate or key does not load.
    #[error(transparent)]
    Tls(#[from] crate::http::tls::TlsError),
    /// A loading task failed.
    #[error("reload task failed: {0}")]
    Task(String),
}

/// The zone files of `cfg.zones_dir`; none (with a warning) when the
/// directory does not exist.
pub fn load_zones(cfg: &Config) -> Result<ZoneSet, crate::dns::zone::ZoneError> {
    if cfg.zones_dir.is_dir() {
        ZoneSet::load_dir(&cfg.zones_dir)
    } else {
        tracing::warn!(dir = %cfg.zones_dir.display(), "zones directory missing: only owner-signed zones will be served");
        Ok(ZoneSet::default())
    }
}

/// Steering's geolocation database (with the operator's prefix overrides)
/// and policy knobs from `cfg`.
pub fn steer_params(cfg: &Config) -> Result<SteerParams, crate::geo::GeoError> {
    let geo = match &cfg.geodata {
        Some(path) => {
            let overrides = cfg
                .geo_overrides
                .iter()
                .map(|o| crate::geo::PrefixOverride {
                    network: o.network,
                    prefix_len: o.prefix_len,
                    location: crate::geo::Location {
                        point: Some(o.point),
                        country: o.country.clone(),
                        continent: None,
                    },
                })
                .collect();
            let g = Geo::open(path, overrides)?;
            tracing::info!(database = %path.display(), kind = g.database_type(), overrides = cfg.geo_overrides.len(), "loaded geolocation database");
            Some(Arc::new(g))
        }
        None => {
            tracing::warn!("no geodata configured: steering cannot tell where clients are");
            None
        }
    };
    Ok(SteerParams {
        geo,
        policy: steer_policy(cfg),
        ttl: ttl_policy(cfg),
        explore_every: cfg.steering.explore_every,
    })
}

/// The ranking policy from the configuration.
pub fn steer_policy(cfg: &Config) -> crate::steer::Policy {
    crate::steer::Policy {
        k: cfg.steering.answers,
        spill_threshold: cfg.steering.spill_threshold,
        band_ms: cfg.steering.band_ms,
        ..Default::default()
    }
}

/// The answer-TTL policy from the configuration.
pub fn ttl_policy(cfg: &Config) -> crate::steer::ttl::TtlPolicy {
    crate::steer::ttl::TtlPolicy {
        standard: cfg.dns.answer_ttl,
        short: cfg.dns.short_ttl,
        min: cfg.dns.min_ttl,
        max: cfg.dns.max_ttl,
        ..Default::default()
    }
}

/// Takes over SIGHUP (whose default action ends the process) for
/// [`Reloader::run`]. Call it early: a SIGHUP before it terminates.
pub fn hangup() -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP: no configuration reload");
            None
        }
    }
}

/// Everything a reload swaps.
pub struct Reloader {
    /// The configuration in effect.
    pub cfg: SharedConfig,
    /// The local zone files.
    pub zones: Arc<ArcSwap<ZoneSet>>,
    /// DNS steering (geodata, policy).
    pub steering: Arc<FederatedSteering>,
    /// The federation agent (peers, node facts).
    pub fed: Arc<Federation>,
    /// The sites' lifecycle (owner keys, mirror flags, pins).
    pub sites: Arc<crate::sites::Sites>,
    /// The operator's certificates, when HTTPS is on.
    pub certs: Option<Arc<CertStore>>,
    /// Wakes the catalog refresher, which rebuilds the catalog and the DNS
    /// data from the new configuration and zones.
    pub refresh: Arc<Notify>,
}

impl Reloader {
    /// Reads the config file again and applies it; on error nothing is
    /// changed. Returns the keys that changed.
    pub async fn reload(&self) -> Result<Vec<Change>, ReloadError> {
        let old = self.cfg.load_full();
        let path = old.source.clone();
        let mut new = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|e| ReloadError::Task(e.to_string()))??;
        crate::owner::resolve(&mut new).await?;
        let changes = plan::changes(&old, &new);
        let new = Arc::new(plan::effective(&old, &new));
        let cfg = new.clone();
        let (zones, params) = tokio::task::spawn_blocking(move || {
            Ok::<_, ReloadError>((load_zones(&cfg)?, steer_params(&cfg)?))
        })
        .await
        .map_err(|e| ReloadError::Task(e.to_string()))??;
        // The last fallible step: it swaps the certificates only if all load.
        if let Some(certs) = &self.certs {
            certs.reload_operator(&new)?;
        }
        for c in changes.iter().filter(|c| c.effect == Effect::Restart) {
            tracing::warn!(
                key = c.key,
                "changed in the config file but takes effect only at a restart: running with the old value"
            );
        }
        self.zones.store(Arc::new(zones));
        self.steering.set_params(params);
        self.fed.set_config(new.clone());
        self.sites.set_configs(&new.sites);
        self.cfg.store(new);
        self.refresh.notify_one();
        // Rebuild the steering view (and its answer cache) now.
        self.fed.health_changed.notify_one();
        Ok(changes)
    }

    /// Reloads on every SIGHUP received by `hup` (see [`hangup`]), and
    /// reloads the certificates alone when one of their files changes
    /// (checked every 5 s), until `stop`.
    pub async fn run(
        self,
        mut hup: Option<tokio::signal::unix::Signal>,
        mut stop: watch::Receiver<bool>,
    ) {
        let stamp = |cfg: &Config| -> Vec<Option<std::time::SystemTime>> {
            crate::http::tls::operator_files(cfg)
                .iter()
                .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
                .collect()
        };
        let mut last = stamp(&self.cfg.load());
        loop {
            let signalled = tokio::select! {
                _ = async {
                    match hup.as_mut() {
                        Some(h) => { h.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => true,
                _ = tokio::time::sleep(Duration::from_secs(5)) => false,
                _ = stop.changed() => return,
            };
            if signalled {
                self.on_signal().await;
                last = stamp(&self.cfg.load());
                continue;
            }
            let cfg = self.cfg.load_full();
            let now = stamp(&cfg);
            if now == last {
                continue;
            }
            last = now;
            if let Some(certs) = &self.certs {
                match certs.reload_operator(&cfg) {
                    Ok(()) => tracing::info!("certificate files changed: reloaded them"),
                    Err(e) => {
                        tracing::error!(error = %e, "certificate reload failed; keeping the old ones")
                    }
                }
            }
        }
    }

    async fn on_signal(&self) {
        let file = self.cfg.load().source.display().to_string();
        match self.reload().await {
            Ok(changes) => {
                let live: Vec<&str> = changes
                    .iter()
                    .filter(|c| c.effect == Effect::Live)
                    .map(|c| c.key)
                    .collect();
                tracing::info!(config = %file, changed = ?live, "SIGHUP: reloaded the configuration, zones, geodata and certificates");
                self.fed.metrics.reloaded(true);
            }
            Err(e) => {
                tracing::error!(config = %file, error = %e, "SIGHUP: reload rejected; still running the previous configuration");
                self.fed.metrics.reloaded(false);
            }
        }
    }
}
