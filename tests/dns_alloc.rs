//! The DNS hot path allocates nothing: a counting global allocator (per
//! thread) around steered, static, NODATA, NXDOMAIN and REFUSED answers,
//! over UDP and TCP, with and without Client Subnet, once the zone
//! snapshot's templates and the steering view's answers are built. And
//! memory stays flat however many distinct client prefixes or Client
//! Subnets ask: the steering answer cache is bounded.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{LowerName, Name, RecordType};
use p2pcdn::dns::fast::Fast;
use p2pcdn::dns::server::{DnsData, DnsSettings, Handler, SharedDnsData};
use p2pcdn::dns::zone::{Zone, ZoneSet};
use p2pcdn::federation::view::{FederatedSteering, SiteView, SteerView};
use p2pcdn::geo::{Geo, GeoPoint};
use p2pcdn::steer::ttl::TtlPolicy;
use p2pcdn::steer::{Candidate, Policy};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    /// Bytes allocated minus bytes freed on this thread.
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

fn live_add(n: i64) {
    let _ = LIVE.try_with(|c| c.set(c.get() + n));
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        live_add(l.size() as i64);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        live_add(-(l.size() as i64));
        // SAFETY: `p` came from System.alloc with `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        live_add(n as i64 - l.size() as i64);
        // SAFETY: as for realloc's contract.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

fn live() -> i64 {
    LIVE.with(Cell::get)
}

fn handler() -> Handler {
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
    let data: SharedDnsData = Arc::new(arc_swap::ArcSwap::from_pointee(DnsData { zones, steered }));
    let db = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("geodata/test/steering-test-city.mmdb"),
    )
    .unwrap();
    let geo = Arc::new(Geo::from_bytes(db, vec![]).unwrap());
    let (steering, view) =
        FederatedSteering::new(Some(geo), Policy::default(), TtlPolicy::default(), 0);
    let cities = [(50.11, 8.68), (1.35, 103.82), (-33.87, 151.21)];
    let candidates = cities
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
            healthy: true,
            authorized: true,
            version: Some(7),
            up_secs: 3600,
            flaps: 0,
        })
        .collect();
    let sites = HashMap::from([(
        "www.t.test".to_string(),
        SiteView {
            target: Some(7),
            candidates,
        },
    )]);
    view.store(Arc::new(SteerView::from_sites(sites)));
    Handler::new(
        data,
        Arc::new(steering),
        DnsSettings {
            fallback_ttl: 5,
            max_udp_payload: 1232,
            rrl: None,
            metrics: Default::default(),
        },
    )
}

fn request(name: &str, t: RecordType, ecs: Option<(IpAddr, u8)>) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0x1234);
    m.set_message_type(MessageType::Query);
    m.set_op_code(OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    if let Some((ip, p)) = ecs {
        e.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(ip, p, 0)));
    }
    m.set_edns(e);
    m.to_vec().unwrap()
}

#[test]
fn hot_path_does_not_allocate() {
    let h = handler();
    let src = SocketAddr::from(([127, 3, 0, 9], 5300));
    let cases = [
        ("steered A", request("www.t.test.", RecordType::A, None)),
        (
            "steered AAAA, mixed case",
            request("WwW.t.TEST.", RecordType::AAAA, None),
        ),
        (
            "steered A with ECS",
            request(
                "www.t.test.",
                RecordType::A,
                Some(("127.5.0.0".parse().unwrap(), 24)),
            ),
        ),
        ("static TXT", request("t.test.", RecordType::TXT, None)),
        (
            "static MX with additional",
            request("t.test.", RecordType::MX, None),
        ),
        ("NODATA", request("mail.t.test.", RecordType::AAAA, None)),
        ("NXDOMAIN", request("nx1234.t.test.", RecordType::A, None)),
        ("REFUSED", request("example.com.", RecordType::A, None)),
    ];
    let mut out = vec![0u8; 65535];
    // The UDP threads' path: a worker with its first-level cache, one batch
    // of 32 per `begin`/`finish` as `recvmmsg` gives them.
    let mut w = p2pcdn::dns::worker::Worker::new();
    for (what, req) in &cases {
        w.begin(&h);
        assert!(h.answer_udp_in(&mut w, req, src, &mut out).is_some());
        w.finish(&h);
        let before = allocs();
        for _ in 0..1000 / 32 {
            w.begin(&h);
            for _ in 0..32 {
                assert!(h.answer_udp_in(&mut w, req, src, &mut out).is_some());
            }
            w.finish(&h);
        }
        let n = allocs() - before;
        assert_eq!(n, 0, "{what} (UDP worker): {n} allocations in 992 answers");
    }
    assert!(
        w.hits() >= 3 * 992,
        "steered answers from the cache: {}",
        w.hits()
    );
    for (what, req) in &cases {
        for tcp in [false, true] {
            // Warm: the zone templates and this client's steering answer are built once.
            assert!(
                matches!(h.answer_fast(req, src, tcp, &mut out), Fast::Reply(_)),
                "{what}: not on the fast path"
            );
            let before = allocs();
            for _ in 0..1000 {
                let r = if tcp {
                    h.answer_tcp_into(req, src, &mut out)
                } else {
                    h.answer_udp_into(req, src, &mut out)
                };
                assert!(r.is_some());
            }
            let n = allocs() - before;
            assert_eq!(n, 0, "{what} (tcp: {tcp}): {n} allocations in 1000 answers");
        }
    }
}

/// The steering answer cache holds at most 16,384 answers per view
/// (docs/BENCHMARKS.md, "Memory"): asking from 20,000 distinct Client
/// Subnets fills it to at most its bound, and 60,000 more distinct subnets,
/// and 20,000 distinct resolver addresses without ECS, add nothing that
/// stays allocated.
#[test]
fn memory_is_flat_in_distinct_client_prefixes() {
    let h = handler();
    let mut out = vec![0u8; 65535];
    let src = SocketAddr::from(([127, 3, 0, 9], 5300));
    // Distinct /24s spread over the test world's networks and beyond.
    let subnet = |i: u32| -> IpAddr {
        let a = 1 + (i >> 16) as u8 % 200;
        IpAddr::from([a, (i >> 8) as u8, i as u8, 0])
    };
    let mut ask = |range: std::ops::Range<u32>, ecs: bool| {
        for i in range {
            let (req, from) = if ecs {
                (
                    request("www.t.test.", RecordType::A, Some((subnet(i), 24))),
                    src,
                )
            } else {
                let ip = subnet(i);
                (
                    request("www.t.test.", RecordType::A, None),
                    SocketAddr::new(ip, 5300),
                )
            };
            assert!(h.answer_udp_into(&req, from, &mut out).is_some());
        }
    };
    // The request builder allocates and frees per query; only what stays
    // allocated counts.
    let base = live();
    ask(0..20_000, true);
    let full = live();
    let per_view_bound = 16_384 * 512;
    assert!(
        full - base <= per_view_bound,
        "the filled cache holds {} bytes, above the {per_view_bound}-byte bound",
        full - base
    );
    assert!(full - base > 0, "the cache was filled at all");
    ask(20_000..80_000, true);
    ask(100_000..120_000, false);
    let after = live();
    assert!(
        after - full <= 64 * 1024,
        "{} bytes stayed allocated after 80,000 more distinct clients",
        after - full
    );
    // The UDP threads' first-level cache: allocated once (its slots), then
    // flat however many distinct subnets ask.
    let before = live();
    let mut w = p2pcdn::dns::worker::Worker::new();
    let mut ask_worker = |range: std::ops::Range<u32>| {
        for i in range {
            let req = request("www.t.test.", RecordType::A, Some((subnet(i), 24)));
            w.begin(&h);
            assert!(h.answer_udp_in(&mut w, &req, src, &mut out).is_some());
            w.finish(&h);
        }
    };
    ask_worker(0..2_000);
    let warm = live();
    ask_worker(2_000..12_000);
    let end = live();
    assert!(
        end - warm <= 16 * 1024,
        "{} bytes stayed allocated after 10,000 more distinct subnets through a worker",
        end - warm
    );
    assert!(
        warm - before <= 256 * 1024,
        "the worker and its filled cache hold {} bytes",
        warm - before
    );
    println!(
        "worker cache: {} bytes with its slots filled; {} bytes more after 10,000 more subnets",
        warm - before,
        end - warm
    );
}
