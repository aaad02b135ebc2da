//! Zone file text -> `p2pcdn::dns::zone::Zone::parse(text, origin, path)`.
//!
//! Zone text reaches p2pcdn from local files and, owner-signed, from site
//! manifests (`ZoneDoc`), so a loaded zone is also queried: every accepted
//! zone is put in a `ZoneSet` with steered site names (as `instance.rs`
//! builds it) and `p2pcdn::dns::answer::resolve` answers A/AAAA/ANY/MX/DS/TXT
//! questions for fixed names and for the owner names found in the text.
//!
//! `Zone::parse` contains hickory parser panics with `catch_unwind` (zone text
//! may come from a manifest); libfuzzer-sys' panic hook would abort on those
//! before they are caught, so the call runs under [`p2pcdn_fuzz::contained`]:
//! only a panic that escapes `Zone::parse` is a crash.
//!
//! `P2PCDN_FUZZ_SKIP_KNOWN=1` skips zones that hit the known, recorded bugs
//! (tests/fuzz_regressions/zone_file/): `$ORIGIN` moving the zone away from
//! the origin asked for, and unbounded recursion in `resolve` on a CNAME
//! cycle through a steered name, so a long run can look further.
//! Without it (the default, and in run.sh) such inputs crash.
#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::str::FromStr;

use hickory_proto::rr::{LowerName, Name, RecordType};
use libfuzzer_sys::fuzz_target;
use p2pcdn::dns::answer::{resolve, Question};
use p2pcdn::dns::zone::{Zone, ZoneSet};

fn skip_known() -> bool {
    static S: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *S.get_or_init(|| std::env::var_os("P2PCDN_FUZZ_SKIP_KNOWN").is_some_and(|v| v == "1"))
}

/// Parses; a panic escaping `Zone::parse` is re-raised (a crash).
fn parse(text: &str, origin: &Name) -> Option<Zone> {
    p2pcdn_fuzz::contained(|| Zone::parse(text, origin, Path::new("t.test.zone"))).ok()
}

/// The CNAME target of `name` as `resolve` would follow it (exact node, else wildcard).
fn cname_of(zone: &Zone, name: &LowerName) -> Option<LowerName> {
    let recs = match zone.node(name) {
        Some(rs) => rs.to_vec(),
        None if zone.exists(name) => vec![],
        None => zone
            .wildcard_for(name)
            .and_then(|wc| zone.node(&wc).map(<[_]>::to_vec))
            .unwrap_or_default(),
    };
    recs.iter().find_map(|r| match r.data() {
        hickory_proto::rr::RData::CNAME(c) => Some(LowerName::new(&c.0)),
        _ => None,
    })
}

/// True when a CNAME chain (<= 8 hops, as in resolve) from a steered name
/// reaches a steered name again, i.e. resolve() would recurse for ever.
fn steered_cname_cycle(zone: &Zone, steered: &HashSet<LowerName>) -> bool {
    let next = |s: &LowerName| -> Option<LowerName> {
        let mut n = s.clone();
        for _ in 0..8 {
            n = cname_of(zone, &n)?;
            if steered.contains(&n) {
                return Some(n);
            }
        }
        None
    };
    steered.iter().any(|s| {
        let mut cur = s.clone();
        for _ in 0..=steered.len() {
            match next(&cur) {
                Some(t) if &t == s => return true,
                Some(t) => cur = t,
                None => return false,
            }
        }
        false
    })
}

const NAMES: &[&str] = &[
    "t.test.",
    "www.t.test.",
    "img.t.test.",
    "alias.t.test.",
    "mail.t.test.",
    "x.deleg.t.test.",
    "a.b.t.test.",
    "b.t.test.",
    "nope.t.test.",
    "x.wild.t.test.",
];

const QTYPES: &[RecordType] = &[
    RecordType::A,
    RecordType::AAAA,
    RecordType::ANY,
    RecordType::MX,
    RecordType::DS,
    RecordType::TXT,
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let origin = Name::from_ascii("t.test.").expect("origin");
    let Some(mut zone) = parse(text, &origin) else {
        return;
    };
    // Invariants of a loaded zone.
    let o = LowerName::new(&origin);
    // The zone must be the one asked for: `$ORIGIN` in the text must not move
    // it elsewhere (owner-signed zone text is checked against the site's zone
    // only through the origin passed in).
    if skip_known() && zone.origin() != &o {
        return;
    }
    assert_eq!(zone.origin(), &o, "zone text moved the zone origin");
    assert_eq!(zone.soa().record_type(), RecordType::SOA);
    assert!(zone.exists(&o));
    assert!(zone.negative_soa().ttl() <= zone.soa().ttl());

    // Names to ask about: fixed ones plus owner names from the text.
    let mut names: Vec<LowerName> = NAMES
        .iter()
        .map(|n| LowerName::from_str(n).expect("name"))
        .collect();
    for line in text.lines().take(64) {
        if line.starts_with([' ', '\t', '$', ';', '@']) {
            continue;
        }
        if let Some(tok) = line.split_whitespace().next() {
            if let Ok(n) = Name::parse(tok, Some(&origin)) {
                names.push(LowerName::new(&n));
            }
        }
        if names.len() >= 24 {
            break;
        }
    }

    // Steered site names, as configured sites would be.
    let mut steered = HashSet::new();
    for s in ["www.t.test.", "img.t.test."] {
        let l = LowerName::from_str(s).expect("name");
        zone.add_name(&l);
        steered.insert(l);
    }
    if skip_known() && steered_cname_cycle(&zone, &steered) {
        return;
    }
    for n in &names {
        let _ = zone.cut_above(n);
        let _ = zone.wildcard_for(n);
    }
    let zones = ZoneSet::new(vec![zone]);
    let www = LowerName::from_str("www.t.test.").expect("name");
    // www has holders with IPv4 addresses only; img has none.
    let steer = move |n: &LowerName| {
        (n == &www).then(|| vec![IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))])
    };
    for n in &names {
        for &qtype in QTYPES {
            let a = resolve(&zones, &steered, &Question { name: n, qtype }, 30, &steer);
            assert!(
                a.answers.len() <= 4096,
                "{} answers for {n} {qtype}",
                a.answers.len()
            );
        }
    }
});
