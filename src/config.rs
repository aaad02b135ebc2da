//! Instance configuration: TOML file → typed, validated [`Config`].
//!
//! Every key is documented in `docs/CONFIG.md`. Unknown keys and bad values
//! are errors naming the key and the line. Relative paths are resolved
//! against the config file's directory. No sockets, no files opened here
//! beyond reading the config itself.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::geo::GeoPoint;
use crate::keys::PublicKey;
use crate::manifest::normalize_site;

/// A configuration error, with the file, line and key where possible.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax, unknown key, or a value of the wrong type/format.
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: String,
        /// toml's message (names the line, column and key).
        message: String,
    },
    /// A value that parsed but is not acceptable.
    #[error("{path}:{line}: key `{key}`: {message}")]
    Invalid {
        /// File.
        path: String,
        /// 1-based line.
        line: usize,
        /// Dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// How plain HTTP requests for a site are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PlainHttp {
    /// Serve content over plain HTTP too.
    #[default]
    Serve,
    /// Redirect to HTTPS (308).
    Redirect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "d_data")]
    data_dir: PathBuf,
    #[serde(default = "d_zones")]
    zones_dir: PathBuf,
    #[serde(default)]
    geodata: Option<PathBuf>,
    node: RawNode,
    #[serde(default)]
    dns: RawDns,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    https: RawHttps,
    #[serde(default)]
    publish: RawPublish,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    federation: RawFederation,
    #[serde(default)]
    steering: RawSteering,
    #[serde(default, rename = "geo_override")]
    geo_overrides: Vec<RawGeoOverride>,
    #[serde(default, rename = "site")]
    sites: Vec<RawSite>,
    #[serde(default)]
    acme: Option<RawAcme>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcme {
    directory: Spanned<String>,
    #[serde(default)]
    contact: Vec<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    eab_kid: Option<String>,
    #[serde(default)]
    eab_hmac_key: Option<Spanned<String>>,
    #[serde(default)]
    dns_port: Option<u16>,
    #[serde(default)]
    propagation_timeout_secs: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFederation {
    #[serde(default)]
    peers: Vec<RawPeer>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    webpki_roots: Option<bool>,
    #[serde(default)]
    gossip_interval_ms: Option<Spanned<u64>>,
    #[serde(default)]
    fanout: Option<Spanned<usize>>,
    #[serde(default)]
    probe_interval_ms: Option<Spanned<u64>>,
    #[serde(default)]
    report_ttl_secs: Option<Spanned<u64>>,
    #[serde(default)]
    location_check: Option<bool>,
    #[serde(default)]
    source_address: Option<IpAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    url: Spanned<String>,
    #[serde(default)]
    address: Option<IpAddr>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSteering {
    #[serde(default)]
    answers: Option<Spanned<usize>>,
    #[serde(default)]
    spill_threshold: Option<Spanned<f64>>,
    #[serde(default)]
    band_ms: Option<Spanned<f64>>,
    #[serde(default)]
    explore_every: Option<Spanned<u64>>,
    #[serde(default)]
    cert_margin_secs: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGeoOverride {
    prefix: Spanned<String>,
    latitude: Spanned<f64>,
    longitude: Spanned<f64>,
    #[serde(default)]
    country: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Spanned<String>,
    key: PathBuf,
    #[serde(default)]
    addresses: Vec<IpAddr>,
    #[serde(default)]
    latitude: Option<Spanned<f64>>,
    #[serde(default)]
    longitude: Option<Spanned<f64>>,
    #[serde(default)]
    url: Option<Spanned<String>>,
    #[serde(default)]
    capacity_rps: Option<Spanned<f64>>,
    #[serde(default)]
    capacity_bps: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    #[serde(default = "d_dns_listen")]
    listen: Vec<SocketAddr>,
    #[serde(default)]
    answer_ttl: Option<Spanned<u32>>,
    #[serde(default)]
    max_udp_payload: Option<Spanned<u16>>,
    #[serde(default)]
    tcp_idle_timeout_secs: Option<Spanned<u64>>,
    #[serde(default)]
    tcp_max_connections: Option<Spanned<usize>>,
    #[serde(default)]
    udp_threads: Option<Spanned<usize>>,
    #[serde(default)]
    short_ttl: Option<Spanned<u64>>,
    #[serde(default)]
    min_ttl: Option<Spanned<u64>>,
    #[serde(default)]
    max_ttl: Option<Spanned<u64>>,
    #[serde(default)]
    rrl_rate: Option<Spanned<u32>>,
    #[serde(default)]
    rrl_slip: Option<Spanned<u32>>,
    #[serde(default)]
    rrl_exempt: Option<Vec<Spanned<String>>>,
}

impl Default for RawDns {
    fn default() -> Self {
        Self {
            listen: d_dns_listen(),
            answer_ttl: None,
            max_udp_payload: None,
            tcp_idle_timeout_secs: None,
            tcp_max_connections: None,
            udp_threads: None,
            short_ttl: None,
            min_ttl: None,
            max_ttl: None,
            rrl_rate: None,
            rrl_slip: None,
            rrl_exempt: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default = "d_http_listen")]
    listen: Vec<SocketAddr>,
    #[serde(default)]
    max_connections: Option<Spanned<usize>>,
    #[serde(default)]
    header_timeout_secs: Option<Spanned<u64>>,
    #[serde(default)]
    idle_timeout_secs: Option<Spanned<u64>>,
    #[serde(default)]
    max_connections_per_address: Option<Spanned<u64>>,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            listen: d_http_listen(),
            max_connections: None,
            header_timeout_secs: None,
            idle_timeout_secs: None,
            max_connections_per_address: None,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttps {
    #[serde(default)]
    listen: Vec<SocketAddr>,
    #[serde(default)]
    cert: Option<PathBuf>,
    #[serde(default)]
    key: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    #[serde(default)]
    listen: Vec<SocketAddr>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPublish {
    #[serde(default)]
    validity_days: Option<Spanned<u64>>,
    #[serde(default)]
    expiry_warning_days: Option<Spanned<u64>>,
    #[serde(default)]
    remote: Option<bool>,
    #[serde(default)]
    max_upload_mib: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    hostname: Spanned<String>,
    zone: Spanned<String>,
    #[serde(default)]
    owner_key: Option<PublicKey>,
    #[serde(default)]
    owner_key_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    owner_domain: Option<Spanned<String>>,
    #[serde(default)]
    tls_cert: Option<PathBuf>,
    #[serde(default)]
    tls_key: Option<Spanned<PathBuf>>,
    #[serde(default)]
    plain_http: PlainHttp,
    #[serde(default = "d_true")]
    mirror: bool,
    #[serde(default)]
    mirrors: Vec<PublicKey>,
}

fn d_true() -> bool {
    true
}

fn d_data() -> PathBuf {
    PathBuf::from("data")
}
fn d_zones() -> PathBuf {
    PathBuf::from("zones")
}
fn d_dns_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([0, 0, 0, 0], 53))]
}
fn d_http_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([0, 0, 0, 0], 80))]
}
/// This instance's identity and public face.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// The instance's DNS name (e.g. `m1.mirrors.example.net`).
    pub name: String,
    /// Path of the node's secret key file.
    pub key: PathBuf,
    /// Public addresses that steered answers point clients to.
    pub addresses: Vec<IpAddr>,
    /// Location, if declared.
    pub location: Option<GeoPoint>,
    /// Public HTTPS base URL peers use (`https://<name>[:port]`), if set.
    pub url: Option<String>,
    /// Declared capacity, requests per second.
    pub capacity_rps: f64,
    /// Declared capacity, bytes per second.
    pub capacity_bps: f64,
}

/// A bootstrap peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// HTTPS base URL, e.g. `https://m2.mirrors.example.net:8443`.
    pub url: String,
    /// Host name in the URL (what TLS verifies and the node key is bound to).
    pub host: String,
    /// Address to connect to instead of resolving the host name.
    pub address: Option<IpAddr>,
}

/// Federation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FederationConfig {
    /// Bootstrap peers.
    pub peers: Vec<PeerConfig>,
    /// Extra CA certificates (PEM) trusted for peer TLS.
    pub ca_file: Option<PathBuf>,
    /// Trust the Mozilla (WebPKI) roots.
    pub webpki_roots: bool,
    /// Anti-entropy round interval.
    pub gossip_interval_ms: u64,
    /// Peers contacted per round.
    pub fanout: usize,
    /// Health probe interval.
    pub probe_interval_ms: u64,
    /// Lifetime of this node's signed reports.
    pub report_ttl_secs: u64,
    /// Rank peers whose claimed location contradicts the measured RTT as of
    /// unknown location (they are flagged in `status` either way).
    pub location_check: bool,
    /// Local address of outgoing peer connections (None: the system's choice).
    pub source_address: Option<IpAddr>,
}

/// Steering policy knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SteeringConfig {
    /// Addresses per answer (k).
    pub answers: usize,
    /// Load fraction above which answers spill to farther mirrors.
    pub spill_threshold: f64,
    /// A second mirror joins an answer only within this many ms of the best.
    pub band_ms: f64,
    /// One answer slot in this many per client network explores (0: never).
    pub explore_every: u32,
    /// A mirror whose certificate for a site expires within this many
    /// seconds is not steered to for that site.
    pub cert_margin_secs: u64,
}

/// ACME certificates (`[acme]`): where to order them and how to check the
/// DNS-01 challenge before asking for validation.
#[derive(Debug, Clone, PartialEq)]
pub struct AcmeConfig {
    /// The CA's ACME directory URL.
    pub directory: String,
    /// Contact URLs for the account (`mailto:…`).
    pub contact: Vec<String>,
    /// Extra CA certificate (PEM) trusted for the directory's TLS (test CAs).
    pub ca_file: Option<PathBuf>,
    /// External account binding: key id and HMAC key (base64url).
    pub eab: Option<(String, String)>,
    /// Port the zone's authorities answer DNS on (the pre-check asks each).
    pub dns_port: u16,
    /// How long to wait for every authority to serve a challenge value.
    pub propagation_timeout_secs: u64,
}

/// An operator's prefix → location override.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoOverrideConfig {
    /// Network address.
    pub network: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Location of every address in the network.
    pub point: GeoPoint,
    /// ISO country code.
    pub country: Option<String>,
}

/// DNS server settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    /// UDP and TCP listen addresses.
    pub listen: Vec<SocketAddr>,
    /// TTL of stable steered answers, seconds.
    pub answer_ttl: u32,
    /// TTL of uncertain steered answers (new, flapping, busy mirror, close
    /// decision, exploration) and of fallback records, seconds.
    pub short_ttl: u32,
    /// Operator's lower bound on every steered TTL.
    pub min_ttl: u32,
    /// Operator's upper bound on every steered TTL.
    pub max_ttl: u32,
    /// Largest UDP response sent, bytes (512..=4096).
    pub max_udp_payload: u16,
    /// Idle timeout of TCP connections, seconds.
    pub tcp_idle_timeout_secs: u64,
    /// Open DNS-over-TCP connections over all listeners.
    pub tcp_max_connections: usize,
    /// UDP receive threads (each with its own `SO_REUSEPORT` socket) per
    /// listen address; 0: one per two cores, at least one (see
    /// [`crate::dns::server::udp_threads`]).
    pub udp_threads: usize,
    /// UDP responses per second per client network (/24, /56); 0 disables RRL.
    pub rrl_rate: u32,
    /// Every N-th limited response is sent truncated (0: none).
    pub rrl_slip: u32,
    /// Networks never rate limited.
    pub rrl_exempt: Vec<(IpAddr, u8)>,
}

/// One site this instance serves.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteConfig {
    /// Steered hostname, lowercase, no trailing dot.
    pub hostname: String,
    /// The zone that contains it, lowercase, no trailing dot.
    pub zone: String,
    /// The owner's pinned public key.
    pub owner_key: PublicKey,
    /// TLS certificate chain (PEM) and private key (PEM) for the hostname.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Plain HTTP policy.
    pub plain_http: PlainHttp,
    /// Whether this instance holds and serves a copy (false: DNS authority only).
    pub mirror: bool,
    /// Mirrors `publish` authorizes in new manifests (besides this node).
    pub mirrors: Vec<PublicKey>,
}

/// A site whose owner key is discovered from the owner's domain
/// (`https://<owner_domain>/.well-known/p2pcdn/<site>.key`).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingSite {
    /// Steered hostname.
    pub hostname: String,
    /// Its zone.
    pub zone: String,
    /// Where the owner publishes the key.
    pub owner_key_url: String,
    /// TLS certificate and key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Plain HTTP policy.
    pub plain_http: PlainHttp,
    /// Hold and serve a copy.
    pub mirror: bool,
    /// Mirrors `publish` authorizes.
    pub mirrors: Vec<PublicKey>,
}

impl PendingSite {
    /// The site config once its owner key is known.
    pub fn with_key(self, owner_key: PublicKey) -> SiteConfig {
        SiteConfig {
            hostname: self.hostname,
            zone: self.zone,
            owner_key,
            tls: self.tls,
            plain_http: self.plain_http,
            mirror: self.mirror,
            mirrors: self.mirrors,
        }
    }
}

/// Connection limits for the HTTP and HTTPS listeners.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HttpLimitsConfig {
    /// Concurrent connections per listener.
    pub max_connections: usize,
    /// Time allowed to send request headers (and the TLS handshake), seconds.
    pub header_timeout_secs: u64,
    /// A connection with no request in flight is closed after this, seconds.
    pub idle_timeout_secs: u64,
    /// Concurrent connections from one source address per listener.
    pub max_connections_per_address: usize,
}

/// A validated instance configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the file was read from (for messages).
    pub source: PathBuf,
    /// Data directory (SQLite file, blobs).
    pub data_dir: PathBuf,
    /// Directory of `<zone>.zone` files.
    pub zones_dir: PathBuf,
    /// Optional MaxMind-format geolocation database.
    pub geodata: Option<PathBuf>,
    /// Identity.
    pub node: NodeConfig,
    /// DNS.
    pub dns: DnsConfig,
    /// Plain HTTP listen addresses.
    pub http_listen: Vec<SocketAddr>,
    /// HTTP connection limits and timeouts (both listeners).
    pub http_limits: HttpLimitsConfig,
    /// HTTPS listen addresses.
    pub https_listen: Vec<SocketAddr>,
    /// Default certificate and key (served when SNI names no site).
    pub https_default_cert: Option<(PathBuf, PathBuf)>,
    /// Default manifest validity for `publish`, days.
    pub publish_validity_days: u64,
    /// Warn this many days before a served manifest expires.
    pub expiry_warning_days: u64,
    /// Accept remote publishes (`publish --to`) for the configured sites.
    pub remote_publish: bool,
    /// Largest total of new blob bytes one remote publish may upload.
    pub max_upload_bytes: u64,
    /// Where `GET /metrics` (Prometheus text) is served; empty: nowhere.
    pub metrics_listen: Vec<SocketAddr>,
    /// Sites.
    pub sites: Vec<SiteConfig>,
    /// Sites whose owner key is still to be discovered over HTTPS (see `owner`).
    pub pending_sites: Vec<PendingSite>,
    /// Federation.
    pub federation: FederationConfig,
    /// Steering.
    pub steering: SteeringConfig,
    /// Geolocation overrides.
    pub geo_overrides: Vec<GeoOverrideConfig>,
    /// ACME certificates, when configured.
    pub acme: Option<AcmeConfig>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` locates relative paths and names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let c = Checker {
            path: path.display().to_string(),
            text,
            base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: c.path.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let node = c.node(raw.node)?;
        let dns = c.dns(raw.dns)?;
        let (publish_validity_days, expiry_warning_days, max_upload_bytes) = (
            c.num(&raw.publish.validity_days, &limits::VALIDITY_DAYS)?,
            c.num(
                &raw.publish.expiry_warning_days,
                &limits::EXPIRY_WARNING_DAYS,
            )?,
            c.num(&raw.publish.max_upload_mib, &limits::MAX_UPLOAD_MIB)? * 1024 * 1024,
        );
        let https_default_cert = together(raw.https.cert, raw.https.key, |_, _| {
            c.invalid_at(
                find_line(text, "[https]"),
                "https.cert",
                "https.cert and https.key must be given together",
            )
        })?
        .map(|(cert, key)| (c.abs(&cert), c.abs(&key)));
        let http_limits = HttpLimitsConfig {
            max_connections: c.num(&raw.http.max_connections, &limits::HTTP_MAX_CONNECTIONS)?,
            header_timeout_secs: c.num(&raw.http.header_timeout_secs, &limits::HEADER_TIMEOUT)?,
            idle_timeout_secs: c.num(&raw.http.idle_timeout_secs, &limits::IDLE_TIMEOUT)?,
            max_connections_per_address: usize::try_from(c.num(
                &raw.http.max_connections_per_address,
                &limits::MAX_CONNECTIONS_PER_ADDRESS,
            )?)
            .unwrap_or(usize::MAX),
        };
        let federation = c.federation(raw.federation)?;
        let steering = SteeringConfig {
            answers: c.num(&raw.steering.answers, &limits::ANSWERS)?,
            spill_threshold: c.num(&raw.steering.spill_threshold, &limits::SPILL_THRESHOLD)?,
            band_ms: c.num(&raw.steering.band_ms, &limits::BAND_MS)?,
            explore_every: u32_of(c.num(&raw.steering.explore_every, &limits::EXPLORE_EVERY)?),
            cert_margin_secs: c.num(&raw.steering.cert_margin_secs, &limits::CERT_MARGIN)?,
        };
        let acme = raw.acme.map(|a| c.acme(a)).transpose()?;
        let geo_overrides = raw
            .geo_overrides
            .into_iter()
            .enumerate()
            .map(|(n, o)| c.geo_override(n, o))
            .collect::<Result<Vec<_>, _>>()?;
        let (sites, pending_sites) = c.sites(raw.sites)?;

        Ok(Config {
            source: path.to_path_buf(),
            data_dir: c.abs(&raw.data_dir),
            zones_dir: c.abs(&raw.zones_dir),
            geodata: raw.geodata.as_deref().map(|g| c.abs(g)),
            node,
            dns,
            http_listen: raw.http.listen,
            http_limits,
            https_listen: raw.https.listen,
            https_default_cert,
            publish_validity_days,
            expiry_warning_days,
            remote_publish: raw.publish.remote.unwrap_or(true),
            max_upload_bytes,
            metrics_listen: raw.metrics.listen,
            sites,
            pending_sites,
            federation,
            steering,
            geo_overrides,
            acme,
        })
    }

    /// The site config for a hostname (already normalized).
    pub fn site(&self, host: &str) -> Option<&SiteConfig> {
        self.sites.iter().find(|s| s.hostname == host)
    }
}

/// The accepted range and the default of one numeric key: every numeric
/// setting's bounds and default live in [`limits`], checked by
/// [`Checker::num`].
struct Limit<T> {
    /// Dotted key, as errors name it.
    key: &'static str,
    /// Smallest accepted value.
    lo: T,
    /// Largest accepted value.
    hi: T,
    /// Value when the key is absent.
    default: T,
    /// Appended to the range in errors (a unit or a remark).
    note: &'static str,
}

/// The one table of numeric limits and defaults.
mod limits {
    use super::Limit;

    const fn l<T>(key: &'static str, lo: T, hi: T, default: T, note: &'static str) -> Limit<T> {
        Limit {
            key,
            lo,
            hi,
            default,
            note,
        }
    }

    pub(super) const ANSWER_TTL: Limit<u32> = l("dns.answer_ttl", 1, 86400, 30, " seconds");
    pub(super) const MAX_UDP_PAYLOAD: Limit<u16> =
        l("dns.max_udp_payload", 512, 4096, 1232, " bytes");
    pub(super) const TCP_IDLE_TIMEOUT: Limit<u64> = l("dns.tcp_idle_timeout_secs", 1, 3600, 10, "");
    pub(super) const TCP_MAX_CONNECTIONS: Limit<usize> =
        l("dns.tcp_max_connections", 1, 65_536, 512, "");
    pub(super) const UDP_THREADS: Limit<usize> = l("dns.udp_threads", 0, 64, 0, " (0: automatic)");
    pub(super) const SHORT_TTL: Limit<u64> = l("dns.short_ttl", 1, 86400, 5, "");
    pub(super) const MIN_TTL: Limit<u64> = l("dns.min_ttl", 0, 86400, 1, "");
    pub(super) const MAX_TTL: Limit<u64> = l("dns.max_ttl", 1, 86400, 3600, "");
    pub(super) const RRL_RATE: Limit<u32> = l("dns.rrl_rate", 0, 1_000_000, 200, " (0 disables)");
    pub(super) const RRL_SLIP: Limit<u32> = l("dns.rrl_slip", 0, 100, 2, "");
    pub(super) const VALIDITY_DAYS: Limit<u64> = l("publish.validity_days", 1, 3650, 90, "");
    pub(super) const EXPIRY_WARNING_DAYS: Limit<u64> =
        l("publish.expiry_warning_days", 0, 3650, 14, "");
    pub(super) const MAX_UPLOAD_MIB: Limit<u64> =
        l("publish.max_upload_mib", 1, 1 << 30, 16 * 1024, "");
    /// Positive numbers (any size); the default when absent.
    pub(super) const CAPACITY_RPS: (&str, f64) = ("node.capacity_rps", 10_000.0);
    pub(super) const CAPACITY_BPS: (&str, f64) = ("node.capacity_bps", 1.25e9);
    pub(super) const HTTP_MAX_CONNECTIONS: Limit<usize> =
        l("http.max_connections", 1, 1_000_000, 10_000, "");
    pub(super) const HEADER_TIMEOUT: Limit<u64> = l("http.header_timeout_secs", 1, 600, 10, "");
    pub(super) const IDLE_TIMEOUT: Limit<u64> = l("http.idle_timeout_secs", 1, 3600, 60, "");
    pub(super) const MAX_CONNECTIONS_PER_ADDRESS: Limit<u64> =
        l("http.max_connections_per_address", 1, 1_000_000, 256, "");
    pub(super) const GOSSIP_INTERVAL: Limit<u64> =
        l("federation.gossip_interval_ms", 100, 600_000, 1000, "");
    pub(super) const FANOUT: Limit<usize> = l("federation.fanout", 1, 64, 3, "");
    pub(super) const PROBE_INTERVAL: Limit<u64> =
        l("federation.probe_interval_ms", 100, 60_000, 1000, "");
    pub(super) const REPORT_TTL: Limit<u64> = l("federation.report_ttl_secs", 3, 3600, 15, "");
    pub(super) const ANSWERS: Limit<usize> = l("steering.answers", 1, 8, 2, "");
    pub(super) const SPILL_THRESHOLD: Limit<f64> =
        l("steering.spill_threshold", 0.05, 1.0, 0.8, "");
    /// The default equals `steer::Policy::default().band_ms` (a test checks).
    pub(super) const BAND_MS: Limit<f64> = l("steering.band_ms", 0.0, 1000.0, 3.0, " ms");
    pub(super) const EXPLORE_EVERY: Limit<u64> = l("steering.explore_every", 0, 1_000_000, 32, "");
    pub(super) const CERT_MARGIN: Limit<u64> =
        l("steering.cert_margin_secs", 0, 90 * 86400, 86400, "");
    pub(super) const PROPAGATION_TIMEOUT: Limit<u64> =
        l("acme.propagation_timeout_secs", 1, 3600, 60, "");
    pub(super) const DNS_PORT: u16 = 53;
    pub(super) const LATITUDE: (f64, f64) = (-90.0, 90.0);
    pub(super) const LONGITUDE: (f64, f64) = (-180.0, 180.0);
}

/// Validation context: the file's name and text (for lines) and its directory
/// (for relative paths).
struct Checker<'a> {
    path: String,
    text: &'a str,
    base: PathBuf,
}

impl Checker<'_> {
    /// A path relative to the config file's directory made absolute.
    fn abs(&self, q: &Path) -> PathBuf {
        if q.is_absolute() {
            q.to_path_buf()
        } else {
            self.base.join(q)
        }
    }

    fn invalid_at(&self, line: usize, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            line,
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn invalid(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        self.invalid_at(line_of(self.text, span.start), key, message)
    }

    /// The one range check: `v` must lie within `lo..=hi`.
    fn within<T>(
        &self,
        v: &Spanned<T>,
        key: &str,
        (lo, hi): (T, T),
        note: &str,
    ) -> Result<T, ConfigError>
    where
        T: PartialOrd + Copy + std::fmt::Display,
    {
        let x = *v.get_ref();
        if (lo..=hi).contains(&x) {
            Ok(x)
        } else {
            Err(self.invalid(v.span(), key, format!("must be within {lo}..={hi}{note}")))
        }
    }

    /// An optional numeric key checked against its [`Limit`], or its default.
    fn num<T>(&self, v: &Option<Spanned<T>>, l: &Limit<T>) -> Result<T, ConfigError>
    where
        T: PartialOrd + Copy + std::fmt::Display,
    {
        match v {
            None => Ok(l.default),
            Some(x) => self.within(x, l.key, (l.lo, l.hi), l.note),
        }
    }

    /// An optional positive, finite number, or its default.
    fn positive(
        &self,
        v: &Option<Spanned<f64>>,
        (key, default): (&str, f64),
    ) -> Result<f64, ConfigError> {
        match v {
            None => Ok(default),
            Some(x) if x.get_ref().is_finite() && *x.get_ref() > 0.0 => Ok(*x.get_ref()),
            Some(x) => Err(self.invalid(x.span(), key, "must be a positive number")),
        }
    }

    /// A DNS name, normalized (lowercase, no trailing dot).
    fn hostname(&self, v: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
        let name = normalize_site(v.get_ref());
        if is_hostname(&name) {
            Ok(name)
        } else {
            Err(self.invalid(v.span(), key, format!("{name:?} is not a valid DNS name")))
        }
    }

    /// A latitude and a longitude, each within its range.
    fn point(
        &self,
        lat: &Spanned<f64>,
        lon: &Spanned<f64>,
        (lat_key, lon_key): (&str, &str),
    ) -> Result<GeoPoint, ConfigError> {
        Ok(GeoPoint {
            lat: self.within(lat, lat_key, limits::LATITUDE, "")?,
            lon: self.within(lon, lon_key, limits::LONGITUDE, "")?,
        })
    }

    fn node(&self, n: RawNode) -> Result<NodeConfig, ConfigError> {
        let name = self.hostname(&n.name, "node.name")?;
        let location = together(n.latitude, n.longitude, |lat, lon| {
            let span = lat.map_or_else(|| lon.map_or(0..0, |s| s.span()), |s| s.span());
            self.invalid(
                span,
                "node.latitude",
                "latitude and longitude must be given together",
            )
        })?
        .map(|(lat, lon)| self.point(&lat, &lon, ("node.latitude", "node.longitude")))
        .transpose()?;
        let url = n
            .url
            .map(|u| {
                normalize_url(u.get_ref())
                    .map(|(url, _)| url)
                    .map_err(|e| self.invalid(u.span(), "node.url", e.to_string()))
            })
            .transpose()?;
        Ok(NodeConfig {
            name,
            key: self.abs(&n.key),
            addresses: n.addresses,
            location,
            url,
            capacity_rps: self.positive(&n.capacity_rps, limits::CAPACITY_RPS)?,
            capacity_bps: self.positive(&n.capacity_bps, limits::CAPACITY_BPS)?,
        })
    }

    fn dns(&self, d: RawDns) -> Result<DnsConfig, ConfigError> {
        let answer_ttl = self.num(&d.answer_ttl, &limits::ANSWER_TTL)?;
        let short_ttl = u32_of(self.num(&d.short_ttl, &limits::SHORT_TTL)?).min(answer_ttl);
        let min_ttl = u32_of(self.num(&d.min_ttl, &limits::MIN_TTL)?);
        let max_ttl = u32_of(self.num(&d.max_ttl, &limits::MAX_TTL)?);
        if min_ttl > max_ttl {
            let span = d.min_ttl.as_ref().map_or(0..0, Spanned::span);
            return Err(self.invalid(
                span,
                limits::MIN_TTL.key,
                format!("must not exceed dns.max_ttl ({max_ttl})"),
            ));
        }
        let rrl_exempt = match &d.rrl_exempt {
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(n, e)| {
                    crate::geo::parse_prefix(e.get_ref()).map_err(|err| {
                        self.invalid(e.span(), &format!("dns.rrl_exempt[{n}]"), err.to_string())
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![
                (IpAddr::from([127, 0, 0, 0]), 8),
                (IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), 128),
            ],
        };
        Ok(DnsConfig {
            listen: d.listen,
            answer_ttl,
            short_ttl,
            min_ttl,
            max_ttl,
            max_udp_payload: self.num(&d.max_udp_payload, &limits::MAX_UDP_PAYLOAD)?,
            tcp_idle_timeout_secs: self.num(&d.tcp_idle_timeout_secs, &limits::TCP_IDLE_TIMEOUT)?,
            tcp_max_connections: self.num(&d.tcp_max_connections, &limits::TCP_MAX_CONNECTIONS)?,
            udp_threads: self.num(&d.udp_threads, &limits::UDP_THREADS)?,
            rrl_rate: self.num(&d.rrl_rate, &limits::RRL_RATE)?,
            rrl_slip: self.num(&d.rrl_slip, &limits::RRL_SLIP)?,
            rrl_exempt,
        })
    }

    fn federation(&self, f: RawFederation) -> Result<FederationConfig, ConfigError> {
        let peers = f
            .peers
            .into_iter()
            .enumerate()
            .map(|(n, p)| {
                let (url, host) = normalize_url(p.url.get_ref()).map_err(|e| {
                    self.invalid(
                        p.url.span(),
                        &format!("federation.peers[{n}].url"),
                        e.to_string(),
                    )
                })?;
                Ok(PeerConfig {
                    url,
                    host,
                    address: p.address,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(FederationConfig {
            peers,
            ca_file: f.ca_file.as_deref().map(|q| self.abs(q)),
            webpki_roots: f.webpki_roots.unwrap_or(true),
            location_check: f.location_check.unwrap_or(false),
            source_address: f.source_address,
            gossip_interval_ms: self.num(&f.gossip_interval_ms, &limits::GOSSIP_INTERVAL)?,
            fanout: self.num(&f.fanout, &limits::FANOUT)?,
            probe_interval_ms: self.num(&f.probe_interval_ms, &limits::PROBE_INTERVAL)?,
            report_ttl_secs: self.num(&f.report_ttl_secs, &limits::REPORT_TTL)?,
        })
    }

    fn acme(&self, a: RawAcme) -> Result<AcmeConfig, ConfigError> {
        let dir = a.directory.get_ref();
        if !dir.starts_with("https://") {
            return Err(self.invalid(
                a.directory.span(),
                "acme.directory",
                "must be an https:// URL",
            ));
        }
        let eab = together(a.eab_kid, a.eab_hmac_key, |_, h| {
            self.invalid(
                h.map_or(a.directory.span(), |h| h.span()),
                "acme.eab_kid",
                "eab_kid and eab_hmac_key must be given together",
            )
        })?
        .map(|(k, h)| (k, h.into_inner()));
        Ok(AcmeConfig {
            directory: dir.clone(),
            contact: a.contact,
            ca_file: a.ca_file.as_deref().map(|q| self.abs(q)),
            eab,
            dns_port: a.dns_port.unwrap_or(limits::DNS_PORT),
            propagation_timeout_secs: self
                .num(&a.propagation_timeout_secs, &limits::PROPAGATION_TIMEOUT)?,
        })
    }

    fn geo_override(&self, n: usize, o: RawGeoOverride) -> Result<GeoOverrideConfig, ConfigError> {
        let key = |k: &str| format!("geo_override[{n}].{k}");
        let (network, prefix_len) = crate::geo::parse_prefix(o.prefix.get_ref())
            .map_err(|e| self.invalid(o.prefix.span(), &key("prefix"), e.to_string()))?;
        let point = self.point(
            &o.latitude,
            &o.longitude,
            (&key("latitude"), &key("longitude")),
        )?;
        Ok(GeoOverrideConfig {
            network,
            prefix_len,
            point,
            country: o.country,
        })
    }

    /// The `[[site]]` tables: sites with a known owner key, and sites whose
    /// key is still to be fetched from the owner's domain.
    fn sites(&self, raw: Vec<RawSite>) -> Result<(Vec<SiteConfig>, Vec<PendingSite>), ConfigError> {
        let mut sites: Vec<SiteConfig> = Vec::new();
        let mut pending_sites: Vec<PendingSite> = Vec::new();
        for (n, s) in raw.into_iter().enumerate() {
            let key = |k: &str| format!("site[{n}].{k}");
            let host = self.hostname(&s.hostname, &key("hostname"))?;
            let zone = self.hostname(&s.zone, &key("zone"))?;
            if host != zone && !host.ends_with(&format!(".{zone}")) {
                return Err(self.invalid(
                    s.zone.span(),
                    &key("zone"),
                    format!("site {host} is not inside zone {zone}"),
                ));
            }
            if sites.iter().any(|o| o.hostname == host)
                || pending_sites.iter().any(|o| o.hostname == host)
            {
                return Err(self.invalid(
                    s.hostname.span(),
                    &key("hostname"),
                    format!("site {host} is configured twice"),
                ));
            }
            let tls = together(s.tls_cert, s.tls_key, |_, k| {
                self.invalid(
                    k.map_or(s.hostname.span(), |k| k.span()),
                    &key("tls_cert"),
                    "tls_cert and tls_key must be given together",
                )
            })?
            .map(|(c, k)| (self.abs(&c), self.abs(k.get_ref())));
            let owner_key = match (s.owner_key, &s.owner_key_file, &s.owner_domain) {
                (Some(k), None, None) => Some(k),
                (None, Some(f), None) => {
                    let path = self.abs(f.get_ref());
                    let bad = |e: &dyn std::fmt::Display| {
                        self.invalid(
                            f.span(),
                            &key("owner_key_file"),
                            format!("{}: {e}", path.display()),
                        )
                    };
                    // A public key file is one short line: read at most
                    // 4 KiB, so a wrong path (/dev/zero, a FIFO's writer
                    // aside) cannot exhaust memory.
                    let text = read_small(&path, 4096).map_err(|e| bad(&e))?;
                    Some(text.trim().parse::<PublicKey>().map_err(|e| bad(&e))?)
                }
                (None, None, Some(_)) => None,
                _ => {
                    return Err(self.invalid(
                        s.hostname.span(),
                        &key("owner_key"),
                        "give exactly one of owner_key, owner_key_file and owner_domain",
                    ))
                }
            };
            match (owner_key, &s.owner_domain) {
                (Some(owner_key), _) => sites.push(SiteConfig {
                    hostname: host,
                    zone,
                    owner_key,
                    tls,
                    plain_http: s.plain_http,
                    mirror: s.mirror,
                    mirrors: s.mirrors,
                }),
                (None, Some(d)) => {
                    let domain = d.get_ref().trim_end_matches('/').to_ascii_lowercase();
                    let (base, _) = normalize_url(&format!("https://{domain}"))
                        .map_err(|e| self.invalid(d.span(), &key("owner_domain"), e.to_string()))?;
                    pending_sites.push(PendingSite {
                        owner_key_url: format!("{base}/.well-known/p2pcdn/{host}.key"),
                        hostname: host,
                        zone,
                        tls,
                        plain_http: s.plain_http,
                        mirror: s.mirror,
                        mirrors: s.mirrors,
                    });
                }
                (None, None) => {}
            }
        }
        Ok((sites, pending_sites))
    }
}

/// Two keys that must be given together: both, or neither; `err` builds the
/// error when only one is (it receives whichever was given).
fn together<A, B>(
    a: Option<A>,
    b: Option<B>,
    err: impl FnOnce(Option<A>, Option<B>) -> ConfigError,
) -> Result<Option<(A, B)>, ConfigError> {
    match (a, b) {
        (Some(a), Some(b)) => Ok(Some((a, b))),
        (None, None) => Ok(None),
        (a, b) => Err(err(a, b)),
    }
}

/// A range-checked TTL (≤ 86400) as the `u32` DNS carries.
fn u32_of(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Why a peer or node base URL is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not an `https://` URL.
    #[error("{0:?} must start with https://")]
    NotHttps(String),
    /// Has a path, query, fragment or user info.
    #[error("{0:?} must be a base URL like https://host:port (no path)")]
    NotBase(String),
    /// The host is not a DNS name.
    #[error("{url:?}: {host:?} is not a DNS name")]
    BadHost {
        /// The URL.
        url: String,
        /// Its normalized host.
        host: String,
    },
    /// The port is not a number in 0..=65535.
    #[error("{0:?}: bad port")]
    BadPort(String),
}

/// Federation code still reports errors as strings; this keeps its `?` working.
impl From<UrlError> for String {
    fn from(e: UrlError) -> Self {
        e.to_string()
    }
}

/// Checks an `https://host[:port]` base URL; returns it without a trailing
/// slash, and the lowercased host.
pub fn normalize_url(u: &str) -> Result<(String, String), UrlError> {
    let rest = u
        .strip_prefix("https://")
        .ok_or_else(|| UrlError::NotHttps(u.to_string()))?;
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('?') || rest.contains('#') || rest.contains('@') {
        return Err(UrlError::NotBase(u.to_string()));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let host = normalize_site(host);
    if !is_hostname(&host) {
        return Err(UrlError::BadHost {
            url: u.to_string(),
            host,
        });
    }
    match port {
        Some(p) => {
            let p: u16 = p.parse().map_err(|_| UrlError::BadPort(u.to_string()))?;
            Ok((format!("https://{host}:{p}"), host))
        }
        None => Ok((format!("https://{host}"), host)),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |t| t.matches('\n').count() + 1)
}

fn find_line(text: &str, needle: &str) -> usize {
    text.find(needle).map_or(1, |o| line_of(text, o))
}

/// True for a syntactically valid DNS hostname (LDH labels, ≤ 253 chars).
pub fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Reads a text file of at most `max` bytes (an error if it is longer).
fn read_small(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::other(format!("longer than {max} bytes")));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ed25519:O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik";

    fn ok_text() -> String {
        format!(
            r#"
data_dir = "d"
[node]
name = "m1.example.net"
key = "node.key"
addresses = ["192.0.2.1", "2001:db8::1"]

[dns]
listen = ["127.0.0.1:5300"]
answer_ttl = 20

[[site]]
hostname = "WWW.cdn.example.org."
zone = "cdn.example.org"
owner_key = "{KEY}"
"#
        )
    }

    #[test]
    fn parses_and_resolves_paths() {
        let c = Config::parse(&ok_text(), Path::new("/etc/p2pcdn/x.toml")).unwrap();
        assert_eq!(c.data_dir, Path::new("/etc/p2pcdn/d"));
        assert_eq!(c.sites[0].hostname, "www.cdn.example.org");
        assert_eq!(c.dns.answer_ttl, 20);
        assert_eq!(c.node.addresses.len(), 2);
    }

    #[test]
    fn owner_key_file_is_read_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("owner.pub");
        std::fs::write(&good, format!("{KEY}\n")).unwrap();
        let with = |p: &Path| {
            ok_text().replace(
                &format!("owner_key = \"{KEY}\""),
                &format!("owner_key_file = \"{}\"", p.display()),
            )
        };
        let c = Config::parse(&with(&good), Path::new("c.toml")).unwrap();
        assert_eq!(c.sites[0].owner_key.to_string(), KEY);
        // An endless file is refused, not read until memory runs out.
        let e = Config::parse(&with(Path::new("/dev/zero")), Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("owner_key_file") && e.contains("longer than 4096 bytes"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let t = ok_text().replace("answer_ttl = 20", "answer_ttl = 20\nbogus = 1");
        let e = Config::parse(&t, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus") && e.contains("line 11"), "{e}");
    }

    #[test]
    fn bad_values_name_key_and_line() {
        let t = ok_text().replace("answer_ttl = 20", "answer_ttl = 0");
        let e = Config::parse(&t, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.toml:10") && e.contains("dns.answer_ttl"),
            "{e}"
        );

        let t = ok_text().replace("zone = \"cdn.example.org\"", "zone = \"other.org\"");
        let e = Config::parse(&t, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(":14") && e.contains("site[0].zone"), "{e}");

        let t = ok_text().replace("192.0.2.1", "192.0.2.300");
        let e = Config::parse(&t, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 6"), "{e}");

        let t = ok_text().replace(KEY, "ed25519:nope");
        let e = Config::parse(&t, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 15") && e.contains("owner_key"), "{e}");
    }

    #[test]
    fn defaults_come_from_the_limits_table() {
        let c = Config::parse(&ok_text(), Path::new("c.toml")).unwrap();
        assert_eq!(c.dns.max_udp_payload, limits::MAX_UDP_PAYLOAD.default);
        assert_eq!(c.dns.rrl_rate, limits::RRL_RATE.default);
        assert_eq!(c.federation.fanout, limits::FANOUT.default);
        assert_eq!(
            c.http_limits.idle_timeout_secs,
            limits::IDLE_TIMEOUT.default
        );
        assert_eq!(c.max_upload_bytes, limits::MAX_UPLOAD_MIB.default << 20);
        assert_eq!(c.node.capacity_rps, limits::CAPACITY_RPS.1);
        // The steering default is the steering module's own default.
        assert_eq!(c.steering.band_ms, crate::steer::Policy::default().band_ms);
        assert_eq!(
            limits::BAND_MS.default,
            crate::steer::Policy::default().band_ms
        );
    }

    /// Each out-of-range value is refused with its key, its line and the range.
    #[test]
    fn range_errors_name_key_line_and_range() {
        let cases = [
            (
                "[dns]",
                "max_udp_payload = 100",
                "dns.max_udp_payload",
                "512..=4096 bytes",
            ),
            (
                "[dns]",
                "rrl_rate = 2000000",
                "dns.rrl_rate",
                "(0 disables)",
            ),
            (
                "[dns]",
                "min_ttl = 500\nmax_ttl = 100",
                "dns.min_ttl",
                "must not exceed",
            ),
            (
                "[node]",
                "capacity_rps = -1.0",
                "node.capacity_rps",
                "positive number",
            ),
            (
                "[node]",
                "latitude = 91.0\nlongitude = 0.0",
                "node.latitude",
                "-90..=90",
            ),
            ("[node]", "longitude = 0.0", "node.latitude", "together"),
        ];
        for (table, line, key, what) in cases {
            let t = ok_text().replace(table, &format!("{table}\n{line}"));
            let want_line = line_of(&t, t.find(line.split('\n').next().unwrap()).unwrap());
            let e = Config::parse(&t, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("c.toml:{want_line}:")) && e.contains(key) && e.contains(what),
                "{line}: {e}"
            );
        }
        let t = format!("{}\n[federation]\nfanout = 65\n", ok_text());
        let e = Config::parse(&t, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("federation.fanout") && e.contains("1..=64"),
            "{e}"
        );
        let t = format!("{}\n[steering]\nspill_threshold = 2.0\n", ok_text());
        let e = Config::parse(&t, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("steering.spill_threshold") && e.contains("0.05..=1"),
            "{e}"
        );
    }
}
