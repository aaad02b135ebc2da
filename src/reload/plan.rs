//! Which configuration keys a reload (SIGHUP) applies while the instance runs.
//!
//! Pure decisions, no I/O: [`changes`] lists the keys whose value differs
//! between the running and the new configuration, each marked live or
//! restart-only, and [`effective`] is the configuration to run with: the new
//! one, with every restart-only key kept at its running value. The parent
//! module does the loading (zones, geodata, certificates) and the swaps.
//!
//! Live: zones, geodata and prefix overrides, sites (owner keys, mirrors,
//! certificates), bootstrap peers (new ones are bound), the node's
//! addresses, location and capacity, steering knobs, steered-answer TTLs,
//! publishing and expiry settings, remote publish. Restart-only: anything
//! bound or opened at start (listen addresses, the data directory, the node
//! key and name, the peer client's roots, DNS server limits, ACME, agent
//! intervals).

use crate::config::Config;

/// When a changed key takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Applied by the reload.
    Live,
    /// Kept at its running value until the process restarts.
    Restart,
}

/// One configuration key whose value changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// Dotted key as written in the config file (e.g. `dns.listen`).
    pub key: &'static str,
    /// Whether the reload applies it.
    pub effect: Effect,
}

/// One classified key: how to compare it and, for restart-only keys, how
/// to keep the running value.
struct Key {
    name: &'static str,
    same: fn(&Config, &Config) -> bool,
    keep: Option<fn(&mut Config, &Config)>,
}

macro_rules! live {
    ($name:literal, $($f:ident).+) => {
        Key {
            name: $name,
            same: |a, b| a.$($f).+ == b.$($f).+,
            keep: None,
        }
    };
}

macro_rules! restart {
    ($name:literal, $($f:ident).+) => {
        Key {
            name: $name,
            same: |a, b| a.$($f).+ == b.$($f).+,
            keep: Some(|new, old| new.$($f).+ = old.$($f).+.clone()),
        }
    };
}

/// Every key of [`Config`] but `source`, classified. The test
/// `every_field_is_classified` fails to compile when a field is added to
/// `Config` without a decision here.
const KEYS: &[Key] = &[
    restart!("data_dir", data_dir),
    live!("zones_dir", zones_dir),
    live!("geodata", geodata),
    restart!("node.name", node.name),
    restart!("node.key", node.key),
    restart!("node.url", node.url),
    live!("node.addresses", node.addresses),
    live!("node.latitude/longitude", node.location),
    live!("node.capacity_rps", node.capacity_rps),
    live!("node.capacity_bps", node.capacity_bps),
    restart!("dns.listen", dns.listen),
    live!("dns.answer_ttl", dns.answer_ttl),
    // Also the TTL of fallback records, which the DNS server fixes at start.
    restart!("dns.short_ttl", dns.short_ttl),
    live!("dns.min_ttl", dns.min_ttl),
    live!("dns.max_ttl", dns.max_ttl),
    restart!("dns.max_udp_payload", dns.max_udp_payload),
    restart!("dns.tcp_idle_timeout_secs", dns.tcp_idle_timeout_secs),
    restart!("dns.tcp_max_connections", dns.tcp_max_connections),
    restart!("dns.udp_threads", dns.udp_threads),
    restart!("dns.rrl_rate", dns.rrl_rate),
    restart!("dns.rrl_slip", dns.rrl_slip),
    restart!("dns.rrl_exempt", dns.rrl_exempt),
    restart!("http.listen", http_listen),
    restart!("http.max_connections/*_timeout_secs", http_limits),
    restart!("https.listen", https_listen),
    live!("https.cert/key", https_default_cert),
    live!("publish.validity_days", publish_validity_days),
    live!("publish.expiry_warning_days", expiry_warning_days),
    live!("publish.remote", remote_publish),
    restart!("publish.max_upload_mib", max_upload_bytes),
    restart!("metrics.listen", metrics_listen),
    live!("site", sites),
    live!("site (owner_key_url)", pending_sites),
    live!("federation.peers", federation.peers),
    restart!("federation.ca_file", federation.ca_file),
    restart!("federation.webpki_roots", federation.webpki_roots),
    restart!(
        "federation.gossip_interval_ms",
        federation.gossip_interval_ms
    ),
    live!("federation.fanout", federation.fanout),
    restart!("federation.probe_interval_ms", federation.probe_interval_ms),
    live!("federation.report_ttl_secs", federation.report_ttl_secs),
    live!("federation.location_check", federation.location_check),
    restart!("federation.source_address", federation.source_address),
    live!("steering", steering),
    live!("geo_override", geo_overrides),
    restart!("acme", acme),
];

/// The keys whose value differs between `old` (running) and `new` (just
/// read), in the order of `docs/CONFIG.md`.
pub fn changes(old: &Config, new: &Config) -> Vec<Change> {
    KEYS.iter()
        .filter(|k| !(k.same)(old, new))
        .map(|k| Change {
            key: k.name,
            effect: if k.keep.is_some() {
                Effect::Restart
            } else {
                Effect::Live
            },
        })
        .collect()
}

/// The configuration to run with after a reload: `new`, except that every
/// restart-only key keeps its value from `old`.
pub fn effective(old: &Config, new: &Config) -> Config {
    let mut out = new.clone();
    for k in KEYS {
        if let Some(keep) = k.keep {
            keep(&mut out, old);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DnsConfig, FederationConfig, NodeConfig};
    use std::path::Path;

    const BASE: &str = r#"
data_dir = "data"
[node]
name = "ns1.t.test"
key = "node.key"
addresses = ["127.0.0.1"]
[dns]
listen = ["127.0.0.1:5300"]
answer_ttl = 20
"#;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("/etc/p2pcdn/p2pcdn.toml")).unwrap()
    }

    #[test]
    fn identical_configs_change_nothing() {
        let a = parse(BASE);
        assert!(changes(&a, &parse(BASE)).is_empty());
    }

    #[test]
    fn live_and_restart_keys_are_told_apart() {
        let old = parse(BASE);
        let new = parse(
            &BASE
                .replace("127.0.0.1:5300", "127.0.0.2:5300")
                .replace("answer_ttl = 20", "answer_ttl = 30")
                .replace(
                    "data_dir = \"data\"",
                    "data_dir = \"elsewhere\"\ngeodata = \"g.mmdb\"",
                ),
        );
        let c = changes(&old, &new);
        let live: Vec<&str> = c
            .iter()
            .filter(|c| c.effect == Effect::Live)
            .map(|c| c.key)
            .collect();
        let restart: Vec<&str> = c
            .iter()
            .filter(|c| c.effect == Effect::Restart)
            .map(|c| c.key)
            .collect();
        assert_eq!(live, ["geodata", "dns.answer_ttl"]);
        assert_eq!(restart, ["data_dir", "dns.listen"]);
    }

    #[test]
    fn effective_keeps_restart_keys_and_takes_live_ones() {
        let old = parse(BASE);
        let new = parse(
            &BASE
                .replace("127.0.0.1:5300", "127.0.0.2:5300")
                .replace("answer_ttl = 20", "answer_ttl = 30"),
        );
        let e = effective(&old, &new);
        assert_eq!(e.dns.listen, old.dns.listen);
        assert_eq!(e.dns.answer_ttl, 30);
        // Applying the result again changes nothing that needs a restart.
        assert!(changes(&old, &e).iter().all(|c| c.effect == Effect::Live));
    }

    #[test]
    fn every_key_name_is_unique() {
        let mut names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    /// Compiles only while every field of `Config` is named: a new field
    /// must be classified in `KEYS` (and named here).
    #[test]
    fn every_field_is_classified() {
        let Config {
            source: _,
            data_dir: _,
            zones_dir: _,
            geodata: _,
            node:
                NodeConfig {
                    name: _,
                    key: _,
                    addresses: _,
                    location: _,
                    url: _,
                    capacity_rps: _,
                    capacity_bps: _,
                },
            dns:
                DnsConfig {
                    listen: _,
                    answer_ttl: _,
                    short_ttl: _,
                    min_ttl: _,
                    max_ttl: _,
                    max_udp_payload: _,
                    tcp_idle_timeout_secs: _,
                    tcp_max_connections: _,
                    udp_threads: _,
                    rrl_rate: _,
                    rrl_slip: _,
                    rrl_exempt: _,
                },
            http_listen: _,
            http_limits: _,
            https_listen: _,
            https_default_cert: _,
            publish_validity_days: _,
            expiry_warning_days: _,
            remote_publish: _,
            max_upload_bytes: _,
            metrics_listen: _,
            sites: _,
            pending_sites: _,
            federation:
                FederationConfig {
                    peers: _,
                    ca_file: _,
                    webpki_roots: _,
                    gossip_interval_ms: _,
                    fanout: _,
                    probe_interval_ms: _,
                    report_ttl_secs: _,
                    location_check: _,
                    source_address: _,
                },
            steering: _,
            geo_overrides: _,
            acme: _,
        } = parse(BASE);
    }
}
