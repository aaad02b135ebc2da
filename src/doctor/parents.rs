//! The delegation as every server of the parent zone gives it, and the
//! zone's NS set as a resolver answers it, against the zone's own NS
//! records (pure: the answers are gathered by the caller).

use std::collections::BTreeSet;
use std::net::IpAddr;

use hickory_proto::rr::LowerName;

use super::findings::{self, Check, Finding, Level, NsSet};

/// What one address of one parent server answered when asked for the
/// zone's NS without recursion: the referral (NS + glue), or why not.
#[derive(Debug, Clone)]
pub struct Referral {
    /// The parent's name server.
    pub server: LowerName,
    /// The address asked.
    pub addr: IpAddr,
    /// Its referral (empty: it answered without one), or the error.
    pub answer: Result<NsSet, String>,
}

fn finding(level: Level, zone: &LowerName, message: String, fix: &str) -> Finding {
    Finding {
        level,
        check: Check::Delegation,
        subject: zone.to_string(),
        message,
        fix: Some(fix.to_string()),
    }
}

/// Every distinct referral the parent's servers give, each with the
/// servers giving it; those that gave none, with why.
fn group(referrals: &[Referral]) -> (Vec<(NsSet, Vec<String>)>, Vec<String>) {
    let mut groups: Vec<(NsSet, Vec<String>)> = vec![];
    let mut silent = vec![];
    // Resolvers rotate the parent's NS set: report in a stable order.
    let mut sorted: Vec<&Referral> = referrals.iter().collect();
    sorted.sort_by(|a, b| (&a.server, a.addr).cmp(&(&b.server, b.addr)));
    for r in sorted {
        let at = format!("{} at {}", r.server, r.addr);
        match &r.answer {
            Ok(set) if !set.0.is_empty() => match groups.iter_mut().find(|(s, _)| s == set) {
                Some((_, servers)) => servers.push(at),
                None => groups.push((set.clone(), vec![at])),
            },
            Ok(_) => silent.push(format!("{at}: no NS for the zone in its answer")),
            Err(e) => silent.push(format!("{at}: {e}")),
        }
    }
    (groups, silent)
}

/// The union of every referral's NS names and glue (the authorities to
/// probe).
pub fn union(referrals: &[Referral]) -> NsSet {
    let mut out = NsSet::default();
    for set in referrals.iter().filter_map(|r| r.answer.as_ref().ok()) {
        for (ns, addrs) in &set.0 {
            out.0.entry(ns.clone()).or_default().extend(addrs);
        }
    }
    out
}

/// The delegation checked at every parent server: the NS set and glue of
/// each distinct referral against the zone's (`in_zone`; empty: unknown,
/// only agreement is checked), a failure when the servers disagree, a
/// warning for each server that gave no referral.
pub fn delegations(
    zone: &LowerName,
    parent: &LowerName,
    in_zone: &NsSet,
    referrals: &[Referral],
) -> Vec<Finding> {
    let (groups, silent) = group(referrals);
    if groups.is_empty() {
        let why = if silent.is_empty() {
            "it has no reachable name server".to_string()
        } else {
            silent.join("; ")
        };
        return vec![finding(
            Level::Fail,
            zone,
            format!("no server of the parent {parent} delegates the zone ({why})"),
            "check that the zone is delegated at your registrar",
        )];
    }
    let split = groups.len() > 1;
    let mut out = vec![];
    for (set, servers) in &groups {
        if in_zone.0.is_empty() {
            continue;
        }
        for mut f in findings::delegation(zone, parent, set, in_zone) {
            if split {
                f.message = format!("{} (as {} answer)", f.message, servers.join(", "));
            }
            out.push(f);
        }
    }
    if split {
        let views: Vec<String> = groups
            .iter()
            .map(|(set, servers)| {
                let ns: Vec<String> = set.0.keys().map(ToString::to_string).collect();
                format!("{} list {}", servers.join(", "), ns.join(", "))
            })
            .collect();
        out.push(finding(
            Level::Fail,
            zone,
            format!(
                "the servers of the parent {parent} give {} different delegations: {}",
                groups.len(),
                views.join("; ")
            ),
            "a change at your registrar has not reached every parent server yet (wait for the parent zone's refresh), or a parent server is stale: tell the registrar",
        ));
    }
    for s in silent {
        out.push(finding(
            Level::Warn,
            zone,
            format!("a server of the parent {parent} gives no referral: {s}"),
            "resolvers asking it fail over to the others; tell the parent's operator if it persists",
        ));
    }
    out
}

/// The zone's NS set as `resolver` answers it (`answered`) against the zone
/// file's NS records: a difference means some authority serves another
/// version of the zone, or resolvers still cache an old one.
pub fn resolver_view(
    zone: &LowerName,
    resolver: &str,
    answered: &Result<Vec<LowerName>, String>,
    in_zone: &NsSet,
) -> Finding {
    let mine: BTreeSet<&LowerName> = in_zone.0.keys().collect();
    match answered {
        Err(e) => finding(
            Level::Warn,
            zone,
            format!("cannot ask {resolver} for the zone's NS set: {e}"),
            "check the resolver; the delegation checks above are made without it",
        ),
        Ok(names) => {
            let theirs: BTreeSet<&LowerName> = names.iter().collect();
            let list = |s: &BTreeSet<&LowerName>| {
                s.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if theirs == mine {
                Finding {
                    level: Level::Ok,
                    check: Check::Delegation,
                    subject: zone.to_string(),
                    message: format!(
                        "{resolver} answers the zone file's NS set ({})",
                        list(&mine)
                    ),
                    fix: None,
                }
            } else {
                finding(
                    Level::Fail,
                    zone,
                    format!(
                        "{resolver} answers NS {} for the zone; the zone file has {}",
                        list(&theirs),
                        list(&mine)
                    ),
                    "an authority serves another NS set: make every authority load this zone file (SIGHUP), or publish it again with --zone-file for instances serving the owner-signed zone; resolvers keep an old set up to its TTL",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::rr::Name;

    use super::*;

    fn n(s: &str) -> LowerName {
        LowerName::from(Name::from_str(s).unwrap())
    }

    fn set(entries: &[(&str, &str)]) -> NsSet {
        NsSet(
            entries
                .iter()
                .map(|(ns, a)| (n(ns), [a.parse().unwrap()].into_iter().collect()))
                .collect(),
        )
    }

    fn good() -> NsSet {
        set(&[
            ("ns1.cdn.example.org.", "192.0.2.1"),
            ("ns2.cdn.example.org.", "192.0.2.2"),
        ])
    }

    fn referral(server: &str, addr: &str, answer: Result<NsSet, String>) -> Referral {
        Referral {
            server: n(server),
            addr: addr.parse().unwrap(),
            answer,
        }
    }

    const Z: &str = "cdn.example.org.";
    const P: &str = "example.org.";

    #[test]
    fn parent_servers_that_agree_give_one_verdict() {
        let r = [
            referral("a.nic.org.", "198.51.100.1", Ok(good())),
            referral("b.nic.org.", "198.51.100.2", Ok(good())),
        ];
        let f = delegations(&n(Z), &n(P), &good(), &r);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].level, Level::Ok);
    }

    #[test]
    fn a_stale_parent_server_is_named_and_fails() {
        let stale = set(&[("ns1.cdn.example.org.", "192.0.2.1")]);
        let r = [
            referral("a.nic.org.", "198.51.100.1", Ok(good())),
            referral("b.nic.org.", "198.51.100.2", Ok(stale)),
            referral("c.nic.org.", "198.51.100.3", Err("timed out".into())),
        ];
        let f = delegations(&n(Z), &n(P), &good(), &r);
        let fails: Vec<&Finding> = f.iter().filter(|f| f.level == Level::Fail).collect();
        assert!(
            fails.iter().any(
                |f| f.message.contains("does not list NS ns2.cdn.example.org.")
                    && f.message.contains("b.nic.org. at 198.51.100.2")
            ),
            "{f:#?}"
        );
        assert!(
            fails
                .iter()
                .any(|f| f.message.contains("2 different delegations")),
            "{f:#?}"
        );
        assert!(
            f.iter().any(|f| f.level == Level::Warn
                && f.message.contains("c.nic.org. at 198.51.100.3: timed out")),
            "{f:#?}"
        );
        assert_eq!(union(&r), good());
    }

    #[test]
    fn no_referral_anywhere_fails() {
        let r = [referral("a.nic.org.", "198.51.100.1", Ok(NsSet::default()))];
        let f = delegations(&n(Z), &n(P), &good(), &r);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].level, Level::Fail);
        assert!(
            f[0].message.contains("no NS for the zone"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn the_resolvers_ns_set_is_compared_with_the_zone_file() {
        let names =
            |v: &[&str]| -> Result<Vec<LowerName>, String> { Ok(v.iter().map(|s| n(s)).collect()) };
        let same = resolver_view(
            &n(Z),
            "r",
            &names(&["ns2.cdn.example.org.", "ns1.cdn.example.org."]),
            &good(),
        );
        assert_eq!(same.level, Level::Ok);
        let other = resolver_view(&n(Z), "r", &names(&["ns1.cdn.example.org."]), &good());
        assert_eq!(other.level, Level::Fail);
        assert!(
            other
                .message
                .contains("answers NS ns1.cdn.example.org. for the zone")
                && other
                    .message
                    .contains("the zone file has ns1.cdn.example.org., ns2.cdn.example.org."),
            "{}",
            other.message
        );
        let err = resolver_view(&n(Z), "r", &Err("SERVFAIL".into()), &good());
        assert_eq!(err.level, Level::Warn);
    }
}
