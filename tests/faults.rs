//! Faults: a full disk, `kill -9` during publish, and a download interrupted
//! half way. Nothing partial is ever served, nothing already served is lost.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use p2pcdn::hash::BlobHash;
use p2pcdn::store::BlobStore;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_full_keeps_previous_version() {
    if !is_root() {
        eprintln!("not root: cannot mount a small tmpfs; skipping");
        return;
    }
    let w = World::new();
    let data = w.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&data)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("mount failed; skipping");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(data.clone());

    // v1: small, fits.
    let small = w.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    std::fs::write(small.join("index.html"), "v1").unwrap();
    w.publish(SITE, &small, Some(1)).unwrap();
    let inst = w.start().await;
    let c = https_client(&w, &inst);
    let get = async || {
        c.get(https_url(&inst, SITE, "/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert_eq!(get().await, "v1");

    // v2: 8 MiB does not fit in 6 MiB: a clear error, nothing half-written served.
    let big = w.path().join("big");
    std::fs::create_dir_all(&big).unwrap();
    std::fs::write(big.join("index.html"), "v2").unwrap();
    std::fs::write(
        big.join("huge.bin"),
        p2pcdn::demo::demo_bytes("huge", 8 << 20),
    )
    .unwrap();
    let err = w.publish(SITE, &big, Some(2)).unwrap_err().to_string();
    assert!(err.contains("No space left on device"), "{err}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get().await, "v1", "previous version keeps serving");
    assert_eq!(
        std::fs::read_dir(data.join("tmp")).unwrap().count(),
        0,
        "no temp files left behind"
    );
    // Space freed: the same publish succeeds.
    std::fs::remove_file(big.join("huge.bin")).unwrap();
    w.publish(SITE, &big, Some(2)).unwrap();
    assert!(eventually(5, async || get().await == "v2").await);
    inst.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_publish_then_recover() {
    let w = World::new();
    let d = w.path();
    w.owner.write_new(&d.join("owner.key")).unwrap();
    w.publish(SITE, &w.site_dir("before"), Some(5)).unwrap();
    let site = d.join("bigsite");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), "after").unwrap();
    for i in 0..6 {
        std::fs::write(
            site.join(format!("part{i}.bin")),
            p2pcdn::demo::demo_bytes(&format!("p{i}"), 32 << 20),
        )
        .unwrap();
    }
    let publish = |version: &str, stderr: Stdio| {
        Command::new(env!("CARGO_BIN_EXE_p2pcdn"))
            .args([
                "--log",
                "error",
                "publish",
                "--quiet",
                "--version",
                version,
                "--config",
            ])
            .arg(&w.config_path)
            .args(["--site", SITE, "--key"])
            .arg(d.join("owner.key"))
            .arg(&site)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap()
    };
    // Kill at several points of the publish.
    for delay in [30, 120, 300] {
        let mut child = publish("6", Stdio::null());
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
    }
    // Whatever was interrupted: the instance starts, serves the old version
    // (or the new one if a publish completed), and every blob it has verifies.
    let inst = w.start().await;
    let c = https_client(&w, &inst);
    let home = c
        .get(https_url(&inst, SITE, "/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        home == "<html><body>home before</body></html>" || home == "after",
        "{home}"
    );
    let store = BlobStore::open(&w.config().data_dir).unwrap();
    for shard in std::fs::read_dir(w.config().data_dir.join("blobs"))
        .unwrap()
        .flatten()
    {
        for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
            let h: BlobHash = f.file_name().to_str().unwrap().parse().unwrap();
            let bytes = std::fs::read(f.path()).unwrap();
            assert_eq!(BlobHash::of(&bytes), h, "no partial blob in blobs/");
            assert!(store.open_verified(&h, bytes.len() as u64).is_ok());
        }
    }
    // Publishing again completes and is served (version 7: on a fast
    // machine one of the killed version-6 publishes may have completed, and
    // the same version is then refused, as it must be).
    let out = publish("7", Stdio::piped()).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "publish after the kills: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        eventually(5, async || c
            .get(https_url(&inst, SITE, "/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            == "after")
        .await
    );
    inst.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn interrupted_download_resumes_and_verifies() {
    let w = World::new();
    w.publish(SITE, &w.site_dir("a"), None).unwrap();
    let inst = w.start().await;
    // The instance plays the peer that serves the blob; the client side is
    // the replicator's download function with its own store.
    let url = format!("https://{SITE}:{}", inst.https_addrs[0].port());
    let http = https_client(&w, &inst);
    let mirror_dir = w.path().join("mirror");
    let mirror = BlobStore::open(&mirror_dir).unwrap();
    let big = big_bytes();
    let h = BlobHash::of(&big);
    let size = big.len() as u64;

    // Half of the blob arrived before a crash: the download resumes from there.
    let half = big.len() / 2;
    let src = "the-peer";
    let mut w = mirror.partial(h, size, src).unwrap();
    w.append(&big[..half]).unwrap();
    drop(w);
    p2pcdn::federation::replicate::fetch_blob(&http, &mirror, &url, src, h, size)
        .await
        .unwrap();
    assert_eq!(std::fs::read(mirror.blob_path(&h)).unwrap(), big);
    assert!(!mirror.partial_path(&h).exists(), "partial file consumed");

    // A partial file with wrong bytes (torn write): the result fails
    // verification and nothing is committed.
    std::fs::remove_file(mirror.blob_path(&h)).unwrap();
    let mut wrong = big[..half].to_vec();
    wrong[10] ^= 1;
    let mut w = mirror.partial(h, size, src).unwrap();
    w.append(&wrong).unwrap();
    drop(w);
    let err = p2pcdn::federation::replicate::fetch_blob(&http, &mirror, &url, src, h, size)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("wrong bytes"), "{err}");
    assert!(!mirror.partial_path(&h).exists(), "bad partial discarded");
    assert!(!mirror.contains(&h, size), "nothing committed");
    // The next attempt starts over and succeeds.
    p2pcdn::federation::replicate::fetch_blob(&http, &mirror, &url, src, h, size)
        .await
        .unwrap();
    assert!(mirror.open_verified(&h, size).is_ok());

    // A partial written by another source is never resumed: it is
    // discarded and the download starts over from this source.
    std::fs::remove_file(mirror.blob_path(&h)).unwrap();
    let mut w = mirror.partial(h, size, "another-peer").unwrap();
    w.append(&big[..half]).unwrap();
    drop(w);
    p2pcdn::federation::replicate::fetch_blob(&http, &mirror, &url, src, h, size)
        .await
        .unwrap();
    assert!(mirror.open_verified(&h, size).is_ok());

    // A peer that claims a blob it does not have: a clear error, nothing stored.
    let missing = BlobHash::of(b"nobody has this");
    let err = p2pcdn::federation::replicate::fetch_blob(&http, &mirror, &url, src, missing, 15)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("404"), "{err}");
    assert!(!mirror.contains(&missing, 15));
    inst.shutdown().await;
}
