//! Gate and helpers for system tests (network namespaces, resolvers, port
//! 53): they skip, saying why, where they cannot run, unless
//! `P2PCDN_E2E=require` (CI, after installing every tool) makes that a
//! failure; `P2PCDN_E2E=skip` skips them outright.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// PATH with the sbin directories added (nsd, unbound, kresd and ip live there).
pub fn search_path() -> OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(PathBuf::from(d));
        }
    }
    std::env::join_paths(dirs).expect("PATH entries are joinable")
}

/// True when `name` is a file in one of `path`'s directories.
pub fn has_tool(path: &OsString, name: &str) -> bool {
    std::env::split_paths(path).any(|d| std::fs::metadata(d.join(name)).is_ok_and(|m| m.is_file()))
}

/// The effective user id (root: 0).
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether the system test `label` runs: false (after saying why) when
/// `P2PCDN_E2E=skip`, or when `missing` names a prerequisite that is not
/// there; panics instead in that case under `P2PCDN_E2E=require`.
pub fn should_run(label: &str, missing: impl FnOnce() -> Option<String>) -> bool {
    let mode = std::env::var("P2PCDN_E2E").unwrap_or_default();
    if mode == "skip" {
        eprintln!("{label}: skipped (P2PCDN_E2E=skip)");
        return false;
    }
    if let Some(why) = missing() {
        assert!(
            mode != "require",
            "{label}: P2PCDN_E2E=require, but it cannot run: {why}"
        );
        eprintln!("{label}: skipped: {why}");
        return false;
    }
    true
}
