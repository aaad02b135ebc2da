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
