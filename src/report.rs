//! Node-signed reports: an instance's statement of its addresses, location,
//! capacity, load, which (site, version) it holds verified, the RTTs it
//! measured to peers, and the RTTs of its clients aggregated per client
//! network ([`crate::latency`]). Pure: no I/O, no clock.
//!
//! Wire form: `{"report": <base64 canonical JSON>, "signature": <base64
//! ed25519(REPORT_DOMAIN || bytes)>}`; the signing key is `report.node`.
//! Freshness: `seq` strictly increases per node (replays are dropped by the
//! receiver), `expires` bounds how long a report is believed.

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SecretKey};
use crate::latency::{self, LatencyError, NetRtt};

/// Domain separation prefix for report signatures.
pub const REPORT_DOMAIN: &[u8] = b"p2pcdn-report-v1\0";
/// Largest signed report accepted, bytes.
pub const MAX_REPORT_BYTES: usize = 256 * 1024;
/// Longest lifetime a report may claim, seconds.
pub const MAX_REPORT_TTL: u64 = 3600;
/// Clock skew allowance, seconds.
pub const MAX_SKEW: u64 = 300;

/// A declared location: the one location type, whose wire encoding
/// (`{"lat": .., "lon": ..}`, no other fields) reports keep.
pub use crate::geo::GeoPoint as Point;

/// Declared capacity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// Requests per second.
    pub rps: f64,
    /// Bytes per second.
    pub bps: f64,
}

/// Measured load.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Requests per second (EWMA).
    pub rps: f64,
    /// Bytes per second (EWMA).
    pub bps: f64,
    /// Open connections.
    pub connections: u64,
}

impl Load {
    /// Load as a fraction of capacity (the larger of the two ratios).
    pub fn fraction(&self, cap: &Capacity) -> f64 {
        let r = if cap.rps > 0.0 {
            self.rps / cap.rps
        } else {
            0.0
        };
        let b = if cap.bps > 0.0 {
            self.bps / cap.bps
        } else {
            0.0
        };
        let f = r.max(b);
        if f.is_finite() && f >= 0.0 {
            f
        } else {
            0.0
        }
    }
}

/// One held site version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Held {
    /// Site.
    pub site: String,
    /// Version held verified.
    pub version: u64,
}

/// Where a served certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertSource {
    /// PEM files named in the node's configuration.
    Operator,
    /// Obtained by the node through ACME.
    Acme,
}

/// A certificate a node serves for a site: valid for the site's hostname
/// now, until `not_after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertState {
    /// Site hostname.
    pub site: String,
    /// Unix seconds when the certificate expires.
    pub not_after: u64,
    /// Where it came from.
    pub source: CertSource,
}

/// Most certificate states a report may carry.
pub const MAX_CERTS: usize = 10_000;

/// The report body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Format (1).
    pub format: u32,
    /// Signing node key.
    pub node: PublicKey,
    /// The node's DNS name.
    pub name: String,
    /// HTTPS base URL.
    pub url: String,
    /// Public addresses clients are steered to.
    pub addresses: Vec<IpAddr>,
    /// Location, if declared.
    pub location: Option<Point>,
    /// Declared capacity.
    pub capacity: Capacity,
    /// Measured load.
    pub load: Load,
    /// Site versions held verified.
    pub holds: Vec<Held>,
    /// Sites this node mirrors (wants to hold).
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// RTT in ms to peers, by node key text.
    pub rtt_ms: BTreeMap<String, f64>,
    /// Measured RTTs of this node's clients per client network (at most
    /// [`crate::latency::MAX_REPORTED`]); left out of the JSON when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_rtt: Vec<NetRtt>,
    /// The sites this node holds a valid TLS certificate for, and until
    /// when. `None` (left out of the JSON): the node serves no HTTPS, or
    /// predates this field; steering then does not judge certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certs: Option<Vec<CertState>>,
    /// Strictly increasing sequence number.
    pub seq: u64,
    /// Unix seconds when made.
    pub issued: u64,
    /// Unix seconds after which it is void.
    pub expires: u64,
}

impl Report {
    /// Whether the node may be steered to for `site` as far as TLS goes: it
    /// states a certificate for the site valid beyond `now + margin`, or it
    /// states nothing about certificates at all.
    pub fn cert_ok(&self, site: &str, now: u64, margin: u64) -> bool {
        self.certs.as_ref().is_none_or(|cs| {
            cs.iter()
                .any(|c| c.site == site && c.not_after > now.saturating_add(margin))
        })
    }

    /// The version of `site` held, if any.
    pub fn holds_version(&self, site: &str) -> Option<u64> {
        self.holds
            .iter()
            .filter(|h| h.site == site)
            .map(|h| h.version)
            .max()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    report: String,
    signature: String,
}

/// Why a report was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    /// Not a valid envelope or body, or too large.
    #[error("malformed report: {0}")]
    Malformed(String),
    /// Signature does not verify with the report's node key.
    #[error("report signature does not verify")]
    BadSignature,
    /// `client_rtt` breaks its bounds (count, RTT range, duplicates).
    #[error("bad client_rtt in report from {node}: {why}")]
    ClientRtt {
        /// Node.
        node: String,
        /// Which bound.
        why: LatencyError,
    },
    /// Expired, or lifetime too long, or from the future.
    #[error("stale report from {node}: {why}")]
    Stale {
        /// Node.
        node: String,
        /// Why.
        why: String,
    },
}

/// A report whose signature and times were checked, with its exact bytes.
#[derive(Debug, Clone)]
pub struct VerifiedReport {
    /// Parsed report.
    pub report: Report,
    /// Envelope bytes exactly as received.
    pub envelope: Vec<u8>,
}

/// Signs a report.
pub fn sign(r: &Report, key: &SecretKey) -> Result<Vec<u8>, ReportError> {
    let bytes = serde_json::to_vec(r).map_err(|e| ReportError::Malformed(e.to_string()))?;
    let mut msg = REPORT_DOMAIN.to_vec();
    msg.extend_from_slice(&bytes);
    let env = Envelope {
        report: STANDARD.encode(&bytes),
        signature: STANDARD.encode(key.sign(&msg)),
    };
    serde_json::to_vec(&env).map_err(|e| ReportError::Malformed(e.to_string()))
}

/// Reads the signer and sequence number without verifying anything (used to
/// skip verification of reports that are not newer than held ones).
pub fn peek(envelope: &[u8]) -> Option<(PublicKey, u64)> {
    if envelope.len() > MAX_REPORT_BYTES {
        return None;
    }
    #[derive(Deserialize)]
    struct Head {
        node: PublicKey,
        seq: u64,
    }
    let env: Envelope = serde_json::from_slice(envelope).ok()?;
    let bytes = STANDARD.decode(env.report.as_bytes()).ok()?;
    let h: Head = serde_json::from_slice(&bytes).ok()?;
    Some((h.node, h.seq))
}

/// Verifies signature and times (not sequence: that needs the receiver's state).
pub fn verify(envelope: &[u8], now: u64) -> Result<VerifiedReport, ReportError> {
    if envelope.len() > MAX_REPORT_BYTES {
        return Err(ReportError::Malformed(format!(
            "{} bytes is too large",
            envelope.len()
        )));
    }
    let env: Envelope =
        serde_json::from_slice(envelope).map_err(|e| ReportError::Malformed(e.to_string()))?;
    let bytes = STANDARD
        .decode(env.report.as_bytes())
        .map_err(|e| ReportError::Malformed(e.to_string()))?;
    let sig = STANDARD
        .decode(env.signature.as_bytes())
        .map_err(|e| ReportError::Malformed(e.to_string()))?;
    let report: Report =
        serde_json::from_slice(&bytes).map_err(|e| ReportError::Malformed(e.to_string()))?;
    let mut msg = REPORT_DOMAIN.to_vec();
    msg.extend_from_slice(&bytes);
    if !report.node.verify(&msg, &sig) {
        return Err(ReportError::BadSignature);
    }
    if report.format != 1 {
        return Err(ReportError::Malformed(format!(
            "unsupported format {}",
            report.format
        )));
    }
    if report.certs.as_ref().is_some_and(|c| c.len() > MAX_CERTS) {
        return Err(ReportError::Malformed(format!(
            "more than {MAX_CERTS} certificate states"
        )));
    }
    latency::validate(&report.client_rtt).map_err(|why| ReportError::ClientRtt {
        node: report.name.clone(),
        why,
    })?;
    let stale = |why: String| ReportError::Stale {
        node: report.name.clone(),
        why,
    };
    if report.expires <= now {
        return Err(stale(format!("expired at {} (now {now})", report.expires)));
    }
    if report.issued > now.saturating_add(MAX_SKEW) {
        return Err(stale(format!("issued in the future ({})", report.issued)));
    }
    if report.expires.saturating_sub(report.issued) > MAX_REPORT_TTL {
        return Err(stale("claims a lifetime over one hour".into()));
    }
    Ok(VerifiedReport {
        report,
        envelope: envelope.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &SecretKey, seq: u64) -> Report {
        Report {
            format: 1,
            node: key.public(),
            name: "m1.example.net".into(),
            url: "https://m1.example.net".into(),
            addresses: vec!["192.0.2.1".parse().unwrap()],
            location: Some(Point { lat: 1.0, lon: 2.0 }),
            capacity: Capacity {
                rps: 100.0,
                bps: 1e6,
            },
            load: Load {
                rps: 50.0,
                bps: 9e5,
                connections: 3,
            },
            holds: vec![Held {
                site: "www.x".into(),
                version: 4,
            }],
            mirrors: vec!["www.x".into()],
            rtt_ms: BTreeMap::new(),
            client_rtt: Vec::new(),
            certs: None,
            seq,
            issued: 1000,
            expires: 1030,
        }
    }

    #[test]
    fn roundtrip_and_refusals() {
        let k = SecretKey::generate().unwrap();
        let env = sign(&sample(&k, 1), &k).unwrap();
        let v = verify(&env, 1010).unwrap();
        assert_eq!(v.report.holds_version("www.x"), Some(4));
        assert!((v.report.load.fraction(&v.report.capacity) - 0.9).abs() < 1e-9);
        assert!(matches!(verify(&env, 1030), Err(ReportError::Stale { .. })));
        assert!(matches!(verify(&env, 100), Err(ReportError::Stale { .. })));
        // Forged: someone else's key in the body.
        let other = SecretKey::generate().unwrap();
        let forged = sign(&sample(&k, 2), &other).unwrap();
        assert_eq!(
            verify(&forged, 1010).unwrap_err(),
            ReportError::BadSignature
        );
        assert!(matches!(
            verify(b"junk", 1010),
            Err(ReportError::Malformed(_))
        ));
    }

    #[test]
    fn client_rtt_is_optional_and_bounded() {
        let k = SecretKey::generate().unwrap();
        // Without aggregates the field is left out entirely.
        let body = serde_json::to_string(&sample(&k, 1)).unwrap();
        assert!(!body.contains("client_rtt"), "{body}");
        // With aggregates: compact arrays, verified and read back.
        let mut r = sample(&k, 2);
        r.client_rtt = vec![NetRtt {
            net: "10.3.1.0/24".parse().unwrap(),
            rtt_ms: 12.5,
            samples: 40,
        }];
        let body = serde_json::to_string(&r).unwrap();
        assert!(
            body.contains(r#""client_rtt":[["10.3.1.0/24",12.5,40]]"#),
            "{body}"
        );
        let v = verify(&sign(&r, &k).unwrap(), 1010).unwrap();
        assert_eq!(v.report.client_rtt, r.client_rtt);
        // Over the bound: refused, naming the node and the bound.
        r.client_rtt = (0..=latency::MAX_REPORTED)
            .map(|i| NetRtt {
                net: latency::ClientNet::V4([10, (i / 256) as u8, (i % 256) as u8]),
                rtt_ms: 1.0,
                samples: 5,
            })
            .collect();
        let err = verify(&sign(&r, &k).unwrap(), 1010).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad client_rtt in report from m1.example.net: 257 client RTT aggregates, at most 256 allowed"
        );
        r.client_rtt.truncate(1);
        r.client_rtt[0].rtt_ms = -1.0;
        assert!(matches!(
            verify(&sign(&r, &k).unwrap(), 1010),
            Err(ReportError::ClientRtt { .. })
        ));
    }
}
