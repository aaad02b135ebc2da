//! The status page through its real interface: five instances on loopback,
//! `GET /.well-known/p2pcdn/v1/status` over HTTPS as a browser asks for it
//! (`Accept: text/html`) and as `p2pcdn status` does (JSON).

mod common;

use std::time::Duration;

use common::eventually;
use common::fed;
use p2pcdn::instance::Instance;

const PATH: &str = "/.well-known/p2pcdn/v1/status";
const BROWSER_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

/// (name, health) of every `data-node` element of the page.
fn nodes(html: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = html
        .split("data-node=\"")
        .skip(1)
        .filter_map(|rest| {
            let name = rest.split('"').next()?.to_string();
            let health = rest.split("data-health=\"").nth(1)?.split('"').next()?;
            Some((name, health.to_string()))
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_page_shows_every_mirror_and_a_failover() {
    let f = fed::build(40, [10_000.0; 5]);
    let mut insts: Vec<Option<Instance>> = vec![];
    for i in 0..5 {
        insts.push(Some(f.start(i).await));
    }
    let site = f.dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), "<html>status</html>").unwrap();
    let v1 = f.publish(0, &site, &[0, 1, 2, 3, 4]);
    let me = &f.nodes[0];
    let client = common::ca_client(&f.ca_pem, &[(me.name.as_str(), me.https)])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("https://{}:{}{PATH}", me.name, me.https.port());
    let page = async || -> Option<(reqwest::header::HeaderMap, String)> {
        let r = client
            .get(&url)
            .header("accept", BROWSER_ACCEPT)
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        let h = r.headers().clone();
        Some((h, r.text().await.ok()?))
    };
    let all_up: Vec<(String, String)> = f
        .nodes
        .iter()
        .map(|n| (n.name.clone(), "up".to_string()))
        .collect();
    let want = format!("5/5 mirrors hold v{v1}");
    let mut last = String::new();
    let ok = eventually(90, async || match page().await {
        Some((_, html)) => {
            let done = nodes(&html) == all_up && html.contains(&want);
            last = html;
            done
        }
        None => false,
    })
    .await;
    assert!(
        ok,
        "every mirror up and v{v1} everywhere, got {:?}\n{last}",
        nodes(&last)
    );

    let (h, html) = page().await.expect("page");
    let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let csp = header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "CSP: {csp}");
    assert_eq!(header("vary"), "accept");
    assert!(html.contains("<svg id=\"map\""));
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"2\">"));
    assert!(!html.contains("<script") && !html.contains("src="));
    // Certificate expiry from the configured dev certificate.
    assert!(
        html.contains(" days)</td>"),
        "no certificate expiry:\n{html}"
    );

    // Singapore stops: it turns down within seconds, and the failover is listed.
    let sg = f.nodes[2].name.clone();
    if let Some(i) = insts[2].take() {
        i.shutdown().await;
    }
    let t = std::time::Instant::now();
    let down = eventually(15, async || {
        page().await.is_some_and(|(_, html)| {
            nodes(&html).contains(&(sg.clone(), "down".to_string()))
                && html.contains(&format!("{sg} went <b>down</b>"))
        })
    })
    .await;
    assert!(down, "{sg} not shown down within 15 s");
    eprintln!(
        "{sg} shown down {} ms after it stopped",
        t.elapsed().as_millis()
    );
    let (_, html) = page().await.expect("page");
    let n = nodes(&html);
    assert_eq!(n.len(), 5, "{n:?}");
    assert_eq!(n.iter().filter(|(_, h)| h == "up").count(), 4, "{n:?}");
    if let Ok(out) = std::env::var("P2PCDN_STATUS_PAGE_OUT") {
        std::fs::write(out, &html).unwrap();
    }

    // JSON stays the default: no Accept, */*, application/json.
    for accept in [None, Some("*/*"), Some("application/json")] {
        let mut req = client.get(&url);
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "Accept {accept:?}"
        );
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["node"], f.nodes[0].name.as_str());
        assert_eq!(v["peers"].as_array().map(Vec::len), Some(4));
    }

    for i in insts.into_iter().flatten() {
        i.shutdown().await;
    }
}
