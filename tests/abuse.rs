//! Hostile HTTP clients: slowloris, idle keep-alive, connection floods,
//! oversized URIs and headers, many ranges. Nothing crashes and limits hold.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn limited_world() -> World {
    let w = World::new();
    let cfg = std::fs::read_to_string(&w.config_path).unwrap();
    let cfg = cfg.replace(
        "[http]\nlisten = [\"127.0.0.1:0\"]",
        "[http]\nlisten = [\"127.0.0.1:0\"]\nmax_connections = 8\nheader_timeout_secs = 1\nidle_timeout_secs = 2",
    );
    std::fs::write(&w.config_path, cfg).unwrap();
    w
}

/// Reads until EOF or error; returns how long that took.
async fn until_closed(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(t.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_idle_and_too_many_connections_are_cut() {
    let w = limited_world();
    w.publish(SITE, &w.site_dir("a"), None).unwrap();
    let inst = w.start().await;
    let http = inst.http_addrs[0];

    // Slowloris: headers trickle in; the connection is closed at the header deadline.
    let mut s = TcpStream::connect(http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: www.t.test\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..20 {
            if s.write_all(b"X-a: b\r\n").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        false
    });
    assert!(
        trickle.await.unwrap(),
        "slow header sender was disconnected"
    );

    // An idle keep-alive connection is closed after idle_timeout_secs.
    let mut s = TcpStream::connect(http).await.unwrap();
    s.write_all(b"GET /style.css HTTP/1.1\r\nHost: www.t.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let closed = until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(
        closed.is_some_and(|d| d < Duration::from_secs(5)),
        "idle connection closed: {closed:?}"
    );

    // A flood of connections: beyond max_connections they are refused, and the
    // server still answers once they go away.
    let mut hold = vec![];
    for _ in 0..8 {
        let mut c = TcpStream::connect(http).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        hold.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(http).await.unwrap();
    let _ = extra
        .write_all(b"GET / HTTP/1.1\r\nHost: www.t.test\r\n\r\n")
        .await;
    let closed = until_closed(&mut extra, Duration::from_secs(3)).await;
    assert!(
        closed.is_some_and(|d| d < Duration::from_secs(1)),
        "9th connection dropped at once"
    );
    drop(hold);
    let ok = eventually(5, async || {
        raw_http(
            http,
            "GET / HTTP/1.1\r\nHost: www.t.test\r\nConnection: close\r\n\r\n",
        )
        .await
        .0 == 200
    })
    .await;
    assert!(ok, "serving again after the flood");
    inst.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_requests_and_range_abuse() {
    let w = World::new();
    w.publish(SITE, &w.site_dir("a"), None).unwrap();
    let inst = w.start().await;
    let http = inst.http_addrs[0];

    let long = "a".repeat(9000);
    let (code, _) = raw_http(
        http,
        &format!("GET /{long} HTTP/1.1\r\nHost: www.t.test\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(code, 414);
    // Headers beyond the 64 KiB buffer: refused, no crash.
    let big_header = format!("X-Big: {}\r\n", "b".repeat(70_000));
    let (code, _) = raw_http(
        http,
        &format!("GET / HTTP/1.1\r\nHost: www.t.test\r\n{big_header}Connection: close\r\n\r\n"),
    )
    .await;
    assert!(code == 431 || code == 400 || code == 0, "{code}");
    // Thousands of ranges: ignored (full response), not amplified.
    let ranges: Vec<String> = (0..2000).map(|i| format!("{}-{}", i * 2, i * 2)).collect();
    let (code, text) = raw_http(
        http,
        &format!(
            "GET /files/big.bin HTTP/1.1\r\nHost: www.t.test\r\nRange: bytes={}\r\nConnection: close\r\n\r\n",
            ranges.join(",")
        ),
    )
    .await;
    assert_eq!(code, 200, "too many ranges: served whole once");
    assert!(
        text.to_ascii_lowercase()
            .contains(&format!("content-length: {BIG_LEN}\r\n")),
        "one whole body, not 2000 parts"
    );
    let (code, _) = raw_http(
        http,
        "GET / HTTP/1.1\r\nHost: www.t.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200, "still serving");
    inst.shutdown().await;
}
