//! Authoritative DNS through real sockets: UDP and TCP, with hickory-proto
//! messages and (where installed) dig.

mod common;

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{RData, RecordType};

fn types(rs: &[hickory_proto::rr::Record]) -> Vec<RecordType> {
    rs.iter().map(|r| r.record_type()).collect()
}

fn addrs(m: &Message) -> Vec<IpAddr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn steered_site_answers_and_falls_back() {
    let w = World::new();
    let inst = w.start().await;
    let dns = inst.dns_addrs[0];

    // Nothing published yet: the zone file's record is the fallback.
    let r = udp(dns, &query("www.t.test.", RecordType::A, None, None)).await;
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert!(r.authoritative());
    assert_eq!(addrs(&r), vec![IpAddr::from_str("192.0.2.1").unwrap()]);
    // The zone says 300, but a fallback answer is held only the short TTL
    // (dns.short_ttl, 5 s): a mirror may be there any moment.
    assert_eq!(r.answers()[0].ttl(), 5);

    w.publish(SITE, &w.site_dir("a"), None).unwrap();
    let ok = eventually(5, async || {
        let r = udp(dns, &query("www.t.test.", RecordType::A, None, None)).await;
        addrs(&r) == vec![IpAddr::from_str("127.0.0.1").unwrap()]
    })
    .await;
    assert!(ok, "steered answer after publish");
    let r = udp(dns, &query("WWW.T.TEST.", RecordType::A, None, None)).await;
    assert!(r.authoritative());
    assert!(!r.recursion_available());
    // The mirror is new: its TTL ramps from the short TTL (5) towards
    // dns.answer_ttl (17) over its first minutes.
    let ttl = r.answers()[0].ttl();
    assert!((5..17).contains(&ttl), "a new mirror's TTL: {ttl}");
    let r = tcp(dns, &query("www.t.test.", RecordType::AAAA, None, None)).await;
    assert_eq!(addrs(&r), vec![IpAddr::from_str("::1").unwrap()]);

    // CNAME into a steered name follows steering.
    let r = udp(dns, &query("alias.t.test.", RecordType::A, None, None)).await;
    assert_eq!(types(r.answers()), vec![RecordType::CNAME, RecordType::A]);
    assert_eq!(addrs(&r), vec![IpAddr::from_str("127.0.0.1").unwrap()]);
    inst.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn record_types_negative_answers_and_refusal() {
    let w = World::new();
    let inst = w.start().await;
    let dns = inst.dns_addrs[0];

    for (name, t) in [
        ("t.test.", RecordType::SOA),
        ("t.test.", RecordType::NS),
        ("t.test.", RecordType::MX),
        ("t.test.", RecordType::TXT),
        ("t.test.", RecordType::CAA),
        ("_https._tcp.t.test.", RecordType::SRV),
        ("ns2.t.test.", RecordType::AAAA),
        ("alias.t.test.", RecordType::CNAME),
    ] {
        let r = udp(dns, &query(name, t, Some(1232), None)).await;
        assert_eq!(r.response_code(), ResponseCode::NoError, "{name} {t}");
        assert!(r.authoritative(), "{name} {t}");
        assert!(
            r.answers().iter().any(|a| a.record_type() == t),
            "{name} {t}: {:?}",
            r.answers()
        );
    }
    // The apex SOA carries the zone's $TTL (300), not its EXPIRE (1209600).
    let r = udp(dns, &query("t.test.", RecordType::SOA, Some(1232), None)).await;
    assert_eq!(r.answers()[0].ttl(), 300);
    // MX answer carries the exchange's address as additional data.
    let r = udp(dns, &query("t.test.", RecordType::MX, Some(1232), None)).await;
    assert!(r
        .additionals()
        .iter()
        .any(|a| a.record_type() == RecordType::A));

    // NXDOMAIN and NODATA carry the SOA (negative TTL = SOA minimum).
    let r = udp(dns, &query("nope.t.test.", RecordType::A, None, None)).await;
    assert_eq!(r.response_code(), ResponseCode::NXDomain);
    assert!(r.authoritative());
    assert_eq!(types(r.name_servers()), vec![RecordType::SOA]);
    assert_eq!(r.name_servers()[0].ttl(), 60);
    let r = udp(dns, &query("mail.t.test.", RecordType::AAAA, None, None)).await;
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert!(r.answers().is_empty());
    assert_eq!(types(r.name_servers()), vec![RecordType::SOA]);
    let r = udp(dns, &query("b.t.test.", RecordType::A, None, None)).await;
    assert_eq!(
        r.response_code(),
        ResponseCode::NoError,
        "empty non-terminal"
    );

    // Delegation below the zone: referral, not authoritative, glue.
    let r = udp(dns, &query("x.deleg.t.test.", RecordType::A, None, None)).await;
    assert!(!r.authoritative());
    assert_eq!(types(r.name_servers()), vec![RecordType::NS]);
    assert_eq!(types(r.additionals()), vec![RecordType::A]);

    // Outside our zones: REFUSED, never recursion.
    for name in ["example.com.", "test.", "."] {
        let r = udp(dns, &query(name, RecordType::A, None, None)).await;
        assert_eq!(r.response_code(), ResponseCode::Refused, "{name}");
        assert!(!r.recursion_available());
        assert!(r.answers().is_empty());
    }
    // Zone transfers are refused.
    let r = tcp(dns, &query("t.test.", RecordType::AXFR, None, None)).await;
    assert_eq!(r.response_code(), ResponseCode::Refused);

    // ANY is answered minimally (RFC 8482): one RRset.
    let r = udp(dns, &query("t.test.", RecordType::ANY, None, None)).await;
    let mut ts = types(r.answers());
    ts.dedup();
    assert_eq!(ts.len(), 1, "{ts:?}");
    inst.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn edns_ecs_and_truncation() {
    let w = World::new();
    let inst = w.start().await;
    let dns = inst.dns_addrs[0];

    // EDNS: our OPT comes back with our payload size.
    let r = udp(dns, &query("t.test.", RecordType::SOA, Some(4096), None)).await;
    let e = r.extensions().as_ref().expect("OPT in response");
    assert_eq!(e.max_payload(), 1232);
    // No EDNS in the query: none in the response.
    let r = udp(dns, &query("t.test.", RecordType::SOA, None, None)).await;
    assert!(r.extensions().is_none());

    // ECS echoed with family, prefix and address (RFC 7871), scope 0.
    let r = udp(
        dns,
        &query(
            "www.t.test.",
            RecordType::A,
            Some(1232),
            Some(("10.5.0.0".parse().unwrap(), 24)),
        ),
    )
    .await;
    let e = r.extensions().as_ref().unwrap();
    match e.option(EdnsCode::Subnet) {
        Some(EdnsOption::Subnet(cs)) => {
            assert_eq!(cs.source_prefix(), 24);
            assert_eq!(cs.addr(), "10.5.0.0".parse::<IpAddr>().unwrap());
            assert_eq!(cs.scope_prefix(), 0);
        }
        other => panic!("no ECS echoed: {other:?}"),
    }

    // EDNS version 1: BADVERS.
    let mut q = query("t.test.", RecordType::SOA, Some(1232), None);
    q.extensions_mut().as_mut().unwrap().set_version(1);
    let r = udp(dns, &q).await;
    // Extended rcode 16 (BADVERS; hickory decodes 16 as its alias BADSIG).
    assert_eq!(u16::from(r.response_code()), 16);

    // A big RRset: truncated over UDP without EDNS (512 bytes), full over TCP.
    let (r, len) = udp_len(dns, &query("big.t.test.", RecordType::TXT, None, None)).await;
    assert!(r.truncated(), "TC set");
    assert!(len <= 512, "{len}");
    let (r, len) = udp_len(
        dns,
        &query("big.t.test.", RecordType::TXT, Some(1232), None),
    )
    .await;
    assert!(r.truncated());
    assert!(len <= 1232, "{len}");
    let r = tcp(dns, &query("big.t.test.", RecordType::TXT, None, None)).await;
    assert!(!r.truncated());
    assert_eq!(r.answers().len(), 30);
    inst.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_packets_do_not_stop_the_server() {
    let w = World::new();
    let inst = w.start().await;
    let dns = inst.dns_addrs[0];

    // Too short to have a header: dropped.
    assert!(udp_raw(dns, &[1, 2, 3]).await.is_none());
    // A header claiming one question followed by garbage: FORMERR.
    let mut junk = vec![0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    junk.extend_from_slice(&[0xff; 40]);
    if let Some(resp) = udp_raw(dns, &junk).await {
        let r = Message::from_vec(&resp).unwrap();
        assert_eq!(r.response_code(), ResponseCode::FormErr);
        assert_eq!(r.id(), 0xabcd);
    }
    // Two questions: FORMERR.
    let mut q = query("t.test.", RecordType::SOA, None, None);
    q.add_query(hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii("www.t.test.").unwrap(),
        RecordType::A,
    ));
    let r = udp(dns, &q).await;
    assert_eq!(r.response_code(), ResponseCode::FormErr);
    // A response packet is ignored (reflection guard).
    let mut resp = query("t.test.", RecordType::SOA, None, None);
    resp.set_message_type(hickory_proto::op::MessageType::Response);
    assert!(udp_raw(dns, &resp.to_vec().unwrap()).await.is_none());
    // Garbage on TCP, then the server still answers.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(dns).await.unwrap();
        let _ = s.write_all(&[0, 5, 1, 2, 3, 4, 5, 0xff, 0xff]).await;
    }
    // A QNAME that is a compression pointer (into the header): both paths
    // answer with a reply that decodes and echoes the question re-encoded
    // (hickory-server alone would echo the pointer; fuzzing found it).
    let pointer_q = [
        0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xc0, 0x02, 0x00, 0x01, 0x00, 0x01,
    ];
    let via_udp = Message::from_vec(&udp_raw(dns, &pointer_q).await.unwrap()).unwrap();
    let via_tcp = {
        let mut s = tokio::net::TcpStream::connect(dns).await.unwrap();
        let reply = tcp_exchange_raw(&mut s, &pointer_q).await.unwrap();
        Message::from_vec(&reply).expect("TCP reply to a pointer QNAME decodes")
    };
    for r in [&via_udp, &via_tcp] {
        assert_eq!(r.id(), 1);
        assert_eq!(r.response_code(), ResponseCode::Refused);
        assert_eq!(r.queries().len(), 1);
        assert_eq!(r.queries()[0].query_type(), RecordType::A);
    }
    assert_eq!(via_udp.queries(), via_tcp.queries());
    for _ in 0..3 {
        let r = udp(dns, &query("t.test.", RecordType::SOA, None, None)).await;
        assert_eq!(r.response_code(), ResponseCode::NoError);
        let r = tcp(dns, &query("t.test.", RecordType::SOA, None, None)).await;
        assert_eq!(r.response_code(), ResponseCode::NoError);
    }
    inst.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dig_sees_what_resolvers_see() {
    if !has_cmd("dig") {
        eprintln!("dig not installed; skipping (CI installs bind9-dnsutils)");
        return;
    }
    let w = World::new();
    w.publish(SITE, &w.site_dir("a"), None).unwrap();
    let inst = w.start().await;
    let dns = inst.dns_addrs[0];
    let dig = move |args: &[&str]| {
        let out = std::process::Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &dns.port().to_string(),
                "+time=2",
                "+tries=1",
            ])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let out = tokio::task::spawn_blocking(move || {
        (
            dig(&["+short", "www.t.test", "A"]),
            dig(&["+tcp", "+short", "www.t.test", "AAAA"]),
            dig(&["nope.t.test", "A"]),
            dig(&["example.org", "A"]),
            dig(&["+ignore", "+noedns", "big.t.test", "TXT"]),
            dig(&["+subnet=10.5.0.0/24", "www.t.test", "A"]),
        )
    })
    .await
    .unwrap();
    assert_eq!(out.0.trim(), "127.0.0.1");
    assert_eq!(out.1.trim(), "::1");
    assert!(
        out.2.contains("status: NXDOMAIN") && out.2.contains("flags: qr aa rd;"),
        "{}",
        out.2
    );
    assert!(out.3.contains("status: REFUSED"), "{}", out.3);
    assert!(out.4.contains(" tc"), "{}", out.4);
    assert!(
        out.5.contains("CLIENT-SUBNET: 10.5.0.0/24/24"),
        "steered answers are scoped to the client /24: {}",
        out.5
    );
    inst.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn response_rate_limiting_slips_to_tcp() {
    let w = World::new();
    let cfg = std::fs::read_to_string(&w.config_path).unwrap();
    std::fs::write(
        &w.config_path,
        cfg.replace(
            "answer_ttl = 17",
            "answer_ttl = 17\nrrl_rate = 5\nrrl_slip = 2\nrrl_exempt = []",
        ),
    )
    .unwrap();
    let inst = w.start().await;
    let dns = inst.dns_addrs[0];
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let q = query("t.test.", RecordType::SOA, None, None);
    for _ in 0..60 {
        sock.send_to(&q.to_vec().unwrap(), dns).await.unwrap();
    }
    let (mut full, mut tc) = (0, 0);
    let mut buf = vec![0u8; 4096];
    while let Ok(Ok((n, _))) = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        sock.recv_from(&mut buf),
    )
    .await
    {
        let r = Message::from_vec(&buf[..n]).unwrap();
        if r.truncated() {
            assert!(r.answers().is_empty());
            tc += 1;
        } else {
            full += 1;
        }
    }
    assert!(
        (10..=14).contains(&full),
        "burst of 2 × rate answered in full: {full}"
    );
    assert!(
        tc >= 15,
        "about half of the limited responses slip as TC: {tc}"
    );
    assert!(full + tc < 60, "the rest are dropped");
    // TCP is never limited: a client that got TC retries and is answered.
    let r = tcp(dns, &q).await;
    assert_eq!(r.answers().len(), 1);
    inst.shutdown().await;
}

/// Sends one length-prefixed query on an open connection and reads the reply.
async fn tcp_exchange(s: &mut tokio::net::TcpStream, m: &Message) -> Option<Message> {
    let reply = tcp_exchange_raw(s, &m.to_vec().unwrap()).await?;
    Message::from_vec(&reply).ok()
}

/// True when the peer closes the connection within `limit`.
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_connection_cap_idle_timeout_and_pipelining() {
    let w = World::new();
    let mut cfg = w.config();
    cfg.dns.tcp_max_connections = 3;
    cfg.dns.tcp_idle_timeout_secs = 1;
    let inst = p2pcdn::instance::Instance::start(cfg).await.unwrap();
    let dns = inst.dns_addrs[0];
    let soa = query("t.test.", RecordType::SOA, None, None);

    // Several queries on one connection (RFC 7766), written back to back.
    let mut c = tokio::net::TcpStream::connect(dns).await.unwrap();
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut both = vec![];
        for id in [7u16, 8] {
            let mut q = soa.clone();
            q.set_id(id);
            let b = q.to_vec().unwrap();
            both.extend_from_slice(&(b.len() as u16).to_be_bytes());
            both.extend_from_slice(&b);
        }
        c.write_all(&both).await.unwrap();
        for id in [7u16, 8] {
            let mut len = [0u8; 2];
            c.read_exact(&mut len).await.unwrap();
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            c.read_exact(&mut buf).await.unwrap();
            let r = Message::from_vec(&buf).unwrap();
            assert_eq!(r.id(), id);
            assert_eq!(r.response_code(), ResponseCode::NoError);
        }
    }
    // An idle connection is closed after tcp_idle_timeout_secs (1 s).
    assert!(
        closed_within(&mut c, Duration::from_secs(4)).await,
        "idle DNS TCP connection closed"
    );
    // So is one that sends half a query and stalls.
    let mut half = tokio::net::TcpStream::connect(dns).await.unwrap();
    {
        use tokio::io::AsyncWriteExt;
        half.write_all(&[0, 40, 1, 2, 3]).await.unwrap();
    }
    assert!(
        closed_within(&mut half, Duration::from_secs(4)).await,
        "stalled partial query closed"
    );

    // Three open connections take every slot; a fourth is closed at once,
    // UDP still answers, and a slot freed is usable again.
    let mut hold = vec![];
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(dns).await.unwrap();
        assert!(tcp_exchange(&mut s, &soa).await.is_some());
        hold.push(s);
    }
    let mut fourth = tokio::net::TcpStream::connect(dns).await.unwrap();
    assert!(
        tcp_exchange(&mut fourth, &soa).await.is_none(),
        "connection over tcp_max_connections is not served"
    );
    assert_eq!(udp(dns, &soa).await.response_code(), ResponseCode::NoError);
    drop(hold);
    let served = common::eventually(5, async || {
        let Ok(mut s) = tokio::net::TcpStream::connect(dns).await else {
            return false;
        };
        tcp_exchange(&mut s, &soa).await.is_some()
    })
    .await;
    assert!(served, "TCP served again once connections closed");
    inst.shutdown().await;
}
