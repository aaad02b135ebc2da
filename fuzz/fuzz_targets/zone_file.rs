//! Zone file text -> `p2pcdn::dns::zone::Zone::{parse_untrusted, parse}`.
//!
//! Zone text reaches p2pcdn from local files (`Zone::parse`, operator-trusted)
//! and, owner-signed, from site manifests (`Zone::parse_untrusted`, which must
//! refuse `$INCLUDE`). Checks:
//! - `parse_untrusted` never reads a file: the harness gives it a label path
//!   in a private directory holding a file `inc`, and compares the process's
//!   read-byte counter (`rchar` in /proc/self/io) around the call whenever the
//!   text mentions INCLUDE;
//! - without INCLUDE in the text, `parse` and `parse_untrusted` agree
//!   (except `parse_untrusted`'s conservative refusal of "$include" text);
//! - a loaded zone has the origin asked for (`$ORIGIN` cannot move it), its
//!   SOA, and answers questions: it is put in a `ZoneSet` with steered site
//!   names (as `instance.rs` builds it) and `p2pcdn::dns::answer::resolve`
//!   answers A/AAAA/ANY/MX/DS/TXT for fixed names and for the owner names
//!   found in the text (CNAME cycles through steered names must terminate).
//!
//! `Zone::parse` contains hickory parser panics with `catch_unwind`;
//! libfuzzer-sys' panic hook would abort on those before they are caught, so
//! the calls run under [`p2pcdn_fuzz::contained`]: only a panic that escapes
//! the API is a crash.
#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::str::FromStr;

use hickory_proto::rr::{LowerName, Name, RecordType};
use libfuzzer_sys::fuzz_target;
use p2pcdn::dns::answer::{resolve, Question};
use p2pcdn::dns::zone::{Zone, ZoneSet};

/// A private directory with a file `inc` (a valid zone fragment) that a
/// relative `$INCLUDE inc` would read; the label path handed to the parser.
fn label() -> &'static Path {
    static L: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    L.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("p2pcdn-fuzz-zone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("inc"), "included-marker IN A 192.0.2.77\n").expect("inc");
        dir.join("<manifest of www.t.test>")
    })
}

/// Bytes this process has read through read(2) and friends so far.
fn rchar() -> (u64, u64) {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let n = io
        .lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (n, io.len() as u64)
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
    // Case-insensitive, anywhere: the same notion as `parse_untrusted`.
    let mentions_include = text.to_ascii_lowercase().contains("include");
    let before = mentions_include.then(rchar);
    let untrusted = p2pcdn_fuzz::contained(|| Zone::parse_untrusted(text, &origin, label()));
    if let Some((b, own)) = before {
        let (a, _) = rchar();
        // `a` counts the first /proc read (`own` bytes) and whatever the parser read.
        assert_eq!(
            a.saturating_sub(b).saturating_sub(own),
            0,
            "Zone::parse_untrusted read a file ($INCLUDE in owner-signed zone text); result ok: {}",
            untrusted.is_ok()
        );
    }
    if !mentions_include {
        // Without "include" anywhere, parse_untrusted must be exactly parse.
        let trusted = p2pcdn_fuzz::contained(|| Zone::parse(text, &origin, label()));
        match (&trusted, &untrusted) {
            (Ok(_), Ok(_)) | (Err(_), Err(_)) => {}
            (Err(e), Ok(_)) => panic!("parse_untrusted accepted what parse refuses: {e}"),
            (Ok(_), Err(e)) => panic!("parse_untrusted refused what parse accepts: {e}"),
        }
    }
    let Ok(mut zone) = untrusted else {
        return;
    };
    // Invariants of a loaded zone.
    let o = LowerName::new(&origin);
    // The zone must be the one asked for: `$ORIGIN` in the text must not move
    // it elsewhere (owner-signed zone text is checked against the site's zone
    // only through the origin passed in).
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
    for n in &names {
        let _ = zone.cut_above(n);
        let _ = zone.wildcard_for(n);
    }
    let zones = ZoneSet::new(vec![zone]);
    let www = LowerName::from_str("www.t.test.").expect("name");
    // www has holders with IPv4 addresses only; img has none.
    let steer = move |n: &LowerName| {
        (n == &www).then(|| (vec![IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))], 30))
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
