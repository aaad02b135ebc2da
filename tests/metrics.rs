//! Operational metrics: `GET /metrics` on the `[metrics] listen` address
//! counts what DNS and HTTP really answered, in the Prometheus text format.

mod common;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// The value of the sample line starting with `name_and_labels `, if any.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_dns_and_http_answers() {
    let w = World::new();
    w.publish(SITE, &w.site_dir("m"), Some(42)).unwrap();
    let mut cfg = w.config();
    cfg.metrics_listen = vec!["127.0.0.1:0".parse().unwrap()];
    let inst = p2pcdn::instance::Instance::start(cfg).await.unwrap();
    let dns = inst.dns_addrs[0];

    // DNS: two answers, one NXDOMAIN, one REFUSED over UDP; one over TCP.
    for _ in 0..2 {
        let r = udp(dns, &query("t.test.", RecordType::SOA, None, None)).await;
        assert_eq!(r.response_code(), ResponseCode::NoError);
    }
    let r = udp(dns, &query("nope.t.test.", RecordType::A, None, None)).await;
    assert_eq!(r.response_code(), ResponseCode::NXDomain);
    let r = udp(dns, &query("example.com.", RecordType::A, None, None)).await;
    assert_eq!(r.response_code(), ResponseCode::Refused);
    let r = tcp(dns, &query("t.test.", RecordType::NS, None, None)).await;
    assert_eq!(r.response_code(), ResponseCode::NoError);
    // HTTPS: one 200, two 404.
    let c = https_client(&w, &inst);
    for (path, code) in [("/", 200), ("/missing", 404), ("/nope.css", 404)] {
        let r = c.get(https_url(&inst, SITE, path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), code);
    }

    let url = format!("http://{}/metrics", inst.metrics_addrs[0]);
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = resp.text().await.unwrap();
    let dns_total = |t, rc| {
        sample(
            &text,
            &format!("p2pcdn_dns_responses_total{{transport=\"{t}\",rcode=\"{rc}\"}}"),
        )
    };
    assert_eq!(dns_total("udp", "NOERROR"), Some(2.0), "{text}");
    assert_eq!(dns_total("udp", "NXDOMAIN"), Some(1.0), "{text}");
    assert_eq!(dns_total("udp", "REFUSED"), Some(1.0), "{text}");
    assert_eq!(dns_total("tcp", "NOERROR"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "p2pcdn_http_responses_total{outcome=\"2xx\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "p2pcdn_http_responses_total{outcome=\"4xx\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "p2pcdn_served_version{site=\"www.t.test\"}"),
        Some(42.0),
        "{text}"
    );
    assert_eq!(sample(&text, "p2pcdn_peers"), Some(0.0), "{text}");
    assert!(text.ends_with("# EOF\n"));
    // Only /metrics is served there.
    let r = reqwest::get(format!("http://{}/", inst.metrics_addrs[0]))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    inst.shutdown().await;
}

/// The steering view is rebuilt every 250 ms, but a rebuilt view replaces
/// the current one (and empties its cached answers) only when it would
/// answer differently: on a steady instance `p2pcdn_steer_views_total`
/// stays put while answers keep coming.
#[tokio::test(flavor = "multi_thread")]
async fn a_steady_instance_keeps_its_steering_view() {
    let w = World::new();
    w.publish(SITE, &w.site_dir("v"), Some(7)).unwrap();
    let mut cfg = w.config();
    cfg.metrics_listen = vec!["127.0.0.1:0".parse().unwrap()];
    // No TTL ramp (short = standard) and an explore slot of an hour: no
    // view change is due while the test runs.
    cfg.dns.answer_ttl = 3600;
    cfg.dns.short_ttl = 3600;
    let inst = p2pcdn::instance::Instance::start(cfg).await.unwrap();
    let dns = inst.dns_addrs[0];
    let url = format!("http://{}/metrics", inst.metrics_addrs[0]);
    let views = || async {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        sample(&text, "p2pcdn_steer_views_total").unwrap_or_else(|| panic!("{text}"))
    };
    let site = format!("{SITE}.");
    let steered = async || {
        let r = udp(dns, &query(&site, RecordType::A, None, None)).await;
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(!r.answers().is_empty(), "{r:?}");
    };
    steered().await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let before = views().await;
    assert!(before >= 1.0);
    // Eight rebuilds' worth of time, answering all along.
    for _ in 0..10 {
        steered().await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        views().await,
        before,
        "the view was swapped without a change"
    );
    inst.shutdown().await;
}
