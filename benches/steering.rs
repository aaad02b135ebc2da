//! Steering throughput and gossip bandwidth, timed with `std::time::Instant`
//! only (no criterion). Run with:
//!
//! ```text
//! cargo bench --bench steering
//! ```
//!
//! Prints Markdown tables; the whole run is bounded by fixed time budgets
//! (about 15 s of timed work in release).
//!
//! Part 1, steering: `steer::steer` (k = 2) single-threaded over 10, 100 and
//! 1,000 synthetic mirrors spread deterministically over the globe (uniform
//! on the sphere, ~2 % without a location, ~10 % unhealthy, ~10 %
//! unauthorized, load uniform in 0..1.2, 85 % on the current version, 10 %
//! one behind, 5 % none, half with an IPv6 address, `rtt_ms` unset as in
//! `federation::view`), queried by 10,000 deterministic client points (every
//! fourth query AAAA). Then the per-query path of a DNS answer's steering:
//! `Geo::lookup` in `geodata/test/steering-test-city.mmdb`, the client prefix
//! key and `steer` over 1,000 mirrors.
//!
//! Part 2, report sizes and crypto: the mean JSON and signed-envelope size
//! of a synthetic report (protocol 2) and the cost of `report::verify` and
//! `report::sign`. Gossip bandwidth per instance is measured by the
//! simulation benchmark (`benches/sim.rs`), which runs the real exchange.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use p2pcdn::federation::gossip::ShortId;
use p2pcdn::federation::view::prefix_key;
use p2pcdn::geo::{Geo, GeoPoint};
use p2pcdn::keys::SecretKey;
use p2pcdn::report::{self, Capacity, Held, Load, Point, Report};
use p2pcdn::steer::{self, Candidate, ClientInfo, Family, Policy};

/// Current manifest version (unix seconds, as `publish` makes them).
const CURRENT: u64 = 1_750_000_000;
/// Report issue time used for signing and verification.
const ISSUED: u64 = 1_750_000_100;
/// Default `federation.report_ttl_secs`.
const TTL: u64 = 15;
const CLIENTS: usize = 10_000;
const SITES: [&str; 3] = ["www.example.org", "docs.example.org", "blog.example.com"];

/// splitmix64: a tiny deterministic generator, so every run sees the same data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform on the sphere.
    fn point(&mut self) -> GeoPoint {
        GeoPoint {
            lat: (2.0 * self.unit() - 1.0).asin().to_degrees(),
            lon: self.unit() * 360.0 - 180.0,
        }
    }
}

fn v4(i: usize) -> IpAddr {
    // 198.18.0.0/15, the benchmarking range.
    IpAddr::V4(Ipv4Addr::from(0xc612_0000_u32 + i as u32))
}

fn v6(i: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from((0x2001_0db8_u128 << 96) | i as u128))
}

fn candidates(n: usize, rng: &mut Rng) -> Vec<Candidate> {
    (0..n)
        .map(|i| {
            let mut id = [0u8; 32];
            for chunk in id.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            let mut addrs = vec![v4(i)];
            if rng.unit() < 0.5 {
                addrs.push(v6(i));
            }
            let point = (rng.unit() >= 0.02).then(|| rng.point());
            let load = rng.unit() * 1.2;
            let healthy = rng.unit() >= 0.1;
            let authorized = rng.unit() >= 0.1;
            let v = rng.unit();
            let version = if v < 0.85 {
                Some(CURRENT)
            } else if v < 0.95 {
                Some(CURRENT - 1)
            } else {
                None
            };
            Candidate {
                id,
                addrs,
                point,
                rtt_ms: None,
                load,
                healthy,
                authorized,
                version,
                up_secs: 3600,
                flaps: 0,
            }
        })
        .collect()
}

fn family(q: usize) -> Family {
    if q % 4 == 3 {
        Family::V6
    } else {
        Family::V4
    }
}

/// Result of a timed loop.
struct Timed {
    queries: usize,
    secs: f64,
    /// Answers with `k` addresses / with none (fallback).
    full: usize,
    empty: usize,
}

impl Timed {
    fn per_sec(&self) -> f64 {
        self.queries as f64 / self.secs
    }
    fn ns(&self) -> f64 {
        self.secs * 1e9 / self.queries as f64
    }
}

/// Runs `f(query index)` (returns the answer length) for a warm-up, then
/// until `budget` has passed and at least `min` queries were timed.
fn timed(budget: Duration, min: usize, k: usize, mut f: impl FnMut(usize) -> usize) -> Timed {
    for q in 0..256 {
        black_box(f(q));
    }
    let (mut queries, mut full, mut empty) = (0, 0, 0);
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            let n = f(queries);
            full += usize::from(n == k);
            empty += usize::from(n == 0);
            queries += 1;
        }
        let elapsed = start.elapsed();
        if elapsed >= budget && queries >= min {
            return Timed {
                queries,
                secs: elapsed.as_secs_f64(),
                full,
                empty,
            };
        }
    }
}

fn pct(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole as f64
}

/// Test-world client addresses: the five cities of the shipped test
/// database under 10.N/16, 127.N/16 and fd00:N::/32 (N = 1..5), plus ~10 %
/// addresses it does not know.
fn client_ips(n: usize, rng: &mut Rng) -> Vec<IpAddr> {
    (0..n)
        .map(|_| {
            let city = 1 + (rng.next_u64() % 5) as u8;
            let host = rng.next_u64();
            let (a, b) = ((host >> 8) as u8, host as u8);
            match rng.next_u64() % 10 {
                0..=2 => IpAddr::V4(Ipv4Addr::new(10, city, a, b)),
                3..=5 => IpAddr::V4(Ipv4Addr::new(127, city, a, b)),
                6..=8 => IpAddr::V6(Ipv6Addr::new(
                    0xfd00,
                    u16::from(city),
                    0,
                    0,
                    0,
                    0,
                    0,
                    u16::from(b),
                )),
                _ => IpAddr::V4(Ipv4Addr::new(203, 0, 113, b)),
            }
        })
        .collect()
}

fn steering() {
    let policy = Policy::default();
    let k = policy.k;
    let mut rng = Rng(0x5eed_0001);
    let clients: Vec<ClientInfo> = (0..CLIENTS)
        .map(|_| ClientInfo {
            point: Some(rng.point()),
            prefix_key: rng.next_u64(),
            explore: None,
        })
        .collect();
    let budget = Duration::from_secs(2);

    println!("## Steering (single thread, k = {k})\n");
    println!("| Measurement | Mirrors | Queries timed | Answers/s | ns/answer | ns/answer/mirror | Full answers | Fallback (empty) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut big = Vec::new();
    for n in [10, 100, 1000] {
        let cands = candidates(n, &mut Rng(0xc0ff_ee00 + n as u64));
        let t = timed(budget, 2_000, k, |q| {
            let c = &clients[q % CLIENTS];
            let a = steer::steer(
                black_box(c),
                black_box(&cands),
                Some(CURRENT),
                &policy,
                family(q),
            );
            a.len()
        });
        println!(
            "| `steer::steer` | {n} | {} | {:.0} | {:.0} | {:.1} | {:.1} % | {:.1} % |",
            t.queries,
            t.per_sec(),
            t.ns(),
            t.ns() / n as f64,
            pct(t.full, t.queries),
            pct(t.empty, t.queries)
        );
        if n == 1000 {
            big = cands;
        }
    }

    let db = Path::new(env!("CARGO_MANIFEST_DIR")).join("geodata/test/steering-test-city.mmdb");
    let geo = Geo::open(&db, vec![]).expect("open the test-world database");
    let ips = client_ips(CLIENTS, &mut Rng(0x5eed_0002));
    let located = ips
        .iter()
        .filter(|ip| geo.lookup(**ip).and_then(|l| l.point).is_some())
        .count();
    let t = timed(Duration::from_secs(1), 10_000, 1, |q| {
        usize::from(geo.lookup(black_box(ips[q % CLIENTS])).is_some())
    });
    println!(
        "| `Geo::lookup` (test-world DB) | – | {} | {:.0} | {:.0} | – | {:.1} % located | – |",
        t.queries,
        t.per_sec(),
        t.ns(),
        pct(located, CLIENTS)
    );
    let t = timed(budget, 2_000, k, |q| {
        let ip = black_box(ips[q % CLIENTS]);
        let client = ClientInfo {
            point: geo.lookup(ip).and_then(|l| l.point),
            prefix_key: prefix_key(ip),
            explore: None,
        };
        steer::steer(&client, black_box(&big), Some(CURRENT), &policy, family(q)).len()
    });
    println!(
        "| `Geo::lookup` + `prefix_key` + `steer` | 1000 | {} | {:.0} | {:.0} | {:.1} | {:.1} % | {:.1} % |",
        t.queries,
        t.per_sec(),
        t.ns(),
        t.ns() / 1000.0,
        pct(t.full, t.queries),
        pct(t.empty, t.queries)
    );
    println!();
}

/// Synthetic signed reports.
struct Federation {
    envelopes: Vec<Vec<u8>>,
    secrets: Vec<SecretKey>,
    reports: Vec<Report>,
}

fn federation(n: usize, rng: &mut Rng) -> Federation {
    let secrets: Vec<SecretKey> = (0..n)
        .map(|_| SecretKey::generate().expect("random key"))
        .collect();
    let ids: Vec<String> = secrets
        .iter()
        .map(|s| ShortId::of(&s.public()).to_string())
        .collect();
    let mut reports = Vec::with_capacity(n);
    let mut envelopes = Vec::with_capacity(n);
    for (i, secret) in secrets.iter().enumerate() {
        let mut addresses = vec![v4(i)];
        if i % 2 == 0 {
            addresses.push(v6(i));
        }
        let p = rng.point();
        // Probe RTTs to up to 8 peers, by short id, to 0.1 ms (as `agent` does).
        let rtt_ms: BTreeMap<String, f64> = (1..=8.min(n - 1))
            .map(|d| {
                (
                    ids[(i + d) % n].clone(),
                    report::round_to(1.0 + rng.unit() * 250.0, 1),
                )
            })
            .collect();
        let seq = ISSUED * 1000 + rng.next_u64() % 1000;
        let r = Report {
            format: report::FORMAT,
            node: secret.public(),
            name: format!("m{i}.example.net"),
            url: format!("https://m{i}.example.net"),
            addresses,
            location: Some(Point {
                lat: p.lat,
                lon: p.lon,
            }),
            capacity: Capacity {
                rps: 5000.0,
                bps: 1.25e9,
            },
            load: Load {
                rps: report::round_to(rng.unit() * 4000.0, 2),
                bps: report::round_to(rng.unit() * 1e9, 0),
                connections: rng.next_u64() % 2000,
            },
            holds: SITES
                .iter()
                .map(|s| Held {
                    site: (*s).to_string(),
                    version: CURRENT,
                })
                .collect(),
            mirrors: SITES.iter().map(|s| (*s).to_string()).collect(),
            rtt_ms,
            client_rtt: Vec::new(),
            certs: None,
            seq,
            issued: ISSUED,
            expires: ISSUED + TTL,
        };
        envelopes.push(report::sign(&r, secret).expect("sign"));
        reports.push(r);
    }
    Federation {
        envelopes,
        secrets,
        reports,
    }
}

fn json_len<T: serde::Serialize>(v: &T) -> usize {
    serde_json::to_vec(v).expect("serialize").len()
}

fn reports() {
    let mut rng = Rng(0x5eed_0003);
    let f = federation(100, &mut rng);
    let env = &f.envelopes[0];
    report::verify(env, ISSUED + 1).expect("the sample report verifies");
    let t = timed(Duration::from_millis(500), 200, 1, |_| {
        usize::from(report::verify(black_box(env), ISSUED + 1).is_ok())
    });
    let verify_us = t.ns() / 1e3;
    let t = timed(Duration::from_millis(300), 200, 1, |_| {
        report::sign(black_box(&f.reports[0]), &f.secrets[0]).map_or(0, |e| e.len().min(1))
    });
    let sign_us = t.ns() / 1e3;
    let n = f.reports.len() as f64;
    let mean_json = f.reports.iter().map(json_len).sum::<usize>() as f64 / n;
    let mean_env = f.envelopes.iter().map(Vec::len).sum::<usize>() as f64 / n;
    println!("## Reports (protocol 2, 3 sites, 8 peer RTTs)\n");
    println!("| Report JSON | Signed report (envelope) | `report::verify` | `report::sign` |");
    println!("|---:|---:|---:|---:|");
    println!("| {mean_json:.0} B | {mean_env:.0} B | {verify_us:.1} µs | {sign_us:.1} µs |");
    println!();
}

fn main() {
    let start = Instant::now();
    println!("# p2pcdn steering benchmark\n");
    steering();
    reports();
    println!("Total bench time: {:.1} s", start.elapsed().as_secs_f64());
}
