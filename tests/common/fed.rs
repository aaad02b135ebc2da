//! A five-city federation on loopback: one instance per test city of the
//! test-world geodata (127.N.0.0/16 = Frankfurt, New York, Singapore,
//! São Paulo, Sydney), each on its own address, in this process.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use p2pcdn::config::Config;
use p2pcdn::devca::DevCa;
use p2pcdn::instance::Instance;
use p2pcdn::keys::{PublicKey, SecretKey};

pub const CITIES: [(&str, f64, f64); 5] = [
    ("frankfurt", 50.11, 8.68),
    ("newyork", 40.71, -74.01),
    ("singapore", 1.35, 103.82),
    ("saopaulo", -23.55, -46.63),
    ("sydney", -33.87, 151.21),
];
pub const ZONE: &str = "fed.test";
pub const SITE: &str = "www.fed.test";

pub struct Node {
    pub ip: IpAddr,
    pub name: String,
    pub key: PublicKey,
    pub config_path: PathBuf,
    pub dns: SocketAddr,
    pub https: SocketAddr,
    pub http: SocketAddr,
}

pub struct Fed {
    pub dir: tempfile::TempDir,
    pub owner: SecretKey,
    pub nodes: Vec<Node>,
    pub ca_pem: Vec<u8>,
}

/// A port that is free for both TCP and UDP on `ip`, chosen *below* the
/// kernel's ephemeral range (32768-60999 by default). A port from the
/// ephemeral range can be taken by any client socket (this test's own
/// resolvers bind `(ip, 0)`) between the check here and the instance's bind,
/// or when an instance restarts; ports below it are only ever handed out
/// by explicit binds, and each test uses its own 127.N.0.x addresses.
pub fn free_port(ip: IpAddr) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = 20_000 + (std::process::id() as u16 % 64) * 128 + n % 4096;
        let tcp = std::net::TcpListener::bind((ip, p));
        let udp = std::net::UdpSocket::bind((ip, p));
        if tcp.is_ok() && udp.is_ok() {
            return p;
        }
        assert!(n < 4096, "no free port below the ephemeral range on {ip}");
    }
}

/// `host_byte`: last octet of each instance's address 127.N.0.<host_byte>.
/// `authorized`: indexes of nodes listed as mirrors in published manifests.
/// `capacity_rps`: per-node declared capacity.
pub fn build(host_byte: u8, capacity_rps: [f64; 5]) -> Fed {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let owner = SecretKey::generate().unwrap();
    let ca = DevCa::open_or_create(&d.join("tls")).unwrap();
    let geodata =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("geodata/test/steering-test-city.mmdb");
    let mut nodes = vec![];
    let mut keys = vec![];
    for (i, _) in CITIES.iter().enumerate() {
        let ip: IpAddr = format!("127.{}.0.{host_byte}", i + 1).parse().unwrap();
        let name = format!("ns{}.{ZONE}", i + 1);
        let nd = d.join(&name);
        std::fs::create_dir_all(nd.join("zones")).unwrap();
        let k = SecretKey::generate().unwrap();
        k.write_new(&nd.join("node.key")).unwrap();
        keys.push(k.public());
        nodes.push(Node {
            ip,
            name,
            key: k.public(),
            config_path: nd.join("p2pcdn.toml"),
            dns: SocketAddr::new(ip, free_port(ip)),
            https: SocketAddr::new(ip, free_port(ip)),
            http: SocketAddr::new(ip, free_port(ip)),
        });
    }
    let mut zone = format!(
        "$TTL 300\n@ IN SOA ns1 hostmaster ( 1 3600 600 1209600 60 )\nwww IN A {}\n",
        nodes[0].ip
    );
    for (i, n) in nodes.iter().enumerate() {
        zone.push_str(&format!("@ IN NS ns{}\nns{} IN A {}\n", i + 1, i + 1, n.ip));
    }
    for (i, n) in nodes.iter().enumerate() {
        let nd = n.config_path.parent().unwrap();
        std::fs::write(nd.join("zones").join(format!("{ZONE}.zone")), &zone).unwrap();
        let (cert, key) = ca
            .issue(
                &nd.join("tls"),
                "node",
                &[n.name.clone(), SITE.to_string(), n.ip.to_string()],
            )
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
        let (_, lat, lon) = CITIES[i];
        let mirrors: String = keys.iter().map(|k| format!("\"{k}\", ")).collect();
        let cfg = format!(
            r#"data_dir = "data"
zones_dir = "zones"
geodata = "{geodata}"

[node]
name = "{name}"
key = "node.key"
addresses = ["{ip}"]
latitude = {lat}
longitude = {lon}
capacity_rps = {cap}

[dns]
listen = ["{dns}"]
answer_ttl = 5

[http]
listen = ["{http}"]

[https]
listen = ["{https}"]
cert = "{cert}"
key = "{key}"

[federation]
ca_file = "{ca}"
webpki_roots = false
gossip_interval_ms = 500
probe_interval_ms = 500
fanout = 4
report_ttl_secs = 10
peers = [
{peers}]

[[site]]
hostname = "{SITE}"
zone = "{ZONE}"
owner_key = "{owner}"
tls_cert = "{cert}"
tls_key = "{key}"
mirrors = [{mirrors}]
"#,
            geodata = geodata.display(),
            name = n.name,
            ip = n.ip,
            cap = capacity_rps[i],
            dns = n.dns,
            http = n.http,
            https = n.https,
            cert = cert.display(),
            key = key.display(),
            ca = ca.cert_path.display(),
            owner = owner.public(),
        );
        std::fs::write(&n.config_path, cfg).unwrap();
    }
    let ca_pem = std::fs::read(&ca.cert_path).unwrap();
    Fed {
        dir,
        owner,
        nodes,
        ca_pem,
    }
}

impl Fed {
    pub fn config(&self, i: usize) -> Config {
        Config::load(&self.nodes[i].config_path).unwrap()
    }

    pub async fn start(&self, i: usize) -> Instance {
        Instance::start(self.config(i)).await.unwrap()
    }

    /// Publishes `dir` at node `origin`, authorizing only `authorized`.
    pub fn publish(&self, origin: usize, dir: &Path, authorized: &[usize]) -> u64 {
        let mut cfg = self.config(origin);
        for s in &mut cfg.sites {
            s.mirrors = authorized.iter().map(|&i| self.nodes[i].key).collect();
        }
        // The origin authorizes itself only if listed.
        let node_key = cfg.node.key.clone();
        if !authorized.contains(&origin) {
            cfg.node.key = self.dir.path().join("no-such-key");
        }
        // The owner signs the zone into the manifest: instances without a
        // local zone file serve it from there.
        let text = std::fs::read_to_string(
            self.nodes[origin]
                .config_path
                .parent()
                .unwrap()
                .join(format!("zones/{ZONE}.zone")),
        )
        .unwrap();
        let mut o = super::opts(SITE, dir, None);
        o.zone = Some(p2pcdn::manifest::ZoneDoc {
            origin: ZONE.into(),
            text,
        });
        let r = p2pcdn::publish::publish(&cfg, &self.owner, &o).unwrap();
        cfg.node.key = node_key;
        r.version
    }

    pub fn client(&self, i: usize) -> reqwest::Client {
        super::ca_client(&self.ca_pem, &[(SITE, self.nodes[i].https)])
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }

    pub fn url(&self, i: usize, path: &str) -> String {
        format!("https://{SITE}:{}{path}", self.nodes[i].https.port())
    }

    /// Index of the node whose address is `ip`.
    pub fn node_of(&self, ip: IpAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.ip == ip)
    }
}
