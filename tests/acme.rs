//! Certificates by ACME DNS-01 with pebble as the CA, the challenges
//! answered by the federation's own authorities (issue 9). Skipped where
//! pebble is not installed (`apt-get install pebble`; `.ci/run` does).

mod common;

use std::time::{Duration, Instant};

const _: Duration = Duration::ZERO;

use common::acme::{self, AcmeWorld, SITE};
use common::eventually;

fn skip() -> bool {
    if !acme::has_pebble() {
        eprintln!("pebble not installed: skipping");
        return true;
    }
    false
}

/// The leaf certificate (DER) a TLS server presents for `SITE`, verified
/// with pebble's root only.
async fn served_leaf(w: &AcmeWorld, i: usize) -> Vec<u8> {
    use rustls::pki_types::ServerName;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut w.pebble.root_pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(w.nodes[i].https)
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(ServerName::try_from(SITE).unwrap(), tcp)
        .await
        .expect("TLS with pebble's root only");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn public_key(der: &[u8]) -> Vec<u8> {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    c.public_key().raw.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_mirror_gets_its_own_certificate_validated_by_the_federation() {
    if skip() {
        return;
    }
    let w = acme::build(3, 71, None, 86400).await;
    w.publish(&[0, 1, 2]);
    let t0 = Instant::now();
    let mut inst = vec![];
    for i in 0..3 {
        inst.push(w.start(i).await);
    }
    // All mirrors order at once (site name and node name each): 6 orders
    // validating concurrently against the same three authorities.
    let mut issued = vec![None; 3];
    let all = eventually(90, async || {
        for (i, x) in inst.iter().enumerate() {
            if issued[i].is_none()
                && x.federation.certs().unwrap().acme(SITE).is_some()
                && x.federation
                    .certs()
                    .unwrap()
                    .acme(&w.nodes[i].name)
                    .is_some()
            {
                issued[i] = Some(t0.elapsed());
            }
        }
        issued.iter().all(Option::is_some)
    })
    .await;
    assert!(
        all,
        "every mirror got site and node certificates: {issued:?} (pebble log: {})",
        std::fs::read_to_string(w.dir.path().join("pebble.log")).unwrap_or_default()
    );
    eprintln!("ACME issuance (site + node name) per mirror since start: {issued:?}");

    // Every mirror serves the site with full verification against pebble's
    // root only (reqwest, and curl where installed), each with its own key.
    let mut keys = vec![];
    for i in 0..3 {
        let ok = eventually(30, async || {
            matches!(w.pebble_client(i).get(w.url(i, "/")).send().await, Ok(r) if r.status() == 200)
        })
        .await;
        assert!(ok, "mirror {i} serves the site over pebble-verified TLS");
        let body = w
            .pebble_client(i)
            .get(w.url(i, "/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "hello from an ACME mirror\n");
        keys.push(public_key(&served_leaf(&w, i).await));
        if common::has_cmd("curl") {
            let out = std::process::Command::new("curl")
                .args(["-sS", "--fail", "--cacert"])
                .arg(&w.pebble.root_path)
                .arg("--resolve")
                .arg(format!(
                    "{SITE}:{}:{}",
                    w.nodes[i].https.port(),
                    w.nodes[i].ip
                ))
                .arg(w.url(i, "/"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "curl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "hello from an ACME mirror\n"
            );
        }
    }
    assert!(
        keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2],
        "each mirror has its own key"
    );

    // Keys are stored 0600 and reused: a restarted instance serves the same
    // certificate without ordering again.
    let key_file = w.nodes[1]
        .config_path
        .parent()
        .unwrap()
        .join(format!("data/acme/certs/{SITE}.key"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = inst[1]
        .federation
        .certs()
        .unwrap()
        .acme(SITE)
        .unwrap()
        .not_after;
    let x = inst.remove(1);
    x.shutdown().await;
    let again = w.start(1).await;
    let after = again
        .federation
        .certs()
        .unwrap()
        .acme(SITE)
        .map(|s| s.not_after);
    assert_eq!(
        after,
        Some(before),
        "stored certificate served at once after a restart"
    );
    inst.insert(1, again);

    // Values are withdrawn after validation: no challenge TXT left.
    let clean = eventually(20, async || {
        for i in 0..3 {
            if !acme::txt(w.dns(i), &format!("_acme-challenge.{SITE}."))
                .await
                .is_empty()
            {
                return false;
            }
        }
        true
    })
    .await;
    assert!(clean, "challenge values withdrawn after validation");

    // Reports state each mirror's certificate; status shows it.
    let stated = eventually(20, async || {
        inst[0].federation.peers().iter().all(|p| {
            p.report.as_ref().is_some_and(|r| {
                r.report.certs.as_ref().is_some_and(|c| {
                    c.iter()
                        .any(|c| c.site == SITE && c.source == p2pcdn::http::tls::CertSource::Acme)
                })
            })
        })
    })
    .await;
    assert!(stated, "peers' reports state their ACME certificates");
    for x in inst {
        x.shutdown().await;
    }
}

/// Sends a challenge request envelope to node `i`'s peer API.
async fn send(w: &AcmeWorld, i: usize, env: &[u8]) -> (u16, String) {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&w.dev_ca).unwrap()).unwrap(),
        )
        .add_root_certificate(reqwest::Certificate::from_pem(&w.pebble.root_pem).unwrap())
        .timeout(Duration::from_secs(5));
    b = b.resolve(&w.nodes[i].name, w.nodes[i].https);
    let r = b
        .build()
        .unwrap()
        .post(format!(
            "https://{}:{}/.well-known/p2pcdn/v1/acme-challenge",
            w.nodes[i].name,
            w.nodes[i].https.port()
        ))
        .body(env.to_vec())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_challenge_requests_never_reach_dns() {
    use p2pcdn::challenge::{new_request, Action};
    use p2pcdn::keys::SecretKey;
    if skip() {
        return;
    }
    let w = acme::build(3, 72, None, 86400).await;
    w.publish(&[0, 1, 2]);
    let mut inst = vec![];
    for i in 0..3 {
        inst.push(w.start(i).await);
    }
    let bound = eventually(30, async || {
        inst.iter().all(|x| x.federation.peers().len() == 2)
    })
    .await;
    assert!(bound, "peers bound");
    let now = p2pcdn::catalog::unix_now();
    let mirror =
        SecretKey::read(&w.nodes[1].config_path.parent().unwrap().join("node.key")).unwrap();
    let stranger = SecretKey::generate().unwrap();
    let value = |c: char| c.to_string().repeat(43);
    let absent_everywhere = async |name: &str, v: &str| {
        for i in 0..3 {
            let got = acme::txt(w.dns(i), &format!("_acme-challenge.{name}.")).await;
            if got.iter().any(|x| x == v) {
                return false;
            }
        }
        true
    };

    // A node the manifest does not list, asking for the site.
    let env = new_request(&stranger, Action::Publish, SITE, &value('a'), now, 300).unwrap();
    let (status, body) = send(&w, 0, &env).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not authorized"), "{body}");
    // A listed mirror asking for a name outside the site, another node's
    // name, and a name outside the zones.
    for (name, why) in [
        ("evil.acme.test", "not authorized"),
        ("ns3.acme.test", "not authorized"),
        ("www.example.org", "not in a zone"),
    ] {
        let env = new_request(&mirror, Action::Publish, name, &value('b'), now, 300).unwrap();
        let (status, body) = send(&w, 0, &env).await;
        assert_eq!(status, 403, "{name}: {body}");
        assert!(body.contains(why), "{name}: {body}");
    }
    // Forged: a valid request whose name was changed after signing.
    let good = new_request(&mirror, Action::Publish, SITE, &value('c'), now, 300).unwrap();
    let forged = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut e: serde_json::Value = serde_json::from_slice(&good).unwrap();
        let body = b64.decode(e["request"].as_str().unwrap()).unwrap();
        let body = String::from_utf8(body).unwrap().replace("\"c", "\"d");
        e["request"] = b64.encode(body).into();
        serde_json::to_vec(&e).unwrap()
    };
    let (status, body) = send(&w, 0, &forged).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("signature"), "{body}");
    // Expired.
    let old = new_request(&mirror, Action::Publish, SITE, &value('e'), now - 400, 300).unwrap();
    assert_eq!(send(&w, 0, &old).await.0, 409);
    for (name, v) in [
        (SITE, value('a')),
        ("evil.acme.test", value('b')),
        ("ns3.acme.test", value('b')),
        (SITE, value('d')),
        (SITE, value('e')),
    ] {
        assert!(absent_everywhere(name, &v).await, "{name} {v} never served");
    }

    // The good request, sent to one authority, is served by all three
    // (relayed); withdrawn, it disappears everywhere; replayed, it is
    // refused and stays out of DNS.
    let (status, body) = send(&w, 0, &good).await;
    assert_eq!(status, 200, "{body}");
    let everywhere = eventually(10, async || {
        for i in 0..3 {
            if !acme::txt(w.dns(i), &format!("_acme-challenge.{SITE}."))
                .await
                .contains(&value('c'))
            {
                return false;
            }
        }
        true
    })
    .await;
    assert!(everywhere, "relayed to the zone's other authorities");
    let withdraw = new_request(&mirror, Action::Withdraw, SITE, &value('c'), now, 300).unwrap();
    assert_eq!(send(&w, 2, &withdraw).await.0, 200);
    let gone = eventually(10, async || absent_everywhere(SITE, &value('c')).await).await;
    assert!(gone, "withdrawn everywhere");
    for i in 0..3 {
        let (status, body) = send(&w, i, &good).await;
        assert_eq!(status, 409, "replay at node {i}: {body}");
        assert!(body.contains("replayed"), "{body}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        absent_everywhere(SITE, &value('c')).await,
        "a replay never reaches DNS"
    );
    for x in inst {
        x.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewal_swaps_certificates_under_an_open_h2_connection() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    if skip() {
        return;
    }
    // 30-second certificates: renewed about 20 s after issuance.
    let w = acme::build(1, 73, Some(30), 3).await;
    w.publish(&[0]);
    let x = w.start(0).await;
    let first = eventually(30, async || {
        x.federation.certs().unwrap().acme(SITE).is_some()
    })
    .await;
    assert!(first, "first certificate");
    let old = x.federation.certs().unwrap().acme(SITE).unwrap();

    // One h2 connection, verified with pebble's root only.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut w.pebble.root_pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(w.nodes[0].https)
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(rustls::pki_types::ServerName::try_from(SITE).unwrap(), tcp)
        .await
        .unwrap();
    let conn_leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let get = async |send: &mut hyper::client::conn::http2::SendRequest<Empty<bytes::Bytes>>| {
        let req = http::Request::get(format!("https://{SITE}/"))
            .body(Empty::new())
            .unwrap();
        let r = send.send_request(req).await.unwrap();
        let status = r.status();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status.as_u16(), String::from_utf8_lossy(&body).to_string())
    };
    assert_eq!(
        get(&mut send).await,
        (200, "hello from an ACME mirror\n".to_string())
    );

    // Requests keep flowing on the connection while the renewal happens.
    let t = Instant::now();
    let mut requests = 0;
    loop {
        assert_eq!(
            get(&mut send).await.0,
            200,
            "request {requests} on the open connection"
        );
        requests += 1;
        let now = x.federation.certs().unwrap().acme(SITE).unwrap();
        if now.not_after != old.not_after {
            eprintln!("renewed after {:.1} s of a {} s certificate; {requests} requests on one h2 connection", t.elapsed().as_secs_f64(), old.not_after - old.not_before);
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "renewed within the certificate's lifetime"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        get(&mut send).await,
        (200, "hello from an ACME mirror\n".to_string()),
        "the open connection keeps working after the swap"
    );
    assert!(!send.is_closed());
    // New connections get the new certificate (a new key too).
    let new_leaf = served_leaf(&w, 0).await;
    assert_ne!(new_leaf, conn_leaf);
    assert_ne!(public_key(&new_leaf), public_key(&conn_leaf));
    x.shutdown().await;
}

/// The A records `server` answers for the site.
async fn site_a(server: std::net::SocketAddr) -> Vec<std::net::IpAddr> {
    use hickory_proto::rr::{RData, RecordType};
    let m = common::udp(
        server,
        &common::query(&format!("{SITE}."), RecordType::A, None, None),
    )
    .await;
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn steering_needs_a_certificate_valid_beyond_the_margin() {
    if skip() {
        return;
    }
    // One-hour certificates; a 30-minute margin steers to them.
    let w = acme::build(2, 74, Some(3600), 1800).await;
    w.publish(&[0, 1]);
    let mut inst = vec![w.start(0).await, w.start(1).await];
    let mirrors = [w.nodes[0].ip, w.nodes[1].ip];
    let steered = eventually(60, async || {
        let a = site_a(w.dns(0)).await;
        !a.is_empty() && a.iter().all(|ip| mirrors.contains(ip))
    })
    .await;
    assert!(
        steered,
        "mirrors with certificates are steered to: {:?}",
        site_a(w.dns(0)).await
    );
    // The same certificates with a two-hour margin: no mirror qualifies, the
    // zone's fallback is answered.
    let x = inst.remove(0);
    x.shutdown().await;
    let path = &w.nodes[0].config_path;
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("cert_margin_secs = 1800", "cert_margin_secs = 7200");
    std::fs::write(path, text).unwrap();
    inst.insert(0, w.start(0).await);
    let fallback = eventually(30, async || {
        let a = site_a(w.dns(0)).await;
        !a.is_empty() && a.iter().all(|ip| !mirrors.contains(ip))
    })
    .await;
    assert!(
        fallback,
        "no mirror steered to without a certificate valid beyond the margin: {:?}",
        site_a(w.dns(0)).await
    );
    for x in inst {
        x.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_pems_are_reloaded_when_the_file_changes() {
    // No ACME here: an operator's PEM files, replaced on disk, are served
    // to new connections within seconds, without a restart.
    let world = common::World::new();
    let inst = world.start().await;
    let leaf = async || {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut world.ca_pem.as_slice()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(inst.https_addrs[0])
            .await
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
            .connect(
                rustls::pki_types::ServerName::try_from(common::SITE).unwrap(),
                tcp,
            )
            .await
            .unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    };
    let before = leaf().await;
    // Re-issue the site's certificate (new key) in place.
    let ca = p2pcdn::devca::DevCa::open_or_create(&world.path().join("tls")).unwrap();
    ca.issue(
        &world.path().join("tls"),
        common::SITE,
        &[common::SITE.to_string(), common::ZONE.to_string()],
    )
    .unwrap();
    let mut after = before.clone();
    let changed = eventually(15, async || {
        after = leaf().await;
        after != before
    })
    .await;
    assert!(changed, "the new PEM is served after the file changed");
    assert_ne!(public_key(&after), public_key(&before));
    inst.shutdown().await;
}
