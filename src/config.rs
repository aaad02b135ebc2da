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
    #[serde(default, rename = "site")]
    sites: Vec<RawSite>,
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
}

impl Default for RawDns {
    fn default() -> Self {
        Self {
            listen: d_dns_listen(),
            answer_ttl: d_ttl(),
            max_udp_payload: d_payload(),
            tcp_idle_timeout_secs: d_tcp_timeout(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default = "d_http_listen")]
    listen: Vec<SocketAddr>,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            listen: d_http_listen(),
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
struct RawPublish {
    #[serde(default)]
    validity_days: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    hostname: Spanned<String>,
    zone: Spanned<String>,
    owner_key: PublicKey,
    #[serde(default)]
    tls_cert: Option<PathBuf>,
    #[serde(default)]
    tls_key: Option<Spanned<PathBuf>>,
    #[serde(default)]
    plain_http: PlainHttp,
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

/// This instance's identity and public face.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The instance's DNS name (e.g. `m1.mirrors.example.net`).
    pub name: String,
    /// Path of the node's secret key file.
    pub key: PathBuf,
    /// Public addresses that steered answers point clients to.
    pub addresses: Vec<IpAddr>,
    /// Location (latitude, longitude) in degrees, if declared.
    pub location: Option<(f64, f64)>,
}

/// DNS server settings.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// UDP and TCP listen addresses.
    pub listen: Vec<SocketAddr>,
    /// TTL of steered answers, seconds.
    pub answer_ttl: u32,
    /// Largest UDP response sent, bytes (512..=4096).
    pub max_udp_payload: u16,
    /// Idle timeout of TCP connections, seconds.
    pub tcp_idle_timeout_secs: u64,
}

/// One site this instance serves.
#[derive(Debug, Clone)]
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
    /// HTTPS listen addresses.
    pub https_listen: Vec<SocketAddr>,
    /// Default certificate and key (served when SNI names no site).
    pub https_default_cert: Option<(PathBuf, PathBuf)>,
    /// Default manifest validity for `publish`, days.
    pub publish_validity_days: u64,
    /// Sites.
    pub sites: Vec<SiteConfig>,
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

        let mut sites: Vec<SiteConfig> = Vec::new();
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
            sites.push(SiteConfig {
                hostname: host,
                zone,
                owner_key: s.owner_key,
                tls,
                plain_http: s.plain_http,
            });
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
            },
            dns: DnsConfig {
                listen: raw.dns.listen,
                answer_ttl: ttl,
                max_udp_payload: payload,
                tcp_idle_timeout_secs: tcp_to,
            },
            http_listen: raw.http.listen,
            https_listen: raw.https.listen,
            https_default_cert: default_cert,
            publish_validity_days: validity,
            sites,
        })
    }

    /// The site config for a hostname (already normalized).
    pub fn site(&self, host: &str) -> Option<&SiteConfig> {
        self.sites.iter().find(|s| s.hostname == host)
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
