//! `p2pcdn doctor`: checks an instance's setup from the outside, as
//! resolvers and clients see it.
//!
//! For every zone the config's sites use: the parent's delegation (NS set and
//! glue) against the zone's own NS records, the SOA serial at every authority
//! address, every site name through the recursive resolver and at every
//! authority (AA), the TLS certificate of every answered mirror (site SNI) and
//! of this node (node name); then the clock against each configured peer and
//! the geodata file's age. The decisions are pure ([`findings`]); this module
//! gathers the observations ([`dns`], [`net`]), each bounded by a timeout, so
//! a dead authority is a FAIL, not a hang.

pub mod dns;
pub mod findings;
pub mod net;
pub mod parents;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use hickory_proto::rr::{LowerName, Name, RData, RecordType};

use crate::config::Config;
use crate::dns::zone::{Zone, ZoneSet};
use dns::Resolver;
use findings::{Answer, Finding, NsSet, Probe};

/// Why the doctor could not run its checks at all.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// The resolver could not be set up.
    #[error("resolver: {0}")]
    Resolver(#[from] dns::DnsError),
    /// The HTTPS client could not be set up.
    #[error("{0}")]
    Net(#[from] net::NetError),
    /// A local zone file does not load (`p2pcdn check` says more).
    #[error("{0}")]
    Zone(#[from] crate::dns::zone::ZoneError),
    /// A site's zone or hostname is not a DNS name.
    #[error("{0}: {1}")]
    Name(String, hickory_proto::ProtoError),
}

/// How the doctor runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The recursive resolver to ask; `None`: the system's (/etc/resolv.conf).
    pub resolver: Option<SocketAddr>,
    /// Bound on each DNS question, TLS handshake and HTTP request.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            resolver: None,
            timeout: Duration::from_secs(3),
        }
    }
}

fn fqdn(s: &str) -> Result<Name, DoctorError> {
    Name::from_ascii(format!("{}.", s.trim_end_matches('.')))
        .map_err(|e| DoctorError::Name(s.to_string(), e))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn dns_addr(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, 53)
}

/// A listen address as a client on this host reaches it.
fn local(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(v) if v.is_unspecified() => (Ipv4Addr::LOCALHOST, a.port()).into(),
        IpAddr::V6(v) if v.is_unspecified() => (Ipv6Addr::LOCALHOST, a.port()).into(),
        _ => a,
    }
}

/// Runs every check, calling `emit` with each finding as it is made, and
/// returns them all.
pub async fn run(
    cfg: &Config,
    opts: &Options,
    emit: &mut dyn FnMut(&Finding),
) -> Result<Vec<Finding>, DoctorError> {
    let mut all = vec![];
    let mut out = |fs: Vec<Finding>| {
        for f in fs {
            emit(&f);
            all.push(f);
        }
    };
    let res = Resolver::new(opts.resolver, opts.timeout)?;
    let https = net::Https::new(&cfg.federation, opts.timeout)?;
    let zones = if cfg.zones_dir.is_dir() {
        ZoneSet::load_dir(&cfg.zones_dir)?
    } else {
        ZoneSet::default()
    };

    // Sites (owner key pinned or still to discover): hostname and zone.
    let sites: Vec<(String, String)> = cfg
        .sites
        .iter()
        .map(|s| (s.hostname.clone(), s.zone.clone()))
        .chain(
            cfg.pending_sites
                .iter()
                .map(|s| (s.hostname.clone(), s.zone.clone())),
        )
        .collect();
    let zone_names: BTreeSet<&String> = sites.iter().map(|(_, z)| z).collect();

    // Authorities that answered their zone's SOA, by zone.
    let mut answering: BTreeMap<String, Vec<(LowerName, IpAddr)>> = BTreeMap::new();
    for zone in zone_names {
        let name = fqdn(zone)?;
        let local_zone = zones
            .zones()
            .iter()
            .find(|z| *z.origin() == LowerName::new(&name));
        let (fs, probes) = check_zone(&res, &name, local_zone, opts.timeout).await;
        out(fs);
        answering.insert(
            zone.clone(),
            probes
                .into_iter()
                .filter(|p| !matches!(p.answer, Answer::Failed(_)))
                .map(|p| (p.ns, p.addr))
                .collect(),
        );
    }

    let mut cert_targets: Vec<(String, SocketAddr, String)> = vec![];
    for (host, zone) in &sites {
        let name = fqdn(host)?;
        let resolved = res.addrs(&name).await;
        let auths = answering.get(zone).cloned().unwrap_or_default();
        let probes = ask_all(&auths, &name, RecordType::A, opts.timeout).await;
        out(findings::steered(
            &LowerName::new(&name),
            &res.label,
            &resolved,
            &probes,
        ));
        for ip in resolved.iter().flatten() {
            cert_targets.push((
                host.clone(),
                SocketAddr::new(*ip, 443),
                format!(
                    "install a certificate for {host} from a CA clients trust on the mirror at {ip} ([[site]] tls_cert/tls_key)"
                ),
            ));
        }
    }
    if let Some(listen) = cfg.https_listen.first() {
        cert_targets.push((
            cfg.node.name.clone(),
            local(*listen),
            format!(
                "set https.cert/https.key to a certificate for {} (peers connect with that SNI)",
                cfg.node.name
            ),
        ));
    }
    let now_s = now();
    let certs = join_all(
        cert_targets
            .iter()
            .map(|(host, addr, _)| https.cert_expiry(host, *addr)),
    )
    .await;
    out(cert_targets
        .iter()
        .zip(&certs)
        .map(|((host, addr, fix), r)| findings::certificate(host, addr, r, now_s, fix))
        .collect());

    let skews = join_all(cfg.federation.peers.iter().map(|p| {
        let port = url_port(&p.url);
        https.skew(&p.url, &p.host, p.address.map(|a| SocketAddr::new(a, port)))
    }))
    .await;
    out(cfg
        .federation
        .peers
        .iter()
        .zip(&skews)
        .map(|(p, s)| findings::clock(&p.url, s))
        .collect());

    let geo = cfg.geodata.as_ref().map(|p| {
        (
            p.display().to_string(),
            maxminddb::Reader::open_readfile(p).map(|r| r.metadata().build_epoch),
        )
    });
    out(vec![match &geo {
        Some((path, build)) => findings::geodata(Some(path), build, now_s),
        None => findings::geodata(None, &Ok::<_, maxminddb::MaxMindDbError>(0), now_s),
    }]);
    Ok(all)
}

/// The port of an `https://host[:port]` URL (443 when absent).
fn url_port(url: &str) -> u16 {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.port_or_known_default())
        .unwrap_or(443)
}

/// Delegation and serial checks of one zone; returns the findings and the
/// SOA probes of every authority address.
async fn check_zone(
    res: &Resolver,
    zone: &Name,
    local: Option<&Zone>,
    timeout: Duration,
) -> (Vec<Finding>, Vec<Probe>) {
    let lz = LowerName::new(zone);
    let mut out = vec![];
    // The zone's own NS set: the local zone file, else what the resolver answers.
    let in_zone = match local {
        Some(z) => Ok(zone_ns(res, z).await),
        None => resolver_ns(res, zone).await,
    };
    let in_zone = match in_zone {
        Ok(s) if !s.0.is_empty() => s,
        Ok(_) | Err(_) => {
            let why = in_zone.err().map(|e| format!(": {e}")).unwrap_or_default();
            out.push(fail(
                findings::Check::Delegation,
                &lz,
                format!(
                    "no local zone file, and {} gives no NS set for it{why}",
                    res.label
                ),
                "put the zone file in zones_dir, or delegate the zone to its authorities".into(),
            ));
            NsSet::default()
        }
    };
    // The parent's view: its NS set and glue, asked of every one of its
    // authorities directly.
    let at_parent = match parent_referrals(res, zone, timeout).await {
        Ok((parent, referrals)) => {
            out.extend(parents::delegations(
                &lz,
                &LowerName::new(&parent),
                &in_zone,
                &referrals,
            ));
            parents::union(&referrals)
        }
        Err(why) => {
            out.push(fail(
                findings::Check::Delegation,
                &lz,
                why.to_string(),
                "check the resolver, and that the zone is delegated at your registrar".into(),
            ));
            NsSet::default()
        }
    };
    // The zone's NS set as resolvers get it from the authorities, against
    // the zone file.
    if local.is_some() && !in_zone.0.is_empty() {
        let answered = res.ns(zone).await.map_err(|e| e.to_string());
        out.push(parents::resolver_view(&lz, &res.label, &answered, &in_zone));
    }
    // Every address of every authority either side names.
    let mut auths: BTreeMap<LowerName, BTreeSet<IpAddr>> = BTreeMap::new();
    for (ns, a) in in_zone.0.iter().chain(&at_parent.0) {
        auths.entry(ns.clone()).or_default().extend(a);
    }
    let mut targets = vec![];
    for (ns, addrs) in &auths {
        let addrs: Vec<IpAddr> = if addrs.is_empty() {
            res.addrs(&Name::from(ns.clone())).await.unwrap_or_default()
        } else {
            addrs.iter().copied().collect()
        };
        targets.extend(addrs.into_iter().map(|a| (ns.clone(), a)));
    }
    let probes = ask_all(&targets, zone, RecordType::SOA, timeout).await;
    let local_serial = local.and_then(|z| match z.soa().data() {
        RData::SOA(s) => Some(s.serial()),
        _ => None,
    });
    out.extend(findings::serials(&lz, local_serial, &probes));
    (out, probes)
}

fn fail(check: findings::Check, subject: &LowerName, message: String, fix: String) -> Finding {
    Finding {
        level: findings::Level::Fail,
        check,
        subject: subject.to_string(),
        message,
        fix: Some(fix),
    }
}

/// Asks every `(ns, addr)` the same question concurrently.
async fn ask_all(
    targets: &[(LowerName, IpAddr)],
    name: &Name,
    rtype: RecordType,
    timeout: Duration,
) -> Vec<Probe> {
    join_all(targets.iter().map(|(ns, addr)| async move {
        let r = dns::ask(dns_addr(*addr), name, rtype, timeout).await;
        Probe {
            ns: ns.clone(),
            addr: *addr,
            answer: dns::summarize(name, rtype, &r),
        }
    }))
    .await
}

/// The zone file's apex NS set, with the zone's addresses for in-zone
/// targets and the resolver's for the others.
async fn zone_ns(res: &Resolver, z: &Zone) -> NsSet {
    let mut set = NsSet::default();
    for r in z.rrset(z.origin(), RecordType::NS) {
        let RData::NS(ns) = r.data() else { continue };
        let target = LowerName::new(&ns.0);
        let addrs: BTreeSet<IpAddr> = if z.origin().zone_of(&target) {
            z.rrset(&target, RecordType::A)
                .into_iter()
                .chain(z.rrset(&target, RecordType::AAAA))
                .filter_map(|r| match r.data() {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect()
        } else {
            res.addrs(&ns.0)
                .await
                .unwrap_or_default()
                .into_iter()
                .collect()
        };
        set.0.insert(target, addrs);
    }
    set
}

/// The zone's NS set as the resolver answers it, with resolved addresses.
async fn resolver_ns(res: &Resolver, zone: &Name) -> Result<NsSet, dns::DnsError> {
    let mut set = NsSet::default();
    for ns in res.ns(zone).await? {
        let addrs = res.addrs(&Name::from(ns.clone())).await.unwrap_or_default();
        set.0.insert(ns, addrs.into_iter().collect());
    }
    Ok(set)
}

/// Finds the parent zone through the resolver, then asks every address of
/// every one of its authorities (RD=0, concurrently) for the zone's NS: the
/// referrals.
async fn parent_referrals(
    res: &Resolver,
    zone: &Name,
    timeout: Duration,
) -> Result<(Name, Vec<parents::Referral>), ReferralError> {
    let (parent, ns) = res
        .parent_of(zone)
        .await
        .map_err(|source| ReferralError::NoParent {
            resolver: res.label.to_string(),
            source,
        })?;
    let mut targets = vec![];
    for server in &ns {
        let addrs = res
            .addrs(&Name::from(server.clone()))
            .await
            .unwrap_or_default();
        targets.extend(addrs.into_iter().map(|a| (server.clone(), a)));
    }
    let referrals = join_all(targets.into_iter().map(|(server, addr)| async move {
        let answer = dns::ask(dns_addr(addr), zone, RecordType::NS, timeout)
            .await
            .map(|m| dns::referral(zone, &m))
            .map_err(|e| e.to_string());
        parents::Referral {
            server,
            addr,
            answer,
        }
    }))
    .await;
    Ok((parent, referrals))
}

/// Why the parent's referral for a zone could not be read.
#[derive(Debug, thiserror::Error)]
enum ReferralError {
    /// The resolver could not name the parent zone.
    #[error("cannot find the parent zone through {resolver}: {source}")]
    NoParent {
        resolver: String,
        source: dns::DnsError,
    },
}

#[cfg(test)]
mod tests {
    use super::url_port;

    #[test]
    fn url_ports() {
        assert_eq!(url_port("https://a.example"), 443);
        assert_eq!(url_port("https://a.example:8443"), 8443);
        assert_eq!(url_port("https://[2001:db8::1]:9443"), 9443);
    }
}
