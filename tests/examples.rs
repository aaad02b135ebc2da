//! `examples/federation/` as an operator runs it: `setup`, then five separate
//! `p2pcdn serve` processes; steering works, and one instance can be killed and
//! restarted.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{eventually, query};
use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};

const CITIES: [&str; 5] = ["frankfurt", "newyork", "singapore", "saopaulo", "sydney"];

/// Kills the processes it holds when dropped (also when the test fails).
struct Procs(Vec<Option<Child>>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn serve(root: &Path, city: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_p2pcdn"))
        .args(["--log", "warn", "serve", "--config"])
        .arg(root.join(format!("examples/federation/{city}.toml")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn first_answer(src: &str, server: &str) -> Option<IpAddr> {
    let q = query("www.demo.p2pcdn.test.", RecordType::A, None, None);
    let server: SocketAddr = format!("{server}:5300").parse().ok()?;
    let reply = common::udp_raw_from(
        src.parse().ok()?,
        server,
        &q.to_vec().ok()?,
        Duration::from_millis(500),
    )
    .await?;
    let m = Message::from_vec(&reply).ok()?;
    m.answers().iter().find_map(|r| match r.data() {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn five_processes_from_the_example_configs() {
    // Lay the example out in a scratch copy of the repository layout.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(root.join("examples/federation")).unwrap();
    std::fs::create_dir_all(root.join("src")).unwrap();
    for entry in std::fs::read_dir(repo.join("examples/federation"))
        .unwrap()
        .flatten()
    {
        if entry.path().is_file() {
            std::fs::copy(
                entry.path(),
                root.join("examples/federation").join(entry.file_name()),
            )
            .unwrap();
        }
    }
    for d in ["zones", "geodata", "src/demo_assets"] {
        std::os::unix::fs::symlink(repo.join(d), root.join(d)).unwrap();
    }
    let out = Command::new("bash")
        .arg(root.join("examples/federation/setup"))
        .env("P2PCDN", env!("CARGO_BIN_EXE_p2pcdn"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setup: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut procs = Procs(CITIES.iter().map(|c| Some(serve(root, c))).collect());
    let sg = "127.3.0.9";
    let up = eventually(60, async || {
        for auth in ["127.1.0.1", "127.2.0.1", "127.4.0.1", "127.5.0.1"] {
            if first_answer(sg, auth).await != Some("127.3.0.1".parse().unwrap()) {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        up,
        "replicated and every authority steers Singapore to Singapore"
    );

    // HTTPS from a mirror that got its copy by replication.
    let ca = std::fs::read(root.join("examples/federation/run/tls/ca.pem")).unwrap();
    let c = common::ca_client(
        &ca,
        &[("www.demo.p2pcdn.test", "127.5.0.1:8443".parse().unwrap())],
    )
    .build()
    .unwrap();
    let big = c
        .get("https://www.demo.p2pcdn.test:8443/files/big.bin")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let published = std::fs::read(root.join("examples/federation/run/site/files/big.bin")).unwrap();
    assert!(
        big.as_ref() == published.as_slice(),
        "byte-identical from Sydney"
    );

    // Kill Singapore (SIGKILL: no goodbye) and watch it leave the answers.
    if let Some(mut c) = procs.0[2].take() {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let gone = eventually(6, async || {
        first_answer(sg, "127.1.0.1")
            .await
            .is_some_and(|a| a != "127.3.0.1".parse::<IpAddr>().unwrap())
    })
    .await;
    assert!(gone, "dead mirror left the answers");
    procs.0[2] = Some(serve(root, "singapore"));
    let back = eventually(30, async || {
        first_answer(sg, "127.2.0.1").await == Some("127.3.0.1".parse().unwrap())
    })
    .await;
    assert!(back, "restarted instance is steered to again");

    // `p2pcdn status` at the origin shows four healthy peers (once its own
    // probes have seen the restarted instance twice).
    let status = || {
        let out = Command::new(env!("CARGO_BIN_EXE_p2pcdn"))
            .args(["status", "--config"])
            .arg(root.join("examples/federation/frankfurt.toml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let healthy = eventually(20, async || status().matches(" up ").count() == 4).await;
    let text = status();
    assert!(healthy, "four healthy peers:\n{text}");
    assert!(text.contains("ns3.demo.p2pcdn.test"), "{text}");
}
