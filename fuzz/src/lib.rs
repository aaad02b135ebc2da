//! Shared fixtures for the p2pcdn fuzz targets (and for `seedgen`).
//!
//! Everything here goes through p2pcdn's public API only.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hickory_proto::rr::{LowerName, Name};
use p2pcdn::dns::server::{DnsData, DnsSettings, Handler, SharedDnsData, Steered, Steering};
use p2pcdn::dns::zone::{Zone, ZoneSet};
use p2pcdn::keys::SecretKey;

/// The fixed "now" (unix seconds) the manifest and report targets check against.
pub const NOW: u64 = 1_700_000_000;

/// Seed of the fixed signing key (owner key / node key) used by the targets.
pub const KEY_SEED: [u8; 32] = [7; 32];

/// The site the manifest target expects.
pub const SITE: &str = "www.t.test";

/// The main test zone, the one the integration tests serve
/// (`tests/common/mod.rs::zone_text()`).
pub fn zone_text() -> String {
    include_str!("../../tests/common/t.test.zone").to_string()
}

/// A second zone with wildcards, CNAME chains (in and out of zone, and a
/// loop between non-steered names), a delegation with glue and IPv6.
pub const ZONE2_TEXT: &str = r#"$ORIGIN ex.test.
$TTL 600
@       IN SOA ns1 hostmaster.ex.test. 2026112401 7200 900 1209600 30
@       IN NS  ns1
@       IN NS  ns2.other.example.
ns1     IN A   192.0.2.53
ns1     IN AAAA 2001:db8::53
www     IN A   192.0.2.80
www     IN AAAA 2001:db8::80
c1      IN CNAME c2
c2      IN CNAME c3
c3      IN CNAME www
ext     IN CNAME www.other.example.
loop1   IN CNAME loop2
loop2   IN CNAME loop1
cdn     IN CNAME site
mail    IN MX  10 mx1
mx1     IN A   192.0.2.25
*.wild  IN TXT "wild"
*.wild  IN A   192.0.2.99
*       IN MX  20 mx1
a.b.c   IN TXT "deep"
sub     IN NS  ns.sub
ns.sub  IN A   192.0.2.99
ns.sub  IN AAAA 2001:db8::99
_sip._udp IN SRV 10 60 5060 mx1
"#;

/// Steered names and whether the fake steering has holders for them.
pub const STEERED: &[(&str, bool)] = &[
    ("www.t.test.", true),
    ("img.t.test.", false),
    ("site.ex.test.", true),
];

/// Steering that returns fixed addresses (or `None` for names without
/// holders), the IPv4 ones depending on the located address (the ECS
/// address, else the client's), so an answer cached for one client and
/// served to another shows.
pub struct FixedSteering;

impl Steering for FixedSteering {
    fn addresses(
        &self,
        site: &LowerName,
        v6: bool,
        client: IpAddr,
        subnet: Option<(IpAddr, u8)>,
    ) -> Option<Steered> {
        let located = subnet.map_or(client, |(a, _)| a);
        let cell = match located {
            IpAddr::V4(a) => a.octets()[2],
            IpAddr::V6(a) => a.octets()[5],
        } % 8;
        let has = STEERED
            .iter()
            .any(|(n, h)| *h && LowerName::from_str(n).map(|l| &l == site).unwrap_or(false));
        if !has {
            return None;
        }
        let addrs = if v6 {
            vec![
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 10)),
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 11)),
                // An address of the other family is filtered by resolve().
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
            ]
        } else {
            vec![
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10 + cell)),
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 20)),
            ]
        };
        // Echo a scope derived from the client's subnet (any u8 must encode).
        let scope = subnet.map_or(0, |(_, p)| p.min(24));
        Some(Steered {
            addrs,
            scope,
            ttl: 17,
        })
    }

    /// The answers never change: one generation, so the UDP worker's
    /// first-level cache is used.
    fn generation(&self) -> Option<u64> {
        Some(1)
    }
}

/// The largest UDP payload the fuzzed handler sends (the config default range is 512..=4096).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// DNS data built the way `instance.rs` does: zones plus steered names marked as existing.
pub fn dns_data() -> DnsData {
    let z1 = Zone::parse(
        &zone_text(),
        &Name::from_ascii("t.test.").expect("origin"),
        Path::new("t.test.zone"),
    )
    .expect("fixed zone t.test parses");
    let z2 = Zone::parse(
        ZONE2_TEXT,
        &Name::from_ascii("ex.test.").expect("origin"),
        Path::new("ex.test.zone"),
    )
    .expect("fixed zone ex.test parses");
    let mut zones = ZoneSet::new(vec![z1, z2]);
    let mut steered = HashSet::new();
    for (n, _) in STEERED {
        let l = LowerName::from_str(n).expect("steered name");
        if let Some(z) = zones.find_mut(&l) {
            z.add_name(&l);
        }
        steered.insert(l);
    }
    DnsData { zones, steered }
}

/// The DNS handler under test (built once per process).
pub fn dns_handler() -> &'static Handler {
    static H: OnceLock<Handler> = OnceLock::new();
    H.get_or_init(|| {
        let data: SharedDnsData = Arc::new(arc_swap::ArcSwap::from_pointee(dns_data()));
        Handler::new(
            data,
            Arc::new(FixedSteering),
            DnsSettings {
                fallback_ttl: 5,
                max_udp_payload: MAX_UDP_PAYLOAD,
                // Response rate limiting is clock-driven: off, for determinism.
                rrl: None,
                metrics: Default::default(),
            },
        )
    })
}

/// The fixed signing key, loaded through the public `SecretKey::read` (the
/// only deterministic constructor): written once to a private temp file.
pub fn fixed_key() -> &'static SecretKey {
    static K: OnceLock<SecretKey> = OnceLock::new();
    K.get_or_init(|| {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::env::temp_dir().join(format!(
            "p2pcdn-fuzz-key-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("fixed.key");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .expect("key file");
        writeln!(f, "p2pcdn-ed25519-secret:{}", URL_SAFE_NO_PAD.encode(KEY_SEED)).expect("write");
        drop(f);
        let k = SecretKey::read(&path).expect("fixed key reads");
        let _ = std::fs::remove_dir_all(&dir);
        k
    })
}

/// Runs `f` so that panics which `f` itself catches (p2pcdn uses
/// `catch_unwind` around hickory's zone parser) do not abort the fuzzer:
/// libfuzzer-sys installs a panic hook that aborts on *every* panic, caught
/// or not. A panic that escapes `f` is printed and re-raised, so libFuzzer
/// still reports it as a crash.
pub fn contained<R>(f: impl FnOnce() -> R) -> R {
    use std::cell::RefCell;
    thread_local! {
        static LAST: RefCell<String> = const { RefCell::new(String::new()) };
    }
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let loc = info.location().map(|l| l.to_string()).unwrap_or_default();
        LAST.with(|l| *l.borrow_mut() = format!("panicked at {loc}: {msg}"));
    }));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    match r {
        Ok(v) => v,
        Err(payload) => {
            LAST.with(|l| eprintln!("panic escaped the API under test: {}", l.borrow()));
            std::panic::resume_unwind(payload)
        }
    }
}
