//! Zone data loaded from RFC 1035 zone files, and exact/closest-match lookups.
//!
//! Pure after loading: a [`Zone`] is an immutable index over records. Files are
//! named `<origin>.zone` in the zones directory; the origin is taken from the
//! file name (and may be overridden by `$ORIGIN`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::Parser;

/// Longest zone file line accepted.
pub const MAX_LINE: usize = 4000;

/// Zone loading errors.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Syntax error reported by the zone file parser.
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: String,
        /// Parser message.
        message: String,
    },
    /// The zone breaks a rule (missing SOA/NS, out-of-zone data, CNAME and other data).
    #[error("{path}: {message}")]
    Invalid {
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// One authoritative zone.
#[derive(Debug, Clone)]
pub struct Zone {
    origin: LowerName,
    soa: Record,
    nodes: HashMap<LowerName, Vec<Record>>,
    /// Every name that exists, including empty non-terminals.
    names: HashSet<LowerName>,
    /// Delegation points (NS below the apex).
    cuts: HashSet<LowerName>,
    has_wildcards: bool,
}

impl Zone {
    /// Parses zone file text with the given origin.
    pub fn parse(text: &str, origin: &Name, path: &Path) -> Result<Self, ZoneError> {
        let origin_requested = origin;
        let p = path.display().to_string();
        // hickory's lexer asserts (panics) on a token longer than 4094
        // characters: refuse long lines with a clear message, and contain any
        // other parser panic, since zone text may come from a manifest.
        if let Some((n, _)) = text.lines().enumerate().find(|(_, l)| l.len() > MAX_LINE) {
            return Err(ZoneError::Parse {
                path: p,
                message: format!("line {} is longer than {MAX_LINE} characters", n + 1),
            });
        }
        let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Parser::new(text, Some(path.to_path_buf()), Some(origin.clone())).parse()
        }));
        let (origin_name, sets) = match parsed {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                // hickory's errors carry no position: find the record.
                let at = first_bad_line(text, origin, path)
                    .map(|n| format!("line {n}: "))
                    .unwrap_or_default();
                return Err(ZoneError::Parse {
                    path: p,
                    message: format!("{at}{e}"),
                });
            }
            Err(_) => {
                return Err(ZoneError::Parse {
                    path: p,
                    message: "the zone file parser failed on this input (an overlong token?)"
                        .into(),
                })
            }
        };
        let origin = LowerName::new(&origin_name);
        if origin != LowerName::new(origin_requested) {
            // `$ORIGIN` must not move the zone somewhere else.
            return Err(ZoneError::Invalid {
                path: p,
                message: format!(
                    "$ORIGIN moves the zone to {origin}; it must stay {origin_requested}"
                ),
            });
        }
        let invalid = |message: String| ZoneError::Invalid {
            path: p.clone(),
            message,
        };
        let mut nodes: HashMap<LowerName, Vec<Record>> = HashMap::new();
        let mut soa = None;
        for (key, set) in sets {
            if !origin.zone_of(&key.name) {
                return Err(invalid(format!(
                    "{} is outside the zone {origin}",
                    key.name
                )));
            }
            for r in set.records_without_rrsigs() {
                if r.record_type() == RecordType::SOA {
                    if key.name != origin {
                        return Err(invalid(format!(
                            "SOA at {} is not at the zone apex",
                            key.name
                        )));
                    }
                    soa = Some(r.clone());
                }
                nodes.entry(key.name.clone()).or_default().push(r.clone());
            }
        }
        let mut soa = soa.ok_or_else(|| invalid(format!("zone {origin} has no SOA record")))?;
        // hickory's parser gives the SOA record its EXPIRE field as TTL
        // (1209600 in a typical zone); use what the file says instead.
        if let RData::SOA(rd) = soa.data() {
            let ttl = soa_ttl(text).unwrap_or(rd.minimum());
            soa.set_ttl(ttl);
            if let Some(apex) = nodes.get_mut(&origin) {
                for r in apex
                    .iter_mut()
                    .filter(|r| r.record_type() == RecordType::SOA)
                {
                    r.set_ttl(ttl);
                }
            }
        }
        let apex_ns = nodes
            .get(&origin)
            .is_some_and(|rs| rs.iter().any(|r| r.record_type() == RecordType::NS));
        if !apex_ns {
            return Err(invalid(format!(
                "zone {origin} has no NS records at the apex"
            )));
        }
        let mut names = HashSet::new();
        let mut cuts = HashSet::new();
        let mut has_wildcards = false;
        for (name, rs) in &nodes {
            let types: HashSet<RecordType> = rs.iter().map(|r| r.record_type()).collect();
            if types.contains(&RecordType::CNAME) && types.len() > 1 {
                return Err(invalid(format!("{name} has a CNAME and other data")));
            }
            if *name != origin && types.contains(&RecordType::NS) {
                cuts.insert(name.clone());
            }
            has_wildcards |= name.is_wildcard();
            let mut n = name.clone();
            while origin.zone_of(&n) && names.insert(n.clone()) && n != origin {
                n = n.base_name();
            }
        }
        Ok(Self {
            origin,
            soa,
            nodes,
            names,
            cuts,
            has_wildcards,
        })
    }

    /// Parses zone text that came from the network (an owner-signed manifest):
    /// `$INCLUDE` is refused, so remote text can never read local files.
    pub fn parse_untrusted(text: &str, origin: &Name, label: &Path) -> Result<Self, ZoneError> {
        // Anywhere, not just at a line start: hickory also accepts a directive
        // after `$TTL n` or `$ORIGIN x` on the same line.
        let includes = text.to_ascii_lowercase().contains("$include");
        if includes {
            return Err(ZoneError::Invalid {
                path: label.display().to_string(),
                message: "$INCLUDE is not allowed in owner-signed zones".into(),
            });
        }
        Self::parse(text, origin, label)
    }

    /// Reads `path`; the origin comes from the file name minus `.zone`.
    pub fn load(path: &Path) -> Result<Self, ZoneError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ZoneError::Io {
            path: p.clone(),
            source,
        })?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| ZoneError::Invalid {
                path: p.clone(),
                message: "file name is not <zone>.zone".into(),
            })?;
        let origin = Name::from_ascii(format!("{stem}.")).map_err(|e| ZoneError::Invalid {
            path: p.clone(),
            message: format!("file name {stem:?} is not a zone name: {e}"),
        })?;
        Self::parse(&text, &origin, path)
    }

    /// The apex.
    pub fn origin(&self) -> &LowerName {
        &self.origin
    }

    /// The SOA record.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// SOA with the TTL used for negative answers (min of TTL and MINIMUM, RFC 2308).
    pub fn negative_soa(&self) -> Record {
        let mut r = self.soa.clone();
        if let RData::SOA(soa) = r.data() {
            let ttl = r.ttl().min(soa.minimum());
            r.set_ttl(ttl);
        }
        r
    }

    /// Records owned by exactly `name`.
    pub fn node(&self, name: &LowerName) -> Option<&[Record]> {
        self.nodes.get(name).map(Vec::as_slice)
    }

    /// Records of one type at `name`.
    pub fn rrset(&self, name: &LowerName, t: RecordType) -> Vec<&Record> {
        self.node(name)
            .map(|rs| rs.iter().filter(|r| r.record_type() == t).collect())
            .unwrap_or_default()
    }

    /// True when `name` exists (has records or is an empty non-terminal).
    pub fn exists(&self, name: &LowerName) -> bool {
        self.names.contains(name)
    }

    /// The delegation point at or above `name` (below the apex), if any.
    pub fn cut_above(&self, name: &LowerName) -> Option<LowerName> {
        if self.cuts.is_empty() {
            return None;
        }
        let mut n = name.clone();
        let mut found = None;
        while n != self.origin && self.origin.zone_of(&n) {
            if self.cuts.contains(&n) {
                found = Some(n.clone());
            }
            n = n.base_name();
        }
        found
    }

    /// The wildcard node that would synthesize `name` (RFC 4592), if any.
    pub fn wildcard_for(&self, name: &LowerName) -> Option<LowerName> {
        if !self.has_wildcards {
            return None;
        }
        let mut encloser = name.base_name();
        while self.origin.zone_of(&encloser) {
            if self.exists(&encloser) {
                let wc = LowerName::new(&Name::from(encloser).prepend_label("*").ok()?);
                return self.nodes.contains_key(&wc).then_some(wc);
            }
            encloser = encloser.base_name();
        }
        None
    }

    /// Marks `name` as existing (for steered site names without zone records).
    pub fn add_name(&mut self, name: &LowerName) {
        let mut n = name.clone();
        while self.origin.zone_of(&n) && self.names.insert(n.clone()) && n != self.origin {
            n = n.base_name();
        }
    }
}

/// Whether zone text fails to parse (a parser panic counts as failing).
fn parse_fails(text: &str, origin: &Name, path: &Path) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Parser::new(text, Some(path.to_path_buf()), Some(origin.clone()))
            .parse()
            .is_err()
    }))
    .unwrap_or(true)
}

/// The 1-based line where the first record that does not parse starts:
/// binary search over prefixes that end between records (outside
/// parentheses). `None` when the whole text parses or no prefix fails.
fn first_bad_line(text: &str, origin: &Name, path: &Path) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    // Line counts after which no parenthesis is open.
    let mut cuts = vec![0usize];
    let mut depth: i64 = 0;
    for (i, line) in lines.iter().enumerate() {
        let code = line.split(';').next().unwrap_or("");
        depth += code.matches('(').count() as i64 - code.matches(')').count() as i64;
        if depth <= 0 {
            depth = 0;
            cuts.push(i + 1);
        }
    }
    let fails = |end: usize| parse_fails(&lines[..end].join("\n"), origin, path);
    // cuts[lo] parses (the empty prefix does), cuts[hi] fails.
    let (mut lo, mut hi) = (0usize, cuts.len() - 1);
    if !fails(cuts[hi]) {
        return None;
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if fails(cuts[mid]) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    // The failing record starts after the last good cut; skip blank lines.
    (cuts[lo]..cuts[hi])
        .find(|&i| !lines[i].split(';').next().unwrap_or("").trim().is_empty())
        .map(|i| i + 1)
}

/// A TTL token of a zone file: seconds, or BIND units (`1h30m`, `2d`, `1w`).
fn parse_ttl(token: &str) -> Option<u32> {
    if let Ok(n) = token.parse::<u32>() {
        return Some(n);
    }
    if token.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut num: u64 = 0;
    let mut digits = false;
    for c in token.chars() {
        if let Some(d) = c.to_digit(10) {
            num = num.checked_mul(10)?.checked_add(u64::from(d))?;
            digits = true;
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        if !digits {
            return None;
        }
        total = total.checked_add(num.checked_mul(unit)?)?;
        num = 0;
        digits = false;
    }
    if digits {
        return None;
    }
    u32::try_from(total).ok()
}

/// The TTL the zone text gives its SOA record: an explicit TTL on the SOA
/// line, else the `$TTL` in effect there; `None` when neither is written.
fn soa_ttl(text: &str) -> Option<u32> {
    let mut default = None;
    for line in text.lines() {
        let code = line.split(';').next().unwrap_or("");
        let mut tokens = code.split_whitespace();
        let Some(first) = tokens.next() else {
            continue;
        };
        if first.eq_ignore_ascii_case("$TTL") {
            default = tokens.next().and_then(parse_ttl).or(default);
            continue;
        }
        let all: Vec<&str> = code.split_whitespace().collect();
        if let Some(at) = all.iter().position(|t| t.eq_ignore_ascii_case("SOA")) {
            // Owner (if the line starts with one), TTL and class, in either order.
            let explicit = all[..at].iter().find_map(|t| parse_ttl(t));
            return explicit.or(default);
        }
    }
    None
}

/// Name servers of the zone (at the apex or at delegations) whose names
/// lie inside the zone but have no A/AAAA record: resolvers cannot reach
/// them (no glue).
pub fn missing_glue(zone: &Zone) -> Vec<String> {
    let mut out: Vec<String> = zone
        .nodes
        .values()
        .flatten()
        .filter_map(|r| match r.data() {
            RData::NS(ns) => Some(LowerName::new(&ns.0)),
            _ => None,
        })
        .filter(|t| zone.origin.zone_of(t))
        .filter(|t| {
            zone.rrset(t, RecordType::A).is_empty() && zone.rrset(t, RecordType::AAAA).is_empty()
        })
        .map(|t| t.to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// All zones this instance is authoritative for.
#[derive(Debug, Clone, Default)]
pub struct ZoneSet {
    zones: Vec<Zone>,
}

impl ZoneSet {
    /// Builds a set (longest origin wins on lookup).
    pub fn new(mut zones: Vec<Zone>) -> Self {
        zones.sort_by_key(|z| std::cmp::Reverse(z.origin.num_labels()));
        Self { zones }
    }

    /// Loads every `*.zone` file in `dir`.
    pub fn load_dir(dir: &Path) -> Result<Self, ZoneError> {
        let rd = std::fs::read_dir(dir).map_err(|source| ZoneError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "zone"))
            .collect();
        files.sort();
        let zones = files
            .iter()
            .map(|p| Zone::load(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(zones))
    }

    /// The most specific zone containing `name`.
    pub fn find(&self, name: &LowerName) -> Option<&Zone> {
        self.zones.iter().find(|z| z.origin.zone_of(name))
    }

    /// Mutable access for [`Zone::add_name`].
    pub fn find_mut(&mut self, name: &LowerName) -> Option<&mut Zone> {
        self.zones.iter_mut().find(|z| z.origin.zone_of(name))
    }

    /// The zones.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn soa_ttl_of(text: &str) -> u32 {
        let z = Zone::parse(text, &Name::from_str("z.test.").unwrap(), Path::new("z")).unwrap();
        let apex = z.rrset(z.origin(), RecordType::SOA);
        assert_eq!(apex.len(), 1);
        assert_eq!(apex[0].ttl(), z.soa().ttl());
        z.soa().ttl()
    }

    #[test]
    fn soa_ttl_is_what_the_file_says_not_expire() {
        let body = "@ IN NS ns1\nns1 IN A 192.0.2.1\n";
        let soa = "( 2026112401 3600 600 1209600 60 )";
        // $TTL in effect.
        assert_eq!(
            soa_ttl_of(&format!("$TTL 300\n@ IN SOA ns1 h {soa}\n{body}")),
            300
        );
        // An explicit TTL wins, before or after the class, with units.
        assert_eq!(
            soa_ttl_of(&format!("$TTL 300\n@ 3600 IN SOA ns1 h {soa}\n{body}")),
            3600
        );
        assert_eq!(
            soa_ttl_of(&format!("$TTL 300\n@ IN 1h30m SOA ns1 h {soa}\n{body}")),
            5400
        );
        // A later $TTL does not apply to an earlier SOA; no $TTL: MINIMUM.
        assert_eq!(
            soa_ttl_of(&format!("$TTL 90\n@ IN SOA ns1 h {soa}\n$TTL 7\n{body}")),
            90
        );
        assert_eq!(
            soa_ttl_of(&format!(
                "@ 200 IN SOA ns1 h {soa}\n@ 200 IN NS ns1\nns1 200 IN A 192.0.2.1\n"
            )),
            200
        );
        // Comments are not tokens.
        assert_eq!(
            soa_ttl_of(&format!(
                "$TTL 300 ; five minutes\n@ IN SOA ns1 h {soa} ; 99\n{body}"
            )),
            300
        );
    }

    #[test]
    fn parse_errors_name_the_line() {
        let origin = Name::from_str("z.test.").unwrap();
        let good = "$TTL 300\n@ IN SOA ns1 h ( 1 2 3 4 5 )\n@ IN NS ns1\n\nns1 IN A 192.0.2.1\n";
        for (bad, line) in [
            ("www IN A 999.1.1.1\n", 6),
            ("\n; a comment\nmx IN MX notanumber mail\n", 8),
            ("multi IN SOA ns1 h (\n 1 2\n x 4 5 )\n", 6),
        ] {
            let text = format!("{good}{bad}ok IN A 192.0.2.9\n");
            let e = Zone::parse(&text, &origin, Path::new("z.zone"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("z.zone: line {line}: ")), "{e}");
        }
        assert_eq!(first_bad_line(good, &origin, Path::new("z")), None);
    }

    #[test]
    fn in_zone_name_servers_need_glue() {
        let origin = Name::from_str("z.test.").unwrap();
        let text = "$TTL 300\n@ IN SOA ns1 h ( 1 2 3 4 5 )\n@ IN NS ns1\n@ IN NS ns2\n@ IN NS ns.other.example.\nns1 IN A 192.0.2.1\nsub IN NS ns.sub\n";
        let z = Zone::parse(text, &origin, Path::new("z")).unwrap();
        assert_eq!(missing_glue(&z), vec!["ns.sub.z.test.", "ns2.z.test."]);
    }

    #[test]
    fn ttl_tokens() {
        for (t, want) in [
            ("0", Some(0)),
            ("300", Some(300)),
            ("1h", Some(3600)),
            ("1w2d", Some(777_600)),
            ("2D", Some(172_800)),
        ] {
            assert_eq!(parse_ttl(t), want, "{t}");
        }
        for bad in ["", "h", "1x", "1h2", "IN", "99999999999"] {
            assert_eq!(parse_ttl(bad), None, "{bad}");
        }
    }
}
