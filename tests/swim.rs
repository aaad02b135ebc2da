//! SWIM membership through real sockets: instances of the five-city
//! harness (`tests/common/fed.rs`) on 127.{1..4}.0.60, each sending from
//! its own address (`federation.source_address`), probe (and SWIM) period
//! 1 s, the default.
//! (a) a member that dies is confirmed dead by everyone within a bound;
//! (b) with the direct path between A and B dropped by iptables, A does
//! not declare B dead because the others ack for it (indirect probes);
//! (c) probes per period stay constant: about one ping per node per period,
//! whatever the number of members. Read from each instance's `/metrics`.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use common::fed::{self, Fed};
use p2pcdn::instance::Instance;

const HOST: u8 = 60;
const PERIOD: Duration = Duration::from_millis(1000);

async fn start(f: &Fed, i: usize) -> Instance {
    let mut cfg = f.config(i);
    cfg.metrics_listen = vec![SocketAddr::new(f.nodes[i].ip, 0)];
    cfg.federation.source_address = Some(f.nodes[i].ip);
    cfg.federation.probe_interval_ms = PERIOD.as_millis() as u64;
    Instance::start(cfg).await.unwrap()
}

/// The value of a metric line (`name{labels}`), 0 when absent.
async fn metric(inst: &Instance, line: &str) -> f64 {
    let url = format!("http://{}/metrics", inst.metrics_addrs[0]);
    let text = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn members(inst: &Instance, state: &str) -> f64 {
    metric(inst, &format!("p2pcdn_swim_members{{outcome=\"{state}\"}}")).await
}

async fn probes(inst: &Instance, kind: &str) -> f64 {
    metric(
        inst,
        &format!("p2pcdn_swim_probes_total{{outcome=\"{kind}\"}}"),
    )
    .await
}

/// Waits until every instance sees every other one alive.
async fn settle(insts: &[Instance]) {
    let want = (insts.len() - 1) as f64;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let mut ok = true;
        for i in insts {
            ok &= members(i, "alive").await == want;
        }
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "members never all alive");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_member_is_confirmed_dead_by_everyone_and_probes_stay_constant() {
    let f = fed::build(HOST, [1000.0; 5]);
    let mut insts = vec![];
    for i in 0..4 {
        insts.push(start(&f, i).await);
    }
    settle(&insts).await;

    // (c) Steady state: at most one direct probe per node per period (plus
    // one at each edge of the window), not one per member; a loaded
    // machine may run a period late, never early.
    let window = Duration::from_secs(6);
    let periods = (window.as_millis() / PERIOD.as_millis()) as f64;
    let before: Vec<f64> = {
        let mut v = vec![];
        for i in &insts {
            v.push(probes(i, "ping").await);
        }
        v
    };
    tokio::time::sleep(window).await;
    for (n, i) in insts.iter().enumerate() {
        let sent = probes(i, "ping").await - before[n];
        assert!(
            sent >= periods / 3.0 && sent <= periods + 2.0,
            "node {n}: {sent} pings in {periods} periods with 3 members"
        );
        assert_eq!(members(i, "dead").await, 0.0);
    }

    // (a) Node 3 dies: everyone else confirms it within the bound: up to
    // 3 periods until it is probed, 1 to suspect, log2-scaled suspicion
    // (3 periods with 3 members), and dissemination: about 8 periods.
    let dead = insts.pop().unwrap();
    dead.shutdown().await;
    let killed = Instant::now();
    let bound = PERIOD * 15;
    for (n, i) in insts.iter().enumerate() {
        loop {
            if members(i, "dead").await == 1.0 {
                break;
            }
            assert!(
                killed.elapsed() < bound,
                "node {n} never confirmed the death"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!("death confirmed everywhere after {:?}", killed.elapsed());
    for i in insts {
        i.shutdown().await;
    }
}

/// Drops packets between two addresses (both ways) until dropped.
struct Blocked(Vec<[String; 4]>);

impl Blocked {
    fn new(a: IpAddr, b: IpAddr) -> Option<Self> {
        let mut rules = vec![];
        for (s, d) in [(a, b), (b, a)] {
            let rule = ["-s".into(), s.to_string(), "-d".into(), d.to_string()];
            let ok = Command::new("iptables")
                .env("PATH", common::system::search_path())
                .args(["-I", "INPUT"])
                .args(&rule)
                .args(["-j", "DROP"])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                drop(Self(rules));
                return None;
            }
            rules.push(rule);
        }
        Some(Self(rules))
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        for rule in &self.0 {
            let _ = Command::new("iptables")
                .env("PATH", common::system::search_path())
                .args(["-D", "INPUT"])
                .args(rule)
                .args(["-j", "DROP"])
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_unreachable_from_one_node_is_kept_alive_by_indirect_probes() {
    let usable = || {
        let ok = Command::new("iptables")
            .args(["-L", "INPUT", "-n"])
            .env("PATH", common::system::search_path())
            .output()
            .is_ok_and(|o| o.status.success());
        (!ok).then(|| "iptables is absent or not usable here (needs root)".to_string())
    };
    if !common::system::should_run("indirect probe (iptables)", usable) {
        return;
    }
    let f = fed::build(HOST + 1, [1000.0; 5]);
    let mut insts = vec![];
    for i in 0..4 {
        insts.push(start(&f, i).await);
    }
    settle(&insts).await;
    let reqs_before = probes(&insts[0], "ping_req").await;
    {
        let _guard = Blocked::new(f.nodes[0].ip, f.nodes[1].ip)
            .expect("iptables lists rules but cannot insert one");
        // Long enough for A to probe B directly several times (every third
        // period) and for a suspicion to run out (3 periods); nobody may
        // declare a death at any point.
        for _ in 0..12 {
            tokio::time::sleep(PERIOD).await;
            for (n, i) in insts.iter().enumerate() {
                assert_eq!(
                    members(i, "dead").await,
                    0.0,
                    "node {n} declared a member dead though others ack for it"
                );
            }
        }
        let asked = probes(&insts[0], "ping_req").await - reqs_before;
        assert!(
            asked >= 2.0,
            "A asked others {asked} times: the direct path was not cut"
        );
    }
    for i in insts {
        i.shutdown().await;
    }
}
