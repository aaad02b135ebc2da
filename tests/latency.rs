//! Client RTTs through real connections: the kernel's smoothed RTT of each
//! HTTP(S) client connection reaches `/metrics` and the node's own signed
//! report, aggregated for the client's /24.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use p2pcdn::catalog::unix_now;
use p2pcdn::instance::Instance;
use p2pcdn::latency::{rtt_for, ClientNet, NetRtt};

/// Connections from here; their network is 127.0.0.0/24.
const CLIENT: [u8; 4] = [127, 0, 0, 7];
const HTTPS_CONNS: u32 = 4;
const HTTP_CONNS: u32 = 3;

/// The value of the sample line starting with `name_and_labels `, if any.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

async fn metrics(inst: &Instance) -> String {
    reqwest::get(format!("http://{}/metrics", inst.metrics_addrs[0]))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// One request on a fresh connection from `CLIENT`, closed afterwards
/// (the client and its pool are dropped).
async fn one_connection(builder: reqwest::ClientBuilder, url: String) {
    let c = builder
        .local_address(IpAddr::from(CLIENT))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let r = c.get(url).send().await.unwrap();
    assert!(r.status().is_success() || r.status().is_redirection());
    r.bytes().await.unwrap();
}

/// Polls `f` every 100 ms for up to 20 s.
async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(x) = f().await {
            return x;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The client network's aggregate in the node's own signed report, once
/// it counts every connection.
fn own_aggregate(inst: &Instance, want: u32) -> Option<NetRtt> {
    let own = inst.federation.own_report()?;
    // The signed envelope itself verifies and carries the aggregate.
    let v = p2pcdn::report::verify(&own.envelope, unix_now()).unwrap();
    let a = *rtt_for(&v.report.client_rtt, IpAddr::from(CLIENT))?;
    (a.samples == want).then_some(a)
}

#[tokio::test(flavor = "multi_thread")]
async fn client_rtt_reaches_metrics_and_report() {
    // Short report lifetime: the report is re-signed every second.
    let w = World::with_extra("[federation]\nreport_ttl_secs = 3\n");
    w.publish(SITE, &w.site_dir("m"), Some(1)).unwrap();
    let mut cfg = w.config();
    cfg.metrics_listen = vec!["127.0.0.1:0".parse().unwrap()];
    let inst = Instance::start(cfg).await.unwrap();
    let https: SocketAddr = inst.https_addrs[0];
    let http: SocketAddr = inst.http_addrs[0];

    for _ in 0..HTTPS_CONNS {
        one_connection(
            ca_client(&w.ca_pem, &[(SITE, https)]),
            https_url(&inst, SITE, "/"),
        )
        .await;
    }
    for _ in 0..HTTP_CONNS {
        one_connection(
            ca_client(&w.ca_pem, &[(SITE, http)]),
            format!("http://{SITE}:{}/", http.port()),
        )
        .await;
    }
    let total = HTTPS_CONNS + HTTP_CONNS;

    // One sample per connection, taken as the server side closes it.
    let text = wait_for("the samples in /metrics", async || {
        let t = metrics(&inst).await;
        (sample(&t, r#"p2pcdn_client_rtt_samples_total{outcome="ok"}"#) == Some(f64::from(total)))
            .then_some(t)
    })
    .await;
    assert_eq!(
        sample(&text, "p2pcdn_client_rtt_seconds_count"),
        Some(f64::from(total)),
        "{text}"
    );
    let sum = sample(&text, "p2pcdn_client_rtt_seconds_sum").unwrap();
    assert!(sum > 0.0 && sum < 0.1 * f64::from(total), "{text}");
    eprintln!(
        "mean kernel srtt: {:.1} µs over {total} connections",
        sum / f64::from(total) * 1e6
    );

    // The signed report carries the /24's aggregate with every sample.
    let a = wait_for("the aggregate in the own report", async || {
        own_aggregate(&inst, total)
    })
    .await;
    eprintln!(
        "client RTT aggregate: {}",
        serde_json::to_string(&a).unwrap()
    );
    assert_eq!(a.net, ClientNet::of(IpAddr::from(CLIENT)));
    assert_eq!(a.net.to_string(), "127.0.0.0/24");
    assert!(a.rtt_ms > 0.0 && a.rtt_ms < 100.0, "{a:?}");
    let body = serde_json::to_string(&inst.federation.own_report().unwrap().report).unwrap();
    assert!(body.contains(r#""client_rtt":[["127.0.0.0/24","#), "{body}");
    let text = metrics(&inst).await;
    assert_eq!(
        sample(&text, "p2pcdn_client_rtt_networks"),
        Some(1.0),
        "{text}"
    );
    inst.shutdown().await;
}
