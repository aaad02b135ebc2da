//! The DNS fast path against the reference path, byte for byte, over a
//! battery of names, types, spellings of case, EDNS and Client Subnet
//! options (the fuzz target `dns_request` does the same on arbitrary bytes).

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{LowerName, Name, RecordType};
use p2pcdn::dns::fast::Fast;
use p2pcdn::dns::server::{DnsData, DnsSettings, Handler, SharedDnsData, Steered, Steering};
use p2pcdn::dns::zone::{Zone, ZoneSet};

const ZONE2: &str = "$TTL 600
@ IN SOA ns1 hostmaster.ex.test. 1 7200 900 1209600 30
@ IN NS ns1
@ IN NS ns2.other.example.
ns1 IN A 192.0.2.53
www IN A 192.0.2.80
c1 IN CNAME www
cdn IN CNAME site
*.wild IN TXT \"wild\"
";

struct Fixed;

impl Steering for Fixed {
    fn addresses(
        &self,
        site: &LowerName,
        v6: bool,
        _c: IpAddr,
        sub: Option<(IpAddr, u8)>,
    ) -> Option<Steered> {
        if site.to_string() == "img.t.test." {
            return None;
        }
        let addrs = if v6 {
            vec![
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 10)),
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
            ]
        } else {
            vec![
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)),
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11)),
            ]
        };
        Some(Steered {
            addrs,
            scope: sub.map_or(0, |(_, p)| p.min(24)),
            ttl: 17,
        })
    }
}

fn handler() -> Handler {
    let z1 = Zone::parse(
        include_str!("common/t.test.zone"),
        &Name::from_ascii("t.test.").unwrap(),
        Path::new("t.test.zone"),
    )
    .unwrap();
    let z2 = Zone::parse(
        ZONE2,
        &Name::from_ascii("ex.test.").unwrap(),
        Path::new("ex.test.zone"),
    )
    .unwrap();
    let mut zones = ZoneSet::new(vec![z1, z2]);
    let mut steered = HashSet::new();
    for n in ["www.t.test.", "img.t.test.", "site.ex.test."] {
        let l = LowerName::from_str(n).unwrap();
        zones.find_mut(&l).unwrap().add_name(&l);
        steered.insert(l);
    }
    let data: SharedDnsData = Arc::new(arc_swap::ArcSwap::from_pointee(DnsData { zones, steered }));
    Handler::new(
        data,
        Arc::new(Fixed),
        DnsSettings {
            fallback_ttl: 5,
            max_udp_payload: 1232,
            rrl: None,
            metrics: Default::default(),
        },
    )
}

fn request(
    name: &str,
    t: RecordType,
    edns: Option<u16>,
    ecs: Option<(IpAddr, u8)>,
    id: u16,
) -> Vec<u8> {
    let mut m = common::query(name, t, edns, ecs);
    m.set_id(id);
    m.set_recursion_desired(id % 2 == 0);
    m.set_checking_disabled(id % 3 == 0);
    m.to_vec().unwrap()
}

fn upper_some(name: &str, seed: usize) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if (i + seed) % 3 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

#[test]
fn fast_path_equals_reference_byte_for_byte() {
    let h = handler();
    let src = SocketAddr::from(([203, 0, 113, 7], 5300));
    let names = [
        "www.t.test.",
        "img.t.test.",
        "t.test.",
        "ns1.t.test.",
        "ns2.t.test.",
        "alias.t.test.",
        "mail.t.test.",
        "_https._tcp.t.test.",
        "b.t.test.",
        "a.b.t.test.",
        "big.t.test.",
        "nope.t.test.",
        "x.nope.t.test.",
        "x.deleg.t.test.",
        "deleg.t.test.",
        "example.com.",
        "test.",
        "www.ex.test.",
        "c1.ex.test.",
        "cdn.ex.test.",
        "site.ex.test.",
        "x.wild.ex.test.",
        "nx.ex.test.",
        "hostmaster.ex.test.",
        "x.ns1.t.test.",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::ANY,
        RecordType::SOA,
        RecordType::NS,
        RecordType::MX,
        RecordType::TXT,
        RecordType::CAA,
        RecordType::SRV,
        RecordType::CNAME,
        RecordType::PTR,
        RecordType::HTTPS,
        RecordType::DS,
        RecordType::AXFR,
    ];
    let ecs: [Option<(IpAddr, u8)>; 4] = [
        None,
        Some(("192.0.2.0".parse().unwrap(), 24)),
        Some(("2001:db8:1::".parse().unwrap(), 48)),
        Some(("10.1.2.3".parse().unwrap(), 32)),
    ];
    let mut fast = 0;
    let mut total = 0;
    let mut out = vec![0u8; 65535];
    for (ni, name) in names.iter().enumerate() {
        for t in types {
            for spelling in [name.to_string(), upper_some(name, ni)] {
                for edns in [None, Some(512), Some(4096)] {
                    for sub in ecs {
                        if edns.is_none() && sub.is_some() {
                            continue;
                        }
                        total += 1;
                        let req = request(&spelling, t, edns, sub, total as u16);
                        for tcp in [false, true] {
                            let want = if tcp {
                                h.answer_tcp_reference(&req, src)
                            } else {
                                h.answer_udp_reference(&req, src)
                            };
                            match h.answer_fast(&req, src, tcp, &mut out) {
                                Fast::Reply(n) => {
                                    fast += 1;
                                    assert_eq!(
                                        Some(&out[..n]),
                                        want.as_deref(),
                                        "{spelling} {t} edns {edns:?} ecs {sub:?} tcp {tcp}"
                                    );
                                }
                                Fast::NoReply => panic!("no reply without rate limiting"),
                                Fast::Slow => {}
                            }
                        }
                    }
                }
            }
        }
    }
    // Most of the battery is covered by the fast path (referrals, wildcards,
    // CNAME chains into steered names, DS and AXFR are not).
    assert!(
        fast * 10 > total * 2 * 4,
        "fast path took {fast} of {}",
        total * 2
    );
}

/// Raw inputs the fuzzer found where the paths differed (kept in
/// `tests/fuzz_regressions/dns_request/`): they agree now, whichever path
/// answers.
#[test]
fn fuzz_regressions_agree() {
    let h = handler();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions/dns_request");
    let mut out = vec![0u8; 65535];
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let id = data
            .get(..2)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        let src = SocketAddr::from(([203, 0, 113, (id % 200) as u8 + 1], 5300));
        for tcp in [false, true] {
            if let Fast::Reply(len) = h.answer_fast(&data, src, tcp, &mut out) {
                let want = if tcp {
                    h.answer_tcp_reference(&data, src)
                } else {
                    h.answer_udp_reference(&data, src)
                };
                assert_eq!(
                    Some(&out[..len]),
                    want.as_deref(),
                    "{} (tcp: {tcp})",
                    path.display()
                );
            }
        }
        n += 1;
    }
    assert!(n >= 2, "regression inputs found: {n}");
}

/// A Client Subnet address with bits set past its source prefix is masked
/// by the reference path; the fast path leaves such queries to it.
#[test]
fn ecs_with_bits_past_the_prefix_takes_the_reference_path() {
    let h = handler();
    let data = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fuzz_regressions/dns_request/ecs-unmasked-address-bits"),
    )
    .unwrap();
    let src = SocketAddr::from(([203, 0, 113, 4], 5300));
    let mut out = vec![0u8; 65535];
    assert!(matches!(
        h.answer_fast(&data, src, false, &mut out),
        Fast::Slow
    ));
    let r = Message::from_vec(&h.answer_udp_reference(&data, src).unwrap()).unwrap();
    let echo = r
        .extensions()
        .as_ref()
        .unwrap()
        .option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet)
        .cloned();
    match echo {
        Some(EdnsOption::Subnet(cs)) => {
            let IpAddr::V6(a) = cs.addr() else {
                panic!("{cs:?}")
            };
            // /49: nothing past bit 49 survives.
            assert_eq!(u128::from(a) & ((1u128 << (128 - 49)) - 1), 0, "{a}");
        }
        other => panic!("no ECS echo: {other:?}"),
    }
}
