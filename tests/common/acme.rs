//! A federation that gets its certificates from pebble (Debian's ACME test
//! CA), validating DNS-01 against the federation's own authorities.
//!
//! Peers bind each other over TLS, so each instance starts with a
//! development-CA certificate for its node name (a private federation's
//! bootstrap); every certificate for the site, and then for the node names,
//! comes from pebble. Clients trust only pebble's root, fetched from its
//! management interface.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use p2pcdn::config::Config;
use p2pcdn::devca::DevCa;
use p2pcdn::instance::Instance;
use p2pcdn::keys::{PublicKey, SecretKey};

pub const ZONE: &str = "acme.test";
pub const SITE: &str = "www.acme.test";

/// Pebble, killed on drop.
pub struct Pebble {
    child: Child,
    pub directory: String,
    pub root_pem: Vec<u8>,
    pub root_path: PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct AcmeNode {
    pub ip: IpAddr,
    pub name: String,
    pub key: PublicKey,
    pub config_path: PathBuf,
    pub https: SocketAddr,
}

pub struct AcmeWorld {
    pub dir: tempfile::TempDir,
    pub owner: SecretKey,
    pub nodes: Vec<AcmeNode>,
    pub dns_port: u16,
    pub pebble: Pebble,
    pub dev_ca: PathBuf,
}

/// A port free for TCP and UDP on every address, below the ephemeral range.
pub fn free_port_on(ips: &[IpAddr]) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = 24_000 + (std::process::id() as u16 % 64) * 64 + n % 2048;
        let ok = ips.iter().all(|ip| {
            std::net::TcpListener::bind((*ip, p)).is_ok()
                && std::net::UdpSocket::bind((*ip, p)).is_ok()
        });
        if ok {
            return p;
        }
        assert!(n < 4096, "no free port");
    }
}

pub fn has_pebble() -> bool {
    let has = Path::new("/usr/bin/pebble").exists() || super::has_cmd("pebble");
    // CI installs every tool: a missing one there is a failure, not a skip.
    assert!(
        has || std::env::var("P2PCDN_E2E").as_deref() != Ok("require"),
        "P2PCDN_E2E=require, but pebble is not installed"
    );
    has
}

/// Starts pebble on `ip` (directory and management on free ports), its
/// validator asking `dns` for every name; `validity_secs` sets the
/// certificates' lifetime (pebble's `certificateValidityPeriod`).
pub async fn start_pebble(
    dir: &Path,
    ca: &DevCa,
    ip: IpAddr,
    dns: SocketAddr,
    validity_secs: Option<u64>,
) -> Pebble {
    let (cert, key) = ca
        .issue(
            &dir.join("pebble-tls"),
            "pebble",
            &["localhost".into(), ip.to_string()],
        )
        .unwrap();
    let port = free_port_on(&[ip]);
    let mgmt = free_port_on(&[ip]);
    let mut cfg = serde_json::json!({"pebble": {
        "listenAddress": format!("{ip}:{port}"),
        "managementListenAddress": format!("{ip}:{mgmt}"),
        "certificate": cert,
        "privateKey": key,
        "httpPort": free_port_on(&[ip]),
        "tlsPort": free_port_on(&[ip]),
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    if let Some(v) = validity_secs {
        cfg["pebble"]["certificateValidityPeriod"] = v.into();
    }
    let cfg_path = dir.join("pebble.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let log = std::fs::File::create(dir.join("pebble.log")).unwrap();
    let child = Command::new("pebble")
        .arg("-config")
        .arg(&cfg_path)
        .arg("-dnsserver")
        .arg(dns.to_string())
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env("PEBBLE_AUTHZREUSE", "0")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("pebble starts");
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&ca.cert_path).unwrap()).unwrap(),
        )
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // The root that signs pebble's certificates, from its management interface.
    let mut root = None;
    for _ in 0..100 {
        if let Ok(r) = client
            .get(format!("https://{ip}:{mgmt}/roots/0"))
            .send()
            .await
        {
            if r.status().is_success() {
                root = Some(r.bytes().await.unwrap().to_vec());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let root_pem = root.expect("pebble's management interface serves its root");
    let root_path = dir.join("pebble-root.pem");
    std::fs::write(&root_path, &root_pem).unwrap();
    Pebble {
        child,
        directory: format!("https://{ip}:{port}/dir"),
        root_pem,
        root_path,
    }
}

/// `n` instances at 127.N.0.`host_byte`, all NS of `acme.test`, mirroring
/// `www.acme.test` with `[acme]` pointed at a fresh pebble.
pub async fn build(
    n: usize,
    host_byte: u8,
    validity_secs: Option<u64>,
    cert_margin_secs: u64,
) -> AcmeWorld {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let owner = SecretKey::generate().unwrap();
    let ca = DevCa::open_or_create(&d.join("tls")).unwrap();
    let ips: Vec<IpAddr> = (1..=n)
        .map(|i| format!("127.{i}.0.{host_byte}").parse().unwrap())
        .collect();
    let dns_port = free_port_on(&ips);
    let pebble_ip: IpAddr = format!("127.9.0.{host_byte}").parse().unwrap();
    let pebble = start_pebble(
        d,
        &ca,
        pebble_ip,
        SocketAddr::new(ips[0], dns_port),
        validity_secs,
    )
    .await;
    // Peers trust the bootstrap CA and pebble's root.
    let mut bundle = std::fs::read(&ca.cert_path).unwrap();
    bundle.extend_from_slice(&pebble.root_pem);
    let bundle_path = d.join("peer-roots.pem");
    std::fs::write(&bundle_path, bundle).unwrap();
    // www's fallback record points at pebble's address: never a mirror.
    let mut zone = format!(
        "$TTL 300\n@ IN SOA ns1 hostmaster ( 1 3600 600 1209600 60 )\n@ IN CAA 0 issue \"pebble.test\"\nwww IN A {pebble_ip}\n"
    );
    for (i, ip) in ips.iter().enumerate() {
        zone.push_str(&format!("@ IN NS ns{}\nns{} IN A {ip}\n", i + 1, i + 1));
    }
    let mut nodes = vec![];
    let mut keys = vec![];
    for (i, ip) in ips.iter().enumerate() {
        let name = format!("ns{}.{ZONE}", i + 1);
        let nd = d.join(&name);
        std::fs::create_dir_all(nd.join("zones")).unwrap();
        std::fs::write(nd.join("zones").join(format!("{ZONE}.zone")), &zone).unwrap();
        let k = SecretKey::generate().unwrap();
        k.write_new(&nd.join("node.key")).unwrap();
        keys.push(k.public());
        nodes.push(AcmeNode {
            ip: *ip,
            name,
            key: k.public(),
            config_path: nd.join("p2pcdn.toml"),
            https: SocketAddr::new(*ip, free_port_on(&[*ip])),
        });
    }
    for n in &nodes {
        let nd = n.config_path.parent().unwrap();
        let (cert, key) = ca
            .issue(&nd.join("tls"), "node", std::slice::from_ref(&n.name))
            .unwrap();
        let peers: String = nodes
            .iter()
            .filter(|o| o.name != n.name)
            .map(|o| {
                format!(
                    "  {{ url = \"https://{}:{}\", address = \"{}\" }},\n",
                    o.name,
                    o.https.port(),
                    o.ip
                )
            })
            .collect();
        let mirrors: String = keys.iter().map(|k| format!("\"{k}\", ")).collect();
        let cfg = format!(
            r#"data_dir = "data"
zones_dir = "zones"

[node]
name = "{name}"
key = "node.key"
addresses = ["{ip}"]

[dns]
listen = ["{ip}:{dns_port}"]
answer_ttl = 5

[http]
listen = []

[https]
listen = ["{https}"]
cert = "{cert}"
key = "{key}"

[federation]
ca_file = "{bundle}"
webpki_roots = false
gossip_interval_ms = 300
probe_interval_ms = 300
report_ttl_secs = 10
peers = [
{peers}]

[steering]
cert_margin_secs = {cert_margin_secs}

[acme]
directory = "{directory}"
ca_file = "{devca}"
dns_port = {dns_port}
propagation_timeout_secs = 20

[[site]]
hostname = "{SITE}"
zone = "{ZONE}"
owner_key = "{owner}"
mirrors = [{mirrors}]
"#,
            name = n.name,
            ip = n.ip,
            https = n.https,
            cert = cert.display(),
            key = key.display(),
            bundle = bundle_path.display(),
            directory = pebble.directory,
            devca = ca.cert_path.display(),
            owner = owner.public(),
        );
        std::fs::write(&n.config_path, cfg).unwrap();
    }
    AcmeWorld {
        dir,
        owner,
        nodes,
        dns_port,
        dev_ca: ca.cert_path.clone(),
        pebble,
    }
}

impl AcmeWorld {
    pub fn config(&self, i: usize) -> Config {
        Config::load(&self.nodes[i].config_path).unwrap()
    }

    pub async fn start(&self, i: usize) -> Instance {
        Instance::start(self.config(i)).await.unwrap()
    }

    /// Publishes a small site at node 0, authorizing `authorized`.
    pub fn publish(&self, authorized: &[usize]) -> u64 {
        let site = self.dir.path().join("site");
        std::fs::create_dir_all(&site).unwrap();
        std::fs::write(site.join("index.html"), "hello from an ACME mirror\n").unwrap();
        let mut cfg = self.config(0);
        for s in &mut cfg.sites {
            s.mirrors = authorized.iter().map(|&i| self.nodes[i].key).collect();
        }
        let o = super::opts(SITE, &site, None);
        p2pcdn::publish::publish(&cfg, &self.owner, &o)
            .unwrap()
            .version
    }

    pub fn dns(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.nodes[i].ip, self.dns_port)
    }

    /// A client trusting only pebble's root, resolving the site to node `i`.
    pub fn pebble_client(&self, i: usize) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&self.pebble.root_pem).unwrap())
            .resolve(SITE, self.nodes[i].https)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    pub fn url(&self, i: usize, path: &str) -> String {
        format!("https://{SITE}:{}{path}", self.nodes[i].https.port())
    }
}

/// The TXT strings `server` answers at `name`.
pub async fn txt(server: SocketAddr, name: &str) -> Vec<String> {
    use hickory_proto::rr::{RData, RecordType};
    let m = super::udp(server, &super::query(name, RecordType::TXT, None, None)).await;
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::TXT(t) => Some(
                t.txt_data()
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).to_string())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect()
}
