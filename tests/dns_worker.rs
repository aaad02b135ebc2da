//! The UDP threads' path (`Handler::answer_udp_in` with a `Worker`: zone
//! snapshot per batch, first-level cache of steered answers, per-batch
//! metrics) against the reference path, with the real `FederatedSteering`
//! and the test mmdb: the same bytes when the answer comes from the cache
//! (another id, another spelling of case, other EDNS sizes, ECS scopes),
//! a new steering view seen by the next batch, and the cache's bound.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::Message;
use hickory_proto::rr::{LowerName, Name, RData, RecordType};
use p2pcdn::dns::server::{DnsData, DnsSettings, Handler, SharedDnsData};
use p2pcdn::dns::worker::{Worker, L1_SLOTS};
use p2pcdn::dns::zone::{Zone, ZoneSet};
use p2pcdn::federation::view::{FederatedSteering, SiteView, SteerView};
use p2pcdn::geo::{Geo, GeoPoint};
use p2pcdn::steer::ttl::TtlPolicy;
use p2pcdn::steer::{Candidate, Policy};

const CITIES: [(f64, f64); 5] = [
    (50.11, 8.68),
    (40.71, -74.01),
    (1.35, 103.82),
    (-23.55, -46.63),
    (-33.87, 151.21),
];

/// The five test-world cities' mirrors (10.N.0.1, fd00::N), `healthy[i]`.
fn view(healthy: [bool; 5]) -> SteerView {
    let candidates = CITIES
        .iter()
        .enumerate()
        .map(|(i, &(lat, lon))| Candidate {
            id: [i as u8 + 1; 32],
            addrs: vec![
                IpAddr::from([10, i as u8 + 1, 0, 1]),
                IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, i as u16 + 1]),
            ],
            point: Some(GeoPoint { lat, lon }),
            rtt_ms: None,
            load: 0.1,
            healthy: healthy[i],
            authorized: true,
            version: Some(7),
            up_secs: 3600,
            flaps: 0,
        })
        .collect();
    SteerView::from_sites(HashMap::from([(
        "www.t.test".to_string(),
        SiteView {
            target: Some(7),
            candidates,
        },
    )]))
}

fn handler() -> (Handler, Arc<ArcSwap<SteerView>>, SharedDnsData) {
    let z = Zone::parse(
        include_str!("common/t.test.zone"),
        &Name::from_ascii("t.test.").unwrap(),
        Path::new("t.test.zone"),
    )
    .unwrap();
    let mut zones = ZoneSet::new(vec![z]);
    let site = LowerName::from_str("www.t.test.").unwrap();
    zones.find_mut(&site).unwrap().add_name(&site);
    let steered = HashSet::from([site]);
    let data: SharedDnsData = Arc::new(ArcSwap::from_pointee(DnsData { zones, steered }));
    let db = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("geodata/test/steering-test-city.mmdb"),
    )
    .unwrap();
    let geo = Arc::new(Geo::from_bytes(db, vec![]).unwrap());
    let (steering, views) =
        FederatedSteering::new(Some(geo), Policy::default(), TtlPolicy::default(), 0);
    views.store(Arc::new(view([true; 5])));
    let h = Handler::new(
        data.clone(),
        Arc::new(steering),
        DnsSettings {
            fallback_ttl: 5,
            max_udp_payload: 1232,
            rrl: None,
            metrics: Default::default(),
        },
    );
    (h, views, data)
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

/// The A/AAAA addresses of a response.
fn addresses(resp: &[u8]) -> Vec<IpAddr> {
    Message::from_vec(resp)
        .unwrap()
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn answer(h: &Handler, w: &mut Worker, req: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
    let mut out = vec![0u8; 65535];
    w.begin(h);
    let n = h.answer_udp_in(w, req, src, &mut out);
    w.finish(h);
    n.map(|n| out[..n].to_vec())
}

#[test]
fn cached_answers_equal_the_reference_bytes() {
    let (h, _views, _data) = handler();
    let mut w = Worker::new();
    let names = ["www.t.test.", "WWW.t.Test.", "wWw.T.tEsT."];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::ANY,
        RecordType::TXT,
    ];
    let subnets: [Option<(IpAddr, u8)>; 7] = [
        None,
        Some(("127.1.0.0".parse().unwrap(), 24)),
        Some(("127.3.0.0".parse().unwrap(), 16)),
        Some(("127.5.7.9".parse().unwrap(), 32)),
        Some(("10.4.0.0".parse().unwrap(), 20)),
        Some(("fd00:2::".parse().unwrap(), 48)),
        Some(("fd00:5::".parse().unwrap(), 64)),
    ];
    let clients: [SocketAddr; 3] = [
        ([127, 3, 0, 9], 5300).into(),
        ([127, 2, 0, 9], 40000).into(),
        ("[fd00:4::9]:5300".parse().unwrap()),
    ];
    let mut id = 0u16;
    let mut compared = 0;
    // Round 0 fills the cache; rounds 1 and 2 answer from it with other
    // ids, other spellings of the name and other EDNS sizes.
    for round in 0..3 {
        for t in types {
            for sub in subnets {
                for src in clients {
                    let name = names[(round + id as usize) % names.len()];
                    let edns = match (sub, round) {
                        (Some(_), 1) => Some(512),
                        (Some(_), _) => Some(4096),
                        (None, 1) => None,
                        (None, _) => Some(1232),
                    };
                    id = id.wrapping_add(7919);
                    let req = request(name, t, edns, sub, id);
                    let want = h.answer_udp_reference(&req, src);
                    let got = answer(&h, &mut w, &req, src);
                    assert_eq!(
                        got, want,
                        "round {round}: {name} {t} ecs {sub:?} from {src}"
                    );
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, 3 * 4 * 7 * 3);
    // One entry per (type A/AAAA/ANY, subnet, client): the rounds after the
    // first came from the cache (but for the few keys whose pair of slots
    // was taken by two others).
    assert!(w.cached() > 3 * 7 * 3 - 8, "{} entries", w.cached());
    assert!(w.hits() > 2 * 3 * 7 * 3 - 16, "{} hits", w.hits());
}

#[test]
fn a_new_steering_view_is_answered_by_the_next_batch() {
    let (h, views, _data) = handler();
    let mut w = Worker::new();
    let sydney = SocketAddr::from(([127, 5, 0, 9], 5300));
    let req = request("www.t.test.", RecordType::A, Some(1232), None, 1);
    let first = answer(&h, &mut w, &req, sydney).unwrap();
    assert_eq!(addresses(&first), ["10.5.0.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(w.cached(), 1);
    // Sydney's mirror goes down: the next batch answers without it, and
    // what it answers is the reference answer of the new view.
    views.store(Arc::new(view([true, true, true, true, false])));
    let next = answer(&h, &mut w, &req, sydney).unwrap();
    assert!(
        !addresses(&next).contains(&"10.5.0.1".parse().unwrap()),
        "still the old view's answer: {:?}",
        addresses(&next)
    );
    assert_eq!(Some(next), h.answer_udp_reference(&req, sydney));
    // And back up again.
    views.store(Arc::new(view([true; 5])));
    assert_eq!(answer(&h, &mut w, &req, sydney).unwrap(), first);
}

#[test]
fn a_new_zone_snapshot_empties_the_cache() {
    let (h, _views, data) = handler();
    let mut w = Worker::new();
    let src = SocketAddr::from(([127, 3, 0, 9], 5300));
    let req = request("www.t.test.", RecordType::A, Some(1232), None, 1);
    assert!(answer(&h, &mut w, &req, src).is_some());
    assert_eq!(w.cached(), 1);
    // The same zones as a new snapshot, www no longer steered: the static
    // record of the zone file, at once.
    let z = Zone::parse(
        include_str!("common/t.test.zone"),
        &Name::from_ascii("t.test.").unwrap(),
        Path::new("t.test.zone"),
    )
    .unwrap();
    data.store(Arc::new(DnsData {
        zones: ZoneSet::new(vec![z]),
        steered: HashSet::new(),
    }));
    let resp = answer(&h, &mut w, &req, src).unwrap();
    assert_eq!(addresses(&resp), ["192.0.2.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(w.cached(), 0);
}

#[test]
fn the_cache_holds_at_most_its_slots() {
    let (h, _views, _data) = handler();
    let mut w = Worker::new();
    let src = SocketAddr::from(([127, 3, 0, 9], 5300));
    for i in 0..(4 * L1_SLOTS as u32) {
        let subnet = IpAddr::from([127, (i % 5) as u8 + 1, (i >> 8) as u8, i as u8]);
        let req = request(
            "www.t.test.",
            RecordType::A,
            Some(1232),
            Some((subnet, 32)),
            3,
        );
        assert!(answer(&h, &mut w, &req, src).is_some());
    }
    assert!(w.cached() <= L1_SLOTS, "{} entries", w.cached());
    assert!(w.cached() > L1_SLOTS / 2, "{} entries", w.cached());
}

/// The `dns_request` fuzz target's seeds and recorded regressions, from
/// three clients, each asked twice through one worker: the worker's bytes
/// equal the reference path's.
#[test]
fn fuzz_inputs_agree_through_the_worker() {
    let (h, _views, _data) = handler();
    let mut w = Worker::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in [
        "fuzz/seeds/dns_request",
        "tests/fuzz_regressions/dns_request",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            for src in [
                SocketAddr::from(([127, 3, 0, 9], 5300)),
                SocketAddr::from(([127, 1, 0, 9], 5300)),
                "[fd00:5::9]:53".parse().unwrap(),
            ] {
                let want = h.answer_udp_reference(&data, src);
                for round in 0..2 {
                    assert_eq!(
                        answer(&h, &mut w, &data, src),
                        want,
                        "{} from {src} (round {round})",
                        path.display()
                    );
                }
            }
            n += 1;
        }
    }
    assert!(n >= 30, "inputs: {n}");
}
