//! The doctor's decisions, without I/O: observed values in, [`Finding`]s out.
//!
//! Rules:
//! - **Delegation**: the parent must list every name server of the zone's own
//!   NS set and no other; for a name server inside the zone (which needs
//!   glue), the parent's glue must be exactly the zone's addresses. A missing
//!   NS, an extra NS, missing or wrong glue is a FAIL; glue that lacks some of
//!   the zone's addresses (e.g. no AAAA) is a warning.
//! - **Serials**: every address of every authority answers the zone's SOA
//!   authoritatively (AA), all with one serial; that serial is the local zone
//!   file's, when there is one.
//! - **Steering**: a site's name resolves through the resolver to at least one
//!   address, and every authority answers it AA with NOERROR.
//! - **Certificates**: the TLS handshake (chain, name, validity) succeeded;
//!   expiry within [`CERT_WARN_DAYS`] warns.
//! - **Clock**: skew against a peer beyond [`SKEW_FAIL_SECS`] fails, beyond
//!   [`SKEW_WARN_SECS`] warns.
//! - **Geodata**: a configured file that cannot be read fails; one built more
//!   than [`GEODATA_WARN_DAYS`] ago warns; none configured warns.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::LowerName;

/// Certificates expiring within this many days are warned about.
pub const CERT_WARN_DAYS: i64 = 14;
/// Clock skew against a peer beyond this fails (seconds).
pub const SKEW_FAIL_SECS: f64 = 60.0;
/// Clock skew against a peer beyond this warns (seconds; `Date` has 1 s resolution).
pub const SKEW_WARN_SECS: f64 = 5.0;
/// Geodata built longer ago than this is warned about.
pub const GEODATA_WARN_DAYS: i64 = 90;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// As it should be.
    Ok,
    /// Works, but needs attention soon.
    Warn,
    /// Broken: clients or resolvers are affected now.
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        })
    }
}

/// What was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Parent NS set and glue against the zone's NS records.
    Delegation,
    /// The zone's SOA serial at every authority.
    Serial,
    /// A site name through the resolver and at every authority.
    Steering,
    /// A TLS certificate as clients see it.
    Certificate,
    /// Clock skew against a peer.
    Clock,
    /// The geolocation database.
    Geodata,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Check::Delegation => "delegation",
            Check::Serial => "serial",
            Check::Steering => "steering",
            Check::Certificate => "certificate",
            Check::Clock => "clock",
            Check::Geodata => "geodata",
        })
    }
}

/// One line of the doctor's report.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Outcome.
    pub level: Level,
    /// Which check.
    pub check: Check,
    /// What it is about (zone, name, address, URL, file).
    pub subject: String,
    /// What was found.
    pub message: String,
    /// How to fix it (failures and warnings).
    pub fix: Option<String>,
}

impl Finding {
    fn new(level: Level, check: Check, subject: impl fmt::Display, message: String) -> Self {
        Self {
            level,
            check,
            subject: subject.to_string(),
            message,
            fix: None,
        }
    }

    fn ok(check: Check, subject: impl fmt::Display, message: String) -> Self {
        Self::new(Level::Ok, check, subject, message)
    }

    fn bad(
        level: Level,
        check: Check,
        subject: impl fmt::Display,
        message: String,
        fix: String,
    ) -> Self {
        Self {
            fix: Some(fix),
            ..Self::new(level, check, subject, message)
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<4} {} {}: {}",
            self.level, self.check, self.subject, self.message
        )?;
        if let Some(fix) = &self.fix {
            write!(f, "; fix: {fix}")?;
        }
        Ok(())
    }
}

/// A set of name servers with their addresses: the parent's referral (NS +
/// glue) or the zone's own NS records (+ the zone's A/AAAA for them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsSet(pub BTreeMap<LowerName, BTreeSet<IpAddr>>);

impl NsSet {
    /// Names, comma separated.
    fn names(&self) -> String {
        join(self.0.keys())
    }

    /// Addresses of `ns` (empty if none or not listed).
    pub fn addrs(&self, ns: &LowerName) -> BTreeSet<IpAddr> {
        self.0.get(ns).cloned().unwrap_or_default()
    }
}

fn join<T: fmt::Display>(it: impl IntoIterator<Item = T>) -> String {
    it.into_iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `A 192.0.2.1, AAAA 2001:db8::1`.
fn glue_text(addrs: &BTreeSet<IpAddr>) -> String {
    join(addrs.iter().map(|a| match a {
        IpAddr::V4(_) => format!("A {a}"),
        IpAddr::V6(_) => format!("AAAA {a}"),
    }))
}

/// Compares the parent's delegation of `zone` (its NS set and glue) with the
/// zone's own NS set and addresses.
pub fn delegation(
    zone: &LowerName,
    parent: &LowerName,
    at_parent: &NsSet,
    in_zone: &NsSet,
) -> Vec<Finding> {
    let d = Check::Delegation;
    let at = format!("at your registrar/parent ({parent})");
    let mut out = vec![];
    for (ns, addrs) in &in_zone.0 {
        let needs_glue = zone.zone_of(ns);
        if !at_parent.0.contains_key(ns) {
            let glue = if needs_glue && !addrs.is_empty() {
                format!(" with glue {}", glue_text(addrs))
            } else {
                String::new()
            };
            out.push(Finding::bad(
                Level::Fail,
                d,
                zone,
                format!("the parent {parent} does not list NS {ns}, which the zone has"),
                format!("{at}, add NS {ns}{glue}"),
            ));
            continue;
        }
        if !needs_glue || addrs.is_empty() {
            continue;
        }
        let glue = at_parent.addrs(ns);
        let wrong: BTreeSet<IpAddr> = glue.difference(addrs).copied().collect();
        let lacking: BTreeSet<IpAddr> = addrs.difference(&glue).copied().collect();
        if glue.is_empty() {
            out.push(Finding::bad(
                Level::Fail,
                d,
                zone,
                format!(
                    "the parent {parent} lists NS {ns} without glue; resolvers cannot reach it"
                ),
                format!("{at}, add glue {} for {ns}", glue_text(addrs)),
            ));
        } else if !wrong.is_empty() {
            out.push(Finding::bad(
                Level::Fail,
                d,
                zone,
                format!(
                    "the parent {parent} has wrong glue for {ns}: {}; the zone says {}",
                    glue_text(&wrong),
                    glue_text(addrs)
                ),
                format!("{at}, set the glue of {ns} to {}", glue_text(addrs)),
            ));
        } else if !lacking.is_empty() {
            out.push(Finding::bad(
                Level::Warn,
                d,
                zone,
                format!(
                    "the parent {parent} has no glue {} for {ns}",
                    glue_text(&lacking)
                ),
                format!("{at}, add glue {} for {ns}", glue_text(&lacking)),
            ));
        }
    }
    for ns in at_parent.0.keys().filter(|n| !in_zone.0.contains_key(*n)) {
        out.push(Finding::bad(
            Level::Fail,
            d,
            zone,
            format!("the parent {parent} lists NS {ns}, which the zone's NS set does not have"),
            format!("{at}, remove NS {ns}, or add it to the zone's NS records"),
        ));
    }
    if out.is_empty() {
        out.push(Finding::ok(
            d,
            zone,
            format!(
                "the parent {parent} lists the zone's NS set ({}) with matching glue",
                in_zone.names()
            ),
        ));
    }
    out
}

/// What one authority address said when asked directly (no recursion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A response: authoritative or not, its rcode, and the data asked for
    /// (the SOA serial; the number of address records).
    Response {
        /// AA flag.
        aa: bool,
        /// Response code, e.g. `NOERROR`, `REFUSED`.
        rcode: String,
        /// SOA serial, when a SOA was asked for and answered.
        serial: Option<u32>,
        /// Answer records of the asked type.
        records: usize,
    },
    /// No usable response (timeout, unreachable, malformed).
    Failed(String),
}

/// One authority address and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Name server name.
    pub ns: LowerName,
    /// The address asked.
    pub addr: IpAddr,
    /// Its answer.
    pub answer: Answer,
}

fn unreachable_fix(p: &Probe, zone: &LowerName) -> String {
    format!(
        "make {} answer for {zone} on {}:53 (UDP and TCP), or correct its address in the zone and at the parent",
        p.ns, p.addr
    )
}

/// Compares the SOA serials every authority address answered for `zone`
/// with each other and with the local zone file's (`local`).
pub fn serials(zone: &LowerName, local: Option<u32>, probes: &[Probe]) -> Vec<Finding> {
    let s = Check::Serial;
    let mut out = vec![];
    let mut seen: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for p in probes {
        match &p.answer {
            Answer::Failed(why) => out.push(Finding::bad(
                Level::Fail,
                s,
                zone,
                format!("{} at {} did not answer: {why}", p.ns, p.addr),
                unreachable_fix(p, zone),
            )),
            Answer::Response {
                aa: true,
                serial: Some(n),
                ..
            } => seen
                .entry(*n)
                .or_default()
                .push(format!("{} at {}", p.ns, p.addr)),
            Answer::Response { aa, rcode, .. } => out.push(Finding::bad(
                Level::Fail,
                s,
                zone,
                format!(
                    "{} at {} answers SOA {rcode}{} (lame: not authoritative)",
                    p.ns,
                    p.addr,
                    if *aa { " without a SOA" } else { " without AA" }
                ),
                format!(
                    "serve the zone {zone} on {} (its zone file, or an owner-signed zone via publish --zone-file), or remove {} from the NS set",
                    p.addr, p.ns
                ),
            )),
        }
    }
    if seen.len() > 1 {
        let parts = seen
            .iter()
            .map(|(n, who)| format!("{n} at {}", who.join(", ")))
            .collect::<Vec<_>>()
            .join("; ");
        out.push(Finding::bad(
            Level::Fail,
            s,
            zone,
            format!("the authorities disagree on the SOA serial: {parts}"),
            "give every authority the same zone file (bump the serial on each change) and restart them".into(),
        ));
    }
    if let (Some(l), Some((&served, _))) = (local, seen.iter().next_back()) {
        if seen.len() == 1 && l != served {
            out.push(Finding::bad(
                Level::Fail,
                s,
                zone,
                format!("the authorities answer serial {served}, the local zone file has {l}"),
                "copy the same zone file to every authority and restart serve there (zone files are read at start)".into(),
            ));
        }
    }
    if out.is_empty() {
        if let Some((n, who)) = seen.iter().next() {
            out.push(Finding::ok(
                s,
                zone,
                format!(
                    "{} authority addresses answer SOA serial {n} (AA)",
                    who.len()
                ),
            ));
        } else {
            out.push(Finding::bad(
                Level::Fail,
                s,
                zone,
                "no authority to ask (no NS found)".into(),
                "give the zone NS records and delegate it".into(),
            ));
        }
    }
    out
}

/// A site's name: what the resolver answered (`resolved`, via `resolver`)
/// and what each authority answered for its A record.
pub fn steered(
    host: &LowerName,
    resolver: &str,
    resolved: &Result<Vec<IpAddr>, impl std::fmt::Display>,
    probes: &[Probe],
) -> Vec<Finding> {
    let c = Check::Steering;
    let mut out = vec![];
    match resolved {
        Ok(a) if !a.is_empty() => {}
        Ok(_) => out.push(Finding::bad(
            Level::Fail,
            c,
            host,
            format!("resolves to no address through {resolver}"),
            "publish the site so that an authorized mirror holds it (p2pcdn status), or add fallback A/AAAA records for the name to the zone".into(),
        )),
        Err(e) => out.push(Finding::bad(
            Level::Fail,
            c,
            host,
            format!("does not resolve through {resolver}: {e}"),
            "fix the delegation and authorities (see the lines above)".into(),
        )),
    }
    let mut good = 0;
    for p in probes {
        match &p.answer {
            Answer::Response {
                aa: true, rcode, ..
            } if rcode == "NOERROR" => good += 1,
            Answer::Response { aa, rcode, .. } => out.push(Finding::bad(
                Level::Fail,
                c,
                host,
                format!(
                    "{} at {} answers {rcode}{}",
                    p.ns,
                    p.addr,
                    if *aa { "" } else { " without AA" }
                ),
                format!(
                    "configure the site {host} (its [[site]] and zone) on the instance at {}",
                    p.addr
                ),
            )),
            // Unreachable authorities are reported by the serial check.
            Answer::Failed(_) => {}
        }
    }
    if out.is_empty() {
        let addrs = match resolved {
            Ok(a) => join(a),
            Err(_) => String::new(),
        };
        out.push(Finding::ok(
            c,
            host,
            format!(
                "resolves to {addrs} through {resolver}; {good} authority addresses answer it AA"
            ),
        ));
    }
    out
}

/// A TLS handshake with `sni` at `addr`: the leaf's expiry (unix seconds)
/// or why the handshake or certificate failed.
pub fn certificate(
    sni: &str,
    addr: &SocketAddr,
    result: &Result<i64, impl std::fmt::Display>,
    now: i64,
    fix: &str,
) -> Finding {
    let c = Check::Certificate;
    let subject = format!("{sni} at {addr}");
    match result {
        Err(e) => Finding::bad(Level::Fail, c, subject, e.to_string(), fix.to_string()),
        Ok(not_after) => {
            let days = (not_after - now).div_euclid(86_400);
            let when = u64::try_from(*not_after)
                .ok()
                .map(|s| {
                    httpdate::fmt_http_date(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
                    )
                })
                .unwrap_or_default();
            if days < CERT_WARN_DAYS {
                Finding::bad(
                    Level::Warn,
                    c,
                    subject,
                    format!("valid, but expires in {days} days ({when})"),
                    format!("renew the certificate for {sni}"),
                )
            } else {
                Finding::ok(
                    c,
                    subject,
                    format!("valid (chain, name), expires in {days} days ({when})"),
                )
            }
        }
    }
}

/// Clock skew against a peer: the peer's clock minus ours, seconds.
pub fn clock(peer: &str, skew: &Result<f64, impl std::fmt::Display>) -> Finding {
    let c = Check::Clock;
    match skew {
        Err(e) => Finding::bad(
            Level::Fail,
            c,
            peer,
            format!("cannot read the peer's clock: {e}"),
            "check the peer's url/address in [federation] peers and that it is running".into(),
        ),
        Ok(s) if s.abs() > SKEW_FAIL_SECS => Finding::bad(
            Level::Fail,
            c,
            peer,
            format!("skew {s:+.1} s (limit {SKEW_FAIL_SECS} s): signed reports and manifests are judged by the clock"),
            "synchronize both clocks with NTP (e.g. systemd-timesyncd or chrony)".into(),
        ),
        Ok(s) if s.abs() > SKEW_WARN_SECS => Finding::bad(
            Level::Warn,
            c,
            peer,
            format!("skew {s:+.1} s"),
            "synchronize both clocks with NTP".into(),
        ),
        Ok(s) => Finding::ok(c, peer, format!("skew {s:+.1} s")),
    }
}

/// The geodata file: `None` when not configured, else its build epoch
/// (unix seconds) or why it cannot be read.
pub fn geodata(
    path: Option<&str>,
    build: &Result<u64, impl std::fmt::Display>,
    now: i64,
) -> Finding {
    let c = Check::Geodata;
    let Some(path) = path else {
        return Finding::bad(
            Level::Warn,
            c,
            "(none)",
            "no geodata configured: every client's location is unknown and all mirrors score the same".into(),
            "set geodata = \"…/dbip-country.mmdb\" in the config".into(),
        );
    };
    match build {
        Err(e) => Finding::bad(
            Level::Fail,
            c,
            path,
            format!("cannot be read: {e}"),
            "install the database there, or correct the geodata key".into(),
        ),
        Ok(epoch) => {
            let days = (now - i64::try_from(*epoch).unwrap_or(i64::MAX)).div_euclid(86_400);
            if days > GEODATA_WARN_DAYS {
                Finding::bad(
                    Level::Warn,
                    c,
                    path,
                    format!("built {days} days ago (more than {GEODATA_WARN_DAYS})"),
                    "download a current edition (DB-IP publishes monthly) and restart serve".into(),
                )
            } else {
                Finding::ok(c, path, format!("built {days} days ago"))
            }
        }
    }
}

#[cfg(test)]
mod tests;
