//! Test harness: a temporary world (keys, dev CA, zone, config) and real
//! clients (DNS over UDP/TCP with hickory-proto messages, HTTPS with reqwest).
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use p2pcdn::config::Config;
use p2pcdn::devca::DevCa;
use p2pcdn::instance::Instance;
use p2pcdn::keys::SecretKey;
use p2pcdn::publish::{self, PublishOptions, PublishReport};

pub mod acme;
pub mod fed;
pub mod served;
pub mod system;
pub mod zoneless;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub const ZONE: &str = "t.test";
pub const SITE: &str = "www.t.test";
pub const SITE2: &str = "img.t.test";

pub fn zone_text() -> String {
    include_str!("t.test.zone").to_string()
}

/// A temporary world: keys, CA, zone, config.
pub struct World {
    pub dir: tempfile::TempDir,
    pub owner: SecretKey,
    pub config_path: PathBuf,
    pub ca_pem: Vec<u8>,
}

impl World {
    pub fn new() -> Self {
        Self::with_extra("")
    }

    pub fn with_extra(extra_config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let owner = SecretKey::generate().unwrap();
        SecretKey::generate()
            .unwrap()
            .write_new(&d.join("node.key"))
            .unwrap();
        let ca = DevCa::open_or_create(&d.join("tls")).unwrap();
        let (cert, key) = ca
            .issue(&d.join("tls"), SITE, &[SITE.to_string(), ZONE.to_string()])
            .unwrap();
        let (cert2, key2) = ca
            .issue(&d.join("tls"), SITE2, &[SITE2.to_string()])
            .unwrap();
        std::fs::create_dir_all(d.join("zones")).unwrap();
        std::fs::write(d.join("zones").join(format!("{ZONE}.zone")), zone_text()).unwrap();
        let cfg = format!(
            r#"data_dir = "data"
zones_dir = "zones"
{extra_config}
[node]
name = "ns1.{ZONE}"
key = "node.key"
addresses = ["127.0.0.1", "::1"]

[dns]
listen = ["127.0.0.1:0"]
answer_ttl = 17

[http]
listen = ["127.0.0.1:0"]

[https]
listen = ["127.0.0.1:0"]

[[site]]
hostname = "{SITE}"
zone = "{ZONE}"
owner_key = "{owner}"
tls_cert = "{cert}"
tls_key = "{key}"

[[site]]
hostname = "{SITE2}"
zone = "{ZONE}"
owner_key = "{owner}"
tls_cert = "{cert2}"
tls_key = "{key2}"
plain_http = "redirect"
"#,
            owner = owner.public(),
            cert = cert.display(),
            key = key.display(),
            cert2 = cert2.display(),
            key2 = key2.display(),
        );
        let config_path = d.join("p2pcdn.toml");
        std::fs::write(&config_path, cfg).unwrap();
        let ca_pem = std::fs::read(&ca.cert_path).unwrap();
        Self {
            dir,
            owner,
            config_path,
            ca_pem,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path).unwrap()
    }

    pub async fn start(&self) -> Instance {
        Instance::start(self.config()).await.unwrap()
    }

    /// Writes a sample site into `site-<tag>/` and returns its path.
    pub fn site_dir(&self, tag: &str) -> PathBuf {
        let s = self.path().join(format!("site-{tag}"));
        let w = |rel: &str, data: &[u8]| {
            let p = s.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        };
        w(
            "index.html",
            format!("<html><body>home {tag}</body></html>").as_bytes(),
        );
        w("style.css", b"body { color: red }");
        w("sub/index.html", format!("sub {tag}").as_bytes());
        w("space name.txt", b"spaces ok");
        w("\u{2713}.txt", b"check mark");
        w("files/big.bin", &big_bytes());
        s
    }

    pub fn publish(
        &self,
        site: &str,
        dir: &Path,
        version: Option<u64>,
    ) -> Result<PublishReport, publish::PublishError> {
        publish::publish(&self.config(), &self.owner, &opts(site, dir, version))
    }
}

pub fn opts(site: &str, dir: &Path, version: Option<u64>) -> PublishOptions {
    PublishOptions {
        site: site.into(),
        dir: dir.to_path_buf(),
        version,
        validity_secs: 86400,
        cache_ttl: 120,
        default_document: "index.html".into(),
        progress: false,
        now: None,
        zone: None,
        drop_zone: false,
    }
}

pub const BIG_LEN: usize = 3 * 1024 * 1024 + 17;

pub fn big_bytes() -> Vec<u8> {
    p2pcdn::demo::demo_bytes("test big", BIG_LEN)
}

/// A reqwest client builder that trusts the dev CA `ca_pem` and resolves
/// each `(host, address)` pair to that address (no DNS).
pub fn ca_client(ca_pem: &[u8], resolve: &[(&str, SocketAddr)]) -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap());
    for (host, addr) in resolve {
        b = b.resolve(host, *addr);
    }
    b
}

pub fn https_client(world: &World, inst: &Instance) -> reqwest::Client {
    let addr = inst.https_addrs[0];
    ca_client(&world.ca_pem, &[(SITE, addr), (SITE2, addr), (ZONE, addr)])
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub fn https_url(inst: &Instance, host: &str, path: &str) -> String {
    format!("https://{host}:{}{path}", inst.https_addrs[0].port())
}

/// A DNS query message.
pub fn query(name: &str, t: RecordType, edns: Option<u16>, ecs: Option<(IpAddr, u8)>) -> Message {
    let mut m = Message::new();
    m.set_id(rand_id());
    m.set_message_type(MessageType::Query);
    m.set_op_code(OpCode::Query);
    m.set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if let Some(p) = edns {
        let mut e = Edns::new();
        e.set_max_payload(p);
        if let Some((ip, prefix)) = ecs {
            e.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(ip, prefix, 0)));
        }
        m.set_edns(e);
    }
    m
}

fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    getrandom::fill(&mut b).unwrap();
    u16::from_le_bytes(b)
}

pub async fn udp_raw(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    udp_raw_from([127, 0, 0, 1].into(), addr, bytes, Duration::from_secs(2)).await
}

/// Sends one datagram to `addr` from a fresh socket on `src` and returns
/// the first datagram back within `wait`, if any.
pub async fn udp_raw_from(
    src: IpAddr,
    addr: SocketAddr,
    bytes: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind((src, 0)).await.unwrap();
    sock.send_to(bytes, addr).await.unwrap();
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

pub async fn udp(addr: SocketAddr, m: &Message) -> Message {
    let bytes = udp_raw(addr, &m.to_vec().unwrap())
        .await
        .expect("no UDP response");
    assert!(bytes.len() <= 65535);
    let r = Message::from_vec(&bytes).unwrap();
    assert_eq!(r.id(), m.id());
    r
}

pub async fn udp_len(addr: SocketAddr, m: &Message) -> (Message, usize) {
    let bytes = udp_raw(addr, &m.to_vec().unwrap())
        .await
        .expect("no UDP response");
    (Message::from_vec(&bytes).unwrap(), bytes.len())
}

pub async fn tcp(addr: SocketAddr, m: &Message) -> Message {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let reply = tcp_exchange_raw(&mut s, &m.to_vec().unwrap())
        .await
        .expect("a DNS reply over TCP");
    Message::from_vec(&reply).unwrap()
}

/// Sends one DNS message (length-prefixed, RFC 1035 §4.2.2) on an open
/// connection and reads one reply; None when the server closes the
/// connection or does not answer within 5 s.
pub async fn tcp_exchange_raw(s: &mut TcpStream, bytes: &[u8]) -> Option<Vec<u8>> {
    s.write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .ok()?;
    s.write_all(bytes).await.ok()?;
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut len))
        .await
        .ok()?
        .ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

/// Sends raw bytes on a fresh HTTP/1.1 connection and returns the status code and whole response.
pub async fn raw_http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

pub fn has_cmd(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Waits until `f` returns true, up to `secs` seconds.
pub async fn eventually(secs: u64, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
