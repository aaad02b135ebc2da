//! The HTTPS/HTTP mirror through real sockets: reqwest over rustls (HTTP/1.1
//! and HTTP/2) trusting the dev CA, and raw HTTP/1.1 for hostile requests.

mod common;

use common::*;
use reqwest::header;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread")]
async fn serves_files_with_cdn_headers() {
    let w = World::new();
    let report = w.publish(SITE, &w.site_dir("a"), None).unwrap();
    let inst = w.start().await;
    let c = https_client(&w, &inst);

    let r = c.get(https_url(&inst, SITE, "/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.version(),
        reqwest::Version::HTTP_2,
        "h2 negotiated by ALPN"
    );
    let h = r.headers().clone();
    let body = r.text().await.unwrap();
    assert_eq!(body, "<html><body>home a</body></html>");
    let expect_etag = format!("\"{}\"", blake3::hash(body.as_bytes()).to_hex());
    assert_eq!(h[header::ETAG], expect_etag.as_str());
    assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(h[header::CACHE_CONTROL], "public, max-age=120");
    assert_eq!(h[header::CONTENT_LENGTH], body.len().to_string().as_str());
    assert!(h.contains_key(header::LAST_MODIFIED));
    assert_eq!(h[header::ACCEPT_RANGES], "bytes");

    // HTTP/1.1 too.
    let c11 = ca_client(&w.ca_pem, &[(SITE, inst.https_addrs[0])])
        .http1_only()
        .build()
        .unwrap();
    let r = c11
        .get(https_url(&inst, SITE, "/style.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "text/css; charset=utf-8");
    assert_eq!(r.text().await.unwrap(), "body { color: red }");

    // HEAD: same headers, no body.
    let r = c
        .head(https_url(&inst, SITE, "/files/big.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[header::CONTENT_LENGTH],
        BIG_LEN.to_string().as_str()
    );
    assert_eq!(r.bytes().await.unwrap().len(), 0);

    // Large file streamed intact.
    let r = c
        .get(https_url(&inst, SITE, "/files/big.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), big_bytes().as_slice());

    // Default document for directories; redirect to the slash form.
    let r = c.get(https_url(&inst, SITE, "/sub/")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "sub a");
    let r = c
        .get(https_url(&inst, SITE, "/sub?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.headers()[header::LOCATION], "/sub/?x=1");

    // Percent-decoding.
    let r = c
        .get(https_url(&inst, SITE, "/space%20name.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "spaces ok");
    let r = c
        .get(https_url(&inst, SITE, "/%E2%9C%93.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "check mark");

    // Unknown path.
    let r = c
        .get(https_url(&inst, SITE, "/nope.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Other methods.
    let r = c.post(https_url(&inst, SITE, "/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
    // A configured site with nothing published yet: 503, retry later.
    let r = c.get(https_url(&inst, SITE2, "/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The node's health endpoint.
    let r = c
        .get(https_url(&inst, SITE, "/.well-known/p2pcdn/v1/health"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["sites"][0]["version"], report.version);
    inst.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_and_range_requests() {
    let w = World::new();
    w.publish(SITE, &w.site_dir("a"), None).unwrap();
    let inst = w.start().await;
    let c = https_client(&w, &inst);
    let url = https_url(&inst, SITE, "/files/big.bin");
    let big = big_bytes();
    let etag = format!("\"{}\"", blake3::hash(&big).to_hex());

    let r = c
        .get(&url)
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()[header::ETAG], etag.as_str());
    assert!(r.bytes().await.unwrap().is_empty());
    let r = c
        .get(&url)
        .header(header::IF_NONE_MATCH, "\"other\", W/\"x\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let lm = r.headers()[header::LAST_MODIFIED]
        .to_str()
        .unwrap()
        .to_string();
    drop(r);
    let r = c
        .get(&url)
        .header(header::IF_MODIFIED_SINCE, &lm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    let cases: [(&str, usize, usize); 4] = [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, BIG_LEN - 1),
        ("bytes=-500", BIG_LEN - 500, BIG_LEN - 1),
        ("bytes=5-10000000000", 5, BIG_LEN - 1),
    ];
    for (range, s, e) in cases {
        let r = c
            .get(&url)
            .header(header::RANGE, range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            r.headers()[header::CONTENT_RANGE],
            format!("bytes {s}-{e}/{BIG_LEN}").as_str()
        );
        assert_eq!(
            r.headers()[header::CONTENT_LENGTH],
            (e - s + 1).to_string().as_str()
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), &big[s..=e], "{range}");
    }
    // Range on the first request for a blob (verification pass) still starts at the right offset.
    let r = c
        .get(https_url(&inst, SITE, "/style.css"))
        .header(header::RANGE, "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "body");

    let r = c
        .get(&url)
        .header(header::RANGE, format!("bytes={BIG_LEN}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        r.headers()[header::CONTENT_RANGE],
        format!("bytes */{BIG_LEN}").as_str()
    );
    // Malformed ranges are ignored: full body.
    for bad in ["bytes=abc", "bytes=9-3", "lines=0-1"] {
        let r = c.get(&url).header(header::RANGE, bad).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{bad}");
    }
    // If-Range with a stale validator: full body.
    let r = c
        .get(&url)
        .header(header::RANGE, "bytes=0-9")
        .header(header::IF_RANGE, "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(&url)
        .header(header::RANGE, "bytes=0-9")
        .header(header::IF_RANGE, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    inst.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_plain_http_and_hostile_paths() {
    let w = World::new();
    w.publish(SITE, &w.site_dir("a"), None).unwrap();
    w.publish(SITE2, &w.site_dir("b"), None).unwrap();
    let inst = w.start().await;
    let http = inst.http_addrs[0];

    // Plain HTTP serves www (policy "serve") and redirects img (policy "redirect").
    let (code, text) = raw_http(
        http,
        "GET / HTTP/1.1\r\nHost: www.t.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200);
    assert!(text.ends_with("home a</body></html>"));
    let (code, text) = raw_http(
        http,
        "GET /x?y=1 HTTP/1.1\r\nHost: img.t.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 308);
    let loc = format!(
        "location: https://img.t.test:{}/x?y=1",
        inst.https_addrs[0].port()
    );
    assert!(text.to_ascii_lowercase().contains(&loc), "{text}");

    // Unknown host: 421. Host with port and trailing dot are fine.
    let (code, _) = raw_http(
        http,
        "GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 421);
    let (code, _) = raw_http(
        http,
        "GET / HTTP/1.1\r\nHost: WWW.t.test.:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = raw_http(http, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(code, 400);

    // Traversal, encoded traversal, absolute and odd paths never escape the manifest.
    for path in [
        "/../etc/passwd",
        "/%2e%2e/etc/passwd",
        "/.%2e/.%2e/etc/passwd",
        "/sub/../../etc/passwd",
        "/a/%2fetc%2fpasswd",
        "/..%5c..%5cetc/passwd",
        "/%00",
        "/%zz",
        "//etc/passwd",
        "/files/./big.bin",
    ] {
        let (code, text) = raw_http(
            http,
            &format!("GET {path} HTTP/1.1\r\nHost: www.t.test\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(code == 400 || code == 404, "{path}: {code}");
        assert!(!text.contains("root:"), "{path}");
    }
    let (code, _) = raw_http(
        http,
        "GET http://www.t.test/%2e%2e/x HTTP/1.1\r\nHost: www.t.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 400);

    // HTTPS: SNI selects the certificate; a Host that differs from SNI is misdirected.
    let c = https_client(&w, &inst);
    let r = c.get(https_url(&inst, SITE2, "/")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "<html><body>home b</body></html>");
    let c11 = ca_client(&w.ca_pem, &[(SITE, inst.https_addrs[0])])
        .http1_only()
        .build()
        .unwrap();
    let r = c11
        .get(https_url(&inst, SITE, "/"))
        .header(header::HOST, "img.t.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    inst.shutdown().await;
}
