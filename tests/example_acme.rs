//! `examples/acme/` as an operator runs it: `start` brings up pebble and
//! three instances that obtain their certificates through ACME DNS-01
//! answered by their own authorities, says `ready`, and Ctrl-C (SIGINT)
//! stops everything. Skipped where pebble or curl is missing.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SITE: &str = "www.demo.p2pcdn.test";

#[test]
fn acme_example_starts_gets_certificates_and_stops_on_ctrl_c() {
    if !(common::acme::has_pebble() && common::has_cmd("curl")) {
        eprintln!("pebble or curl not installed: skipping");
        return;
    }
    // A scratch copy of the example, laid out as in the repository.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ex = root.join("examples/acme");
    std::fs::create_dir_all(ex.join("zones")).unwrap();
    std::fs::create_dir_all(root.join("src")).unwrap();
    for f in [
        "start",
        "ns1.toml",
        "ns2.toml",
        "ns3.toml",
        "zones/demo.p2pcdn.test.zone",
    ] {
        std::fs::copy(repo.join("examples/acme").join(f), ex.join(f)).unwrap();
    }
    std::os::unix::fs::symlink(repo.join("src/demo_assets"), root.join("src/demo_assets")).unwrap();

    let t0 = Instant::now();
    let mut child = Command::new("bash")
        .arg(ex.join("start"))
        .env("P2PCDN", env!("CARGO_BIN_EXE_p2pcdn"))
        .env("P2PCDN_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut ready = false;
    let mut seen = vec![];
    while t0.elapsed() < Duration::from_secs(180) {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                ready |= line.contains("ready");
                seen.push(line);
                if ready {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let logs = || {
        ["ns1.log", "ns2.log", "ns3.log", "pebble.log"]
            .iter()
            .map(|f| std::fs::read_to_string(ex.join("run").join(f)).unwrap_or_default())
            .map(|t| t.lines().rev().take(15).collect::<Vec<_>>().join("\n"))
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    if !ready {
        let _ = child.kill();
        panic!("no ready line: {seen:?}\n{}", logs());
    }
    eprintln!("example ready after {:.1} s", t0.elapsed().as_secs_f64());
    let root_pem = ex.join("run/pebble-root.pem");
    assert!(root_pem.exists(), "pebble's root written");

    // Every mirror, verified with pebble's root only (curl, no -k).
    for n in 1..=3 {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&root_pem)
            .arg("--resolve")
            .arg(format!("{SITE}:8443:127.{n}.0.1"))
            .arg(format!("https://{SITE}:8443/"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mirror {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // `p2pcdn status` shows the certificates.
    let status = Command::new(env!("CARGO_BIN_EXE_p2pcdn"))
        .args(["status", "--config"])
        .arg(ex.join("ns1.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("cert acme, expires in"),
        "{text}\n{}",
        String::from_utf8_lossy(&status.stderr)
    );

    // Ctrl-C: the script stops pebble and the instances.
    let pids: Vec<i32> = std::fs::read_to_string(ex.join("run/pids"))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 4);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(child.try_wait().unwrap().is_some(), "start exits on SIGINT");
    for p in pids {
        let alive = unsafe { libc::kill(p, 0) } == 0;
        assert!(!alive, "process {p} stopped");
    }
}
