//! The "real world" end-to-end test: `tests/e2e/world.sh` builds the Internet
//! in miniature in network namespaces, dual stack: a test root (NSD) that
//! delegates the federation's zone with glue, an ACME CA (pebble, its
//! validator resolving through its own unbound), five instances answering on
//! port 53 (authoritative DNS + HTTPS mirror + federation agent), and in each
//! of five cities two client networks whose ISPs run unbound (ECS on) and
//! knot-resolver at their default settings, resolving iteratively from the
//! root. Every mirror gets its certificates from pebble by ACME DNS-01,
//! answered by the federation's own authorities; clients trust only pebble's
//! root. With dig, curl, openssl and headless Chromium it checks that every
//! mirror serves the site with its own pebble-issued certificate, that every
//! client is always steered to its city's mirror and no other (A and AAAA, 20
//! lookups per resolver), gets the published bytes over IPv4 and IPv6, fetches
//! again within the TTL its resolver held + 2 s after its mirror is killed, and
//! sees a new version without mixing versions; a partition heals.
//!
//! It needs root, working `ip netns`, and nsd, unbound, kresd, dig, curl,
//! chromium, certutil, python3, pebble and openssl. Without them the test is
//! skipped (it says why), unless `P2PCDN_E2E=require`, which turns a missing
//! prerequisite into a failure. `P2PCDN_E2E=skip` skips it explicitly.

mod common;

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::system::{self, effective_uid, has_tool, search_path};

/// Overall bound the script enforces on itself (it re-execs under timeout(1)).
const SCRIPT_BOUND_SECS: u64 = 270;
/// Our own bound on waiting for it, a little beyond the script's.
const WAIT_BOUND: Duration = Duration::from_secs(SCRIPT_BOUND_SECS + 30);

const TOOLS: [&str; 13] = [
    "ip", "nsd", "unbound", "kresd", "dig", "curl", "chromium", "certutil", "python3", "pebble",
    "openssl", "timeout", "flock",
];

/// Creates and deletes a throwaway namespace (named with the suite's prefix).
fn netns_usable(path: &OsString) -> Result<(), String> {
    let name = format!("p2pe-probe-{}", std::process::id());
    let run = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .env("PATH", path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
    };
    let add = run(&["netns", "add", &name]).map_err(|e| format!("ip: {e}"))?;
    if !add.status.success() {
        return Err(format!(
            "`ip netns add` failed: {}",
            String::from_utf8_lossy(&add.stderr).trim()
        ));
    }
    let del = run(&["netns", "del", &name]).map_err(|e| format!("ip: {e}"))?;
    if !del.status.success() {
        return Err(format!(
            "`ip netns del {name}` failed: {}",
            String::from_utf8_lossy(&del.stderr).trim()
        ));
    }
    Ok(())
}

/// Why the test cannot run here, if it cannot.
fn missing_prerequisite(path: &OsString) -> Option<String> {
    if effective_uid() != Some(0) {
        return Some("not root (network namespaces and ports 53/80/443 need it)".into());
    }
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| !has_tool(path, t))
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "missing tools: {} (Debian packages: nsd unbound knot-resolver bind9-dnsutils curl \
             chromium libnss3-tools iproute2 python3 pebble openssl)",
            missing.join(", ")
        ));
    }
    netns_usable(path)
        .err()
        .map(|e| format!("ip netns unusable: {e}"))
}

#[test]
fn real_world_federation_in_network_namespaces() {
    let path = search_path();
    if !system::should_run("e2e", || missing_prerequisite(&path)) {
        return;
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    let out_path = dir.path().join("world.out");
    let out = std::fs::File::create(&out_path).expect("output file");
    let err = out.try_clone().expect("output file");
    // Output goes to a file, not a pipe: nothing the script leaves behind can
    // keep us waiting for end-of-file.
    let mut child = Command::new("bash")
        .arg(root.join("tests/e2e/world.sh"))
        .current_dir(root)
        .env("PATH", &path)
        .env("P2PCDN", env!("CARGO_BIN_EXE_p2pcdn"))
        .env("P2PE_TIMEOUT", SCRIPT_BOUND_SECS.to_string())
        .env_remove("P2PE_BOUNDED")
        .env_remove("P2PE_KEEP")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("run bash tests/e2e/world.sh");

    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for world.sh") {
            break Some(s);
        }
        if started.elapsed() > WAIT_BOUND {
            // timeout(1) is the child: TERM makes it stop the script, which cleans up.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(40) {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!("{output}");
    let elapsed = started.elapsed().as_secs();
    let summary = output
        .lines()
        .rev()
        .find(|l| l.ends_with(" failed") && l.contains(" passed, "))
        .unwrap_or("(no summary line)");
    let status = status.unwrap_or_else(|| panic!("e2e: world.sh still running after {elapsed} s"));
    assert!(
        status.success(),
        "e2e: world.sh failed ({status}) after {elapsed} s: {summary}"
    );
    assert!(
        summary.ends_with(" 0 failed"),
        "e2e: unexpected summary: {summary}"
    );
    eprintln!("e2e: {summary} in {elapsed} s");
}
