//! Operational metrics in the Prometheus text format: counters and gauges
//! that the DNS, HTTP and federation code update, served on the
//! `[metrics] listen` addresses (off by default). Nothing about individual
//! clients is recorded: labels are transports, response codes, sites and
//! outcomes only, and client RTTs only as one histogram over all clients.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of DNS responses.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsLabels {
    /// "udp" or "tcp".
    pub transport: &'static str,
    /// Response code, e.g. "NOERROR", "NXDOMAIN", "REFUSED".
    pub rcode: &'static str,
}

/// A label set with one `kind`/`outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// What happened, e.g. "ok", "failed", "drop", "slip", "2xx".
    pub outcome: &'static str,
}

/// A label set naming a site.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteLabel {
    /// Site hostname.
    pub site: String,
}

/// Every metric of one instance.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// DNS responses sent, by transport and response code.
    pub dns_responses: Family<DnsLabels, Counter>,
    /// UDP responses withheld or truncated by rate limiting.
    pub dns_rate_limited: Family<Outcome, Counter>,
    /// DNS-over-TCP connections closed at once because of the cap.
    pub dns_tcp_refused: Counter,
    /// Times a UDP socket's queue built up and its burst thread was woken.
    pub dns_udp_bursts: Counter,
    /// Steering views swapped in (each starts with no cached answers).
    pub steer_views: Counter,
    /// HTTP(S) responses, by status class.
    pub http_responses: Family<Outcome, Counter>,
    /// Blobs pulled from peers, by outcome ("ok", "failed").
    pub blob_pulls: Family<Outcome, Counter>,
    /// Blob payload bytes served to peers (`/blob/{hash}` bodies).
    pub peer_upload_bytes: Counter,
    /// Gossip exchanges, by outcome ("ok", "failed").
    pub gossip_exchanges: Family<Outcome, Counter>,
    /// SWIM probes sent, by kind ("ping": this node's direct probe,
    /// "ping_req": asking another member to probe indirectly, "relay": a
    /// ping on another member's behalf).
    pub swim_probes: Family<Outcome, Counter>,
    /// SWIM members by state ("alive", "suspect", "dead").
    pub swim_members: Family<Outcome, Gauge>,
    /// Bound peers the health probes see up.
    pub peers_up: Gauge,
    /// Bound peers.
    pub peers: Gauge,
    /// Version served per site (0: none yet).
    pub served_version: Family<SiteLabel, Gauge<u64, AtomicU64>>,
    /// Seconds until the served manifest expires, per site.
    pub manifest_expiry_seconds: Family<SiteLabel, Gauge>,
    /// Client connections whose smoothed RTT was read, by outcome ("ok",
    /// "unavailable": TCP_INFO failed or had no RTT yet).
    pub client_rtt_samples: Family<Outcome, Counter>,
    /// Smoothed RTT of client connections, seconds (all clients together).
    pub client_rtt_seconds: Histogram,
    /// Client networks with enough samples to be reported (last snapshot).
    pub client_rtt_networks: Gauge,
    /// Configuration reloads (SIGHUP), by outcome ("applied", "rejected").
    pub config_reloads: Family<Outcome, Counter>,
    /// 1 when the last reload was applied (or none was asked), 0 when it was rejected.
    pub config_last_reload_ok: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("p2pcdn"),
            dns_responses: Family::default(),
            dns_rate_limited: Family::default(),
            dns_tcp_refused: Counter::default(),
            dns_udp_bursts: Counter::default(),
            steer_views: Counter::default(),
            http_responses: Family::default(),
            blob_pulls: Family::default(),
            peer_upload_bytes: Counter::default(),
            gossip_exchanges: Family::default(),
            swim_probes: Family::default(),
            swim_members: Family::default(),
            peers_up: Gauge::default(),
            peers: Gauge::default(),
            served_version: Family::default(),
            manifest_expiry_seconds: Family::default(),
            client_rtt_samples: Family::default(),
            // 0.25 ms .. 1 s.
            client_rtt_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 13)),
            client_rtt_networks: Gauge::default(),
            config_reloads: Family::default(),
            config_last_reload_ok: Gauge::default(),
        };
        m.config_last_reload_ok.set(1);
        let r = &mut m.registry;
        r.register(
            "dns_responses",
            "DNS responses sent, by transport and response code",
            m.dns_responses.clone(),
        );
        r.register(
            "dns_rate_limited",
            "UDP responses dropped or sent truncated (slip) by response rate limiting",
            m.dns_rate_limited.clone(),
        );
        r.register(
            "dns_tcp_refused",
            "DNS-over-TCP connections closed at once because tcp_max_connections were open",
            m.dns_tcp_refused.clone(),
        );
        r.register(
            "dns_udp_bursts",
            "Times a DNS UDP socket's receive came back full and its burst thread was woken to drain the queue",
            m.dns_udp_bursts.clone(),
        );
        r.register(
            "steer_views",
            "Steering views swapped in: the federation state changed what DNS answers (or a health change, reload or new explore slot asked for a fresh view); each starts with no cached answers",
            m.steer_views.clone(),
        );
        r.register(
            "http_responses",
            "HTTP and HTTPS responses, by status class",
            m.http_responses.clone(),
        );
        r.register(
            "blob_pulls",
            "Blobs pulled from peers, by outcome",
            m.blob_pulls.clone(),
        );
        r.register(
            "peer_upload_bytes",
            "Blob payload bytes served to peers (replication uploads)",
            m.peer_upload_bytes.clone(),
        );
        r.register(
            "gossip_exchanges",
            "Anti-entropy exchanges with peers, by outcome",
            m.gossip_exchanges.clone(),
        );
        r.register(
            "swim_probes",
            "SWIM probes sent, by kind (ping, ping_req, relay)",
            m.swim_probes.clone(),
        );
        r.register(
            "swim_members",
            "SWIM members by state (alive, suspect, dead)",
            m.swim_members.clone(),
        );
        r.register(
            "peers_up",
            "Bound peers the health probes see up",
            m.peers_up.clone(),
        );
        r.register("peers", "Bound peers", m.peers.clone());
        r.register(
            "served_version",
            "Manifest version served per site",
            m.served_version.clone(),
        );
        r.register(
            "manifest_expiry_seconds",
            "Seconds until the served manifest expires, per site (warn: publish.expiry_warning_days)",
            m.manifest_expiry_seconds.clone(),
        );
        r.register(
            "client_rtt_samples",
            "Client connections whose kernel smoothed RTT (TCP_INFO) was read, by outcome",
            m.client_rtt_samples.clone(),
        );
        r.register(
            "client_rtt_seconds",
            "Kernel smoothed RTT of client connections at sampling, seconds",
            m.client_rtt_seconds.clone(),
        );
        r.register(
            "client_rtt_networks",
            "Client networks with enough RTT samples to be reported (as of the last report)",
            m.client_rtt_networks.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration reloads (SIGHUP), by outcome (applied, rejected)",
            m.config_reloads.clone(),
        );
        r.register(
            "config_last_reload_ok",
            "1 if the last configuration reload was applied (or none was asked), 0 if it was rejected",
            m.config_last_reload_ok.clone(),
        );
        m
    }

    /// Records the outcome of a configuration reload.
    pub fn reloaded(&self, applied: bool) {
        Self::count(
            &self.config_reloads,
            if applied { "applied" } else { "rejected" },
        );
        self.config_last_reload_ok.set(i64::from(applied));
    }

    /// Counts one DNS response.
    pub fn dns(&self, transport: &'static str, rcode: hickory_proto::op::ResponseCode) {
        self.dns_n(transport, rcode, 1);
    }

    /// Counts `n` DNS responses with the same transport and code (the UDP
    /// threads add their tallies once per batch).
    pub fn dns_n(&self, transport: &'static str, rcode: hickory_proto::op::ResponseCode, n: u64) {
        self.dns_responses
            .get_or_create(&DnsLabels {
                transport,
                rcode: rcode_name(rcode),
            })
            .inc_by(n);
    }

    /// Records the versions served, `(site, version)`.
    pub fn set_served(&self, versions: &[(String, u64)]) {
        for (site, v) in versions {
            self.served_version
                .get_or_create(&SiteLabel { site: site.clone() })
                .set(*v);
        }
    }

    /// Records seconds until each served manifest expires.
    pub fn set_expiry(&self, expiries: &[crate::expiry::Expiry]) {
        for e in expiries {
            self.manifest_expiry_seconds
                .get_or_create(&SiteLabel {
                    site: e.site.clone(),
                })
                .set(e.seconds_left);
        }
    }

    /// Counts one event under `family` with `outcome`.
    pub fn count(family: &Family<Outcome, Counter>, outcome: &'static str) {
        family.get_or_create(&Outcome { outcome }).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The mnemonic of a response code (RFC 1035, RFC 6891).
fn rcode_name(rcode: hickory_proto::op::ResponseCode) -> &'static str {
    use hickory_proto::op::ResponseCode as R;
    match rcode {
        R::NoError => "NOERROR",
        R::FormErr => "FORMERR",
        R::ServFail => "SERVFAIL",
        R::NXDomain => "NXDOMAIN",
        R::NotImp => "NOTIMP",
        R::Refused => "REFUSED",
        R::BADVERS => "BADVERS",
        _ => "OTHER",
    }
}

/// The status class label of an HTTP status code.
pub fn status_class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.dns("udp", hickory_proto::op::ResponseCode::NXDomain);
        m.dns("udp", hickory_proto::op::ResponseCode::NXDomain);
        Metrics::count(&m.http_responses, status_class(404));
        m.served_version
            .get_or_create(&SiteLabel {
                site: "www.t.test".into(),
            })
            .set(7);
        let text = m.render();
        assert!(
            text.contains(r#"p2pcdn_dns_responses_total{transport="udp",rcode="NXDOMAIN"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"p2pcdn_http_responses_total{outcome="4xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"p2pcdn_served_version{site="www.t.test"} 7"#),
            "{text}"
        );
        assert!(text.contains("# HELP p2pcdn_peers_up"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
