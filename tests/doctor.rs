//! `p2pcdn doctor` against a real delegation, on loopback (127.77.0.0/24):
//!
//! - an NSD test root on 127.77.0.99 (serving "." as a.root.) and
//!   127.77.0.98 (serving "example." as a.nic.example.), and a second NSD
//!   on 127.77.0.97 (b.nic.example.), which delegate doctor.example to
//!   ns1..ns3 with glue;
//! - three real instances (`p2pcdn serve`), ns1..ns3.doctor.example on
//!   127.77.0.1..3: DNS on port 53, HTTPS on 443, peers of each other;
//! - unbound on 127.77.0.53:53 at its default settings, resolving
//!   iteratively from the test root (settings describing the test network
//!   only: addresses, who may ask, loopback authorities, root hints).
//!
//! `doctor --config m1.toml --resolver 127.77.0.53:53` must exit 0 with every
//! line ok; after a.nic is changed to list only ns1 and ns2, with ns2's glue
//! pointing at 127.77.0.50 (b.nic keeps the correct delegation), and m1's
//! zone file gains an NS the running authorities do not serve, it must exit
//! non-zero with FAIL lines naming the wrong glue and the missing NS at
//! a.nic, the parent servers' disagreement, and the resolver's NS set
//! against the zone file, with their fixes.
//!
//! Needs root (ports 53/443), nsd and unbound. Without them the test is
//! skipped (it says why), unless `P2PCDN_E2E=require`, which turns a missing
//! prerequisite into a failure; `P2PCDN_E2E=skip` skips it explicitly.

mod common;

use std::ffi::OsString;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::system::{self, effective_uid, has_tool, search_path};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use p2pcdn::devca::DevCa;
use p2pcdn::keys::SecretKey;

const NET: &str = "127.77.0";
const ZONE: &str = "doctor.example";
const WWW: &str = "www.doctor.example";
const RESOLVER: &str = "127.77.0.53";
/// Bound on each doctor run.
const DOCTOR_BOUND: Duration = Duration::from_secs(60);

/// Why the test cannot run here, if it cannot.
fn missing_prerequisite(path: &OsString) -> Option<String> {
    if effective_uid() != Some(0) {
        return Some("not root (NSD, unbound and the instances listen on port 53)".into());
    }
    let missing: Vec<&str> = ["nsd", "unbound"]
        .into_iter()
        .filter(|t| !has_tool(path, t))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "missing tools: {} (Debian packages: nsd unbound)",
            missing.join(", ")
        )
    })
}

/// Background processes, ended (TERM, then KILL) on drop.
struct Procs {
    list: Vec<(String, Child)>,
    logs: PathBuf,
}

impl Procs {
    fn start(&mut self, name: &str, cmd: &mut Command) {
        let log = std::fs::File::create(self.logs.join(format!("{name}.log"))).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.list.push((name.to_string(), child));
    }

    fn stop(&mut self, name: &str) {
        if let Some(i) = self.list.iter().position(|(n, _)| n == name) {
            let (_, child) = self.list.remove(i);
            end(child);
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs.join(format!("{name}.log"))).unwrap_or_default()
    }
}

fn end(mut child: Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on the pid of a child we started and have not reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in self.list.drain(..) {
            end(c);
        }
    }
}

/// One question (RD as given) to `server`; the response, if any within 1 s.
fn ask(server: &str, name: &str, t: RecordType, rd: bool) -> Option<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let mut q = Message::new();
    q.set_id(4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(rd)
        .add_query(Query::query(Name::from_ascii(name).ok()?, t));
    let addr: SocketAddr = format!("{server}:53").parse().ok()?;
    sock.send_to(&q.to_vec().ok()?, addr).ok()?;
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

fn answers(server: &str, name: &str, t: RecordType, rd: bool) -> bool {
    ask(server, name, t, rd)
        .is_some_and(|m| m.response_code() == ResponseCode::NoError && !m.answers().is_empty())
}

fn wait_until(what: &str, bound: Duration, procs: &Procs, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < bound {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs: String = procs
        .list
        .iter()
        .map(|(n, _)| format!("---- {n}\n{}\n", procs.log(n)))
        .collect();
    panic!("doctor e2e: {what} not within {bound:?}\n{logs}");
}

fn root_zone() -> String {
    format!(
        "$TTL 86400\n\
         . IN SOA a.root. hostmaster.root. ( 2026113001 1800 900 604800 86400 )\n\
         . IN NS a.root.\n\
         a.root. IN A {NET}.99\n\
         example. 172800 IN NS a.nic.example.\n\
         example. 172800 IN NS b.nic.example.\n\
         a.nic.example. 172800 IN A {NET}.98\n\
         b.nic.example. 172800 IN A {NET}.97\n"
    )
}

/// The "example." TLD, delegating doctor.example to `ns` (name, glue).
fn tld_zone(ns: &[(&str, &str)]) -> String {
    let mut z = format!(
        "$TTL 86400\n\
         example. IN SOA a.nic.example. hostmaster.nic.example. ( 2026113001 1800 900 604800 3600 )\n\
         example. IN NS a.nic.example.\n\
         example. IN NS b.nic.example.\n\
         a.nic.example. IN A {NET}.98\n\
         b.nic.example. IN A {NET}.97\n"
    );
    for (n, a) in ns {
        z.push_str(&format!("{ZONE}. 3600 IN NS {n}.{ZONE}.\n"));
        z.push_str(&format!("{n}.{ZONE}. 3600 IN A {a}\n"));
    }
    z
}

/// The first NSD: the root and the TLD's a.nic (`tld2` instead: only the
/// TLD's second server, b.nic).
fn nsd_conf(d: &Path, tld2: bool) -> String {
    let addrs = if tld2 {
        format!("\x20   ip-address: {NET}.97\n")
    } else {
        format!("\x20   ip-address: {NET}.99\n\x20   ip-address: {NET}.98\n")
    };
    let root = if tld2 {
        ""
    } else {
        "zone:\n\x20   name: \".\"\n\x20   zonefile: \"root.zone\"\n"
    };
    let d = d.display();
    format!(
        "server:\n\
         {addrs}\
         \x20   port: 53\n\
         \x20   username: \"\"\n\
         \x20   chroot: \"\"\n\
         \x20   zonesdir: \"{d}\"\n\
         \x20   database: \"\"\n\
         \x20   zonelistfile: \"{d}/zone.list\"\n\
         \x20   xfrdfile: \"{d}/xfrd.state\"\n\
         \x20   xfrdir: \"{d}\"\n\
         \x20   pidfile: \"{d}/nsd.pid\"\n\
         remote-control:\n\
         \x20   control-enable: no\n\
         {root}\
         zone:\n\
         \x20   name: \"example.\"\n\
         \x20   zonefile: \"example.zone\"\n"
    )
}

/// unbound at its defaults; every line describes the test network or this machine.
fn unbound_conf(d: &Path) -> String {
    let d = d.display();
    format!(
        "server:\n\
         \x20   username: \"\"\n\
         \x20   chroot: \"\"\n\
         \x20   directory: \"{d}\"\n\
         \x20   pidfile: \"{d}/unbound.pid\"\n\
         \x20   use-syslog: no\n\
         \x20   logfile: \"\"\n\
         \x20   interface: {RESOLVER}\n\
         \x20   outgoing-interface: {RESOLVER}\n\
         \x20   access-control: 127.0.0.0/8 allow\n\
         \x20   do-not-query-localhost: no\n\
         \x20   root-hints: \"{d}/root.hints\"\n\
         remote-control:\n\
         \x20   control-enable: no\n"
    )
}

fn instance_conf(i: u8, owner: &str) -> String {
    let peers: String = (1..=3u8)
        .filter(|j| *j != i)
        .map(|j| format!("    {{ url = \"https://ns{j}.{ZONE}\", address = \"{NET}.{j}\" }},\n"))
        .collect();
    format!(
        "data_dir = \"m{i}\"\n\
         zones_dir = \"zones\"\n\
         geodata = \"geo.mmdb\"\n\
         [node]\n\
         name = \"ns{i}.{ZONE}\"\n\
         key = \"m{i}.key\"\n\
         addresses = [\"{NET}.{i}\"]\n\
         [dns]\n\
         listen = [\"{NET}.{i}:53\"]\n\
         [http]\n\
         listen = []\n\
         [https]\n\
         listen = [\"{NET}.{i}:443\"]\n\
         cert = \"tls/m{i}.pem\"\n\
         key = \"tls/m{i}.key\"\n\
         [federation]\n\
         ca_file = \"tls/ca.pem\"\n\
         webpki_roots = false\n\
         peers = [\n{peers}]\n\
         [[site]]\n\
         hostname = \"{WWW}\"\n\
         zone = \"{ZONE}\"\n\
         owner_key = \"{owner}\"\n\
         tls_cert = \"tls/m{i}.pem\"\n\
         tls_key = \"tls/m{i}.key\"\n"
    )
}

/// The test geodata with its metadata's build_epoch set to now (same
/// encoded length), so that its age is fresh whenever the test runs.
fn fresh_geodata(dst: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("geodata/test/steering-test-city.mmdb");
    let mut b = std::fs::read(src).unwrap();
    let key = b"build_epoch";
    let at = b
        .windows(key.len())
        .rposition(|w| w == key)
        .expect("build_epoch in metadata")
        + key.len();
    // Control byte: type uint64 is extended (type 0, then 9 - 7), size in the low 5 bits.
    let size = usize::from(b[at] & 0x1f);
    assert_eq!((b[at] >> 5, b[at + 1]), (0, 2), "build_epoch is a uint64");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_be_bytes();
    b[at + 2..at + 2 + size].copy_from_slice(&now[8 - size..]);
    std::fs::write(dst, b).unwrap();
}

fn zone_file() -> String {
    let mut z =
        "$TTL 300\n@ IN SOA ns1 hostmaster ( 2026113001 3600 600 1209600 60 )\n".to_string();
    for i in 1..=3 {
        z.push_str(&format!("@ IN NS ns{i}\nns{i} IN A {NET}.{i}\n"));
    }
    z.push_str(&format!("www IN A {NET}.1 ; fallback\n"));
    z
}

/// Runs the doctor (bounded); its output and exit status.
fn doctor(dir: &Path, path: &OsString) -> Output {
    let out_path = dir.join("doctor.out");
    let err_path = dir.join("doctor.err");
    let mut child = Command::new(env!("CARGO_BIN_EXE_p2pcdn"))
        .args([
            "--log",
            "warn",
            "doctor",
            "--config",
            "m1.toml",
            "--resolver",
        ])
        .arg(format!("{RESOLVER}:53"))
        .current_dir(dir)
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("run p2pcdn doctor");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > DOCTOR_BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "doctor still running after {DOCTOR_BOUND:?}; output so far:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("doctor took {:.1} s", t.elapsed().as_secs_f64());
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    }
}

#[test]
fn doctor_finds_wrong_glue_and_a_missing_ns() {
    let path = search_path();
    if !system::should_run("doctor e2e", || missing_prerequisite(&path)) {
        return;
    }

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for d in ["root", "tld2", "unbound", "zones", "log"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let mut procs = Procs {
        list: vec![],
        logs: dir.join("log"),
    };

    // The test root and TLD, delegating the zone correctly.
    let root = dir.join("root");
    std::fs::write(root.join("root.zone"), root_zone()).unwrap();
    let good = [
        ("ns1", "127.77.0.1"),
        ("ns2", "127.77.0.2"),
        ("ns3", "127.77.0.3"),
    ];
    std::fs::write(root.join("example.zone"), tld_zone(&good)).unwrap();
    std::fs::write(root.join("nsd.conf"), nsd_conf(&root, false)).unwrap();
    let nsd = |procs: &mut Procs| {
        procs.start(
            "nsd",
            Command::new("nsd")
                .env("PATH", &path)
                .args(["-d", "-c"])
                .arg(root.join("nsd.conf")),
        )
    };
    nsd(&mut procs);
    // The TLD's second server, b.nic, on its own: it keeps the correct
    // delegation when a.nic's goes wrong.
    let tld2 = dir.join("tld2");
    std::fs::write(tld2.join("example.zone"), tld_zone(&good)).unwrap();
    std::fs::write(tld2.join("nsd.conf"), nsd_conf(&tld2, true)).unwrap();
    procs.start(
        "nsd-b",
        Command::new("nsd")
            .env("PATH", &path)
            .args(["-d", "-c"])
            .arg(tld2.join("nsd.conf")),
    );

    // Three instances, the zone's authorities.
    fresh_geodata(&dir.join("geo.mmdb"));
    let owner = SecretKey::generate().unwrap().public().to_string();
    let ca = DevCa::open_or_create(&dir.join("tls")).unwrap();
    std::fs::write(dir.join("zones").join(format!("{ZONE}.zone")), zone_file()).unwrap();
    for i in 1..=3u8 {
        ca.issue(
            &dir.join("tls"),
            &format!("m{i}"),
            &[format!("ns{i}.{ZONE}"), WWW.to_string()],
        )
        .unwrap();
        SecretKey::generate()
            .unwrap()
            .write_new(&dir.join(format!("m{i}.key")))
            .unwrap();
        std::fs::write(dir.join(format!("m{i}.toml")), instance_conf(i, &owner)).unwrap();
        procs.start(
            &format!("m{i}"),
            Command::new(env!("CARGO_BIN_EXE_p2pcdn"))
                .args(["--log", "warn", "serve", "--config"])
                .arg(format!("m{i}.toml"))
                .current_dir(dir)
                .env("NO_COLOR", "1"),
        );
    }

    // The resolver.
    let ub = dir.join("unbound");
    std::fs::write(
        ub.join("root.hints"),
        format!(". 3600000 IN NS a.root.\na.root. 3600000 IN A {NET}.99\n"),
    )
    .unwrap();
    std::fs::write(ub.join("unbound.conf"), unbound_conf(&ub)).unwrap();
    procs.start(
        "unbound",
        Command::new("unbound")
            .env("PATH", &path)
            .args(["-d", "-c"])
            .arg(ub.join("unbound.conf")),
    );

    let bound = Duration::from_secs(30);
    wait_until("NSD answers the test root and TLD", bound, &procs, || {
        answers("127.77.0.99", ".", RecordType::SOA, false)
            && answers("127.77.0.98", "example.", RecordType::SOA, false)
            && answers("127.77.0.97", "example.", RecordType::SOA, false)
    });
    for i in 1..=3 {
        wait_until(&format!("instance {i} answers DNS"), bound, &procs, || {
            answers(
                &format!("{NET}.{i}"),
                "doctor.example.",
                RecordType::SOA,
                false,
            )
        });
    }
    wait_until("unbound resolves www.doctor.example", bound, &procs, || {
        answers(RESOLVER, "www.doctor.example.", RecordType::A, true)
    });

    // 1. A correct delegation: exit 0, every line ok.
    let out = doctor(dir, &path);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "---- doctor, correct delegation:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "doctor failed on a correct delegation"
    );
    let lines: Vec<&str> = text.lines().collect();
    for want in [
        "delegation",
        "serial",
        "steering",
        "certificate",
        "clock",
        "geodata",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("ok   {want} "))),
            "no ok line for {want}"
        );
    }
    assert!(
        lines.iter().all(|l| l.starts_with("ok ")),
        "a line is not ok"
    );
    // www at ns1 (fallback), ns1 as node, two peers' clocks.
    assert_eq!(
        lines.iter().filter(|l| l.contains("certificate")).count(),
        2
    );
    assert_eq!(lines.iter().filter(|l| l.contains(" clock ")).count(), 2);

    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ok   delegation ")
                && l.contains("answers the zone file's NS set")),
        "no ok line for the resolver's NS set"
    );

    // 2. Broken at the parent's a.nic (b.nic stays correct): only ns1 and
    // ns2 listed, ns2's glue wrong. And m1's zone file gains an NS the
    // running authorities do not serve.
    procs.stop("nsd");
    let broken = [("ns1", "127.77.0.1"), ("ns2", "127.77.0.50")];
    std::fs::write(root.join("example.zone"), tld_zone(&broken)).unwrap();
    nsd(&mut procs);
    wait_until("NSD serves the broken TLD", bound, &procs, || {
        ask("127.77.0.98", "doctor.example.", RecordType::NS, false)
            .is_some_and(|m| m.name_servers().len() == 2)
    });
    let zone_path = dir.join("zones").join(format!("{ZONE}.zone"));
    std::fs::write(
        &zone_path,
        zone_file() + &format!("@ IN NS ns4\nns4 IN A {NET}.4\n"),
    )
    .unwrap();
    let out = doctor(dir, &path);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("---- doctor, broken delegation:\n{text}{err}");
    assert!(!out.status.success(), "doctor passed a broken delegation");
    assert!(err.contains("checks failed"), "{err}");
    let has = |s: &str| text.lines().any(|l| l.starts_with("FAIL") && l.contains(s));
    assert!(
        has("the parent example. has wrong glue for ns2.doctor.example.: A 127.77.0.50; the zone says A 127.77.0.2 \
             (as a.nic.example. at 127.77.0.98 answer); \
             fix: at your registrar/parent (example.), set the glue of ns2.doctor.example. to A 127.77.0.2"),
        "no FAIL line for the wrong glue"
    );
    assert!(
        has("the parent example. does not list NS ns3.doctor.example., which the zone has \
             (as a.nic.example. at 127.77.0.98 answer); \
             fix: at your registrar/parent (example.), add NS ns3.doctor.example. with glue A 127.77.0.3"),
        "no FAIL line for the missing NS"
    );
    assert!(
        has("the servers of the parent example. give 2 different delegations"),
        "no FAIL line for the parent servers' disagreement"
    );
    assert!(
        has("answers NS ns1.doctor.example., ns2.doctor.example., ns3.doctor.example. for the zone; \
             the zone file has ns1.doctor.example., ns2.doctor.example., ns3.doctor.example., ns4.doctor.example."),
        "no FAIL line for the resolver's NS set against the zone file"
    );
    assert!(
        has("ns2.doctor.example. at 127.77.0.50 did not answer"),
        "no FAIL line for the dead glue address"
    );
}
