//! Remote publish over real HTTPS: `publish --to` and `resign --to` run as
//! the CLI binary against a running instance, resumption after a killed
//! upload, refused uploads, and expiry warnings.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use p2pcdn::hash::BlobHash;
use p2pcdn::instance::Instance;
use p2pcdn::keys::SecretKey;
use p2pcdn::manifest::{self, FileEntry, Manifest, FORMAT};

fn key_file(w: &World) -> PathBuf {
    let p = w.path().join("owner.key");
    if !p.exists() {
        w.owner.write_new(&p).unwrap();
    }
    p
}

fn remote_args(w: &World, inst: &Instance) -> Vec<String> {
    let port = inst.https_addrs[0].port();
    vec![
        "--to".into(),
        format!("https://{SITE}:{port}"),
        "--connect".into(),
        inst.https_addrs[0].to_string(),
        "--ca-file".into(),
        w.path().join("tls/ca.pem").display().to_string(),
        "--key".into(),
        key_file(w).display().to_string(),
        "--site".into(),
        SITE.into(),
    ]
}

fn cli(args: &[String]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_p2pcdn"));
    c.args(args).kill_on_drop(true);
    c
}

async fn run(args: Vec<String>) -> (bool, String, String) {
    let o = cli(&args).output().await.unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

async fn publish_to(w: &World, inst: &Instance, dir: &Path, extra: &[&str]) -> String {
    let mut a = vec!["publish".to_string()];
    a.extend(remote_args(w, inst));
    a.extend(extra.iter().map(|s| s.to_string()));
    a.push("--quiet".into());
    a.push(dir.display().to_string());
    let (ok, out, err) = run(a).await;
    assert!(ok, "publish failed:\n{out}\n{err}");
    out
}

async fn home(c: &reqwest::Client, inst: &Instance) -> String {
    c.get(https_url(inst, SITE, "/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn blob_stored(w: &World, h: &BlobHash) -> bool {
    let hex = h.to_hex();
    w.path()
        .join("data/blobs")
        .join(&hex[..2])
        .join(hex)
        .exists()
}

fn upload_url(inst: &Instance, rest: &str) -> String {
    https_url(
        inst,
        SITE,
        &format!("/.well-known/p2pcdn/v1/upload/{SITE}{rest}"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_publish_uploads_only_what_is_missing_and_resumes() {
    let w = World::new();
    let inst = w.start().await;
    let c = https_client(&w, &inst);

    let out = publish_to(&w, &inst, &w.site_dir("one"), &[]).await;
    assert!(out.contains("uploaded 6 of 6 blobs"), "{out}");
    assert!(out.contains("complete, now served"), "{out}");
    assert!(eventually(5, async || home(&c, &inst).await.contains("home one")).await);

    // Only the two changed files travel.
    let out = publish_to(&w, &inst, &w.site_dir("two"), &[]).await;
    assert!(out.contains("uploaded 2 of 6 blobs"), "{out}");
    assert!(eventually(5, async || home(&c, &inst).await.contains("home two")).await);

    // Interrupted: a slow upload is killed while the big blob is on its way.
    let three = w.site_dir("three");
    std::fs::write(
        three.join("files/big.bin"),
        p2pcdn::demo::demo_bytes("other big", BIG_LEN),
    )
    .unwrap();
    let mut a = vec!["publish".to_string()];
    a.extend(remote_args(&w, &inst));
    a.extend(["--quiet", "--max-rate", "300000"].map(String::from));
    a.push(three.display().to_string());
    let mut child = cli(&a).spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "slow upload ended early"
    );
    child.kill().await.unwrap();
    let _ = child.wait().await;
    // The small changed blobs arrived; the version is not served yet.
    let idx = BlobHash::of(b"<html><body>home three</body></html>");
    assert!(blob_stored(&w, &idx));
    assert!(home(&c, &inst).await.contains("home two"));
    // The instance kept the big blob's first bytes, and the next run sends
    // only the rest of it.
    let big_hash = BlobHash::of(&p2pcdn::demo::demo_bytes("other big", BIG_LEN));
    let store = p2pcdn::store::BlobStore::open(&w.config().data_dir).unwrap();
    let kept = std::fs::metadata(store.partial_path(&big_hash))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(
        kept > 100_000 && kept < BIG_LEN as u64,
        "kept {kept} bytes of the interrupted blob"
    );
    let out = publish_to(&w, &inst, &three, &[]).await;
    assert!(out.contains("uploaded 1 of 6 blobs"), "{out}");
    let sent = BIG_LEN as u64 - kept;
    assert!(
        out.contains(&format!("({sent} bytes; {kept} more kept by the instance")),
        "only the {sent} missing bytes were sent: {out}"
    );
    assert!(eventually(5, async || home(&c, &inst).await.contains("home three")).await);
    let big = c
        .get(https_url(&inst, SITE, "/files/big.bin"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        &big[..],
        &p2pcdn::demo::demo_bytes("other big", BIG_LEN)[..]
    );
    inst.shutdown().await;
}

fn one_file_manifest(version: u64, data: &[u8]) -> Manifest {
    let now = p2pcdn::catalog::unix_now();
    Manifest {
        format: FORMAT,
        site: SITE.into(),
        version,
        issued: now,
        expires: now + 86400,
        default_document: "index.html".into(),
        cache_ttl: 60,
        mirrors: vec![],
        files: vec![FileEntry {
            path: "index.html".into(),
            blake3: BlobHash::of(data),
            size: data.len() as u64,
            content_type: "text/html; charset=utf-8".into(),
            headers: Default::default(),
        }],
        zone: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_without_the_owner_key_or_with_bad_bytes_are_refused() {
    let w = World::new();
    let inst = w.start().await;
    let c = https_client(&w, &inst);
    let data = b"<html>remote upload ok</html>".repeat(100);
    let hash = BlobHash::of(&data);
    let blob_url = upload_url(&inst, &format!("/blob/{hash}"));

    // No verified manifest: no blob is accepted.
    let r = c.put(&blob_url).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("POST the owner-signed manifest first"));
    assert!(!blob_stored(&w, &hash));

    // Signed by a key that is not the pinned owner key.
    let mallory = SecretKey::generate().unwrap();
    let forged = manifest::sign(&one_file_manifest(100, &data), &mallory).unwrap();
    let r = c
        .post(upload_url(&inst, ""))
        .body(forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("owner key"));
    let r = c.put(&blob_url).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), 403);

    // The owner's manifest opens the upload.
    let env = manifest::sign(&one_file_manifest(100, &data), &w.owner).unwrap();
    let r = c
        .post(upload_url(&inst, ""))
        .body(env)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let st: serde_json::Value = r.json().await.unwrap();
    assert_eq!(st["missing"][0]["blake3"], hash.to_string());

    // Tampered (same length, other bytes), truncated, oversized: refused, nothing stored.
    let mut tampered = data.clone();
    tampered[5] ^= 1;
    let r = c.put(&blob_url).body(tampered).send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("hash"));
    let r = c
        .put(&blob_url)
        .body(data[..data.len() - 10].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("truncated"));
    let mut big = data.clone();
    big.extend_from_slice(b"extra");
    let r = c.put(&blob_url).body(big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("larger than"));
    // Oversized without a length up front: cut off while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(data.clone()), Ok(b"more".to_vec())];
    let r = c
        .put(&blob_url)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(!blob_stored(&w, &hash));
    // A resume that is not the rest of the blob, or starts where nothing
    // was kept: refused, nothing stored.
    let n = data.len();
    for (range, status, says) in [
        (format!("bytes 7-{}/{}", n - 2, n), 400, "Content-Range"),
        (format!("bytes 7-{}/{}", n - 1, n + 1), 400, "Content-Range"),
        (format!("bytes 7-{}/{n}", n - 1), 409, "holds 0 bytes"),
    ] {
        let r = c
            .put(&blob_url)
            .header("content-range", &range)
            .body(data[7..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{range}");
        assert!(r.text().await.unwrap().contains(says), "{range}");
    }
    assert!(!blob_stored(&w, &hash));

    // The right bytes complete the version.
    let r = c.put(&blob_url).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let st: serde_json::Value = r.json().await.unwrap();
    assert_eq!(st["complete"], true);
    assert!(blob_stored(&w, &hash));
    assert!(
        eventually(5, async || home(&c, &inst)
            .await
            .contains("remote upload ok"))
        .await
    );

    // Rollback: an older version, though owner-signed, is refused.
    let old = manifest::sign(&one_file_manifest(50, &data), &w.owner).unwrap();
    let r = c
        .post(upload_url(&inst, ""))
        .body(old)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("rollback"));

    // A site this instance does not carry.
    let r = c
        .get(https_url(
            &inst,
            SITE,
            "/.well-known/p2pcdn/v1/upload/nope.example",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    inst.shutdown().await;
}

fn current(info: &serde_json::Value) -> Manifest {
    use base64::Engine;
    let env = base64::engine::general_purpose::STANDARD
        .decode(info["current"].as_str().unwrap())
        .unwrap();
    manifest::peek_manifest(&env).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn short_validity_warns_and_resign_extends_without_upload() {
    let w = World::new();
    let inst = w.start().await;
    let c = https_client(&w, &inst);
    publish_to(&w, &inst, &w.site_dir("one"), &["--validity-days", "3"]).await;
    let status = |c: reqwest::Client, inst_url: String| async move {
        c.get(inst_url)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let status_url = https_url(&inst, SITE, "/.well-known/p2pcdn/v1/status");
    let site_status = |v: &serde_json::Value| {
        v["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["site"] == SITE)
            .cloned()
            .unwrap()
    };
    assert!(
        eventually(5, async || {
            site_status(&status(c.clone(), status_url.clone()).await)["expiry_warning"] == true
        })
        .await
    );
    let s = site_status(&status(c.clone(), status_url.clone()).await);
    let left = s["expires_in_s"].as_i64().unwrap();
    assert!(left > 2 * 86400 && left <= 3 * 86400, "{s}");
    let metrics = inst.federation.metrics.clone();
    assert!(
        eventually(5, async || metrics.render().contains(&format!(
            "p2pcdn_manifest_expiry_seconds{{site=\"{SITE}\"}} 2"
        )))
        .await,
        "{}",
        metrics.render()
    );

    let info_url = upload_url(&inst, "");
    let before = current(&c.get(&info_url).send().await.unwrap().json().await.unwrap());
    let mut a = vec!["resign".to_string()];
    a.extend(remote_args(&w, &inst));
    a.extend(["--validity-days", "30"].map(String::from));
    let (ok, out, err) = run(a).await;
    assert!(ok, "resign failed:\n{out}\n{err}");
    assert!(out.contains("uploaded 0 of 6 blobs"), "{out}");
    let after = current(&c.get(&info_url).send().await.unwrap().json().await.unwrap());
    assert!(after.version > before.version);
    assert!(after.expires > before.expires + 20 * 86400);
    assert_eq!(after.files, before.files);
    assert!(
        eventually(5, async || {
            let s = site_status(&status(c.clone(), status_url.clone()).await);
            s["serving"] == after.version && s["expiry_warning"] == false
        })
        .await
    );
    assert!(home(&c, &inst).await.contains("home one"));
    inst.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_key_rotation_the_new_key_publishes_over_the_old_keys_version() {
    let w = World::new();
    let inst = w.start().await;
    publish_to(&w, &inst, &w.site_dir("one"), &[]).await;
    inst.shutdown().await;
    // The owner made a new key; the operator pins it instead of the old one.
    let new = SecretKey::generate().unwrap();
    let new_key = w.path().join("owner2.key");
    new.write_new(&new_key).unwrap();
    let cfg = std::fs::read_to_string(&w.config_path)
        .unwrap()
        .replace(&w.owner.public().to_string(), &new.public().to_string());
    std::fs::write(&w.config_path, cfg).unwrap();
    let inst = w.start().await;
    let c = https_client(&w, &inst);

    let mut a = vec!["publish".to_string()];
    a.extend(remote_args(&w, &inst));
    let k = a.iter().position(|s| s == "--key").unwrap() + 1;
    a[k] = new_key.display().to_string();
    a.push("--quiet".into());
    a.push(w.site_dir("two").display().to_string());
    let (ok, out, err) = run(a).await;
    assert!(ok, "publish with the new key failed:\n{out}\n{err}");
    assert!(err.contains("key rotation"), "{err}");
    assert!(out.contains("complete, now served"), "{out}");
    assert!(eventually(5, async || home(&c, &inst).await.contains("home two")).await);
    inst.shutdown().await;
}
