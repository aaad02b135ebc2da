//! TOML text -> `p2pcdn::config::Config::parse(text, "/tmp/x/c.toml")`.
//!
//! Every accepted configuration must satisfy the validated ranges and the
//! site rules (valid, unique hostnames inside their zones, absolute paths).
#![no_main]

use std::collections::HashSet;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use p2pcdn::config::{is_hostname, normalize_url, Config};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = Config::parse(text, Path::new("/tmp/x/c.toml")) else {
        return;
    };
    assert!(is_hostname(&c.node.name), "node name {:?}", c.node.name);
    assert!((1..=86400).contains(&c.dns.answer_ttl));
    assert!((512..=4096).contains(&c.dns.max_udp_payload));
    assert!((1..=3600).contains(&c.dns.tcp_idle_timeout_secs));
    assert!((1..=3650).contains(&c.publish_validity_days));
    assert!((1..=8).contains(&c.steering.answers));
    assert!((0.05..=1.0).contains(&c.steering.spill_threshold));
    assert!(c.data_dir.is_absolute() && c.zones_dir.is_absolute() && c.node.key.is_absolute());
    assert!(c.node.capacity_rps.is_finite() && c.node.capacity_rps > 0.0);
    assert!(c.node.capacity_bps.is_finite() && c.node.capacity_bps > 0.0);
    if let Some(p) = c.node.location {
        assert!((-90.0..=90.0).contains(&p.lat) && (-180.0..=180.0).contains(&p.lon));
    }
    if let Some(u) = &c.node.url {
        assert_eq!(normalize_url(u).map(|x| x.0).as_ref(), Ok(u), "node.url not normalized");
    }
    for p in &c.federation.peers {
        let (u, h) = normalize_url(&p.url).expect("peer url re-normalizes");
        assert_eq!((&u, &h), (&p.url, &p.host));
    }
    assert!((1..=64).contains(&c.federation.fanout));
    let mut seen = HashSet::new();
    for s in &c.sites {
        assert!(is_hostname(&s.hostname) && is_hostname(&s.zone));
        assert!(s.hostname == s.zone || s.hostname.ends_with(&format!(".{}", s.zone)));
        assert_eq!(s.hostname, s.hostname.to_ascii_lowercase());
        assert!(seen.insert(s.hostname.clone()), "site {} twice", s.hostname);
        assert_eq!(c.site(&s.hostname).map(|x| &x.hostname), Some(&s.hostname));
    }
    for s in &c.pending_sites {
        assert!(is_hostname(&s.hostname) && is_hostname(&s.zone));
        assert!(seen.insert(s.hostname.clone()), "site {} twice", s.hostname);
        assert!(s.owner_key_url.starts_with("https://"));
    }
    for o in &c.geo_overrides {
        assert!((-90.0..=90.0).contains(&o.point.lat) && (-180.0..=180.0).contains(&o.point.lon));
    }
});
