//! `dist/p2pcdn.service`: the systemd unit operators install. Checked with
//! `systemd-analyze verify` (with this build's binary in place of
//! /usr/local/bin/p2pcdn) where systemd-analyze exists; its hardening is
//! checked as text everywhere.

use std::path::Path;
use std::process::Command;

const UNIT: &str = include_str!("../dist/p2pcdn.service");

#[test]
fn unit_is_hardened() {
    for line in [
        "DynamicUser=yes",
        "StateDirectory=p2pcdn",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ExecStart=/usr/local/bin/p2pcdn serve --config /etc/p2pcdn/p2pcdn.toml",
    ] {
        assert!(UNIT.lines().any(|l| l.trim() == line), "missing {line}");
    }
}

#[test]
fn unit_verifies_with_systemd_analyze() {
    let Ok(v) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    assert!(v.status.success());
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("p2pcdn.service");
    let bin = Path::new(env!("CARGO_BIN_EXE_p2pcdn"));
    std::fs::write(
        &unit,
        UNIT.replace("/usr/local/bin/p2pcdn", &bin.display().to_string()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    // verify prints nothing for a clean unit (warnings included).
    assert!(
        !text.to_lowercase().contains("p2pcdn.service"),
        "systemd-analyze verify complained:\n{text}"
    );
}
