//! A bounded soak: mixed DNS and HTTPS load on a five-instance federation
//! while new versions are published and mirrors restart. Zero wrong answers,
//! zero corrupted responses, memory flat. Runs `P2PCDN_SOAK_SECS` seconds
//! (default 20; e.g. 600 for a local 10-minute soak).

mod common;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fed;
use common::query;
use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};
use p2pcdn::instance::Instance;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[derive(Default)]
struct Counts {
    dns_ok: AtomicU64,
    dns_wrong: AtomicU64,
    dns_timeouts: AtomicU64,
    http_ok: AtomicU64,
    http_unavailable: AtomicU64,
    http_errors: AtomicU64,
    http_corrupt: AtomicU64,
    publishes: AtomicU64,
    restarts: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_mixed_load_with_publishes_and_restarts() {
    let secs: u64 = std::env::var("P2PCDN_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let f = Arc::new(fed::build(30, [1e9; 5]));
    let insts: Arc<tokio::sync::Mutex<Vec<Option<Instance>>>> =
        Arc::new(tokio::sync::Mutex::new(vec![]));
    for i in 0..5 {
        insts.lock().await.push(Some(f.start(i).await));
    }
    // Every version's valid (path → hash) pairs; a response must match one.
    let valid: Arc<Mutex<HashMap<String, HashSet<String>>>> = Arc::new(Mutex::new(HashMap::new()));
    let publish = |f: &fed::Fed, n: u64| {
        let dir = f.dir.path().join(format!("v{n}"));
        std::fs::create_dir_all(dir.join("files")).unwrap();
        let files = [
            (
                "index.html".to_string(),
                format!("<html>version {n}</html>").into_bytes(),
            ),
            (
                "files/data.bin".to_string(),
                p2pcdn::demo::demo_bytes(&format!("v{n}"), 256 * 1024),
            ),
            ("files/static.txt".to_string(), b"never changes".to_vec()),
        ];
        for (p, b) in &files {
            std::fs::write(dir.join(p), b).unwrap();
        }
        f.publish(0, &dir, &[0, 1, 2, 3, 4]);
        files
    };
    let record = |valid: &Mutex<HashMap<String, HashSet<String>>>, files: &[(String, Vec<u8>)]| {
        let mut v = valid.lock().unwrap();
        for (p, b) in files {
            v.entry(p.clone())
                .or_default()
                .insert(blake3::hash(b).to_hex().to_string());
        }
    };
    record(&valid, &publish(&f, 1));
    let fed_ips: HashSet<IpAddr> = f.nodes.iter().map(|n| n.ip).collect();
    assert!(
        common::eventually(90, async || {
            let g = insts.lock().await;
            g.iter()
                .flatten()
                .all(|i| !i.catalog.load().versions().is_empty())
        })
        .await,
        "initial replication"
    );

    let counts = Arc::new(Counts::default());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();

    // DNS load: every city's resolver asks every authority.
    for city in 1..=5u8 {
        let f = f.clone();
        let counts = counts.clone();
        let fed_ips = fed_ips.clone();
        tasks.spawn(async move {
            let src: IpAddr = format!("127.{city}.0.99").parse().unwrap();
            let sock = tokio::net::UdpSocket::bind((src, 0)).await.unwrap();
            let mut n = 0usize;
            while Instant::now() < deadline {
                let auth = f.nodes[n % 5].dns;
                n += 1;
                let q = query("www.fed.test.", RecordType::A, Some(1232), None);
                sock.send_to(&q.to_vec().unwrap(), auth).await.unwrap();
                let mut buf = [0u8; 1500];
                match tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf))
                    .await
                {
                    Ok(Ok((len, _))) => {
                        let m = Message::from_vec(&buf[..len]).unwrap();
                        if m.id() != q.id() {
                            continue;
                        }
                        let addrs: Vec<IpAddr> = m
                            .answers()
                            .iter()
                            .filter_map(|r| match r.data() {
                                RData::A(a) => Some(IpAddr::V4(a.0)),
                                _ => None,
                            })
                            .collect();
                        if m.authoritative()
                            && !addrs.is_empty()
                            && addrs.iter().all(|a| fed_ips.contains(a))
                        {
                            counts.dns_ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            counts.dns_wrong.fetch_add(1, Ordering::Relaxed);
                            eprintln!("wrong DNS answer from {auth}: {m:?}");
                        }
                    }
                    _ => {
                        // The authority may be restarting.
                        counts.dns_timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
    // HTTPS load against every mirror; every body must hash to its ETag, and
    // that hash must belong to a published version of that path.
    for m in 0..5usize {
        let f = f.clone();
        let counts = counts.clone();
        let valid = valid.clone();
        tasks.spawn(async move {
            let c = f.client(m);
            let mut n = 0usize;
            while Instant::now() < deadline {
                let path = ["index.html", "files/data.bin", "files/static.txt"][n % 3];
                n += 1;
                match c.get(f.url(m, &format!("/{path}"))).send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::OK => {
                        let etag = r.headers()["etag"].to_str().unwrap().trim_matches('"').to_string();
                        let body = r.bytes().await;
                        let Ok(body) = body else {
                            counts.http_errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        let got = blake3::hash(&body).to_hex().to_string();
                        let known = valid.lock().unwrap().get(path).is_some_and(|s| s.contains(&got));
                        if got == etag && known {
                            counts.http_ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            counts.http_corrupt.fetch_add(1, Ordering::Relaxed);
                            eprintln!("corrupt response for {path} from mirror {m}: etag {etag} body {got}");
                        }
                    }
                    Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                        counts.http_unavailable.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        counts.http_errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("unexpected status {} from mirror {m}", r.status());
                    }
                    Err(_) => {
                        counts.http_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    // Publish a new version every 5 s; restart a mirror every 7 s.
    let rss_start;
    {
        let f2 = f.clone();
        let counts2 = counts.clone();
        let valid2 = valid.clone();
        tasks.spawn(async move {
            let mut v = 2;
            while Instant::now() + Duration::from_secs(5) < deadline {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let f3 = f2.clone();
                let files = tokio::task::spawn_blocking(move || {
                    let dir = f3.dir.path().join(format!("v{v}"));
                    std::fs::create_dir_all(dir.join("files")).unwrap();
                    let files = vec![
                        (
                            "index.html".to_string(),
                            format!("<html>version {v}</html>").into_bytes(),
                        ),
                        (
                            "files/data.bin".to_string(),
                            p2pcdn::demo::demo_bytes(&format!("v{v}"), 256 * 1024),
                        ),
                        ("files/static.txt".to_string(), b"never changes".to_vec()),
                    ];
                    // Record before publishing: a mirror may serve it at once.
                    files
                })
                .await
                .unwrap();
                {
                    let mut m = valid2.lock().unwrap();
                    for (p, b) in &files {
                        m.entry(p.clone())
                            .or_default()
                            .insert(blake3::hash(b).to_hex().to_string());
                    }
                }
                let f3 = f2.clone();
                let vv = v;
                tokio::task::spawn_blocking(move || {
                    let dir = f3.dir.path().join(format!("v{vv}"));
                    for (p, b) in &files {
                        std::fs::write(dir.join(p), b).unwrap();
                    }
                    f3.publish(0, &dir, &[0, 1, 2, 3, 4]);
                })
                .await
                .unwrap();
                counts2.publishes.fetch_add(1, Ordering::Relaxed);
                v += 1;
            }
        });
        let f2 = f.clone();
        let counts2 = counts.clone();
        let insts2 = insts.clone();
        tasks.spawn(async move {
            let mut k = 1usize;
            while Instant::now() + Duration::from_secs(7) < deadline {
                tokio::time::sleep(Duration::from_secs(7)).await;
                let i = 1 + (k % 4);
                k += 1;
                let old = insts2.lock().await[i].take();
                if let Some(old) = old {
                    old.shutdown().await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                let new = f2.start(i).await;
                insts2.lock().await[i] = Some(new);
                counts2.restarts.fetch_add(1, Ordering::Relaxed);
            }
        });
        tokio::time::sleep(Duration::from_secs(secs / 4)).await;
        rss_start = rss_kib();
    }
    while tasks.join_next().await.is_some() {}
    let rss_end = rss_kib();
    let c = &counts;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "soak {secs}s: dns ok {} wrong {} timeouts {}; http ok {} 503 {} errors {} corrupt {}; publishes {} restarts {}; rss {} KiB -> {} KiB",
        get(&c.dns_ok),
        get(&c.dns_wrong),
        get(&c.dns_timeouts),
        get(&c.http_ok),
        get(&c.http_unavailable),
        get(&c.http_errors),
        get(&c.http_corrupt),
        get(&c.publishes),
        get(&c.restarts),
        rss_start,
        rss_end
    );
    assert_eq!(get(&c.dns_wrong), 0, "zero wrong DNS answers");
    assert_eq!(get(&c.http_corrupt), 0, "zero corrupted responses");
    assert!(get(&c.dns_ok) > 5 * secs, "DNS load ran");
    assert!(get(&c.http_ok) > 5 * secs, "HTTPS load ran");
    assert!(secs < 15 || get(&c.publishes) >= 1, "publishes happened");
    assert!(
        rss_end < rss_start + rss_start / 2 + 64 * 1024,
        "memory flat: {rss_start} KiB -> {rss_end} KiB"
    );
    for i in insts.lock().await.iter_mut() {
        if let Some(i) = i.take() {
            i.shutdown().await;
        }
    }
}
