//! The authoritative answer for one question: pure, no I/O.
//!
//! Given the zones, the set of steered site names and a steering callback,
//! [`resolve`] returns the sections of the response: exact matches, CNAME
//! chains inside the zone, wildcards (RFC 4592), referrals below delegation
//! points, NODATA and NXDOMAIN with the SOA (RFC 2308), REFUSED outside our
//! zones, minimal ANY (RFC 8482), and glue/additional addresses.

use std::collections::HashSet;
use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use super::zone::{Zone, ZoneSet};

/// Longest CNAME chain followed inside a zone.
const MAX_CNAME_CHAIN: usize = 8;

/// The sections of a response.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Response code.
    pub rcode: ResponseCode,
    /// AA bit.
    pub authoritative: bool,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section.
    pub authority: Vec<Record>,
    /// Additional section (without OPT).
    pub additional: Vec<Record>,
    /// True when the answer came from steering (so it depends on the client).
    pub steered: bool,
}

impl Answer {
    fn refused() -> Self {
        Self {
            rcode: ResponseCode::Refused,
            authoritative: false,
            answers: vec![],
            authority: vec![],
            additional: vec![],
            steered: false,
        }
    }
}

/// The question being answered, plus what steering needs to know.
pub struct Question<'a> {
    /// QNAME, lowercased.
    pub name: &'a LowerName,
    /// QTYPE.
    pub qtype: RecordType,
}

/// What steering answers for a steered name: addresses and their TTL.
pub type SteerFn<'a> = dyn Fn(&LowerName) -> Option<(Vec<IpAddr>, u32)> + 'a;

/// Answers one question. `steer(name)` returns the addresses (and TTL) to
/// answer for a steered name, or `None` to use the zone file's fallback
/// records, whose TTL is then capped at `fallback_ttl` (an answer nobody
/// steered should not be cached long: a mirror may be back any moment).
pub fn resolve(
    zones: &ZoneSet,
    steered: &HashSet<LowerName>,
    q: &Question<'_>,
    fallback_ttl: u32,
    steer: &SteerFn<'_>,
) -> Answer {
    resolve_at(zones, steered, q, fallback_ttl, steer, 0)
}

/// [`resolve`], `depth` CNAME hops into a chain that crossed steered names.
fn resolve_at(
    zones: &ZoneSet,
    steered: &HashSet<LowerName>,
    q: &Question<'_>,
    fallback_ttl: u32,
    steer: &SteerFn<'_>,
    depth: usize,
) -> Answer {
    let Some(zone) = zones.find(q.name) else {
        return Answer::refused();
    };
    if matches!(q.qtype, RecordType::AXFR | RecordType::IXFR) {
        return Answer::refused();
    }
    if let Some(cut) = zone.cut_above(q.name) {
        if !(q.qtype == RecordType::DS && &cut == q.name) {
            return referral(zones, zone, &cut);
        }
    }
    let mut ans = Answer {
        rcode: ResponseCode::NoError,
        authoritative: true,
        answers: vec![],
        authority: vec![],
        additional: vec![],
        steered: false,
    };

    let steered_name = steered.contains(q.name)
        && matches!(q.qtype, RecordType::A | RecordType::AAAA | RecordType::ANY);
    if steered_name {
        if let Some((addrs, ttl)) = steer(q.name) {
            let owner = Name::from(q.name.clone());
            let want = if q.qtype == RecordType::ANY {
                RecordType::A
            } else {
                q.qtype
            };
            let recs: Vec<Record> = addrs
                .iter()
                .filter_map(|ip| match (ip, want) {
                    (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(*v4))),
                    (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(*v6))),
                    _ => None,
                })
                .map(|rd| Record::from_rdata(owner.clone(), ttl, rd))
                .collect();
            if !recs.is_empty() {
                ans.answers = recs;
                ans.steered = true;
                return ans;
            }
            // No address of this family among the holders: fall through to
            // the zone's own records (the configured fallback), if any.
        }
    }

    let mut name = q.name.clone();
    for _ in 0..MAX_CNAME_CHAIN {
        let (records, synthesized_from) = match zone.node(&name) {
            Some(rs) => (rs.to_vec(), None),
            None if zone.exists(&name) => (vec![], None),
            None => match zone.wildcard_for(&name) {
                Some(wc) => (
                    zone.node(&wc).map(<[Record]>::to_vec).unwrap_or_default(),
                    Some(wc),
                ),
                None => {
                    // RFC 6604: the rcode reflects the last name of a CNAME chain.
                    ans.rcode = ResponseCode::NXDomain;
                    ans.authority.push(zone.negative_soa());
                    return ans;
                }
            },
        };
        let owner = Name::from(name.clone());
        let fallback = steered_name && name == *q.name;
        let fix_owner = |mut r: Record| {
            if synthesized_from.is_some() {
                r.set_name(owner.clone());
            }
            if fallback && r.ttl() > fallback_ttl {
                r.set_ttl(fallback_ttl);
            }
            r
        };
        if records.is_empty() {
            ans.authority.push(zone.negative_soa());
            return ans;
        }
        if q.qtype == RecordType::ANY {
            // RFC 8482: answer one RRset, preferring addresses.
            let pick = [RecordType::A, RecordType::AAAA, RecordType::CNAME]
                .into_iter()
                .find(|t| records.iter().any(|r| r.record_type() == *t))
                .or_else(|| records.first().map(Record::record_type));
            ans.answers.extend(
                records
                    .iter()
                    .filter(|r| Some(r.record_type()) == pick)
                    .cloned()
                    .map(fix_owner),
            );
            return ans;
        }
        let exact: Vec<Record> = records
            .iter()
            .filter(|r| r.record_type() == q.qtype)
            .cloned()
            .map(fix_owner)
            .collect();
        if !exact.is_empty() {
            add_additional(zones, &exact, &mut ans.additional);
            ans.answers.extend(exact);
            return ans;
        }
        let cname = records
            .iter()
            .find(|r| r.record_type() == RecordType::CNAME);
        match cname.map(|r| (r.clone(), r.data().clone())) {
            Some((r, RData::CNAME(target))) => {
                ans.answers.push(fix_owner(r));
                let target = LowerName::new(&target.0);
                if !zone.origin().zone_of(&target) || ans.answers.len() >= MAX_CNAME_CHAIN {
                    return ans;
                }
                if steered.contains(&target)
                    && matches!(q.qtype, RecordType::A | RecordType::AAAA)
                    && depth + ans.answers.len() < MAX_CNAME_CHAIN
                {
                    // Bounded: a CNAME cycle through steered names ends here.
                    let sub = resolve_at(
                        zones,
                        steered,
                        &Question {
                            name: &target,
                            qtype: q.qtype,
                        },
                        fallback_ttl,
                        steer,
                        depth + ans.answers.len(),
                    );
                    ans.answers.extend(sub.answers);
                    ans.authority.extend(sub.authority);
                    ans.steered |= sub.steered;
                    return ans;
                }
                name = target;
            }
            _ => {
                ans.authority.push(zone.negative_soa());
                return ans;
            }
        }
    }
    ans
}

fn referral(zones: &ZoneSet, zone: &Zone, cut: &LowerName) -> Answer {
    let ns: Vec<Record> = zone
        .rrset(cut, RecordType::NS)
        .into_iter()
        .cloned()
        .collect();
    let mut additional = vec![];
    add_additional(zones, &ns, &mut additional);
    Answer {
        rcode: ResponseCode::NoError,
        authoritative: false,
        answers: vec![],
        authority: ns,
        additional,
        steered: false,
    }
}

/// Adds in-zone A/AAAA records for NS, MX and SRV targets.
fn add_additional(zones: &ZoneSet, records: &[Record], out: &mut Vec<Record>) {
    for r in records {
        let target = match r.data() {
            RData::NS(ns) => &ns.0,
            RData::MX(mx) => mx.exchange(),
            RData::SRV(srv) => srv.target(),
            _ => continue,
        };
        let t = LowerName::new(target);
        if let Some(z) = zones.find(&t) {
            for ty in [RecordType::A, RecordType::AAAA] {
                for g in z.rrset(&t, ty) {
                    if !out.contains(g) {
                        out.push(g.clone());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::str::FromStr;

    const ZONE: &str = r#"
$TTL 300
@       IN SOA ns1 hostmaster 2026112401 7200 900 1209600 60
@       IN NS  ns1
@       IN NS  ns2.other.example.
ns1     IN A   192.0.2.53
www     IN A   192.0.2.80
alias   IN CNAME www
ext     IN CNAME www.other.example.
mail    IN MX  10 mx1
mx1     IN A   192.0.2.25
*.wild  IN TXT "wild"
a.b.c   IN TXT "deep"
sub     IN NS  ns.sub
ns.sub  IN A   192.0.2.99
"#;

    fn zones() -> ZoneSet {
        let z = Zone::parse(
            ZONE,
            &Name::from_str("ex.test.").unwrap(),
            Path::new("ex.test.zone"),
        )
        .unwrap();
        ZoneSet::new(vec![z])
    }

    fn ask(name: &str, t: RecordType, steer: Option<Vec<IpAddr>>) -> Answer {
        let steer = steer.map(|a| (a, 30));
        let n = LowerName::from_str(name).unwrap();
        let mut steered = HashSet::new();
        steered.insert(LowerName::from_str("www.ex.test.").unwrap());
        resolve(
            &zones(),
            &steered,
            &Question { name: &n, qtype: t },
            30,
            &move |_| steer.clone(),
        )
    }

    #[test]
    fn exact_nodata_nxdomain_refused() {
        let a = ask("ns1.ex.test.", RecordType::A, None);
        assert_eq!(
            (a.rcode, a.authoritative, a.answers.len()),
            (ResponseCode::NoError, true, 1)
        );
        let a = ask("ns1.ex.test.", RecordType::AAAA, None);
        assert_eq!(
            (a.rcode, a.answers.len(), a.authority.len()),
            (ResponseCode::NoError, 0, 1)
        );
        assert_eq!(a.authority[0].ttl(), 60, "negative TTL = SOA minimum");
        let a = ask("nope.ex.test.", RecordType::A, None);
        assert_eq!(
            (a.rcode, a.authority[0].record_type()),
            (ResponseCode::NXDomain, RecordType::SOA)
        );
        let a = ask("b.c.ex.test.", RecordType::A, None);
        assert_eq!(
            a.rcode,
            ResponseCode::NoError,
            "empty non-terminal is NODATA"
        );
        let a = ask("www.example.com.", RecordType::A, None);
        assert_eq!((a.rcode, a.authoritative), (ResponseCode::Refused, false));
        let a = ask("ex.test.", RecordType::AXFR, None);
        assert_eq!(a.rcode, ResponseCode::Refused);
    }

    #[test]
    fn steering_and_fallback() {
        let a = ask("www.ex.test.", RecordType::A, None);
        assert_eq!(
            a.answers[0].data(),
            &RData::A(A::from_str("192.0.2.80").unwrap())
        );
        assert!(!a.steered);
        let a = ask(
            "WWW.ex.test.",
            RecordType::A,
            Some(vec!["10.0.0.1".parse().unwrap(), "::1".parse().unwrap()]),
        );
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].ttl(), 30);
        assert!(a.steered);
        let a = ask(
            "www.ex.test.",
            RecordType::AAAA,
            Some(vec!["10.0.0.1".parse().unwrap(), "::1".parse().unwrap()]),
        );
        assert_eq!(
            a.answers[0].data(),
            &RData::AAAA(AAAA::from_str("::1").unwrap())
        );
        // CNAME to a steered name follows steering.
        let a = ask(
            "alias.ex.test.",
            RecordType::A,
            Some(vec!["10.0.0.7".parse().unwrap()]),
        );
        assert_eq!(a.answers.len(), 2);
        assert_eq!(
            a.answers[1].data(),
            &RData::A(A::from_str("10.0.0.7").unwrap())
        );
    }

    #[test]
    fn cname_cycle_through_steered_name_terminates() {
        let text = "$TTL 60\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\nwww IN CNAME alias\nalias IN CNAME www\n";
        let z = Zone::parse(
            text,
            &Name::from_str("cy.test.").unwrap(),
            Path::new("cy.test.zone"),
        )
        .unwrap();
        let zones = ZoneSet::new(vec![z]);
        let mut steered = HashSet::new();
        steered.insert(LowerName::from_str("www.cy.test.").unwrap());
        steered.insert(LowerName::from_str("alias.cy.test.").unwrap());
        let n = LowerName::from_str("alias.cy.test.").unwrap();
        let a = resolve(
            &zones,
            &steered,
            &Question {
                name: &n,
                qtype: RecordType::A,
            },
            30,
            &|_| None,
        );
        assert!(a.answers.len() <= 2 * MAX_CNAME_CHAIN);
        // $ORIGIN may not move a zone; $INCLUDE is refused in untrusted text.
        let moved = "$ORIGIN evil.example.\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\n";
        assert!(Zone::parse(moved, &Name::from_str("cy.test.").unwrap(), Path::new("x")).is_err());
        let inc = "$TTL 60\n  $include /etc/passwd\n";
        assert!(
            Zone::parse_untrusted(inc, &Name::from_str("cy.test.").unwrap(), Path::new("x"))
                .is_err()
        );
    }

    #[test]
    fn cname_wildcard_referral_any_mx() {
        let a = ask("ext.ex.test.", RecordType::A, None);
        assert_eq!(
            (a.answers.len(), a.answers[0].record_type()),
            (1, RecordType::CNAME)
        );
        let a = ask("x.wild.ex.test.", RecordType::TXT, None);
        assert_eq!(
            a.answers[0].name(),
            &Name::from_str("x.wild.ex.test.").unwrap()
        );
        let a = ask("host.sub.ex.test.", RecordType::A, None);
        assert!(!a.authoritative);
        assert_eq!(a.authority[0].record_type(), RecordType::NS);
        assert_eq!(a.additional.len(), 1, "glue");
        let a = ask("ex.test.", RecordType::ANY, None);
        let types: HashSet<_> = a.answers.iter().map(|r| r.record_type()).collect();
        assert_eq!(types.len(), 1, "minimal ANY answers one RRset");
        let a = ask("mail.ex.test.", RecordType::MX, None);
        assert_eq!(a.additional.len(), 1);
    }
}
