use std::str::FromStr;

use hickory_proto::rr::Name;

use super::*;

fn n(s: &str) -> LowerName {
    LowerName::from(Name::from_str(s).unwrap())
}

fn set(entries: &[(&str, &[&str])]) -> NsSet {
    NsSet(
        entries
            .iter()
            .map(|(ns, a)| (n(ns), a.iter().map(|x| x.parse().unwrap()).collect()))
            .collect(),
    )
}

const Z: &str = "cdn.example.org.";
const P: &str = "example.org.";

fn zone_set() -> NsSet {
    set(&[
        ("ns1.cdn.example.org.", &["192.0.2.1", "2001:db8::1"]),
        ("ns2.cdn.example.org.", &["192.0.2.2"]),
        ("ns3.cdn.example.org.", &["192.0.2.3"]),
        ("ns.friend.example.net.", &[]),
    ])
}

fn levels(f: &[Finding]) -> Vec<Level> {
    f.iter().map(|x| x.level).collect()
}

#[test]
fn matching_delegation_is_one_ok_line() {
    let f = delegation(&n(Z), &n(P), &zone_set(), &zone_set());
    assert_eq!(levels(&f), vec![Level::Ok]);
    assert!(
        f[0].to_string()
            .starts_with("ok   delegation cdn.example.org.: the parent example.org. lists"),
        "{}",
        f[0]
    );
}

#[test]
fn out_of_zone_name_servers_need_no_glue() {
    let mut parent = zone_set();
    parent.0.insert(
        n("ns.friend.example.net."),
        ["198.51.100.1".parse().unwrap()].into(),
    );
    let f = delegation(&n(Z), &n(P), &parent, &zone_set());
    assert_eq!(levels(&f), vec![Level::Ok]);
}

#[test]
fn missing_ns_fails_with_the_glue_to_add() {
    let mut parent = zone_set();
    parent.0.remove(&n("ns3.cdn.example.org."));
    let f = delegation(&n(Z), &n(P), &parent, &zone_set());
    assert_eq!(levels(&f), vec![Level::Fail]);
    assert_eq!(
        f[0].to_string(),
        "FAIL delegation cdn.example.org.: the parent example.org. does not list NS ns3.cdn.example.org., which the zone has; \
         fix: at your registrar/parent (example.org.), add NS ns3.cdn.example.org. with glue A 192.0.2.3"
    );
}

#[test]
fn wrong_glue_fails_with_the_right_address() {
    let mut parent = zone_set();
    parent.0.insert(
        n("ns2.cdn.example.org."),
        ["192.0.2.99".parse().unwrap()].into(),
    );
    let f = delegation(&n(Z), &n(P), &parent, &zone_set());
    assert_eq!(levels(&f), vec![Level::Fail]);
    let line = f[0].to_string();
    assert!(
        line.contains(
            "wrong glue for ns2.cdn.example.org.: A 192.0.2.99; the zone says A 192.0.2.2"
        ),
        "{line}"
    );
    assert!(
        line.ends_with("set the glue of ns2.cdn.example.org. to A 192.0.2.2"),
        "{line}"
    );
}

#[test]
fn missing_and_partial_glue() {
    let mut parent = zone_set();
    parent.0.insert(n("ns2.cdn.example.org."), BTreeSet::new());
    parent.0.insert(
        n("ns1.cdn.example.org."),
        ["192.0.2.1".parse().unwrap()].into(),
    );
    let f = delegation(&n(Z), &n(P), &parent, &zone_set());
    assert_eq!(levels(&f), vec![Level::Warn, Level::Fail]);
    assert!(
        f[0].message.contains("no glue AAAA 2001:db8::1 for ns1"),
        "{}",
        f[0]
    );
    assert!(
        f[1].message
            .contains("lists NS ns2.cdn.example.org. without glue"),
        "{}",
        f[1]
    );
}

#[test]
fn extra_ns_at_the_parent_fails() {
    let mut parent = zone_set();
    parent.0.insert(n("old.example.net."), BTreeSet::new());
    let f = delegation(&n(Z), &n(P), &parent, &zone_set());
    assert_eq!(levels(&f), vec![Level::Fail]);
    assert!(f[0]
        .fix
        .as_deref()
        .unwrap()
        .contains("remove NS old.example.net."));
}

fn probe(ns: &str, addr: &str, answer: Answer) -> Probe {
    Probe {
        ns: n(ns),
        addr: addr.parse().unwrap(),
        answer,
    }
}

fn soa(serial: u32) -> Answer {
    Answer::Response {
        aa: true,
        rcode: "NOERROR".into(),
        serial: Some(serial),
        records: 1,
    }
}

#[test]
fn serials_agree() {
    let p = [
        probe("ns1.cdn.example.org.", "192.0.2.1", soa(7)),
        probe("ns2.cdn.example.org.", "192.0.2.2", soa(7)),
    ];
    let f = serials(&n(Z), Some(7), &p);
    assert_eq!(levels(&f), vec![Level::Ok]);
    assert!(f[0]
        .message
        .contains("2 authority addresses answer SOA serial 7"));
}

#[test]
fn serials_disagree_dead_and_lame_authorities_fail() {
    let p = [
        probe("ns1.cdn.example.org.", "192.0.2.1", soa(7)),
        probe("ns2.cdn.example.org.", "192.0.2.2", soa(8)),
        probe(
            "ns3.cdn.example.org.",
            "192.0.2.3",
            Answer::Failed("timed out after 2 s".into()),
        ),
        probe(
            "ns4.cdn.example.org.",
            "192.0.2.4",
            Answer::Response {
                aa: false,
                rcode: "REFUSED".into(),
                serial: None,
                records: 0,
            },
        ),
    ];
    let f = serials(&n(Z), None, &p);
    assert_eq!(levels(&f), vec![Level::Fail; 3]);
    assert!(f[0].message.contains("192.0.2.3 did not answer: timed out"));
    assert!(f[1].message.contains("REFUSED without AA"));
    assert!(
        f[2].message
            .contains("7 at ns1.cdn.example.org. at 192.0.2.1; 8 at ns2"),
        "{}",
        f[2]
    );
}

#[test]
fn local_serial_must_be_served() {
    let p = [probe("ns1.cdn.example.org.", "192.0.2.1", soa(7))];
    let f = serials(&n(Z), Some(9), &p);
    assert_eq!(levels(&f), vec![Level::Fail]);
    assert!(serials(&n(Z), None, &[])[0].level == Level::Fail);
}

#[test]
fn steered_names() {
    let host = n("www.cdn.example.org.");
    let good = [probe("ns1.cdn.example.org.", "192.0.2.1", soa(1))];
    let ok = steered(
        &host,
        "127.0.0.1:53",
        &Ok::<_, String>(vec!["192.0.2.1".parse().unwrap()]),
        &good,
    );
    assert_eq!(levels(&ok), vec![Level::Ok]);
    let none = steered(&host, "r", &Ok::<_, String>(vec![]), &good);
    assert_eq!(levels(&none), vec![Level::Fail]);
    let err = steered(&host, "r", &Err::<_, String>("SERVFAIL".into()), &good);
    assert!(err[0]
        .message
        .contains("does not resolve through r: SERVFAIL"));
    let lame = [probe(
        "ns2.cdn.example.org.",
        "192.0.2.2",
        Answer::Response {
            aa: false,
            rcode: "REFUSED".into(),
            serial: None,
            records: 0,
        },
    )];
    let f = steered(
        &host,
        "r",
        &Ok::<_, String>(vec!["192.0.2.1".parse().unwrap()]),
        &lame,
    );
    assert_eq!(levels(&f), vec![Level::Fail]);
}

#[test]
fn certificate_expiry() {
    let a: SocketAddr = "192.0.2.1:443".parse().unwrap();
    let now = 1_800_000_000;
    assert_eq!(
        certificate("www", &a, &Ok::<_, String>(now + 30 * 86_400), now, "x").level,
        Level::Ok
    );
    assert_eq!(
        certificate("www", &a, &Ok::<_, String>(now + 3 * 86_400), now, "x").level,
        Level::Warn
    );
    let f = certificate(
        "www",
        &a,
        &Err::<_, String>("invalid peer certificate: NotValidForName".into()),
        now,
        "install one",
    );
    assert_eq!(f.to_string(), "FAIL certificate www at 192.0.2.1:443: invalid peer certificate: NotValidForName; fix: install one");
}

#[test]
fn clock_skew() {
    assert_eq!(clock("p", &Ok::<_, String>(0.4)).level, Level::Ok);
    assert_eq!(clock("p", &Ok::<_, String>(-12.0)).level, Level::Warn);
    assert_eq!(clock("p", &Ok::<_, String>(61.0)).level, Level::Fail);
    assert_eq!(
        clock("p", &Err::<_, String>("refused".into())).level,
        Level::Fail
    );
}

#[test]
fn geodata_age() {
    let now = 1_800_000_000;
    assert_eq!(geodata(None, &Ok::<_, String>(0), now).level, Level::Warn);
    assert_eq!(
        geodata(Some("g"), &Ok::<_, String>(now as u64 - 10 * 86_400), now).level,
        Level::Ok
    );
    assert_eq!(
        geodata(Some("g"), &Ok::<_, String>(now as u64 - 100 * 86_400), now).level,
        Level::Warn
    );
    assert_eq!(
        geodata(Some("g"), &Err::<_, String>("No such file".into()), now).level,
        Level::Fail
    );
}
