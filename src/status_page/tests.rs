use std::net::IpAddr;

use super::*;

const HOSTILE: &str = "<script>alert(1)</script>\"'&";

fn mirror(name: &str, health: Health, load: f64, lat: f64, lon: f64) -> MirrorView {
    MirrorView {
        name: name.into(),
        key: format!("key-{name}"),
        this_node: false,
        health,
        why_down: (health == Health::Down).then_some("probes fail"),
        location: Some(Point { lat, lon }),
        addresses: vec!["10.1.0.1".parse().unwrap()],
        load: Some(load),
        rtt_ms: Some(1.25),
        report_age_s: Some(1),
        holds: vec![Held {
            site: "www.x.test".into(),
            version: 7,
        }],
        mirrors: vec!["www.x.test".into()],
    }
}

fn view() -> StatusView {
    let mut me = mirror("ns1.x.test", Health::Up, 0.1, 50.11, 8.68);
    me.this_node = true;
    let mut old = mirror("ns3.x.test", Health::Down, 0.0, 1.35, 103.82);
    old.holds[0].version = 6;
    StatusView {
        node: "ns1.x.test".into(),
        now: 1_800_000_000,
        mirrors: vec![
            me,
            mirror("ns2.x.test", Health::Up, 0.6, 40.71, -74.01),
            old,
            mirror("ns4.x.test", Health::Up, 0.9, -23.55, -46.63),
        ],
        sites: vec![SiteView {
            hostname: "www.x.test".into(),
            serving: Some(7),
            newest: Some(7),
            authorized: vec![],
            authorized_here: true,
            cert: CertExpiry::NotAfter(1_800_000_000 + 30 * 86_400),
        }],
        failovers: vec![HealthChange {
            at: 1_799_999_990,
            peer: "ns3.x.test".into(),
            up: false,
        }],
    }
}

/// (name, health) of every `data-node` element, in order.
fn nodes(html: &str) -> Vec<(String, String)> {
    html.split("data-node=\"")
        .skip(1)
        .map(|rest| {
            let name = rest.split('"').next().unwrap().to_string();
            let health = rest
                .split("data-health=\"")
                .nth(1)
                .and_then(|h| h.split('"').next())
                .unwrap()
                .to_string();
            (name, health)
        })
        .collect()
}

#[test]
fn every_mirror_once_on_the_map_with_its_health() {
    let html = render(&view());
    let mut got = nodes(&html);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("ns1.x.test".to_string(), "up".to_string()),
            ("ns2.x.test".into(), "up".into()),
            ("ns3.x.test".into(), "down".into()),
            ("ns4.x.test".into(), "up".into()),
        ]
    );
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"2\">"));
    assert!(html.contains(LAND.trim()));
}

#[test]
fn colours_follow_health_and_load() {
    assert_eq!(colour(Health::Down, Some(0.1)), "#8a9099");
    assert_eq!(colour(Health::Up, Some(0.1)), "#2e9d4f");
    assert_eq!(colour(Health::Up, None), "#2e9d4f");
    assert_eq!(colour(Health::Up, Some(0.6)), "#e6a117");
    assert_eq!(colour(Health::Up, Some(0.95)), "#d0392b");
    let html = render(&view());
    for c in ["#8a9099", "#2e9d4f", "#e6a117", "#d0392b"] {
        assert!(html.contains(&format!("fill=\"{c}\"")), "{c} missing");
    }
}

#[test]
fn shows_replication_authorization_certificate_and_failovers() {
    let html = render(&view());
    // ns3 holds v6, the other three v7.
    assert!(html.contains("3/4 mirrors hold v7"), "{html}");
    assert!(html.contains("(30 days)"));
    assert!(html.contains("ns3.x.test went <b>down</b>"));
    assert!(html.contains("10 s ago"));
    let mut v = view();
    v.sites[0].authorized = vec!["ns1.x.test".into(), "key-ns2.x.test".into()];
    v.sites[0].authorized_here = false;
    let html = render(&v);
    assert!(html.contains("2/2 mirrors hold v7"), "{html}");
    assert!(html.contains("<b>NO</b>"));
}

#[test]
fn no_external_resources_and_no_script_or_style() {
    let html = render(&view());
    for bad in [
        "<script", "<style", "style=", "<link", "<img", "src=", "href=", "url(", "@import",
    ] {
        assert!(!html.contains(bad), "page contains {bad}");
    }
}

#[test]
fn hostile_strings_are_escaped_everywhere() {
    let mut v = view();
    v.node = HOSTILE.into();
    for m in &mut v.mirrors {
        m.name = format!("{HOSTILE}{}", m.name);
        m.key = HOSTILE.into();
        m.holds[0].site = HOSTILE.into();
        m.mirrors = vec![HOSTILE.into()];
    }
    v.sites[0].hostname = HOSTILE.into();
    v.sites[0].authorized = vec![HOSTILE.into()];
    v.sites[0].cert = CertExpiry::Unreadable(HOSTILE.into());
    v.failovers[0].peer = HOSTILE.into();
    let html = render(&v);
    assert!(!html.contains("<script"), "unescaped: {html}");
    assert!(!html.contains("alert(1)</"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
    // Attribute values stay closed: still exactly one data-node per mirror.
    assert_eq!(nodes(&html).len(), v.mirrors.len());
    for (name, _) in nodes(&html) {
        assert!(name.starts_with("&lt;script&gt;"), "{name}");
    }
}

#[test]
fn mirrors_without_a_location_sit_in_the_band() {
    let mut v = view();
    v.mirrors[1].location = None;
    v.mirrors[1].addresses = vec![IpAddr::from([192, 0, 2, 1])];
    let html = render(&v);
    assert!(html.contains("no declared location"));
    assert_eq!(nodes(&html).len(), 4);
    assert!(html.contains("viewBox=\"0 0 720 312\""));
}

#[test]
fn projection_matches_the_outline() {
    assert_eq!(project(Point { lat: 0.0, lon: 0.0 }), (360.0, 168.0));
    assert_eq!(
        project(Point {
            lat: 84.0,
            lon: -180.0
        }),
        (0.0, 0.0)
    );
    assert_eq!(
        project(Point {
            lat: -60.0,
            lon: 180.0
        }),
        (720.0, 288.0)
    );
    // Out of range and non-finite input stays on the map.
    assert_eq!(
        project(Point {
            lat: -90.0,
            lon: 200.0
        }),
        (720.0, 288.0)
    );
    let (x, y) = project(Point {
        lat: f64::NAN,
        lon: f64::INFINITY,
    });
    assert!(x.is_finite() && y.is_finite());
    // The outline stays inside the map's box: every absolute moveto is.
    for m in LAND.split('M').skip(1) {
        let mut it = m.split(['l', ' ']).map(|n| n.parse::<i32>().unwrap());
        let (x, y) = (it.next().unwrap(), it.next().unwrap());
        assert!(
            (-720..=1440).contains(&x) && (0..=300).contains(&y),
            "{x} {y}"
        );
    }
}

#[test]
fn the_outline_is_small() {
    assert!(LAND.len() < 40_000, "{} bytes", LAND.len());
    assert!(LAND.len() > 5_000, "{} bytes", LAND.len());
}

#[test]
fn esc_escapes_the_five() {
    assert_eq!(esc("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
    assert_eq!(esc("ns1.example"), "ns1.example");
}
