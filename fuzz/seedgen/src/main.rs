//! Writes small valid seed inputs for every fuzz target into `../seeds/<target>/`.
//!
//! Run from fuzz/seedgen: `CARGO_TARGET_DIR=../../target cargo run`
//! (sharing the main crate's target dir avoids a second dependency build).

#[path = "../../src/lib.rs"]
#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use p2pcdn::hash::BlobHash;
use p2pcdn::manifest::{self, FileEntry, Manifest, ZoneDoc};
use p2pcdn::report::{self, Capacity, Held, Load, Point, Report};

use common::{fixed_key, zone_text, NOW, SITE, ZONE2_TEXT};

fn out(target: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("seeds")
        .join(target);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("seed dir");
    d
}

fn write(dir: &Path, name: &str, data: &[u8]) {
    std::fs::write(dir.join(name), data).expect("write seed");
}

#[allow(clippy::too_many_arguments)]
fn query(
    id: u16,
    name: &str,
    t: RecordType,
    class: DNSClass,
    edns: Option<u16>,
    ecs: Option<(IpAddr, u8)>,
    version: u8,
    op: OpCode,
) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id);
    m.set_message_type(MessageType::Query);
    m.set_op_code(op);
    m.set_recursion_desired(true);
    let mut q = Query::query(Name::from_ascii(name).expect("name"), t);
    q.set_query_class(class);
    m.add_query(q);
    if let Some(p) = edns {
        let mut e = Edns::new();
        e.set_max_payload(p);
        e.set_version(version);
        if let Some((ip, prefix)) = ecs {
            e.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(ip, prefix, 0)));
        }
        m.set_edns(e);
    }
    m.to_vec().expect("query encodes")
}

fn dns_seeds() {
    let d = out("dns_request");
    let v4: IpAddr = "198.51.100.77".parse().expect("ip");
    let v6: IpAddr = "2001:db8:77::1".parse().expect("ip");
    let q = |id, n: &str, t, e, ecs| query(id, n, t, DNSClass::IN, e, ecs, 0, OpCode::Query);
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("www_a", q(1, "www.t.test.", RecordType::A, None, None)),
        ("www_aaaa_ecs4", q(2, "www.t.test.", RecordType::AAAA, Some(1232), Some((v4, 24)))),
        ("www_a_ecs6", q(3, "WWW.t.test.", RecordType::A, Some(4096), Some((v6, 56)))),
        ("img_a", q(4, "img.t.test.", RecordType::A, Some(512), None)),
        ("apex_any", q(5, "t.test.", RecordType::ANY, Some(1232), None)),
        ("apex_mx", q(6, "t.test.", RecordType::MX, None, None)),
        ("apex_soa", q(7, "t.test.", RecordType::SOA, Some(1400), None)),
        ("apex_ns", q(8, "t.test.", RecordType::NS, None, None)),
        ("big_txt_udp", q(9, "big.t.test.", RecordType::TXT, None, None)),
        ("big_txt_edns", q(10, "big.t.test.", RecordType::TXT, Some(65535), None)),
        ("referral", q(11, "x.deleg.t.test.", RecordType::A, None, None)),
        ("deleg_ds", q(12, "deleg.t.test.", RecordType::DS, None, None)),
        ("alias", q(13, "alias.t.test.", RecordType::A, None, None)),
        ("nxdomain", q(14, "nope.t.test.", RecordType::A, Some(1232), None)),
        ("ent", q(15, "b.t.test.", RecordType::TXT, None, None)),
        ("srv", q(16, "_https._tcp.t.test.", RecordType::SRV, None, None)),
        ("caa", q(17, "t.test.", RecordType::CAA, None, None)),
        ("refused", q(18, "example.com.", RecordType::A, None, None)),
        ("axfr", q(19, "t.test.", RecordType::AXFR, None, None)),
        ("chain", q(20, "c1.ex.test.", RecordType::A, None, None)),
        ("loop", q(21, "loop1.ex.test.", RecordType::AAAA, None, None)),
        ("wild", q(22, "x.wild.ex.test.", RecordType::TXT, None, None)),
        ("wild_mx", q(23, "zz.ex.test.", RecordType::MX, None, None)),
        ("steered_cname", q(24, "cdn.ex.test.", RecordType::AAAA, Some(1232), Some((v6, 48)))),
        ("site", q(25, "site.ex.test.", RecordType::ANY, None, None)),
        ("sub_ref", q(26, "a.sub.ex.test.", RecordType::AAAA, None, None)),
        ("sip", q(27, "_sip._udp.ex.test.", RecordType::SRV, None, None)),
        (
            "badvers",
            query(28, "www.t.test.", RecordType::A, DNSClass::IN, Some(1232), None, 1, OpCode::Query),
        ),
        (
            "chaos",
            query(29, "version.bind.", RecordType::TXT, DNSClass::CH, None, None, 0, OpCode::Query),
        ),
        (
            "notify",
            query(30, "t.test.", RecordType::SOA, DNSClass::IN, None, None, 0, OpCode::Notify),
        ),
    ];
    for (n, b) in &seeds {
        write(&d, n, b);
    }
    // Two questions (FORMERR) and a response-typed message.
    let mut m = Message::from_vec(&seeds[0].1).expect("decode");
    m.add_query(Query::query(Name::from_ascii("t.test.").expect("n"), RecordType::NS));
    write(&d, "two_questions", &m.to_vec().expect("enc"));
    let mut m = Message::from_vec(&seeds[0].1).expect("decode");
    m.set_message_type(MessageType::Response);
    write(&d, "response", &m.to_vec().expect("enc"));
    let mut m = Message::from_vec(&seeds[0].1).expect("decode");
    m.take_queries();
    write(&d, "no_question", &m.to_vec().expect("enc"));
}

/// ZONE2_TEXT without its $ORIGIN line, so it loads under t.test too.
fn zone2_relative() -> String {
    ZONE2_TEXT
        .lines()
        .filter(|l| !l.starts_with("$ORIGIN"))
        .map(|l| l.replace("hostmaster.ex.test.", "hostmaster"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn zone_seeds() {
    let d = out("zone_file");
    write(&d, "tests_common", zone_text().as_bytes());
    write(&d, "zone2", zone2_relative().as_bytes());
    write(
        &d,
        "minimal",
        b"@ 3600 IN SOA ns1 host 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\n",
    );
    write(
        &d,
        "steered_cname",
        b"$TTL 60\n@ IN SOA ns1 host 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\nalias IN CNAME www\nwww IN AAAA ::1\nimg IN CNAME alias\n",
    );
    write(
        &d,
        "types",
        b"$TTL 60\n@ IN SOA ns1.t.test. h.t.test. (1 2 3 4 5)\n@ NS ns1\nns1 A 192.0.2.1\n\
          @ TXT \"a\" \"b\"\n@ CAA 128 issuewild \";\"\nx SSHFP 1 1 0123456789abcdef\n\
          y HINFO \"cpu\" \"os\"\nz NAPTR 100 10 \"S\" \"SIP+D2U\" \"\" _sip._udp\n\
          w 300 IN AAAA 2001:db8::1\nv IN SVCB 1 . alpn=h2\nu IN HTTPS 1 . alpn=h3\n\
          t IN TLSA 3 1 1 abcdef\n*.wc IN A 192.0.2.9\nsub IN NS ns.sub\nns.sub IN A 192.0.2.3\n",
    );
    // One byte from "$TTL 300 $INCLUDE inc" (an $INCLUDE that parse_untrusted must refuse).
    write(
        &d,
        "include_relative",
        b"$TTL 300\n$INCLUDE inc\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\n",
    );
    let cfg_zone = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../zones/demo.p2pcdn.test.zone"),
    )
    .expect("demo zone");
    // The demo zone has its own origin: rewrite it relative.
    let text = String::from_utf8_lossy(&cfg_zone).replace("demo.p2pcdn.test.", "t.test.");
    write(&d, "demo", text.as_bytes());
}

fn sample_manifest() -> Manifest {
    let mut headers = BTreeMap::new();
    headers.insert("Content-Security-Policy".to_string(), "default-src 'self'".to_string());
    Manifest {
        format: manifest::FORMAT,
        site: SITE.into(),
        version: 9,
        issued: NOW - 100,
        expires: NOW + 86400,
        default_document: "index.html".into(),
        cache_ttl: 120,
        mirrors: vec![fixed_key().public()],
        files: vec![
            FileEntry {
                path: "index.html".into(),
                blake3: BlobHash::of(b"<html>"),
                size: 6,
                content_type: "text/html".into(),
                headers,
            },
            FileEntry {
                path: "css/a b.css".into(),
                blake3: BlobHash::of(b"a{}"),
                size: 3,
                content_type: "text/css".into(),
                headers: BTreeMap::new(),
            },
            FileEntry {
                path: "\u{2713}.txt".into(),
                blake3: BlobHash::of(b"check"),
                size: 5,
                content_type: "text/plain; charset=utf-8".into(),
                headers: BTreeMap::new(),
            },
        ],
        zone: Some(ZoneDoc {
            origin: "t.test".into(),
            text: "@ IN SOA ns1 host 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\n".into(),
        }),
    }
}

fn with_sel(sel: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![sel];
    v.extend_from_slice(body);
    v
}

fn manifest_seeds() {
    let d = out("manifest");
    let m = sample_manifest();
    let env = manifest::sign(&m, fixed_key()).expect("sign");
    write(&d, "raw_valid", &with_sel(0, &env));
    write(&d, "raw_valid_held8", &with_sel(4 | (8 << 3), &env));
    write(&d, "raw_valid_held9", &with_sel(4 | (9 << 3), &env));
    let mut m2 = m.clone();
    m2.zone = None;
    m2.files.truncate(1);
    let env2 = manifest::sign(&m2, fixed_key()).expect("sign");
    write(&d, "raw_small", &with_sel(1, &env2));
    let body = manifest::canonical_bytes(&m).expect("bytes");
    write(&d, "body_valid", &with_sel(2, &body));
    write(&d, "body_small", &with_sel(2, &manifest::canonical_bytes(&m2).expect("bytes")));
    let pretty = serde_json::to_vec_pretty(&m).expect("json");
    write(&d, "body_pretty", &with_sel(6, &pretty));
    write(&d, "raw_junk", &with_sel(0, b"{\"manifest\":\"e30=\",\"key\":\"x\",\"signature\":\"\"}"));
    let structured: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
    write(&d, "structured", &with_sel(3, &structured));
    write(&d, "structured_zeros", &with_sel(3, &[0u8; 96]));
}

fn sample_report() -> Report {
    let mut rtt = BTreeMap::new();
    rtt.insert(
        p2pcdn::federation::gossip::ShortId::of(&fixed_key().public()).to_string(),
        12.5,
    );
    Report {
        format: report::FORMAT,
        node: fixed_key().public(),
        name: "ns1.t.test".into(),
        url: "https://ns1.t.test:8443".into(),
        addresses: vec!["192.0.2.1".parse().expect("ip"), "2001:db8::1".parse().expect("ip")],
        location: Some(Point { lat: 50.11, lon: 8.68 }),
        capacity: Capacity { rps: 5000.0, bps: 1.25e9 },
        load: Load { rps: 10.0, bps: 1e6, connections: 3 },
        holds: vec![Held { site: SITE.into(), version: 9 }],
        mirrors: vec![SITE.into()],
        rtt_ms: rtt,
        client_rtt: vec![p2pcdn::latency::NetRtt {
            net: "198.51.100.0/24".parse().expect("net"),
            rtt_ms: 12.5,
            samples: 40,
        }],
        certs: None,
        seq: 42,
        issued: NOW - 5,
        expires: NOW + 10,
    }
}

fn report_seeds() {
    let d = out("report");
    let r = sample_report();
    let env = report::sign(&r, fixed_key()).expect("sign");
    write(&d, "raw_valid", &with_sel(0, &env));
    let body = serde_json::to_vec(&r).expect("json");
    write(&d, "body_valid", &with_sel(2, &body));
    let mut r2 = r.clone();
    r2.location = None;
    r2.rtt_ms.clear();
    r2.holds.clear();
    r2.mirrors.clear();
    r2.client_rtt.clear();
    write(&d, "body_min", &with_sel(2, &serde_json::to_vec(&r2).expect("json")));
    let env = serde_json::json!({"report": "{}", "sig": STANDARD.encode([0u8; 64])});
    write(&d, "raw_bad", &with_sel(1, &serde_json::to_vec(&env).expect("json")));
    let structured: Vec<u8> = (0..256u32).map(|i| (i * 53 % 241) as u8).collect();
    write(&d, "structured", &with_sel(3, &structured));
}

fn http_seed(etag_choice: u8, len_choice: u8, len: u64, lm: i64, fields: &[&str]) -> Vec<u8> {
    let mut v = vec![etag_choice, len_choice];
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(&lm.to_le_bytes()[..6]);
    v.extend_from_slice(fields.join("\n").as_bytes());
    v
}

fn http_seeds() {
    let d = out("http_decide");
    let lm = 1_445_412_480;
    let date = "Wed, 21 Oct 2015 07:28:00 GMT";
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("simple", http_seed(0, 3, 1000, lm, &["bytes=0-99", "", "", "", "", "", "", "/index.html"])),
        ("suffix", http_seed(0, 3, 1000, lm, &["bytes=-500", "\"abc\"", "", "", "", "", "", "/a/b/"])),
        ("multi", http_seed(0, 3, 10, lm, &["bytes=0-1, 5-, -2,8-9", "", "", "", "", "", "", "/%E2%9C%93.txt"])),
        ("unsat", http_seed(1, 3, 5, lm, &["bytes=10-20", date, "", "", "", "", "", "/a%20b"])),
        ("open", http_seed(3, 1, 77, lm, &["Bytes = 0-", "", "\"x\", W/\"abc\"", "*", date, date, "\"x\"", "/../etc"])),
        ("conds", http_seed(0, 3, 0, lm, &["", "", "W/\"abc\", \"abc\"", "\"abc\"", "", "Wed, 21 Oct 2015 07:27:59 GMT", "", "/%2e%2e/x"])),
        ("dates", http_seed(2, 3, 1, -5, &["bytes=0-0", "Sun, 06 Nov 1994 08:49:37 GMT", "", "", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "", "//a//b"])),
        ("encoded", http_seed(0, 2, 3, lm, &["items=0-1", "", "", "", "", "", "", "/a%2fb/%5c/%00/%zz"])),
    ];
    for (n, b) in &seeds {
        write(&d, n, b);
    }
}

fn config_seeds() {
    let d = out("config");
    let pk = fixed_key().public();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for city in ["frankfurt", "newyork", "singapore", "saopaulo", "sydney"] {
        let p = root.join(format!("examples/federation/{city}.toml"));
        if let Ok(t) = std::fs::read_to_string(&p) {
            let t = t.replace("owner_key_file = \"run/owner.pub\"", &format!("owner_key = \"{pk}\""));
            write(&d, city, t.as_bytes());
        }
    }
    let doc = format!(
        r#"data_dir  = "/var/lib/p2pcdn"
zones_dir = "zones"
geodata   = "/usr/share/p2pcdn/dbip-country.mmdb"

[node]
name         = "ns1.cdn.example.org"
key          = "node.key"
addresses    = ["192.0.2.10", "2001:db8::10"]
latitude     = 50.11
longitude    = 8.68
capacity_rps = 5000
url          = "https://NS1.cdn.example.org:8443/"

[dns]
listen                = ["192.0.2.10:53", "[2001:db8::10]:53"]
answer_ttl            = 30
max_udp_payload       = 1232
tcp_idle_timeout_secs = 10

[http]
listen = ["192.0.2.10:80", "[2001:db8::10]:80"]

[https]
listen = ["192.0.2.10:443", "[2001:db8::10]:443"]
cert   = "tls/ns1.cdn.example.org.pem"
key    = "tls/ns1.cdn.example.org.key"

[publish]
validity_days = 90

[federation]
peers = [
    {{ url = "https://ns2.cdn.example.org" }},
    {{ url = "https://ns3.cdn.example.org", address = "203.0.113.30" }},
]
gossip_interval_ms = 1000
fanout             = 3
probe_interval_ms  = 1000
report_ttl_secs    = 15

[steering]
answers         = 2
spill_threshold = 0.8

[[geo_override]]
prefix    = "198.51.100.0/24"
latitude  = 52.52
longitude = 13.40
country   = "DE"

[[site]]
hostname   = "www.cdn.example.org"
zone       = "cdn.example.org"
owner_key  = "{pk}"
tls_cert   = "tls/www.cdn.example.org.pem"
tls_key    = "tls/www.cdn.example.org.key"
plain_http = "redirect"
mirrors    = ["{pk}"]

[[site]]
hostname     = "static.example.com"
zone         = "static.example.com"
owner_domain = "example.com"
mirror       = false
"#
    );
    write(&d, "docs_full", doc.as_bytes());
    write(&d, "minimal", b"[node]\nname = \"ns1.example.net\"\nkey = \"node.key\"\n");
    write(
        &d,
        "tests_common",
        format!(
            "data_dir = \"data\"\nzones_dir = \"zones\"\n[node]\nname = \"ns1.t.test\"\nkey = \"node.key\"\naddresses = [\"127.0.0.1\", \"::1\"]\n\n[dns]\nlisten = [\"127.0.0.1:0\"]\nanswer_ttl = 17\n\n[http]\nlisten = [\"127.0.0.1:0\"]\n\n[https]\nlisten = [\"127.0.0.1:0\"]\n\n[[site]]\nhostname = \"www.t.test\"\nzone = \"t.test\"\nowner_key = \"{pk}\"\ntls_cert = \"a.pem\"\ntls_key = \"a.key\"\n\n[[site]]\nhostname = \"img.t.test\"\nzone = \"t.test\"\nowner_key = \"{pk}\"\nplain_http = \"redirect\"\n"
        )
        .as_bytes(),
    );
}

/// Reports whether each zone and config seed is accepted (seeds that load reach deeper).
fn check_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../seeds");
    let origin = Name::from_ascii("t.test.").expect("origin");
    for e in std::fs::read_dir(root.join("zone_file")).expect("dir").flatten() {
        let t = std::fs::read_to_string(e.path()).expect("read");
        let r = p2pcdn::dns::zone::Zone::parse(&t, &origin, Path::new("t.test.zone"));
        println!("zone_file/{}: {}", e.file_name().to_string_lossy(), r.err().map_or("loads".into(), |e| e.to_string()));
    }
    for e in std::fs::read_dir(root.join("config")).expect("dir").flatten() {
        let t = std::fs::read_to_string(e.path()).expect("read");
        let r = p2pcdn::config::Config::parse(&t, Path::new("/tmp/x/c.toml"));
        println!("config/{}: {}", e.file_name().to_string_lossy(), r.err().map_or("parses".into(), |e| e.to_string()));
    }
}

fn main() {
    dns_seeds();
    zone_seeds();
    manifest_seeds();
    report_seeds();
    http_seeds();
    config_seeds();
    check_seeds();
    println!("seeds written to {}", Path::new(env!("CARGO_MANIFEST_DIR")).join("../seeds").display());
}
