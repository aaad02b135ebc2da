//! A `p2pcdn serve` child process (for tests that signal it or read its
//! log) and a non-panicking DNS lookup for load loops.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use super::{eventually, query};

/// A `p2pcdn serve` child process, killed (by its pid) when dropped.
pub struct Served {
    pub child: Child,
    pub log: PathBuf,
}

impl Served {
    pub fn start(config: &Path, log: PathBuf) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_p2pcdn"))
            .args(["--log", "info", "serve", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start p2pcdn serve");
        Self { child, log }
    }

    pub fn hup(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on the pid of a child this test started and has
        // not reaped (it is still running: `Drop` reaps it).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `n` lines containing `needle`.
    pub async fn logged(&self, needle: &str, n: usize) -> bool {
        eventually(15, async || self.log().matches(needle).count() >= n).await
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The A addresses of `name` at `dns`, asked as from `client`'s /24 (ECS);
/// None when no answer came or the response code is not NOERROR.
pub async fn a_records(dns: SocketAddr, name: &str, client: Option<IpAddr>) -> Option<Vec<IpAddr>> {
    let q = query(name, RecordType::A, Some(1232), client.map(|c| (c, 24)));
    let bytes = super::udp_raw(dns, &q.to_vec().ok()?).await?;
    let r = Message::from_vec(&bytes).ok()?;
    if r.id() != q.id() || r.response_code() != ResponseCode::NoError {
        return None;
    }
    Some(
        r.answers()
            .iter()
            .filter_map(|rr| match rr.data() {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                _ => None,
            })
            .collect(),
    )
}
