//! Node-signed reports: an instance's statement of its addresses, location,
//! capacity, load, which (site, version) it holds verified, the RTTs it
//! measured to peers, and the RTTs of its clients aggregated per client
//! network ([`crate::latency`]). Pure: no I/O, no clock.
//!
//! Wire form (format 2): `{"report": "<report JSON text>", "sig": <base64
//! ed25519(REPORT_DOMAIN || report JSON bytes)>}`: the signed bytes travel
//! as a plain JSON string beside their signature (no base64 of base64); the
//! signing key is `report.node`. Freshness: `seq` strictly increases per
//! node (replays are dropped by the receiver, before any signature check:
//! [`peek_signed`]), `expires` bounds how long a report is believed.
//!
//! A report is re-signed only when something peers act on changed
//! ([`material_change`]) or about a third of its lifetime passed.

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SecretKey};
use crate::latency::{self, LatencyError, NetRtt};

/// Domain separation prefix for report signatures.
pub const REPORT_DOMAIN: &[u8] = b"p2pcdn-report-v2\0";
/// The report format this code signs and accepts.
pub const FORMAT: u32 = 2;
/// Most peer RTTs a report carries (the lowest ones).
pub const MAX_PEER_RTTS: usize = 16;
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
    /// Format ([`FORMAT`]).
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
    /// RTT in ms (0.1 ms precision) to at most [`MAX_PEER_RTTS`] peers, by
    /// short node id (`federation::gossip::ShortId`, 16 hex digits).
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

/// A signed report as it travels: the exact report JSON text and the
/// base64 signature over `REPORT_DOMAIN || text`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedReport {
    /// The report's JSON text, exactly as signed.
    pub report: String,
    /// Standard base64 of the ed25519 signature.
    pub sig: String,
}

impl SignedReport {
    /// The envelope bytes (`{"report": .., "sig": ..}`).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
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
    /// The signed report exactly as received (relayed as is).
    pub signed: SignedReport,
    /// Envelope bytes: exactly as received by [`verify`], else
    /// [`SignedReport::to_bytes`].
    pub envelope: Vec<u8>,
}

/// Signs a report; returns the envelope bytes.
pub fn sign(r: &Report, key: &SecretKey) -> Result<Vec<u8>, ReportError> {
    Ok(sign_report(r, key)?.to_bytes())
}

/// Signs a report.
pub fn sign_report(r: &Report, key: &SecretKey) -> Result<SignedReport, ReportError> {
    let text = serde_json::to_string(r).map_err(|e| ReportError::Malformed(e.to_string()))?;
    let mut msg = REPORT_DOMAIN.to_vec();
    msg.extend_from_slice(text.as_bytes());
    Ok(SignedReport {
        report: text,
        sig: STANDARD.encode(key.sign(&msg)),
    })
}

/// Reads the signer and sequence number of envelope bytes without
/// verifying anything.
pub fn peek(envelope: &[u8]) -> Option<(PublicKey, u64)> {
    if envelope.len() > MAX_REPORT_BYTES {
        return None;
    }
    peek_signed(&serde_json::from_slice(envelope).ok()?)
}

/// Reads the signer and sequence number without verifying anything: a
/// receiver drops reports that are not newer than the one it holds (the
/// common case in gossip) before paying for a signature check.
pub fn peek_signed(s: &SignedReport) -> Option<(PublicKey, u64)> {
    if s.report.len() > MAX_REPORT_BYTES {
        return None;
    }
    #[derive(Deserialize)]
    struct Head {
        node: PublicKey,
        seq: u64,
    }
    let h: Head = serde_json::from_str(&s.report).ok()?;
    Some((h.node, h.seq))
}

/// Verifies envelope bytes: signature and times (not sequence: that needs
/// the receiver's state).
pub fn verify(envelope: &[u8], now: u64) -> Result<VerifiedReport, ReportError> {
    if envelope.len() > MAX_REPORT_BYTES {
        return Err(ReportError::Malformed(format!(
            "{} bytes is too large",
            envelope.len()
        )));
    }
    let s: SignedReport =
        serde_json::from_slice(envelope).map_err(|e| ReportError::Malformed(e.to_string()))?;
    let mut v = verify_signed(s, now)?;
    v.envelope = envelope.to_vec();
    Ok(v)
}

/// Verifies a signed report: signature, format, bounds and times (not
/// sequence: that needs the receiver's state).
pub fn verify_signed(s: SignedReport, now: u64) -> Result<VerifiedReport, ReportError> {
    if s.report.len() > MAX_REPORT_BYTES {
        return Err(ReportError::Malformed(format!(
            "{} bytes is too large",
            s.report.len()
        )));
    }
    let sig = STANDARD
        .decode(s.sig.as_bytes())
        .map_err(|e| ReportError::Malformed(e.to_string()))?;
    let report: Report =
        serde_json::from_str(&s.report).map_err(|e| ReportError::Malformed(e.to_string()))?;
    let mut msg = REPORT_DOMAIN.to_vec();
    msg.extend_from_slice(s.report.as_bytes());
    if !report.node.verify(&msg, &sig) {
        return Err(ReportError::BadSignature);
    }
    if report.format != FORMAT {
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
    if report.rtt_ms.len() > MAX_PEER_RTTS {
        return Err(ReportError::Malformed(format!(
            "more than {MAX_PEER_RTTS} peer RTTs"
        )));
    }
    let envelope = s.to_bytes();
    Ok(VerifiedReport {
        report,
        signed: s,
        envelope,
    })
}

/// Load steps that count as a material change: tenths of capacity.
pub fn load_bucket(r: &Report) -> u32 {
    (r.load.fraction(&r.capacity) * 10.0).floor().min(1000.0) as u32
}

/// Client RTT aggregates moved by more than this (ms) and
/// [`RTT_MARGIN_FRACTION`]: a material change.
pub const RTT_MARGIN_MS: f64 = 5.0;
/// Relative margin for client RTT aggregates.
pub const RTT_MARGIN_FRACTION: f64 = 0.2;

/// Whether `new` differs from `old` in something peers act on, so it is
/// worth signing and gossiping now rather than at the next refresh:
/// holdings, mirrored sites, addresses, location, capacity, certificates,
/// name or URL, a load bucket crossed ([`load_bucket`]), or client RTT
/// aggregates appearing, disappearing or moving beyond the margins.
/// Peer RTTs, connection counts and small load moves are not material.
pub fn material_change(old: &Report, new: &Report) -> bool {
    if old.holds != new.holds
        || old.mirrors != new.mirrors
        || old.addresses != new.addresses
        || old.location != new.location
        || old.capacity != new.capacity
        || old.certs != new.certs
        || old.name != new.name
        || old.url != new.url
        || load_bucket(old) != load_bucket(new)
        || old.client_rtt.len() != new.client_rtt.len()
    {
        return true;
    }
    old.client_rtt.iter().zip(&new.client_rtt).any(|(a, b)| {
        let d = (a.rtt_ms - b.rtt_ms).abs();
        a.net != b.net || (d > RTT_MARGIN_MS && d > RTT_MARGIN_FRACTION * a.rtt_ms.max(b.rtt_ms))
    })
}

/// Rounds to `decimals` decimal places (keeps wire numbers short at a
/// precision steering can use: RTTs to 0.1 ms, loads to 0.01).
pub fn round_to(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    let r = (x * f).round() / f;
    if r.is_finite() {
        r
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &SecretKey, seq: u64) -> Report {
        Report {
            format: FORMAT,
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

    #[test]
    fn envelope_is_plain_json_beside_its_signature_and_peeks_without_verifying() {
        let k = SecretKey::generate().unwrap();
        let env = sign(&sample(&k, 7), &k).unwrap();
        let text = String::from_utf8(env.clone()).unwrap();
        assert!(text.starts_with(r#"{"report":"{\"format\":2,"#), "{text}");
        assert_eq!(peek(&env), Some((k.public(), 7)));
        // A tampered body still peeks (so a replay is dropped unverified)
        // but does not verify.
        let mut s: SignedReport = serde_json::from_slice(&env).unwrap();
        s.report = s.report.replace("\"seq\":7", "\"seq\":8");
        assert_eq!(peek_signed(&s), Some((k.public(), 8)));
        assert_eq!(
            verify_signed(s, 1010).unwrap_err(),
            ReportError::BadSignature
        );
        // Format 1 (protocol 1) bodies are refused by name.
        let mut old = sample(&k, 9);
        old.format = 1;
        let err = verify(&sign(&old, &k).unwrap(), 1010).unwrap_err();
        assert_eq!(err.to_string(), "malformed report: unsupported format 1");
    }

    #[test]
    fn only_material_changes_count() {
        let k = SecretKey::generate().unwrap();
        let a = sample(&k, 1);
        let same = |f: &dyn Fn(&mut Report)| {
            let mut b = a.clone();
            f(&mut b);
            !material_change(&a, &b)
        };
        assert!(same(&|b| b.seq = 99));
        assert!(same(&|b| b.issued = 2000));
        assert!(same(&|b| b.load.connections = 900));
        assert!(
            same(&|b| b.load.bps = 9.4e5),
            "0.90 -> 0.94 of capacity: same tenth"
        );
        assert!(same(&|b| {
            b.rtt_ms.insert("00000000000000aa".into(), 3.0);
        }));
        assert!(
            !same(&|b| b.load.bps = 1e6),
            "load crossed into the next tenth"
        );
        assert!(!same(&|b| b.load.bps = 7e5), "and back below");
        assert!(!same(&|b| b.holds[0].version = 5));
        assert!(!same(&|b| b.addresses.push("192.0.2.2".parse().unwrap())));
        assert!(!same(&|b| b.certs = Some(vec![])));
        let with_rtt = |ms: f64| {
            let mut b = a.clone();
            b.client_rtt = vec![NetRtt {
                net: "10.3.1.0/24".parse().unwrap(),
                rtt_ms: ms,
                samples: 40,
            }];
            b
        };
        assert!(
            material_change(&a, &with_rtt(20.0)),
            "an aggregate appeared"
        );
        assert!(
            !material_change(&with_rtt(20.0), &with_rtt(24.0)),
            "within 5 ms"
        );
        assert!(
            !material_change(&with_rtt(100.0), &with_rtt(115.0)),
            "within 20 %"
        );
        assert!(material_change(&with_rtt(100.0), &with_rtt(130.0)));
        assert_eq!(round_to(12.345_678, 1), 12.3);
        assert_eq!(round_to(f64::NAN, 1), 0.0);
    }
}
