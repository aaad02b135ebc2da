//! Steady-state INFO logs show changes, not heartbeats: a pair of real
//! `p2pcdn serve` processes, federated, serving a site under light DNS and
//! HTTPS traffic, log no INFO (or WARN, ERROR) line twice once startup has
//! settled: every line there reports a change.

mod common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use common::served::{a_records, Served};
use common::{eventually, fed};

/// The instances of this test live on 127.N.0.51.
const HOST_BYTE: u8 = 51;
/// How long the steady state is watched.
const WATCH: Duration = Duration::from_secs(12);

/// A log line without its timestamp (the first field).
fn message(line: &str) -> &str {
    line.split_once(' ')
        .map_or(line, |(_, rest)| rest.trim_start())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_pair_logs_no_repeated_lines() {
    let f = fed::build(HOST_BYTE, [10_000.0; 5]);
    // A pair: each lists only the other as a peer.
    for (i, n) in f.nodes.iter().enumerate().take(2) {
        let text = std::fs::read_to_string(&n.config_path).unwrap();
        let keep = &f.nodes[1 - i].name;
        let pair: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("{ url = ") || l.contains(keep.as_str()))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&n.config_path, pair).unwrap();
    }
    let a = Served::start(&f.nodes[0].config_path, f.dir.path().join("a.log"));
    let b = Served::start(&f.nodes[1].config_path, f.dir.path().join("b.log"));
    let site = f.dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), "<html>steady</html>").unwrap();
    assert!(
        eventually(30, async || a_records(
            f.nodes[0].dns,
            "ns1.fed.test.",
            None
        )
        .await
        .is_some())
        .await
    );
    f.publish(0, &site, &[0, 1]);
    let nyc_net: IpAddr = "127.2.0.0".parse().unwrap();
    let settled = eventually(60, async || {
        a_records(f.nodes[0].dns, "www.fed.test.", Some(nyc_net)).await == Some(vec![f.nodes[1].ip])
            && a.log().contains("p2pcdn instance ready")
            && b.log().contains("now serving")
    })
    .await;
    assert!(
        settled,
        "pair did not settle; logs:\n{}\n{}",
        a.log(),
        b.log()
    );
    // Let the startup lines (binding, first probes, replication) finish.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let start = (a.log().len(), b.log().len());

    // Steady state with traffic: DNS and HTTPS at both, bounded.
    let t = tokio::time::Instant::now();
    let clients = [f.client(0), f.client(1)];
    let mut served = 0;
    for _ in 0..400 {
        if t.elapsed() > WATCH {
            break;
        }
        for (i, c) in clients.iter().enumerate() {
            if a_records(f.nodes[i].dns, "www.fed.test.", Some(nyc_net))
                .await
                .is_some()
                && c.get(f.url(i, "/"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            {
                served += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(WATCH.saturating_sub(t.elapsed())).await;
    assert!(served > 20, "traffic was served: {served}");

    for (name, log, from) in [("a", a.log(), start.0), ("b", b.log(), start.1)] {
        let window = &log[from..];
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for l in window.lines().filter(|l| {
            [" INFO ", " WARN ", " ERROR "]
                .iter()
                .any(|level| l.contains(level))
        }) {
            *seen.entry(message(l)).or_default() += 1;
        }
        let repeated: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
        assert!(
            repeated.is_empty(),
            "instance {name} repeats log lines in steady state: {repeated:#?}\nwindow:\n{window}"
        );
        eprintln!(
            "instance {name}: {} INFO/WARN/ERROR lines in {} s of steady state",
            seen.values().sum::<usize>(),
            WATCH.as_secs()
        );
    }
}
