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
    #[serde(default = "d_ttl")]
    answer_ttl: Spanned<u32>,
    #[serde(default = "d_payload")]
    max_udp_payload: Spanned<u16>,
    #[serde(default = "d_tcp_timeout")]
    tcp_idle_timeout_secs: Spanned<u64>,
    #[serde(default = "d_tcp_max")]
    tcp_max_connections: Spanned<usize>,
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
            answer_ttl: d_ttl(),
            max_udp_payload: d_payload(),
            tcp_idle_timeout_secs: d_tcp_timeout(),
            tcp_max_connections: d_tcp_max(),
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
fn d_ttl() -> Spanned<u32> {
    Spanned::new(0..0, 30)
}
fn d_payload() -> Spanned<u16> {
    Spanned::new(0..0, 1232)
}
fn d_tcp_timeout() -> Spanned<u64> {
    Spanned::new(0..0, 10)
}

fn d_tcp_max() -> Spanned<usize> {
    Spanned::new(0..0, 512)
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
    /// Location (latitude, longitude) in degrees, if declared.
    pub location: Option<(f64, f64)>,
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
    /// Latitude.
    pub latitude: f64,
    /// Longitude.
    pub longitude: f64,
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
        let p = path.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: p.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let abs = |q: &Path| -> PathBuf {
            if q.is_absolute() {
                q.to_path_buf()
            } else {
                base.join(q)
            }
        };
        let invalid =
            |span: std::ops::Range<usize>, key: &str, message: String| ConfigError::Invalid {
                path: p.clone(),
                line: line_of(text, span.start),
                key: key.to_string(),
                message,
            };

        let name = normalize_site(raw.node.name.get_ref());
        if !is_hostname(&name) {
            return Err(invalid(
                raw.node.name.span(),
                "node.name",
                format!("{name:?} is not a valid DNS name"),
            ));
        }
        let location = match (&raw.node.latitude, &raw.node.longitude) {
            (Some(lat), Some(lon)) => {
                if !(-90.0..=90.0).contains(lat.get_ref()) {
                    return Err(invalid(
                        lat.span(),
                        "node.latitude",
                        "must be within -90..=90".into(),
                    ));
                }
                if !(-180.0..=180.0).contains(lon.get_ref()) {
                    return Err(invalid(
                        lon.span(),
                        "node.longitude",
                        "must be within -180..=180".into(),
                    ));
                }
                Some((*lat.get_ref(), *lon.get_ref()))
            }
            (None, None) => None,
            (Some(s), None) | (None, Some(s)) => {
                return Err(invalid(
                    s.span(),
                    "node.latitude",
                    "latitude and longitude must be given together".into(),
                ))
            }
        };
        let ttl = *raw.dns.answer_ttl.get_ref();
        if !(1..=86400).contains(&ttl) {
            return Err(invalid(
                raw.dns.answer_ttl.span(),
                "dns.answer_ttl",
                "must be within 1..=86400 seconds".into(),
            ));
        }
        let payload = *raw.dns.max_udp_payload.get_ref();
        if !(512..=4096).contains(&payload) {
            return Err(invalid(
                raw.dns.max_udp_payload.span(),
                "dns.max_udp_payload",
                "must be within 512..=4096 bytes".into(),
            ));
        }
        let tcp_to = *raw.dns.tcp_idle_timeout_secs.get_ref();
        if !(1..=3600).contains(&tcp_to) {
            return Err(invalid(
                raw.dns.tcp_idle_timeout_secs.span(),
                "dns.tcp_idle_timeout_secs",
                "must be within 1..=3600".into(),
            ));
        }
        let tcp_max = *raw.dns.tcp_max_connections.get_ref();
        if !(1..=65_536).contains(&tcp_max) {
            return Err(invalid(
                raw.dns.tcp_max_connections.span(),
                "dns.tcp_max_connections",
                "must be within 1..=65536".into(),
            ));
        }
        let rrl_rate = match &raw.dns.rrl_rate {
            Some(x) if *x.get_ref() > 1_000_000 => {
                return Err(invalid(
                    x.span(),
                    "dns.rrl_rate",
                    "must be within 0..=1000000 (0 disables)".into(),
                ))
            }
            Some(x) => *x.get_ref(),
            None => 200,
        };
        let rrl_slip = match &raw.dns.rrl_slip {
            Some(x) if *x.get_ref() > 100 => {
                return Err(invalid(
                    x.span(),
                    "dns.rrl_slip",
                    "must be within 0..=100".into(),
                ))
            }
            Some(x) => *x.get_ref(),
            None => 2,
        };
        let rrl_exempt = match &raw.dns.rrl_exempt {
            Some(list) => {
                let mut v = vec![];
                for (n, e) in list.iter().enumerate() {
                    v.push(crate::geo::parse_prefix(e.get_ref()).map_err(|err| {
                        invalid(e.span(), &format!("dns.rrl_exempt[{n}]"), err.to_string())
                    })?);
                }
                v
            }
            None => vec![
                (IpAddr::from([127, 0, 0, 0]), 8),
                (IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), 128),
            ],
        };
        let validity = match &raw.publish.validity_days {
            Some(v) if !(1..=3650).contains(v.get_ref()) => {
                return Err(invalid(
                    v.span(),
                    "publish.validity_days",
                    "must be within 1..=3650".into(),
                ))
            }
            Some(v) => *v.get_ref(),
            None => 90,
        };
        let expiry_warning_days = match &raw.publish.expiry_warning_days {
            Some(v) if *v.get_ref() > 3650 => {
                return Err(invalid(
                    v.span(),
                    "publish.expiry_warning_days",
                    "must be within 0..=3650".into(),
                ))
            }
            Some(v) => *v.get_ref(),
            None => 14,
        };
        let max_upload_bytes = match &raw.publish.max_upload_mib {
            Some(v) if *v.get_ref() == 0 || *v.get_ref() > 1 << 30 => {
                return Err(invalid(
                    v.span(),
                    "publish.max_upload_mib",
                    "must be within 1..=1073741824".into(),
                ))
            }
            Some(v) => v.get_ref() * 1024 * 1024,
            None => 16 * 1024 * 1024 * 1024,
        };
        let default_cert = match (raw.https.cert, raw.https.key) {
            (Some(c), Some(k)) => Some((abs(&c), abs(&k))),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    path: p.clone(),
                    line: find_line(text, "[https]"),
                    key: "https.cert".into(),
                    message: "https.cert and https.key must be given together".into(),
                })
            }
        };

        let positive =
            |v: &Option<Spanned<f64>>, key: &str, default: f64| -> Result<f64, ConfigError> {
                match v {
                    Some(x) if !(x.get_ref().is_finite() && *x.get_ref() > 0.0) => {
                        Err(invalid(x.span(), key, "must be a positive number".into()))
                    }
                    Some(x) => Ok(*x.get_ref()),
                    None => Ok(default),
                }
            };
        let capacity_rps = positive(&raw.node.capacity_rps, "node.capacity_rps", 10_000.0)?;
        let capacity_bps = positive(&raw.node.capacity_bps, "node.capacity_bps", 1.25e9)?;
        let node_url = match &raw.node.url {
            Some(u) => Some(
                normalize_url(u.get_ref())
                    .map_err(|m| invalid(u.span(), "node.url", m))?
                    .0,
            ),
            None => None,
        };

        let f = raw.federation;
        let mut peers = vec![];
        for (n, p) in f.peers.into_iter().enumerate() {
            let (url, host) = normalize_url(p.url.get_ref())
                .map_err(|m| invalid(p.url.span(), &format!("federation.peers[{n}].url"), m))?;
            peers.push(PeerConfig {
                url,
                host,
                address: p.address,
            });
        }
        let ranged = |v: &Option<Spanned<u64>>,
                      key: &str,
                      lo: u64,
                      hi: u64,
                      default: u64|
         -> Result<u64, ConfigError> {
            match v {
                Some(x) if !(lo..=hi).contains(x.get_ref()) => Err(invalid(
                    x.span(),
                    key,
                    format!("must be within {lo}..={hi}"),
                )),
                Some(x) => Ok(*x.get_ref()),
                None => Ok(default),
            }
        };
        let fanout = match &f.fanout {
            Some(x) if !(1..=64).contains(x.get_ref()) => {
                return Err(invalid(
                    x.span(),
                    "federation.fanout",
                    "must be within 1..=64".into(),
                ))
            }
            Some(x) => *x.get_ref(),
            None => 3,
        };
        let max_connections = match &raw.http.max_connections {
            Some(x) if !(1..=1_000_000).contains(x.get_ref()) => {
                return Err(invalid(
                    x.span(),
                    "http.max_connections",
                    "must be within 1..=1000000".into(),
                ))
            }
            Some(x) => *x.get_ref(),
            None => 10_000,
        };
        let http_limits = HttpLimitsConfig {
            max_connections,
            header_timeout_secs: ranged(
                &raw.http.header_timeout_secs,
                "http.header_timeout_secs",
                1,
                600,
                10,
            )?,
            idle_timeout_secs: ranged(
                &raw.http.idle_timeout_secs,
                "http.idle_timeout_secs",
                1,
                3600,
                60,
            )?,
            max_connections_per_address: ranged(
                &raw.http.max_connections_per_address,
                "http.max_connections_per_address",
                1,
                1_000_000,
                256,
            )? as usize,
        };
        let federation = FederationConfig {
            peers,
            ca_file: f.ca_file.as_deref().map(abs),
            webpki_roots: f.webpki_roots.unwrap_or(true),
            location_check: f.location_check.unwrap_or(false),
            gossip_interval_ms: ranged(
                &f.gossip_interval_ms,
                "federation.gossip_interval_ms",
                100,
                600_000,
                1000,
            )?,
            fanout,
            probe_interval_ms: ranged(
                &f.probe_interval_ms,
                "federation.probe_interval_ms",
                100,
                60_000,
                1000,
            )?,
            report_ttl_secs: ranged(
                &f.report_ttl_secs,
                "federation.report_ttl_secs",
                3,
                3600,
                15,
            )?,
        };
        let u32_of = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        let short_ttl = u32_of(ranged(&raw.dns.short_ttl, "dns.short_ttl", 1, 86400, 5)?).min(ttl);
        let min_ttl = u32_of(ranged(&raw.dns.min_ttl, "dns.min_ttl", 0, 86400, 1)?);
        let max_ttl = u32_of(ranged(&raw.dns.max_ttl, "dns.max_ttl", 1, 86400, 3600)?);
        if min_ttl > max_ttl {
            let span = raw.dns.min_ttl.as_ref().map_or(0..0, Spanned::span);
            return Err(invalid(
                span,
                "dns.min_ttl",
                format!("must not exceed dns.max_ttl ({max_ttl})"),
            ));
        }
        let band_ms = match &raw.steering.band_ms {
            Some(x) if !(0.0..=1000.0).contains(x.get_ref()) => {
                return Err(invalid(
                    x.span(),
                    "steering.band_ms",
                    "must be within 0..=1000 ms".into(),
                ))
            }
            Some(x) => *x.get_ref(),
            None => crate::steer::Policy::default().band_ms,
        };
        let explore_every = u32_of(ranged(
            &raw.steering.explore_every,
            "steering.explore_every",
            0,
            1_000_000,
            32,
        )?);
        let answers = match &raw.steering.answers {
            Some(x) if !(1..=8).contains(x.get_ref()) => {
                return Err(invalid(
                    x.span(),
                    "steering.answers",
                    "must be within 1..=8".into(),
                ))
            }
            Some(x) => *x.get_ref(),
            None => 2,
        };
        let spill_threshold = match &raw.steering.spill_threshold {
            Some(x) if !(0.05..=1.0).contains(x.get_ref()) => {
                return Err(invalid(
                    x.span(),
                    "steering.spill_threshold",
                    "must be within 0.05..=1.0".into(),
                ))
            }
            Some(x) => *x.get_ref(),
            None => 0.8,
        };
        let cert_margin_secs = ranged(
            &raw.steering.cert_margin_secs,
            "steering.cert_margin_secs",
            0,
            90 * 86400,
            86400,
        )?;
        let acme = match raw.acme {
            None => None,
            Some(a) => {
                let dir = a.directory.get_ref();
                if !dir.starts_with("https://") {
                    return Err(invalid(
                        a.directory.span(),
                        "acme.directory",
                        "must be an https:// URL".into(),
                    ));
                }
                let eab = match (a.eab_kid, a.eab_hmac_key) {
                    (Some(k), Some(h)) => Some((k, h.into_inner())),
                    (None, None) => None,
                    (_, h) => {
                        return Err(invalid(
                            h.map_or(a.directory.span(), |h| h.span()),
                            "acme.eab_kid",
                            "eab_kid and eab_hmac_key must be given together".into(),
                        ))
                    }
                };
                Some(AcmeConfig {
                    directory: dir.clone(),
                    contact: a.contact,
                    ca_file: a.ca_file.as_deref().map(abs),
                    eab,
                    dns_port: a.dns_port.unwrap_or(53),
                    propagation_timeout_secs: ranged(
                        &a.propagation_timeout_secs,
                        "acme.propagation_timeout_secs",
                        1,
                        3600,
                        60,
                    )?,
                })
            }
        };
        let mut geo_overrides = vec![];
        for (n, o) in raw.geo_overrides.into_iter().enumerate() {
            let (network, prefix_len) =
                crate::geo::parse_prefix(o.prefix.get_ref()).map_err(|e| {
                    invalid(
                        o.prefix.span(),
                        &format!("geo_override[{n}].prefix"),
                        e.to_string(),
                    )
                })?;
            if !(-90.0..=90.0).contains(o.latitude.get_ref()) {
                return Err(invalid(
                    o.latitude.span(),
                    &format!("geo_override[{n}].latitude"),
                    "must be within -90..=90".into(),
                ));
            }
            if !(-180.0..=180.0).contains(o.longitude.get_ref()) {
                return Err(invalid(
                    o.longitude.span(),
                    &format!("geo_override[{n}].longitude"),
                    "must be within -180..=180".into(),
                ));
            }
            geo_overrides.push(GeoOverrideConfig {
                network,
                prefix_len,
                latitude: *o.latitude.get_ref(),
                longitude: *o.longitude.get_ref(),
                country: o.country,
            });
        }

        let mut sites: Vec<SiteConfig> = Vec::new();
        let mut pending_sites: Vec<PendingSite> = Vec::new();
        for (n, s) in raw.sites.into_iter().enumerate() {
            let host = normalize_site(s.hostname.get_ref());
            let zone = normalize_site(s.zone.get_ref());
            let key = |k: &str| format!("site[{n}].{k}");
            if !is_hostname(&host) {
                return Err(invalid(
                    s.hostname.span(),
                    &key("hostname"),
                    format!("{host:?} is not a valid DNS name"),
                ));
            }
            if !is_hostname(&zone) {
                return Err(invalid(
                    s.zone.span(),
                    &key("zone"),
                    format!("{zone:?} is not a valid DNS name"),
                ));
            }
            if host != zone && !host.ends_with(&format!(".{zone}")) {
                return Err(invalid(
                    s.zone.span(),
                    &key("zone"),
                    format!("site {host} is not inside zone {zone}"),
                ));
            }
            if sites.iter().any(|o| o.hostname == host) {
                return Err(invalid(
                    s.hostname.span(),
                    &key("hostname"),
                    format!("site {host} is configured twice"),
                ));
            }
            let tls = match (s.tls_cert, s.tls_key) {
                (Some(c), Some(k)) => Some((abs(&c), abs(k.get_ref()))),
                (None, None) => None,
                (_, k) => {
                    let span = k.map(|k| k.span()).unwrap_or(s.hostname.span());
                    return Err(invalid(
                        span,
                        &key("tls_cert"),
                        "tls_cert and tls_key must be given together".into(),
                    ));
                }
            };
            if sites.iter().any(|o| o.hostname == host)
                || pending_sites
                    .iter()
                    .any(|o: &PendingSite| o.hostname == host)
            {
                return Err(invalid(
                    s.hostname.span(),
                    &key("hostname"),
                    format!("site {host} is configured twice"),
                ));
            }
            let owner_key = match (s.owner_key, &s.owner_key_file, &s.owner_domain) {
                (Some(k), None, None) => Some(k),
                (None, Some(f), None) => {
                    let path = abs(f.get_ref());
                    // A public key file is one short line: read at most
                    // 4 KiB, so a wrong path (/dev/zero, a FIFO's writer
                    // aside) cannot exhaust memory.
                    let text = read_small(&path, 4096).map_err(|e| {
                        invalid(
                            f.span(),
                            &key("owner_key_file"),
                            format!("{}: {e}", path.display()),
                        )
                    })?;
                    Some(text.trim().parse::<PublicKey>().map_err(|e| {
                        invalid(
                            f.span(),
                            &key("owner_key_file"),
                            format!("{}: {e}", path.display()),
                        )
                    })?)
                }
                (None, None, Some(_)) => None,
                _ => {
                    return Err(invalid(
                        s.hostname.span(),
                        &key("owner_key"),
                        "give exactly one of owner_key, owner_key_file and owner_domain".into(),
                    ))
                }
            };
            match owner_key {
                Some(owner_key) => sites.push(SiteConfig {
                    hostname: host,
                    zone,
                    owner_key,
                    tls,
                    plain_http: s.plain_http,
                    mirror: s.mirror,
                    mirrors: s.mirrors,
                }),
                None => {
                    let d = s.owner_domain.as_ref().map(|d| {
                        (
                            d.get_ref().trim_end_matches('/').to_ascii_lowercase(),
                            d.span(),
                        )
                    });
                    let Some((domain, span)) = d else { continue };
                    let (base, _) = normalize_url(&format!("https://{domain}"))
                        .map_err(|m| invalid(span, &key("owner_domain"), m))?;
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
            }
        }

        Ok(Config {
            source: path.to_path_buf(),
            data_dir: abs(&raw.data_dir),
            zones_dir: abs(&raw.zones_dir),
            geodata: raw.geodata.as_deref().map(abs),
            node: NodeConfig {
                name,
                key: abs(&raw.node.key),
                addresses: raw.node.addresses,
                location,
                url: node_url,
                capacity_rps,
                capacity_bps,
            },
            dns: DnsConfig {
                listen: raw.dns.listen,
                answer_ttl: ttl,
                short_ttl,
                min_ttl,
                max_ttl,
                max_udp_payload: payload,
                tcp_idle_timeout_secs: tcp_to,
                tcp_max_connections: tcp_max,
                rrl_rate,
                rrl_slip,
                rrl_exempt,
            },
            http_listen: raw.http.listen,
            http_limits,
            https_listen: raw.https.listen,
            https_default_cert: default_cert,
            publish_validity_days: validity,
            expiry_warning_days,
            remote_publish: raw.publish.remote.unwrap_or(true),
            max_upload_bytes,
            metrics_listen: raw.metrics.listen,
            sites,
            pending_sites,
            federation,
            steering: SteeringConfig {
                answers,
                spill_threshold,
                band_ms,
                explore_every,
                cert_margin_secs,
            },
            geo_overrides,
            acme,
        })
    }

    /// The site config for a hostname (already normalized).
    pub fn site(&self, host: &str) -> Option<&SiteConfig> {
        self.sites.iter().find(|s| s.hostname == host)
    }
}

/// Checks an `https://host[:port]` base URL; returns it without a trailing
/// slash, and the lowercased host.
pub fn normalize_url(u: &str) -> Result<(String, String), String> {
    let rest = u
        .strip_prefix("https://")
        .ok_or_else(|| format!("{u:?} must start with https://"))?;
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('?') || rest.contains('#') || rest.contains('@') {
        return Err(format!(
            "{u:?} must be a base URL like https://host:port (no path)"
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let host = normalize_site(host);
    if !is_hostname(&host) {
        return Err(format!("{u:?}: {host:?} is not a DNS name"));
    }
    match port {
        Some(p) => {
            let p: u16 = p.parse().map_err(|_| format!("{u:?}: bad port"))?;
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
}
