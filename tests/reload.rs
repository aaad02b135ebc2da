//! SIGHUP reload under load: a real `p2pcdn serve` process (with a second
//! one as the other mirror) keeps answering DNS over UDP and HTTPS GETs
//! while it reloads (a) a changed zone file, (b) a prefix override that
//! changes steering, (c) a broken config (rejected, the old one stays) and
//! (d) a restart-only key (kept, with a warning). Not one request may fail.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::served::{a_records, Served};
use common::{eventually, fed};

/// The instances of this test live on 127.N.0.50.
const HOST_BYTE: u8 = 50;
/// Bounds of the load: requests per kind, and time.
const MAX_REQUESTS: usize = 2_000;
const LOAD_BOUND: Duration = Duration::from_secs(60);

fn write_site(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("index.html"), "<html><body>reload</body></html>").unwrap();
    std::fs::write(dir.join("data.bin"), vec![7u8; 64 * 1024]).unwrap();
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Counts of the load and what failed.
#[derive(Default)]
struct Load {
    dns_ok: AtomicUsize,
    https_ok: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reloads_zones_and_steering_and_rejects_a_bad_config_under_load() {
    let f = fed::build(HOST_BYTE, [10_000.0; 5]);
    let (fra, nyc) = (&f.nodes[0], &f.nodes[1]);
    let metrics = SocketAddr::new(fra.ip, fed::free_port(fra.ip));
    append(
        &fra.config_path,
        &format!("\n[metrics]\nlisten = [\"{metrics}\"]\n"),
    );
    let a = Served::start(&fra.config_path, f.dir.path().join("fra.log"));
    let _b = Served::start(&nyc.config_path, f.dir.path().join("nyc.log"));
    assert!(
        eventually(30, async || a_records(fra.dns, "ns1.fed.test.", None)
            .await
            .is_some())
        .await,
        "instance answers DNS; log:\n{}",
        a.log()
    );
    let site = f.dir.path().join("site");
    write_site(&site);
    f.publish(0, &site, &[0, 1]);

    // Steady state: Frankfurt clients get Frankfurt, New York clients New
    // York (the second mirror holds the site and is up).
    let fra_net: IpAddr = "127.1.0.0".parse().unwrap();
    let nyc_net: IpAddr = "127.2.0.0".parse().unwrap();
    let https = f.client(0);
    let steady = eventually(60, async || {
        a_records(fra.dns, "www.fed.test.", Some(fra_net)).await == Some(vec![fra.ip])
            && a_records(fra.dns, "www.fed.test.", Some(nyc_net)).await == Some(vec![nyc.ip])
            && https
                .get(f.url(0, "/"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(steady, "federation did not settle; log:\n{}", a.log());

    // Load: DNS over UDP and HTTPS GETs (one keep-alive client), paced,
    // bounded in count and time, every failure recorded.
    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let dns_task = {
        let (load, stop, dns) = (load.clone(), stop.clone(), fra.dns);
        tokio::spawn(async move {
            let t = tokio::time::Instant::now();
            for i in 0..MAX_REQUESTS {
                if stop.load(Ordering::Relaxed) || t.elapsed() > LOAD_BOUND {
                    break;
                }
                match a_records(dns, "www.fed.test.", Some(fra_net)).await {
                    Some(a) if !a.is_empty() => {
                        load.dns_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => load
                        .failures
                        .lock()
                        .unwrap()
                        .push(format!("DNS query {i}: {other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let https_task = {
        let (load, stop, url) = (load.clone(), stop.clone(), f.url(0, "/data.bin"));
        let client = https.clone();
        tokio::spawn(async move {
            let t = tokio::time::Instant::now();
            for i in 0..MAX_REQUESTS {
                if stop.load(Ordering::Relaxed) || t.elapsed() > LOAD_BOUND {
                    break;
                }
                let r = match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.map(|b| b.len()),
                    Ok(r) => Ok(usize::from(r.status().as_u16())),
                    Err(e) => Err(e),
                };
                match r {
                    Ok(n) if n == 64 * 1024 => {
                        load.https_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => load
                        .failures
                        .lock()
                        .unwrap()
                        .push(format!("HTTPS GET {i}: {other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // (a) A changed zone file: the new record answers after SIGHUP.
    let zone_path = fra
        .config_path
        .parent()
        .unwrap()
        .join("zones/fed.test.zone");
    let zone = std::fs::read_to_string(&zone_path).unwrap();
    assert_eq!(
        a_records(fra.dns, "added.fed.test.", None).await,
        None,
        "NXDOMAIN before the change"
    );
    std::fs::write(
        &zone_path,
        zone.replace("( 1 3600", "( 2 3600") + "added IN A 127.1.0.77\n",
    )
    .unwrap();
    a.hup();
    let added: IpAddr = "127.1.0.77".parse().unwrap();
    assert!(
        eventually(10, async || a_records(fra.dns, "added.fed.test.", None)
            .await
            == Some(vec![added]))
        .await,
        "the zone change answers after SIGHUP; log:\n{}",
        a.log()
    );
    assert!(a.logged("SIGHUP: reloaded the configuration", 1).await);

    // (b) A prefix override moves Frankfurt's /24 to New York: steering
    // follows.
    let good = std::fs::read_to_string(&fra.config_path).unwrap();
    let with_override = format!(
        "{good}\n[[geo_override]]\nprefix = \"127.1.0.0/24\"\nlatitude = 40.71\nlongitude = -74.01\n"
    );
    std::fs::write(&fra.config_path, &with_override).unwrap();
    a.hup();
    assert!(
        eventually(10, async || a_records(
            fra.dns,
            "www.fed.test.",
            Some(fra_net)
        )
        .await
            == Some(vec![nyc.ip]))
        .await,
        "the override steers after SIGHUP; log:\n{}",
        a.log()
    );
    assert!(a.logged("SIGHUP: reloaded the configuration", 2).await);

    // (c) A broken config (a value out of range, and the override gone) is
    // rejected: logged at ERROR with file, line and key; the running
    // configuration, override included, stays.
    let broken = good.replace("answer_ttl = 5", "answer_ttl = 0");
    let line = broken
        .lines()
        .position(|l| l.starts_with("answer_ttl = 0"))
        .unwrap()
        + 1;
    std::fs::write(&fra.config_path, &broken).unwrap();
    a.hup();
    assert!(a.logged("reload rejected", 1).await, "log:\n{}", a.log());
    let log = a.log();
    let err = log.lines().find(|l| l.contains("reload rejected")).unwrap();
    assert!(
        err.contains("ERROR")
            && err.contains(&format!("p2pcdn.toml:{line}"))
            && err.contains("dns.answer_ttl"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        a_records(fra.dns, "www.fed.test.", Some(fra_net)).await,
        Some(vec![nyc.ip]),
        "the old configuration (with its override) still steers"
    );
    let m = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("p2pcdn_config_last_reload_ok 0")
            && m.contains("p2pcdn_config_reloads_total{outcome=\"rejected\"} 1")
            && m.contains("p2pcdn_config_reloads_total{outcome=\"applied\"} 2"),
        "{m}"
    );

    // (d) A restart-only key (the DNS listen address) is kept, with a
    // warning naming it; the rest of the file (override removed) applies.
    let other_port = fed::free_port(fra.ip);
    let moved = good.replace(
        &format!("listen = [\"{}\"]", fra.dns),
        &format!("listen = [\"{}:{other_port}\"]", fra.ip),
    );
    assert_ne!(moved, good);
    std::fs::write(&fra.config_path, &moved).unwrap();
    a.hup();
    assert!(a.logged("SIGHUP: reloaded the configuration", 3).await);
    let log = a.log();
    let warn = log
        .lines()
        .find(|l| l.contains("takes effect only at a restart"))
        .unwrap_or_default();
    assert!(
        warn.contains("WARN") && warn.contains("dns.listen"),
        "{warn}"
    );
    assert!(
        eventually(10, async || a_records(
            fra.dns,
            "www.fed.test.",
            Some(fra_net)
        )
        .await
            == Some(vec![fra.ip]))
        .await,
        "without the override Frankfurt is Frankfurt again, on the old port"
    );

    stop.store(true, Ordering::Relaxed);
    dns_task.await.unwrap();
    https_task.await.unwrap();
    let failures = load.failures.lock().unwrap().clone();
    let (dns_ok, https_ok) = (
        load.dns_ok.load(Ordering::Relaxed),
        load.https_ok.load(Ordering::Relaxed),
    );
    eprintln!("load during the reloads: {dns_ok} DNS answers, {https_ok} HTTPS GETs");
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(
        dns_ok >= 50 && https_ok >= 50,
        "load too small: {dns_ok} DNS, {https_ok} HTTPS"
    );
}
