//! Node-signed reports: `p2pcdn::report::{verify, sign}`.
//!
//! First byte picks the mode; the rest is:
//! - mode 0/1 (raw): arbitrary envelope bytes for `verify(bytes, NOW)`;
//! - mode 2 (signed body): arbitrary report *body* text (UTF-8) in an envelope
//!   signed by the fixed key (seeds name that key as `node`, so the time and
//!   format rules are reached);
//! - mode 3 (structured): a `Report` built from the bytes, signed with
//!   `report::sign`; `verify` must accept it exactly when a model of the rules
//!   says so, and round-trip it.
#![no_main]

use std::collections::BTreeMap;
use std::net::IpAddr;

use arbitrary::{Arbitrary, Result as AResult, Unstructured};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use p2pcdn::latency::{self, ClientNet, NetRtt};
use p2pcdn::report::{
    self, verify, Capacity, Held, Load, Point, Report, ReportError, VerifiedReport, REPORT_DOMAIN,
};
use p2pcdn_fuzz::{fixed_key, NOW};

fn check_verified(v: &VerifiedReport, envelope: &[u8]) {
    let r = &v.report;
    assert_eq!(r.format, report::FORMAT);
    assert!(r.rtt_ms.len() <= report::MAX_PEER_RTTS);
    assert!(r.expires > NOW, "accepted an expired report");
    assert!(r.issued <= NOW + report::MAX_SKEW);
    assert!(r.expires.saturating_sub(r.issued) <= report::MAX_REPORT_TTL);
    assert_eq!(v.envelope, envelope);
    assert!(envelope.len() <= report::MAX_REPORT_BYTES);
    // Must not panic on any accepted report.
    let f = r.load.fraction(&r.capacity);
    assert!(f.is_finite() && f >= 0.0, "load fraction {f}");
    for h in &r.holds {
        assert!(r.holds_version(&h.site) >= Some(h.version));
    }
    assert_eq!(latency::validate(&r.client_rtt), Ok(()));
}

fn raw(data: &[u8]) {
    if let Ok(v) = verify(data, NOW) {
        check_verified(&v, data);
    }
}

fn signed_body(body: &[u8]) {
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let mut msg = REPORT_DOMAIN.to_vec();
    msg.extend_from_slice(body);
    let env = serde_json::json!({
        "report": text,
        "sig": STANDARD.encode(fixed_key().sign(&msg)),
    });
    let env = serde_json::to_vec(&env).expect("envelope");
    match verify(&env, NOW) {
        Ok(v) => {
            assert_eq!(v.report.node, fixed_key().public());
            check_verified(&v, &env);
        }
        Err(ReportError::BadSignature) => {
            // Only when the body names another node key.
            let named: Option<String> = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|j| j.get("node").and_then(|n| n.as_str()).map(str::to_owned));
            assert_ne!(
                named.as_deref(),
                Some(fixed_key().public().to_string().as_str()),
                "report signed by its own node key refused"
            );
        }
        Err(_) => {}
    }
}

fn float(u: &mut Unstructured<'_>) -> AResult<f64> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => f64::arbitrary(u)?,
        1 => 0.0,
        2 => -1.0,
        _ => f64::from(u32::arbitrary(u)?) / 8.0,
    })
}

fn time(u: &mut Unstructured<'_>) -> AResult<u64> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => u64::arbitrary(u)?,
        _ => NOW.wrapping_add_signed(i64::from(i16::arbitrary(u)?)),
    })
}

fn build(u: &mut Unstructured<'_>) -> AResult<Report> {
    let mut rtt_ms = BTreeMap::new();
    for _ in 0..u.int_in_range(0..=3u8)? {
        rtt_ms.insert(String::arbitrary(u)?, float(u)?);
    }
    let addresses: Vec<IpAddr> = (0..u.int_in_range(0..=3u8)?)
        .map(|_| IpAddr::arbitrary(u))
        .collect::<AResult<_>>()?;
    let holds = (0..u.int_in_range(0..=3u8)?)
        .map(|_| {
            Ok(Held {
                site: String::arbitrary(u)?,
                version: u64::arbitrary(u)?,
            })
        })
        .collect::<AResult<_>>()?;
    let client_rtt = (0..u.int_in_range(0..=3u8)?)
        .map(|_| {
            Ok(NetRtt {
                net: ClientNet::of(IpAddr::arbitrary(u)?),
                rtt_ms: float(u)?,
                samples: u32::arbitrary(u)?,
            })
        })
        .collect::<AResult<_>>()?;
    Ok(Report {
        format: if u.ratio(1, 8)? {
            u32::arbitrary(u)?
        } else {
            report::FORMAT
        },
        node: fixed_key().public(),
        name: String::arbitrary(u)?,
        url: String::arbitrary(u)?,
        addresses,
        location: if bool::arbitrary(u)? {
            Some(Point {
                lat: float(u)?,
                lon: float(u)?,
            })
        } else {
            None
        },
        capacity: Capacity {
            rps: float(u)?,
            bps: float(u)?,
        },
        load: Load {
            rps: float(u)?,
            bps: float(u)?,
            connections: u64::arbitrary(u)?,
        },
        holds,
        mirrors: Vec::<String>::arbitrary(u)?,
        rtt_ms,
        client_rtt,
        certs: None,
        seq: u64::arbitrary(u)?,
        issued: time(u)?,
        expires: time(u)?,
    })
}

fn floats(r: &Report) -> Vec<f64> {
    let mut v = vec![r.capacity.rps, r.capacity.bps, r.load.rps, r.load.bps];
    if let Some(p) = r.location {
        v.extend([p.lat, p.lon]);
    }
    v.extend(r.rtt_ms.values().copied());
    v.extend(r.client_rtt.iter().map(|a| a.rtt_ms));
    v
}

fn structured(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(r) = build(&mut u) else { return };
    let Ok(env) = report::sign(&r, fixed_key()) else {
        return;
    };
    let got = verify(&env, NOW);
    // serde_json writes non-finite floats as `null`, which do not read back as
    // f64: such reports are refused as malformed (never accepted).
    let finite = floats(&r).iter().all(|f| f.is_finite());
    let want = finite
        && env.len() <= report::MAX_REPORT_BYTES
        && r.format == report::FORMAT
        && r.rtt_ms.len() <= report::MAX_PEER_RTTS
        && r.expires > NOW
        && r.issued <= NOW + report::MAX_SKEW
        && r.expires.saturating_sub(r.issued) <= report::MAX_REPORT_TTL
        && latency::validate(&r.client_rtt).is_ok();
    match got {
        Ok(v) => {
            assert!(want, "accepted a report the rules refuse: {r:?}");
            check_verified(&v, &env);
            let mut a = v.report.clone();
            let mut b = r.clone();
            // Floats are compared separately (serde_json's default float
            // parsing is not guaranteed bit-exact).
            for (x, y) in floats(&a).iter().zip(floats(&b).iter()) {
                assert!(
                    x == y || ((x - y) / y).abs() < 1e-12,
                    "float changed: {x} vs {y}"
                );
            }
            for rep in [&mut a, &mut b] {
                rep.capacity = Capacity { rps: 0.0, bps: 0.0 };
                rep.load.rps = 0.0;
                rep.load.bps = 0.0;
                rep.location = rep.location.map(|_| Point { lat: 0.0, lon: 0.0 });
                rep.rtt_ms.values_mut().for_each(|v| *v = 0.0);
                rep.client_rtt.iter_mut().for_each(|a| a.rtt_ms = 0.0);
            }
            assert_eq!(a, b, "report did not round-trip");
        }
        Err(e) => assert!(!want, "refused a valid report ({e}): {r:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel & 3 {
        0 | 1 => raw(rest),
        2 => signed_body(rest),
        _ => structured(rest),
    }
});
