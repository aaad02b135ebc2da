//! The status page: `/.well-known/p2pcdn/v1/status` for browsers.
//!
//! [`render`] is pure: a [`StatusView`] in, one self-contained HTML document
//! out. No scripts, no style sheets, no external resources: the map is inline
//! SVG drawn from an embedded outline ([`LAND`], Natural Earth, public domain;
//! see `tools/worldmap/`), colours are SVG presentation attributes, and the
//! page reloads itself with `<meta http-equiv="refresh">`. That lets the
//! handler send [`CSP`], which forbids everything but the document itself.
//!
//! Invariants: every string in the view may come from a hostile peer's signed
//! report (names, addresses, site names of holdings), so every string is
//! written through [`esc`]; every mirror on the map is one SVG `<g>` with
//! `data-node="<name>"` and `data-health="up|down"`, and no other element
//! carries `data-node`.
//!
//! [`collect`] builds the view from the catalog and the federation agent;
//! [`cert`] reads certificate expiry; [`negotiate`] decides HTML or JSON.

pub mod cert;
pub mod collect;
pub mod negotiate;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use crate::federation::failover::HealthChange;
use crate::report::{Held, Point};

/// The world outline: one SVG path in the projection of [`project`].
pub const LAND: &str = include_str!("land.path");
/// Map width in SVG units (two per degree of longitude).
pub const MAP_W: f64 = 720.0;
/// Latitude at the top edge of the outline.
const TOP_LAT: f64 = 84.0;
/// Height of the outline (84° N to 60° S).
const LAND_H: f64 = 288.0;
/// Height of the band below the outline for mirrors without a location.
const BAND_H: f64 = 24.0;
/// Seconds between reloads of the page.
pub const REFRESH_SECS: u32 = 2;
/// The Content-Security-Policy sent with the page: nothing but the document.
pub const CSP: &str =
    "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Health of a mirror as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Probes succeed and its report is current: it is steered to.
    Up,
    /// Probes fail, or its report expired: it is steered around.
    Down,
}

impl Health {
    /// The `data-health` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// One mirror: this node or a bound peer.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorView {
    /// DNS name (this node's configured name, or the peer's bound name).
    pub name: String,
    /// Node key text.
    pub key: String,
    /// True for the node serving the page.
    pub this_node: bool,
    /// Health.
    pub health: Health,
    /// Why it is down, when known ("probes fail", "report expired").
    pub why_down: Option<&'static str>,
    /// Declared location.
    pub location: Option<Point>,
    /// Declared addresses.
    pub addresses: Vec<IpAddr>,
    /// Load as a fraction of declared capacity.
    pub load: Option<f64>,
    /// RTT measured by this node's probes, ms.
    pub rtt_ms: Option<f64>,
    /// Age of its newest report, seconds.
    pub report_age_s: Option<u64>,
    /// Site versions it holds verified (as it reports).
    pub holds: Vec<Held>,
    /// Sites it mirrors (as it reports).
    pub mirrors: Vec<String>,
}

/// Certificate expiry of a site's certificate on this node.
#[derive(Debug, Clone, PartialEq)]
pub enum CertExpiry {
    /// No certificate configured for the site (nor a default one).
    None,
    /// The certificate's notAfter, unix seconds.
    NotAfter(i64),
    /// The certificate file could not be read or parsed.
    Unreadable(String),
}

/// One configured site.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteView {
    /// Hostname.
    pub hostname: String,
    /// Version this node serves.
    pub serving: Option<u64>,
    /// Newest valid version known.
    pub newest: Option<u64>,
    /// Mirrors the newest manifest authorizes, by name where known (key text
    /// otherwise); empty: any mirror may serve.
    pub authorized: Vec<String>,
    /// Whether this node is authorized.
    pub authorized_here: bool,
    /// Expiry of this node's certificate for the site.
    pub cert: CertExpiry,
}

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusView {
    /// This node's name.
    pub node: String,
    /// Unix seconds the view was taken.
    pub now: u64,
    /// This node first, then peers by name.
    pub mirrors: Vec<MirrorView>,
    /// Sites by hostname.
    pub sites: Vec<SiteView>,
    /// Recent peer health changes, newest first.
    pub failovers: Vec<HealthChange>,
}

/// HTML-escapes `s` for text and double- or single-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Equirectangular projection of the outline: (x, y) in SVG units.
pub fn project(p: Point) -> (f64, f64) {
    let lon = if p.lon.is_finite() {
        p.lon.clamp(-180.0, 180.0)
    } else {
        0.0
    };
    let lat = if p.lat.is_finite() {
        p.lat.clamp(-60.0, TOP_LAT)
    } else {
        0.0
    };
    ((lon + 180.0) * 2.0, (TOP_LAT - lat) * 2.0)
}

/// Marker fill: grey when down, else green / amber / red by load.
pub fn colour(health: Health, load: Option<f64>) -> &'static str {
    match (health, load) {
        (Health::Down, _) => "#8a9099",
        (Health::Up, Some(l)) if l >= 0.8 => "#d0392b",
        (Health::Up, Some(l)) if l >= 0.5 => "#e6a117",
        (Health::Up, _) => "#2e9d4f",
    }
}

/// Replication of `site`'s newest version: (mirrors holding it, mirrors that
/// should), counting mirrors in the view that are authorized (all, when the
/// manifest lists none) and say they mirror the site.
pub fn replication(site: &SiteView, mirrors: &[MirrorView]) -> (usize, usize) {
    let Some(newest) = site.newest else {
        return (0, 0);
    };
    let expected: Vec<&MirrorView> = mirrors
        .iter()
        .filter(|m| {
            let authorized = site.authorized.is_empty()
                || site.authorized.iter().any(|a| *a == m.name || *a == m.key);
            authorized && m.mirrors.contains(&site.hostname)
        })
        .collect();
    let holding = expected
        .iter()
        .filter(|m| {
            m.holds
                .iter()
                .any(|h| h.site == site.hostname && h.version == newest)
        })
        .count();
    (holding, expected.len())
}

fn fmt_time(unix: i64) -> String {
    let t = if unix >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(unix.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(unix.unsigned_abs()))
    };
    t.map_or_else(|| unix.to_string(), httpdate::fmt_http_date)
}

fn fmt_ago(now: u64, at: u64) -> String {
    let s = now.saturating_sub(at);
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

fn fmt_load(load: Option<f64>) -> String {
    load.filter(|l| l.is_finite())
        .map_or("-".into(), |l| format!("{:.0}%", l * 100.0))
}

fn fmt_rtt(rtt: Option<f64>) -> String {
    rtt.filter(|r| r.is_finite())
        .map_or("-".into(), |r| format!("{r:.1} ms"))
}

fn fmt_addrs(a: &[IpAddr]) -> String {
    if a.is_empty() {
        return "-".into();
    }
    a.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn fmt_holds(h: &[Held]) -> String {
    if h.is_empty() {
        return "-".into();
    }
    h.iter()
        .map(|h| format!("{} v{}", h.site, h.version))
        .collect::<Vec<_>>()
        .join(", ")
}

fn health_text(m: &MirrorView) -> String {
    match (m.health, m.why_down) {
        (Health::Up, _) => "up".into(),
        (Health::Down, Some(why)) => format!("down ({why})"),
        (Health::Down, None) => "down".into(),
    }
}

/// A small coloured dot for tables (SVG, no CSS).
fn dot(fill: &str) -> String {
    format!(
        r#"<svg width="12" height="12" viewBox="0 0 12 12" aria-hidden="true"><circle cx="6" cy="6" r="5" fill="{fill}"/></svg>"#
    )
}

/// Renders the page. Pure; every string from `v` is escaped.
pub fn render(v: &StatusView) -> String {
    let mut o = String::with_capacity(LAND.len() + 16 * 1024);
    let node = esc(&v.node);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>p2pcdn status: {node}</title></head>\n<body>\
         <h1>p2pcdn federation as {node} sees it</h1>\n\
         <p>{} &middot; {} mirrors, {} up &middot; reloads every {REFRESH_SECS} s</p>\n",
        esc(&fmt_time(i64::try_from(v.now).unwrap_or(i64::MAX))),
        v.mirrors.len(),
        v.mirrors.iter().filter(|m| m.health == Health::Up).count(),
    );
    map(&mut o, v);
    mirrors_table(&mut o, v);
    sites_table(&mut o, v);
    failovers(&mut o, v);
    o.push_str(
        "<p><small>JSON: the same URL without <code>Accept: text/html</code>. \
         Map: Natural Earth (public domain).</small></p>\n</body></html>\n",
    );
    o
}

fn map(o: &mut String, v: &StatusView) {
    let unplaced: Vec<&MirrorView> = v.mirrors.iter().filter(|m| m.location.is_none()).collect();
    let h = if unplaced.is_empty() {
        LAND_H
    } else {
        LAND_H + BAND_H
    };
    let _ = writeln!(
        o,
        "<svg id=\"map\" role=\"img\" aria-label=\"mirrors on a world map\" width=\"100%\" \
         viewBox=\"0 0 {MAP_W} {h}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <rect width=\"{MAP_W}\" height=\"{h}\" fill=\"#dde9f5\"/>\
         <path fill=\"#c9d5c1\" stroke=\"#9aab93\" stroke-width=\"0.4\" d=\"{}\"/>",
        LAND.trim()
    );
    if !unplaced.is_empty() {
        let _ = writeln!(
            o,
            "<rect y=\"{LAND_H}\" width=\"{MAP_W}\" height=\"{BAND_H}\" fill=\"#eef1f4\"/>\
             <text x=\"4\" y=\"{}\" font-size=\"8\" fill=\"#555\">no declared location:</text>",
            LAND_H + 15.0
        );
    }
    // Down mirrors first, so healthy ones are drawn on top.
    let mut order: Vec<&MirrorView> = v.mirrors.iter().collect();
    order.sort_by_key(|m| m.health == Health::Up);
    let mut band_x = 100.0;
    for m in order {
        let (x, y) = match m.location {
            Some(p) => project(p),
            None => {
                band_x += 60.0;
                (band_x - 60.0, LAND_H + BAND_H / 2.0)
            }
        };
        let label = m.name.split('.').next().unwrap_or(&m.name);
        let _ = write!(
            o,
            "<g data-node=\"{name}\" data-health=\"{health}\"><title>{name}{me}\n\
             health: {ht}\naddresses: {addrs}\nload: {load}\nRTT: {rtt}</title>\
             <circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{r}\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.2\"/>\
             <text x=\"{tx:.1}\" y=\"{ty:.1}\" font-size=\"9\" fill=\"#222\">{label}</text></g>\n",
            name = esc(&m.name),
            me = if m.this_node { " (this node)" } else { "" },
            health = m.health.as_str(),
            ht = esc(&health_text(m)),
            addrs = esc(&fmt_addrs(&m.addresses)),
            load = fmt_load(m.load),
            rtt = fmt_rtt(m.rtt_ms),
            r = if m.this_node { 6 } else { 5 },
            fill = colour(m.health, m.load),
            stroke = if m.this_node { "#1d4f91" } else { "#ffffff" },
            tx = x + 7.0,
            ty = y + 3.0,
            label = esc(label),
        );
    }
    o.push_str("</svg>\n");
}

fn mirrors_table(o: &mut String, v: &StatusView) {
    o.push_str(
        "<h2>Mirrors</h2>\n<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">\
         <tr><th>mirror</th><th>health</th><th>load</th><th>RTT</th><th>report</th>\
         <th>addresses</th><th>holds</th></tr>\n",
    );
    for m in &v.mirrors {
        let _ = writeln!(
            o,
            "<tr><td>{name}{me}</td><td>{dot} {ht}</td><td>{load}</td><td>{rtt}</td>\
             <td>{age}</td><td>{addrs}</td><td>{holds}</td></tr>",
            name = esc(&m.name),
            me = if m.this_node {
                " <b>(this node)</b>"
            } else {
                ""
            },
            dot = dot(colour(m.health, m.load)),
            ht = esc(&health_text(m)),
            load = fmt_load(m.load),
            rtt = if m.this_node {
                "-".into()
            } else {
                fmt_rtt(m.rtt_ms)
            },
            age = m.report_age_s.map_or("-".into(), |s| format!("{s} s old")),
            addrs = esc(&fmt_addrs(&m.addresses)),
            holds = esc(&fmt_holds(&m.holds)),
        );
    }
    o.push_str("</table>\n");
}

fn sites_table(o: &mut String, v: &StatusView) {
    o.push_str(
        "<h2>Sites</h2>\n<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">\
         <tr><th>site</th><th>newest</th><th>this node serves</th><th>replication</th>\
         <th>authorized mirrors</th><th>this node authorized</th><th>certificate expires</th></tr>\n",
    );
    for s in &v.sites {
        let (held, of) = replication(s, &v.mirrors);
        let repl = match s.newest {
            Some(n) => format!("{held}/{of} mirrors hold v{n}"),
            None => "no version yet".into(),
        };
        let authorized = if s.authorized.is_empty() {
            "any".to_string()
        } else {
            s.authorized.join(", ")
        };
        let here = if s.authorized_here {
            "yes".to_string()
        } else {
            "<b>NO</b>: the owner must add this node's key (publish --mirror)".to_string()
        };
        let cert = match &s.cert {
            CertExpiry::None => "-".to_string(),
            CertExpiry::NotAfter(t) => {
                let left = (*t - i64::try_from(v.now).unwrap_or(i64::MAX)) / 86_400;
                esc(&format!("{} ({left} days)", fmt_time(*t)))
            }
            CertExpiry::Unreadable(e) => format!("unreadable: {}", esc(e)),
        };
        let _ = writeln!(
            o,
            "<tr><td>{site}</td><td>{newest}</td><td>{serving}</td><td>{repl}</td>\
             <td>{authorized}</td><td>{here}</td><td>{cert}</td></tr>",
            site = esc(&s.hostname),
            newest = s.newest.map_or("-".into(), |n| format!("v{n}")),
            serving = s.serving.map_or("nothing".into(), |n| format!("v{n}")),
            repl = esc(&repl),
            authorized = esc(&authorized),
        );
    }
    o.push_str("</table>\n");
}

fn failovers(o: &mut String, v: &StatusView) {
    o.push_str("<h2>Recent failovers</h2>\n");
    if v.failovers.is_empty() {
        o.push_str("<p>No peer health changes since this node started.</p>\n");
        return;
    }
    o.push_str("<ul id=\"failovers\">\n");
    for f in &v.failovers {
        let _ = writeln!(
            o,
            "<li>{when} ({ago}): {peer} went <b>{what}</b></li>",
            when = esc(&fmt_time(i64::try_from(f.at).unwrap_or(i64::MAX))),
            ago = esc(&fmt_ago(v.now, f.at)),
            peer = esc(&f.peer),
            what = if f.up { "up" } else { "down" },
        );
    }
    o.push_str("</ul>\n");
}
