use super::*;
use proptest::prelude::*;

const T0: u64 = 1_700_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> ClientNet {
    s.parse().unwrap()
}

#[test]
fn networks_of_addresses() {
    assert_eq!(ClientNet::of(ip("10.3.1.77")).to_string(), "10.3.1.0/24");
    assert_eq!(
        ClientNet::of(ip("fd00:3:1:ab::1")).to_string(),
        "fd00:3:1::/48"
    );
    // IPv4-mapped IPv6 is IPv4.
    assert_eq!(ClientNet::of(ip("::ffff:10.3.1.9")), net("10.3.1.0/24"));
    assert!(net("10.3.1.0/24").contains(ip("10.3.1.255")));
    assert!(!net("10.3.1.0/24").contains(ip("10.3.2.1")));
    assert!(net("2001:db8:7::/48").contains(ip("2001:db8:7:ffff::1")));
    assert!(net("10.3.1.0/24") < net("::/48"));
}

#[test]
fn parse_refuses_other_forms() {
    for bad in [
        "10.3.1.0",
        "10.3.1.5/24",
        "10.3.1.0/16",
        "10.3.1.0/25",
        "fd00:3:1::/64",
        "fd00:3:1:1::/48",
        "fd00:3:1::/24",
        "::ffff:10.3.1.0/48",
        "10.3.1.0/24 ",
        "",
        "/",
        "x/24",
    ] {
        assert!(
            matches!(bad.parse::<ClientNet>(), Err(LatencyError::BadNet(_))),
            "{bad:?} parsed"
        );
    }
    // Non-canonical spelling of a valid network parses to the same value.
    assert_eq!(net("fd00:0003:0001::/48"), net("fd00:3:1::/48"));
}

#[test]
fn wire_form_is_a_compact_array() {
    let a = NetRtt {
        net: net("10.3.1.0/24"),
        rtt_ms: 12.5,
        samples: 40,
    };
    let json = serde_json::to_string(&a).unwrap();
    assert_eq!(json, r#"["10.3.1.0/24",12.5,40]"#);
    assert_eq!(serde_json::from_str::<NetRtt>(&json).unwrap(), a);
    let b = NetRtt {
        net: net("fd00:3:1::/48"),
        rtt_ms: 0.1,
        samples: 5,
    };
    assert_eq!(
        serde_json::to_string(&b).unwrap(),
        r#"["fd00:3:1::/48",0.1,5]"#
    );
    assert!(serde_json::from_str::<NetRtt>(r#"["10.3.1.1/24",1.0,5]"#).is_err());
    assert!(serde_json::from_str::<NetRtt>(r#"["10.3.1.0/24",1.0]"#).is_err());
    assert!(serde_json::from_str::<NetRtt>(r#"["10.3.1.0/24",1.0,-1]"#).is_err());
}

#[test]
fn rounding_goes_up_to_a_tenth() {
    assert_eq!(round_up_ms(1), 0.1);
    assert_eq!(round_up_ms(100), 0.1);
    assert_eq!(round_up_ms(101), 0.2);
    assert_eq!(round_up_ms(12_450), 12.5);
    assert_eq!(round_up_ms(12_500), 12.5);
}

#[test]
fn min_samples_and_median() {
    let mut a = Aggregator::new();
    for (i, us) in [9_000, 30_000, 10_000, 11_000].into_iter().enumerate() {
        assert!(a.record(ip(&format!("10.0.0.{i}")), us, T0));
    }
    assert!(a.snapshot(T0).is_empty(), "4 samples are not enough");
    assert!(a.record(ip("10.0.0.200"), 12_000, T0 + 1));
    let s = a.snapshot(T0 + 1);
    assert_eq!(
        s,
        vec![NetRtt {
            net: net("10.0.0.0/24"),
            rtt_ms: 11.0,
            samples: 5
        }]
    );
    assert_eq!(rtt_for(&s, ip("10.0.0.99")), s.first());
    assert_eq!(rtt_for(&s, ip("::ffff:10.0.0.99")), s.first());
    assert_eq!(rtt_for(&s, ip("10.0.1.1")), None);
    // Zero and absurd samples are not kept.
    assert!(!a.record(ip("10.0.0.1"), 0, T0));
    assert!(!a.record(ip("10.0.0.1"), 61_000_000, T0));
    assert_eq!(a.snapshot(T0 + 1)[0].samples, 5);
}

#[test]
fn samples_age_out() {
    let mut a = Aggregator::new();
    for i in 0..5 {
        a.record(ip("192.0.2.1"), 5_000, T0 + i);
    }
    assert_eq!(a.snapshot(T0 + 5).len(), 1);
    // Still counted 9 minutes later, gone once the window passed.
    assert_eq!(a.snapshot(T0 + 9 * 60).len(), 1);
    assert!(a.snapshot(T0 + WINDOW_SECS + 60).is_empty());
    // A sample after the window starts afresh, old ones don't count.
    a.record(ip("192.0.2.1"), 7_000, T0 + WINDOW_SECS + 60);
    assert!(a.snapshot(T0 + WINDOW_SECS + 60).is_empty());
    a.expire(T0 + 3 * WINDOW_SECS);
    assert!(a.is_empty());
}

#[test]
fn eviction_keeps_established_networks() {
    let mut a = Aggregator::with_limit(3);
    for _ in 0..6 {
        a.record(ip("10.0.1.1"), 1_000, T0);
        a.record(ip("10.0.2.1"), 2_000, T0);
    }
    // A flood of new networks only displaces each other.
    for i in 0..50u8 {
        a.record(ip(&format!("10.9.{i}.1")), 3_000, T0 + 1);
        assert!(a.len() <= 3);
    }
    let s = a.snapshot(T0 + 2);
    assert_eq!(
        s.iter().map(|n| n.net.to_string()).collect::<Vec<_>>(),
        ["10.0.1.0/24", "10.0.2.0/24"]
    );
    // Expired networks go first, whatever their count.
    let later = T0 + WINDOW_SECS + 60;
    a.record(ip("10.7.0.1"), 1_000, later);
    a.record(ip("10.7.1.1"), 1_000, later);
    assert_eq!(a.len(), 2);
}

#[test]
fn validate_bounds() {
    let ok = |n: u8, rtt_ms: f64, samples: u32| NetRtt {
        net: ClientNet::V4([10, 0, n]),
        rtt_ms,
        samples,
    };
    assert_eq!(validate(&[]), Ok(()));
    assert_eq!(validate(&[ok(1, 0.0, 1), ok(2, 60_000.0, 9)]), Ok(()));
    for bad in [f64::NAN, f64::INFINITY, -0.1, 60_000.1] {
        assert!(matches!(
            validate(&[ok(1, bad, 5)]),
            Err(LatencyError::BadRtt { .. })
        ));
    }
    assert!(matches!(
        validate(&[ok(1, 1.0, 0)]),
        Err(LatencyError::NoSamples(_))
    ));
    assert!(matches!(
        validate(&[ok(1, 1.0, 5), ok(1, 2.0, 5)]),
        Err(LatencyError::Duplicate(_))
    ));
    let many: Vec<NetRtt> = (0..=MAX_REPORTED)
        .map(|i| NetRtt {
            net: ClientNet::V4([10, (i / 256) as u8, (i % 256) as u8]),
            rtt_ms: 1.0,
            samples: 5,
        })
        .collect();
    assert_eq!(
        validate(&many),
        Err(LatencyError::TooMany(MAX_REPORTED + 1))
    );
    assert_eq!(validate(&many[..MAX_REPORTED]), Ok(()));
}

/// Wire size of one entry and of a full snapshot, the figures quoted in
/// docs/PROTOCOL.md.
#[test]
fn wire_size() {
    let len = |n: &str, rtt_ms: f64, samples: u32| {
        let e = NetRtt {
            net: net(n),
            rtt_ms,
            samples,
        };
        serde_json::to_vec(&e).unwrap().len()
    };
    // Typical entries.
    assert_eq!(len("203.0.113.0/24", 12.5, 40), 26);
    assert_eq!(len("2001:db8:7::/48", 12.5, 40), 27);
    // The longest possible entry.
    let worst = len("ffff:ffff:ffff::/48", MAX_RTT_MS, u32::MAX);
    assert_eq!(worst, 42);
    assert_eq!(len("255.255.255.0/24", MAX_RTT_MS, u32::MAX), 39);
    // A full list, with commas and brackets, then base64 in the envelope.
    let full: Vec<NetRtt> = (0..MAX_REPORTED)
        .map(|i| NetRtt {
            net: ClientNet::V6([0xff, 0xff, 0xff, 0xff, 0xff, i as u8]),
            rtt_ms: MAX_RTT_MS,
            samples: u32::MAX,
        })
        .collect();
    let list = serde_json::to_vec(&full).unwrap().len();
    assert!(list <= MAX_REPORTED * (worst + 1) + 1, "{list}");
    assert!(list.div_ceil(3) * 4 <= 14_700, "{list}");
}

fn sample() -> impl Strategy<Value = (IpAddr, u32, u64)> {
    let v4 =
        (0u8..4, 0u8..4, any::<u8>()).prop_map(|(b, c, d)| IpAddr::V4(Ipv4Addr::new(10, b, c, d)));
    let v6 = (0u16..4, any::<u16>())
        .prop_map(|(s, h)| IpAddr::V6(Ipv6Addr::new(0xfd00, 3, s, 0, 0, 0, 0, h)));
    (prop_oneof![v4, v6], 0u32..300_000, 0u64..(3 * WINDOW_SECS))
}

/// Samples in time order, as they arrive.
fn samples() -> impl Strategy<Value = Vec<(IpAddr, u32, u64)>> {
    proptest::collection::vec(sample(), 0..300).prop_map(|mut v| {
        v.sort_by_key(|s| s.2);
        v
    })
}

/// Another host of the same network.
fn sibling(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            IpAddr::V4(Ipv4Addr::new(a, b, c, d.wrapping_add(101)))
        }
        IpAddr::V6(v6) => {
            let mut s = v6.segments();
            s[3] = s[3].wrapping_add(7);
            s[7] = s[7].wrapping_add(101);
            IpAddr::V6(Ipv6Addr::from(s))
        }
    }
}

proptest! {
    #[test]
    fn bounds_hold(samples in samples(), limit in 1usize..40, probe in 0u64..(4 * WINDOW_SECS)) {
        let mut a = Aggregator::with_limit(limit);
        for (ip, us, t) in &samples {
            a.record(*ip, *us, T0 + t);
            prop_assert!(a.len() <= limit);
        }
        let now = T0 + probe;
        let s = a.snapshot(now);
        prop_assert!(s.len() <= MAX_REPORTED.min(limit));
        prop_assert_eq!(validate(&s), Ok(()));
        for w in s.windows(2) {
            prop_assert!((w[0].samples, w[1].net) > (w[1].samples, w[0].net));
        }
        for n in &s {
            prop_assert!(n.samples >= MIN_SAMPLES);
            prop_assert!(n.rtt_ms > 0.0 && n.rtt_ms <= MAX_RTT_MS);
            prop_assert_eq!((n.rtt_ms * 10.0).round(), n.rtt_ms * 10.0);
            // Never more than the samples of that network in the window.
            let fed = samples
                .iter()
                .filter(|(ip, us, t)| {
                    n.net.contains(*ip) && *us > 0 && in_window(minute(T0 + t), minute(now))
                })
                .count();
            prop_assert!(n.samples as usize <= fed);
        }
        // Same input, same output.
        prop_assert_eq!(s, a.clone().snapshot(now));
    }

    /// With room for every network, the counts are exact.
    #[test]
    fn counts_are_exact_without_eviction(samples in samples()) {
        let mut a = Aggregator::new();
        for (ip, us, t) in &samples {
            a.record(*ip, *us, T0 + t);
        }
        let now = T0 + 3 * WINDOW_SECS;
        for n in a.snapshot(now) {
            let fed = samples
                .iter()
                .filter(|(ip, us, t)| {
                    n.net.contains(*ip) && *us > 0 && in_window(minute(T0 + t), minute(now))
                })
                .count();
            prop_assert_eq!(n.samples as usize, fed);
        }
    }

    /// The state depends on networks only: moving every sample to another
    /// host of the same network leaves exactly the same state.
    #[test]
    fn no_per_client_data(samples in samples(), limit in 1usize..40) {
        let mut a = Aggregator::with_limit(limit);
        let mut b = Aggregator::with_limit(limit);
        for (ip, us, t) in &samples {
            a.record(*ip, *us, T0 + t);
            b.record(sibling(*ip), *us, T0 + t);
        }
        prop_assert_eq!(a, b);
    }

    #[test]
    fn text_round_trip(ip in any::<IpAddr>()) {
        let n = ClientNet::of(ip);
        let text = n.to_string();
        prop_assert_eq!(text.parse::<ClientNet>(), Ok(n));
        prop_assert!(n.contains(ip));
        prop_assert!(n.contains(n.network()));
        let json = serde_json::to_string(&n).unwrap();
        prop_assert_eq!(serde_json::from_str::<ClientNet>(&json).unwrap(), n);
    }

    #[test]
    fn parse_never_panics(s in "\\PC{0,40}") {
        if let Ok(n) = s.parse::<ClientNet>() {
            prop_assert_eq!(n.to_string().parse::<ClientNet>(), Ok(n));
        }
    }
}
