//! Publishing and refusing content: tampered, forged, rolled-back and expired
//! manifests, wrong blobs, corrupt blobs on disk, restart on the same data dir,
//! and the CLI (`keygen`, `publish`, `check`, `demo`) as a user runs it.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common::*;
use p2pcdn::db::Db;
use p2pcdn::hash::BlobHash;
use p2pcdn::keys::SecretKey;
use p2pcdn::manifest::{self, ManifestError, SignedManifest};
use p2pcdn::publish::PublishError;
use p2pcdn::sites::{Imported, IngestError, Sites};
use p2pcdn::store::{BlobStore, StoreError};
use reqwest::StatusCode;

async fn home(c: &reqwest::Client, inst: &p2pcdn::instance::Instance) -> String {
    c.get(https_url(inst, SITE, "/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn import(w: &World, env: &[u8]) -> Result<Imported, IngestError> {
    let cfg = w.config();
    let db = Db::open(&cfg.data_dir.join("p2pcdn.db")).unwrap();
    let store = BlobStore::open(&cfg.data_dir).unwrap();
    Sites::new(&cfg.sites, std::sync::Arc::new(db), store, None)
        .offer(env, p2pcdn::catalog::unix_now())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_manifests_are_refused_and_old_version_keeps_serving() {
    let w = World::new();
    let v1 = w.publish(SITE, &w.site_dir("one"), Some(10)).unwrap();
    let inst = w.start().await;
    let c = https_client(&w, &inst);
    assert!(home(&c, &inst).await.contains("home one"));

    // Tampered bytes: flip the version inside the signed manifest.
    let mut env: SignedManifest = serde_json::from_slice(&v1.envelope).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&env.manifest)
        .unwrap();
    let text = String::from_utf8(raw)
        .unwrap()
        .replace("\"version\":10", "\"version\":11");
    env.manifest = base64::engine::general_purpose::STANDARD.encode(text);
    let tampered = serde_json::to_vec(&env).unwrap();
    assert!(matches!(
        import(&w, &tampered),
        Err(IngestError::Manifest(ManifestError::BadSignature))
    ));

    // Signed by someone else (claiming the owner's key, or with their own key).
    let mallory = SecretKey::generate().unwrap();
    let mut m = manifest::verify_signature(&v1.envelope, SITE, &w.owner.public())
        .unwrap()
        .manifest;
    m.version = 50;
    let forged = manifest::sign(&m, &mallory).unwrap();
    assert!(matches!(
        import(&w, &forged),
        Err(IngestError::Manifest(ManifestError::WrongKey { .. }))
    ));
    let mut e: SignedManifest = serde_json::from_slice(&forged).unwrap();
    e.key = w.owner.public();
    assert!(matches!(
        import(&w, &serde_json::to_vec(&e).unwrap()),
        Err(IngestError::Manifest(ManifestError::BadSignature))
    ));
    // Publishing with a key that is not the site's owner key.
    let err = p2pcdn::publish::publish(
        &w.config(),
        &mallory,
        &opts(SITE, &w.site_dir("evil"), Some(60)),
    )
    .unwrap_err();
    assert!(matches!(err, PublishError::NotOwner { .. }), "{err}");

    // Rollback: same or lower version.
    for v in [10, 9] {
        let err = w.publish(SITE, &w.site_dir("old"), Some(v)).unwrap_err();
        assert!(err.to_string().contains("rollback refused"), "{err}");
    }
    // Replaying the exact v1 envelope.
    assert!(matches!(
        import(&w, &v1.envelope),
        Err(IngestError::Manifest(ManifestError::NotNewer { .. }))
    ));

    // Expired.
    let mut o = opts(SITE, &w.site_dir("expired"), Some(70));
    o.now = Some(p2pcdn::catalog::unix_now() - 10 * 86400);
    let err = p2pcdn::publish::publish(&w.config(), &w.owner, &o).unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");

    // A manifest naming a blob nobody has: accepted as pending, not served.
    let mut m2 = m.clone();
    m2.version = 80;
    m2.expires = p2pcdn::catalog::unix_now() + 3600;
    m2.issued = p2pcdn::catalog::unix_now();
    if let Some(f) = m2.files.iter_mut().find(|f| f.path == "index.html") {
        f.blake3 = BlobHash::of(b"bytes that were never stored");
    }
    let pending = manifest::sign(&m2, &w.owner).unwrap();
    assert!(matches!(
        import(&w, &pending),
        Ok(Imported::Pending { version: 80, .. })
    ));

    // A blob whose bytes do not match its hash is never stored.
    let store = BlobStore::open(&w.config().data_dir).unwrap();
    let claimed = BlobHash::of(b"bytes that were never stored");
    let r = store.put_reader(claimed, 9, &b"evilbytes"[..]);
    assert!(matches!(r, Err(StoreError::HashMismatch { .. })));
    assert!(!store.contains(&claimed, 9));

    // After all that, the first version is still what is served.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(home(&c, &inst).await.contains("home one"));
    assert_eq!(inst.catalog.load().versions(), vec![(SITE.to_string(), 10)]);

    // A good newer version is picked up by the running server.
    w.publish(SITE, &w.site_dir("two"), Some(90)).unwrap();
    let ok = eventually(5, async || home(&c, &inst).await.contains("home two")).await;
    assert!(ok, "running instance switched to the new version");
    inst.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_blob_on_disk_is_never_served() {
    let w = World::new();
    w.publish(SITE, &w.site_dir("a"), None).unwrap();
    let inst = w.start().await;
    let c = https_client(&w, &inst);
    let url = https_url(&inst, SITE, "/files/big.bin");
    // Serve once so the blob is marked verified.
    assert_eq!(
        c.get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len(),
        BIG_LEN
    );

    let store = BlobStore::open(&w.config().data_dir).unwrap();
    let h = BlobHash::from(blake3::hash(&big_bytes()));
    let p = store.blob_path(&h);
    let mut bad = big_bytes();
    bad[1234] ^= 0x55;
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::write(&p, &bad).unwrap();

    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = r.bytes().await.unwrap();
    assert!(body.len() < 1000, "no blob bytes in the error");
    let r = c
        .get(&url)
        .header("range", "bytes=1000-2000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Other files are unaffected.
    assert!(home(&c, &inst).await.contains("home a"));
    inst.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_serves_same_site_without_republishing() {
    let w = World::new();
    let rep = w.publish(SITE, &w.site_dir("persist"), None).unwrap();
    let inst = w.start().await;
    let c = https_client(&w, &inst);
    assert!(home(&c, &inst).await.contains("home persist"));
    inst.shutdown().await;

    let inst = w.start().await;
    let c = https_client(&w, &inst);
    assert!(home(&c, &inst).await.contains("home persist"));
    assert_eq!(
        inst.catalog.load().versions(),
        vec![(SITE.to_string(), rep.version)]
    );
    let r = udp(
        inst.dns_addrs[0],
        &query("www.t.test.", hickory_proto::rr::RecordType::A, None, None),
    )
    .await;
    assert_eq!(
        r.answers()[0].data().to_string(),
        "127.0.0.1",
        "steered to this mirror (not the zone's fallback 192.0.2.1) after restart"
    );

    // Re-publishing unchanged files writes no new blobs.
    let again = w.publish(SITE, &w.site_dir("persist"), None).unwrap();
    assert_eq!(again.new_blobs, 0);
    assert!(again.version > rep.version);
    inst.shutdown().await;
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_p2pcdn"))
}

#[test]
fn cli_keygen_publish_check() {
    let w = World::new();
    let d = w.path();
    let out = bin()
        .args(["keygen", "--out"])
        .arg(d.join("k2.key"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let public = String::from_utf8(out.stdout).unwrap();
    assert!(public.trim().starts_with("ed25519:"), "{public}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("k2.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    // Refuses to overwrite a key.
    assert!(!bin()
        .args(["keygen", "--out"])
        .arg(d.join("k2.key"))
        .status()
        .unwrap()
        .success());

    w.owner.write_new(&d.join("owner.key")).unwrap();
    let site = w.site_dir("cli");
    let out = bin()
        .args(["publish", "--quiet", "--config"])
        .arg(&w.config_path)
        .args(["--site", SITE, "--key"])
        .arg(d.join("owner.key"))
        .arg("--out")
        .arg(d.join("signed.json"))
        .arg(&site)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("6 new blobs") && text.contains("complete, now served"),
        "{text}"
    );
    assert!(d.join("signed.json").exists());

    // Wrong key: clear error, non-zero exit.
    let out = bin()
        .args(["publish", "--config"])
        .arg(&w.config_path)
        .args(["--site", SITE, "--key"])
        .arg(d.join("k2.key"))
        .arg(&site)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not the owner key"));

    assert!(bin()
        .arg("check")
        .arg("--config")
        .arg(&w.config_path)
        .status()
        .unwrap()
        .success());
    // A bad config names the key and the line.
    let bad = d.join("bad.toml");
    std::fs::write(&bad, "[node]\nname = \"x.test\"\nkey = \"k\"\nbogus = 3\n").unwrap();
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bogus") && err.contains("line 4"), "{err}");
}

/// `check` catches what would fail at run time: a key that is not the
/// certificate's, in-zone name servers without glue, a site whose zone no
/// zone file serves (a warning: it may come owner-signed).
#[test]
fn cli_check_catches_mismatched_keys_missing_glue_and_unserved_zones() {
    let w = World::new();
    let d = w.path();
    let check = || {
        let out = bin()
            .arg("check")
            .arg("--config")
            .arg(&w.config_path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = check();
    assert!(ok && !text.contains("warning"), "{text}");
    // The site's key file holds another key.
    let tls = d.join("tls");
    let site_key = std::fs::read_dir(&tls)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy() == format!("{SITE}.key"))
        .expect("the site's key file");
    let saved = std::fs::read(&site_key).unwrap();
    let other = tls.join(format!("{}.key", common::SITE2));
    std::fs::copy(&other, &site_key).unwrap();
    let (ok, text) = check();
    assert!(!ok, "{text}");
    assert!(
        text.contains("does not match the certificate") && text.contains("tls_cert / tls_key"),
        "{text}"
    );
    std::fs::write(&site_key, saved).unwrap();
    // An in-zone NS without an address.
    let zone_path = d.join("zones").join(format!("{}.zone", common::ZONE));
    let zone = std::fs::read_to_string(&zone_path).unwrap();
    std::fs::write(&zone_path, format!("{zone}@ IN NS ns9\n")).unwrap();
    let (ok, text) = check();
    assert!(
        !ok && text.contains("ns9.t.test") && text.contains("glue"),
        "{text}"
    );
    // No zone file at all for the site's zone: a warning, not a failure.
    std::fs::remove_file(&zone_path).unwrap();
    let (ok, text) = check();
    assert!(ok, "{text}");
    assert!(
        text.contains("warning: site www.t.test: its zone t.test has no zone file"),
        "{text}"
    );
}

/// Runs `p2pcdn [global_args] serve` on the world's config and collects its
/// stderr lines until `enough` says so or `within` passes, then kills it.
fn serve_stderr(
    w: &World,
    global_args: &[&str],
    enough: impl Fn(&[String]) -> bool,
    within: Duration,
) -> Vec<String> {
    let mut child = bin()
        .args(global_args)
        .args(["serve", "--config"])
        .arg(&w.config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = vec![];
    let deadline = std::time::Instant::now() + within;
    while !enough(&lines) && std::time::Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

/// A configured peer that cannot be bound is reported with its root cause:
/// a WARN log line (once per distinct error) and `status`.
#[tokio::test(flavor = "multi_thread")]
async fn unbindable_configured_peer_is_warned_about_with_its_cause() {
    // Port 1 on loopback: nothing listens, the connection is refused.
    let w = World::with_extra(
        "[federation]\ngossip_interval_ms = 200\npeers = [{ url = \"https://peer.t.test:1\", address = \"127.0.0.1\" }]\n",
    );
    let inst = w.start().await;
    let fed = inst.federation.clone();
    let seen = common::eventually(10, async || {
        fed.unbound_bootstrap_peers().iter().any(|(u, e)| {
            u == "https://peer.t.test:1" && e.as_deref().is_some_and(|e| e.contains("refused"))
        })
    })
    .await;
    assert!(seen, "{:?}", fed.unbound_bootstrap_peers());
    inst.shutdown().await;

    // The same through the binary's log: one WARN naming the cause.
    // Six seconds of log: several retries, each failing the same way.
    let lines = serve_stderr(&w, &[], |_| false, Duration::from_secs(6));
    let warns: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("cannot bind configured peer"))
        .collect();
    assert_eq!(warns.len(), 1, "one WARN per distinct error: {lines:#?}");
    assert!(warns[0].contains("refused"), "the root cause: {}", warns[0]);
}

/// `--log-format json`: every log line is one JSON object.
#[test]
fn serve_logs_json_lines() {
    let w = World::new();
    let lines = serve_stderr(
        &w,
        &["--log-format", "json"],
        |l| l.len() >= 3,
        Duration::from_secs(20),
    );
    assert!(lines.len() >= 3, "{lines:?}");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string() && v["fields"].is_object(),
            "{l}"
        );
    }
}

/// Republishing keeps the owner-signed zone unless told otherwise, warns
/// when a mirror or the zone would be dropped, and names the mirrors.
#[test]
fn cli_republish_carries_the_zone_and_warns_about_drops() {
    let w = World::new();
    let d = w.path();
    w.owner.write_new(&d.join("owner.key")).unwrap();
    let friend = p2pcdn::keys::SecretKey::generate().unwrap().public();
    let zone_file = d.join("zones").join(format!("{}.zone", common::ZONE));
    let publish = |dir: &str, extra: &[&str]| {
        let site = w.site_dir(dir);
        let out = bin()
            .args(["publish", "--quiet", "--config"])
            .arg(&w.config_path)
            .args(["--site", SITE, "--key"])
            .arg(d.join("owner.key"))
            .arg("--out")
            .arg(d.join(format!("{dir}.json")))
            .args(extra)
            .arg(&site)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read(d.join(format!("{dir}.json"))).unwrap();
        let m = p2pcdn::manifest::peek_manifest(&env).unwrap();
        (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
            m,
        )
    };
    let friend_text = friend.to_string();
    let zf = zone_file.to_string_lossy().to_string();
    let (out, _, m1) = publish("v1", &["--zone-file", &zf, "--mirror", &friend_text]);
    assert!(m1.zone.is_some() && m1.mirrors.contains(&friend));
    assert!(
        out.contains("authorized mirrors (2): ns1.t.test (ed25519:"),
        "{out}"
    );
    assert!(out.contains(&friend_text), "{out}");
    // No --zone-file, no --mirror: the zone is carried, the friend's
    // removal is warned about.
    let (out, err, m2) = publish("v2", &[]);
    assert_eq!(m2.zone, m1.zone);
    assert!(out.contains("carried forward"), "{out}");
    assert!(!m2.mirrors.contains(&friend));
    assert!(
        err.contains(&format!(
            "warning: {friend_text} was authorized by the previous version"
        )),
        "{err}"
    );
    // --drop-zone drops it, with a warning.
    let (_, err, m3) = publish("v3", &["--drop-zone"]);
    assert!(m3.zone.is_none());
    assert!(err.contains("answer REFUSED for the whole zone"), "{err}");
    assert!(m3.version > m2.version && m2.version > m1.version);
}

/// `p2pcdn demo` on its documented addresses: DNS 127.1.0.1:5300, HTTPS :8443, HTTP :8080.
#[tokio::test(flavor = "multi_thread")]
async fn demo_runs_on_documented_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let stderr_path = dir.path().join("terminal-stderr.txt");
    let mut child = bin()
        .args(["demo", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let dns: std::net::SocketAddr = "127.1.0.1:5300".parse().unwrap();
    let demo_q = query(
        "www.demo.p2pcdn.test.",
        hickory_proto::rr::RecordType::A,
        None,
        None,
    )
    .to_vec()
    .unwrap();
    let up = eventually(120, async || {
        let from = [127, 0, 0, 1].into();
        udp_raw_from(from, dns, &demo_q, Duration::from_millis(300))
            .await
            .is_some()
    })
    .await;
    assert!(up, "demo DNS came up");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the demo process itself is serving (is another demo running on 127.1.0.1?)"
    );
    let r = udp(
        dns,
        &query(
            "www.demo.p2pcdn.test.",
            hickory_proto::rr::RecordType::A,
            None,
            None,
        ),
    )
    .await;
    assert!(r.authoritative());
    // Steered (a fallback answer would carry the short TTL, 5 s); the
    // mirrors are new, so the TTL ramps from 5 towards answer_ttl = 30.
    let ttl = r.answers()[0].ttl();
    assert!((5..=30).contains(&ttl), "steered TTL {ttl}");
    assert_eq!(r.answers().len(), 1, "one first choice: {:?}", r.answers());

    let ca = std::fs::read(dir.path().join("tls/ca.pem")).unwrap();
    let c = ca_client(
        &ca,
        &[("www.demo.p2pcdn.test", "127.1.0.1:8443".parse().unwrap())],
    )
    .build()
    .unwrap();
    let html = c
        .get("https://www.demo.p2pcdn.test:8443/")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Hello from p2pcdn"));
    let png = c
        .get("https://www.demo.p2pcdn.test:8443/img/logo.png")
        .send()
        .await
        .unwrap();
    assert_eq!(png.headers()["content-type"], "image/png");
    let big = c
        .head("https://www.demo.p2pcdn.test:8443/files/big.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        big.headers()["content-length"],
        (20 * 1024 * 1024).to_string().as_str()
    );
    let (code, _) = raw_http(
        "127.1.0.1:8080".parse().unwrap(),
        "GET /style.css HTTP/1.1\r\nHost: www.demo.p2pcdn.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200);

    // Wait for the walkthrough (printed once replication finished), then Ctrl-C.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut out = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !out.contains("Stop with Ctrl-C.") && std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    assert!(
        out.contains("Stop with Ctrl-C."),
        "walkthrough printed: {out}"
    );
    for city in ["frankfurt", "newyork", "singapore", "saopaulo", "sydney"] {
        assert!(
            out.contains(&format!("{city:<10} holds version")),
            "{city} replicated: {out}"
        );
    }
    assert!(
        out.contains("dig -b 127.3.0.9 @127.1.0.1 -p 5300 www.demo.p2pcdn.test"),
        "{out}"
    );
    assert!(out.contains("--cacert"), "{out}");
    // Steering as printed: a Singapore resolver gets Singapore first.
    let singapore_first = eventually(10, async || {
        let from = [127, 3, 0, 9].into();
        let Some(reply) = udp_raw_from(from, dns, &demo_q, Duration::from_secs(1)).await else {
            return false;
        };
        let m = hickory_proto::op::Message::from_vec(&reply).unwrap();
        m.answers()
            .first()
            .is_some_and(|r| r.data().to_string() == "127.3.0.1")
    })
    .await;
    assert!(singapore_first, "a Singapore resolver gets 127.3.0.1 first");

    #[cfg(unix)]
    unsafe {
        libc_kill(child.id() as i32, 2);
    }
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(
        status.success(),
        "Ctrl-C stops the demo cleanly: {status:?}"
    );
    // The terminal shows the demo's guide only; instance logs go to the
    // file it names.
    let log_path = dir.path().join("demo.log");
    assert!(
        out.contains(&log_path.display().to_string()),
        "the demo names its log file: {out}"
    );
    let is_log_line = |l: &str| {
        [" INFO ", " WARN ", " ERROR ", " DEBUG "]
            .iter()
            .any(|lvl| l.contains(lvl))
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        !out.lines().chain(stderr.lines()).any(is_log_line),
        "log lines on the terminal:\n{out}\n{stderr}"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.lines().filter(|l| is_log_line(l)).count() >= 5, "{log}");
}

#[cfg(unix)]
unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
