//! Tests of the geo module: overrides, mmdb decoding, centroids, point math.

use super::centroid::{build_centroid_table, centroid_table, parse_csv};
use super::mmdb::{Num, Record};
use super::overrides::{mask_v4, mask_v6};
use super::point::EARTH_RADIUS_KM;

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use maxminddb::PathElement;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("geodata")
        .join(rel)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn near(p: Option<GeoPoint>, lat: f64, lon: f64) -> bool {
    p.is_some_and(|p| (p.lat - lat).abs() < 1e-3 && (p.lon - lon).abs() < 1e-3)
}

fn dbip() -> &'static Geo {
    static GEO: OnceLock<Geo> = OnceLock::new();
    GEO.get_or_init(|| Geo::open(&data("dbip-country.mmdb"), vec![]).unwrap())
}

fn city_test() -> Geo {
    Geo::open(&data("test/steering-test-city.mmdb"), vec![]).unwrap()
}

#[test]
fn dbip_country_lookups() {
    let geo = dbip();
    // The README says "country"; the file actually says "country ipvAll".
    assert!(
        geo.database_type().starts_with("country"),
        "{}",
        geo.database_type()
    );
    let us = geo.lookup(ip("8.8.8.8")).unwrap();
    assert_eq!(us.country.as_deref(), Some("US"));
    assert_eq!(us.continent.as_deref(), Some("NA"));
    assert!(near(us.point, 38.8951, -77.0364), "{us:?}");
    let au = geo.lookup(ip("1.1.1.1")).unwrap();
    assert_eq!(au.country.as_deref(), Some("AU"));
    assert_eq!(au.continent.as_deref(), Some("OC"));
    let de = geo.lookup(ip("2a00:1450:4001::1")).unwrap();
    assert_eq!(de.country.as_deref(), Some("DE"));
    assert!(near(de.point, 52.5244, 13.4105), "{de:?}");
    assert_eq!(geo.lookup(ip("10.0.0.1")), None);
    // Not in the file as such; found only because it is unmapped.
    assert_eq!(geo.lookup(ip("::ffff:8.8.8.8")), Some(us));
}

#[test]
fn synthetic_city_lookups() {
    let geo = city_test();
    assert_eq!(geo.database_type(), "GeoIP2-City");
    let sg = geo.lookup(ip("127.3.0.9")).unwrap();
    assert_eq!(
        sg,
        Location {
            point: Some(GeoPoint {
                lat: 1.35,
                lon: 103.82
            }),
            country: Some("SG".into()),
            continent: Some("AS".into()),
        }
    );
    let syd = geo.lookup(ip("10.5.1.1")).unwrap();
    assert!(near(syd.point, -33.87, 151.21));
    assert_eq!(syd.country.as_deref(), Some("AU"));
    let fra = geo.lookup(ip("fd00:1::1")).unwrap();
    assert!(near(fra.point, 50.11, 8.68));
    assert_eq!(fra.continent.as_deref(), Some("EU"));
    assert_eq!(geo.lookup(ip("127.0.0.1")), None);
    assert_eq!(geo.lookup(ip("fd00:9::1")), None);
    assert_eq!(geo.lookup(ip("::ffff:10.1.2.3")), Some(fra));
}

#[test]
fn maxmind_city_test_db() {
    let geo = Geo::open(&data("test/maxmind-GeoIP2-City-Test.mmdb"), vec![]).unwrap();
    let gb = geo.lookup(ip("81.2.69.142")).unwrap();
    assert_eq!(gb.country.as_deref(), Some("GB"));
    assert_eq!(gb.continent.as_deref(), Some("EU"));
    assert!(near(gb.point, 51.5142, -0.0931), "{gb:?}");
    assert_eq!(geo.lookup(ip("1.1.1.1")), None);
}

#[test]
fn asn_db_knows_nothing_about_location() {
    let geo = Geo::open(&data("test/maxmind-GeoLite2-ASN-Test.mmdb"), vec![]).unwrap();
    assert_eq!(geo.lookup(ip("1.128.0.0")), None);
}

#[test]
fn overrides_beat_database_and_longest_wins() {
    let custom = |lat, lon| Location {
        point: Some(GeoPoint { lat, lon }),
        country: None,
        continent: None,
    };
    let (net16, len16) = parse_prefix("10.9.0.0/16").unwrap();
    let (net24, len24) = parse_prefix("10.9.5.0/24").unwrap();
    let (net_db, len_db) = parse_prefix("10.1.0.0/16").unwrap();
    let (net6, len6) = parse_prefix("fd00:5::/32").unwrap();
    let overrides = vec![
        PrefixOverride {
            network: net24,
            prefix_len: len24,
            location: custom(2.0, 2.0),
        },
        PrefixOverride {
            network: net16,
            prefix_len: len16,
            location: custom(1.0, 1.0),
        },
        PrefixOverride {
            network: net_db,
            prefix_len: len_db,
            location: custom(3.0, 3.0),
        },
        PrefixOverride {
            network: net6,
            prefix_len: len6,
            location: Location {
                point: None,
                country: Some("jp".into()),
                continent: None,
            },
        },
    ];
    let geo = Geo::open(&data("test/steering-test-city.mmdb"), overrides).unwrap();
    assert_eq!(geo.lookup(ip("10.9.1.1")), Some(custom(1.0, 1.0)));
    assert_eq!(geo.lookup(ip("10.9.5.7")), Some(custom(2.0, 2.0)));
    assert_eq!(geo.lookup(ip("::ffff:10.9.5.7")), Some(custom(2.0, 2.0)));
    // Beats the database's Frankfurt answer.
    assert_eq!(geo.lookup(ip("10.1.2.3")), Some(custom(3.0, 3.0)));
    // Outside every override: the database answers.
    assert!(near(
        geo.lookup(ip("10.2.0.1")).unwrap().point,
        40.71,
        -74.01
    ));
    // Country-only override is completed from the table.
    let jp = geo.lookup(ip("fd00:5::1")).unwrap();
    assert_eq!(jp.country.as_deref(), Some("JP"));
    assert_eq!(jp.continent.as_deref(), Some("AS"));
    assert!(near(jp.point, 35.6895, 139.6917));
}

#[test]
fn mapped_and_zero_length_overrides() {
    let here = Location {
        point: Some(GeoPoint { lat: 5.0, lon: 5.0 }),
        country: None,
        continent: None,
    };
    let overrides = vec![
        PrefixOverride {
            network: ip("::ffff:127.3.0.0"),
            prefix_len: 112,
            location: here.clone(),
        },
        PrefixOverride {
            network: ip("::"),
            prefix_len: 0,
            location: here.clone(),
        },
    ];
    let geo = Geo::open(&data("test/steering-test-city.mmdb"), overrides).unwrap();
    assert_eq!(geo.lookup(ip("127.3.0.9")), Some(here.clone()));
    assert_eq!(geo.lookup(ip("2001:db8::1")), Some(here));
    // The v6 catch-all does not cover IPv4.
    assert!(near(
        geo.lookup(ip("10.3.0.1")).unwrap().point,
        1.35,
        103.82
    ));
}

#[test]
fn bad_overrides_rejected() {
    let path = data("test/steering-test-city.mmdb");
    let loc = |lat| Location {
        point: Some(GeoPoint { lat, lon: 0.0 }),
        country: None,
        continent: None,
    };
    for (network, prefix_len, location) in [
        (ip("10.0.0.1"), 16, loc(0.0)),
        (ip("10.0.0.0"), 33, loc(0.0)),
        (ip("fd00::"), 129, loc(0.0)),
        (ip("10.0.0.0"), 8, loc(f64::NAN)),
        (ip("10.0.0.0"), 8, loc(91.0)),
    ] {
        let o = PrefixOverride {
            network,
            prefix_len,
            location,
        };
        assert!(Geo::open(&path, vec![o.clone()]).is_err(), "{o:?}");
    }
}

#[test]
fn open_errors() {
    let err = Geo::open(&data("no-such-file.mmdb"), vec![]).unwrap_err();
    assert!(matches!(err, GeoError::Open { .. }), "{err}");
    let err = Geo::open(&data("country-centroids.csv"), vec![]).unwrap_err();
    assert!(matches!(err, GeoError::Open { .. }), "{err}");
    for bytes in [vec![], vec![0u8; 100], b"\xab\xcd\xefMaxMind.com".to_vec()] {
        let err = Geo::from_bytes(bytes, vec![]).unwrap_err();
        assert!(matches!(err, GeoError::InvalidDatabase(_)), "{err}");
    }
}

/// MaxMind DB data-section encoders, enough for hand-made test files.
mod mmdb {
    pub fn string(x: &str) -> Vec<u8> {
        assert!(x.len() < 29);
        let mut v = vec![0x40 | x.len() as u8];
        v.extend_from_slice(x.as_bytes());
        v
    }
    pub fn double(x: f64) -> Vec<u8> {
        let mut v = vec![0x68];
        v.extend_from_slice(&x.to_be_bytes());
        v
    }
    pub fn float(x: f32) -> Vec<u8> {
        let mut v = vec![0x04, 0x08];
        v.extend_from_slice(&x.to_be_bytes());
        v
    }
    pub fn int32(x: i32) -> Vec<u8> {
        let mut v = vec![0x04, 0x01];
        v.extend_from_slice(&x.to_be_bytes());
        v
    }
    pub fn uint16(x: u16) -> Vec<u8> {
        let mut v = vec![0xa2];
        v.extend_from_slice(&x.to_be_bytes());
        v
    }
    pub fn uint32(x: u32) -> Vec<u8> {
        let mut v = vec![0xc4];
        v.extend_from_slice(&x.to_be_bytes());
        v
    }
    pub fn uint64(x: u64) -> Vec<u8> {
        let mut v = vec![0x08, 0x02];
        v.extend_from_slice(&x.to_be_bytes());
        v
    }
    pub fn map(pairs: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut v = vec![0xe0 | pairs.len() as u8];
        for (k, val) in pairs {
            v.extend(string(k));
            v.extend_from_slice(val);
        }
        v
    }
    /// IPv4-only database, one node: 0.0.0.0/1 → `low`, 128.0.0.0/1 → `high`.
    pub fn two_records(low: Vec<u8>, high: Vec<u8>) -> Vec<u8> {
        let node_count = 1u32;
        let rec = |off: usize| (node_count + 16 + off as u32).to_be_bytes();
        let mut db = Vec::new();
        db.extend_from_slice(&rec(0)[1..]);
        db.extend_from_slice(&rec(low.len())[1..]);
        db.extend_from_slice(&[0u8; 16]);
        db.extend(low);
        db.extend(high);
        db.extend_from_slice(b"\xab\xcd\xefMaxMind.com");
        db.extend(map(&[
            ("binary_format_major_version", uint16(2)),
            ("binary_format_minor_version", uint16(0)),
            ("build_epoch", uint64(1)),
            ("database_type", string("handmade")),
            ("description", map(&[])),
            ("ip_version", uint16(4)),
            ("languages", vec![0x00, 0x04]),
            ("node_count", uint32(node_count)),
            ("record_size", uint16(24)),
        ]));
        db
    }
}

fn handmade(low: Vec<u8>, high: Vec<u8>) -> (Option<Location>, Option<Location>) {
    let geo = Geo::from_bytes(mmdb::two_records(low, high), vec![]).unwrap();
    assert_eq!(geo.database_type(), "handmade");
    // An IPv6 address in an IPv4-only database is a reader error: unknown.
    assert_eq!(geo.lookup(ip("2001:db8::1")), None);
    (geo.lookup(ip("1.2.3.4")), geo.lookup(ip("200.0.0.1")))
}

#[test]
fn flat_city_layout_with_any_number_type() {
    use mmdb::*;
    let (a, b) = handmade(
        map(&[
            ("country_code", string("US")),
            ("latitude", double(37.422)),
            ("longitude", float(-122.085)),
            ("city", string("Mountain View")),
        ]),
        map(&[
            ("latitude", int32(-33)),
            ("longitude", uint16(151)),
            ("country_code", string("au")),
        ]),
    );
    // Why `Num` exists: maxminddb's f64 accepts only the `double` type.
    let raw = Geo::from_bytes(
        two_records(map(&[("longitude", float(1.5))]), map(&[])),
        vec![],
    )
    .unwrap();
    let hit = raw.reader.lookup(ip("1.2.3.4")).unwrap();
    assert!(hit
        .decode_path::<f64>(&[PathElement::Key("longitude")])
        .is_err());
    let num = hit.decode_path::<Num>(&[PathElement::Key("longitude")]);
    assert_eq!(num.unwrap().map(|n| n.0), Some(1.5));
    let a = a.unwrap();
    assert!(
        a.point
            .is_some_and(|p| (p.lat - 37.422).abs() < 1e-9 && (p.lon + 122.085).abs() < 1e-4),
        "{a:?}"
    );
    assert_eq!(a.country.as_deref(), Some("US"));
    assert_eq!(a.continent.as_deref(), Some("NA"));
    let b = b.unwrap();
    assert_eq!(
        b.point,
        Some(GeoPoint {
            lat: -33.0,
            lon: 151.0
        })
    );
    assert_eq!(b.country.as_deref(), Some("AU"));
    assert_eq!(b.continent.as_deref(), Some("OC"));
}

#[test]
fn odd_records_degrade_gracefully() {
    use mmdb::*;
    // `location` of the wrong type: the whole-record decode fails and the
    // per-path fallback still finds the country.
    let (a, b) = handmade(
        map(&[
            ("location", string("somewhere")),
            ("country_code", string("DE")),
        ]),
        // Coordinates out of range: ignored, the capital is used.
        map(&[
            ("latitude", double(200.0)),
            ("longitude", double(0.0)),
            ("registered_country", map(&[("iso_code", string("FR"))])),
        ]),
    );
    let raw = Geo::from_bytes(
        two_records(map(&[("location", string("somewhere"))]), map(&[])),
        vec![],
    )
    .unwrap();
    assert!(raw
        .reader
        .lookup(ip("1.2.3.4"))
        .unwrap()
        .decode::<Record>()
        .is_err());
    let a = a.unwrap();
    assert_eq!(a.country.as_deref(), Some("DE"));
    assert!(near(a.point, 52.5244, 13.4105), "{a:?}");
    let b = b.unwrap();
    assert_eq!(b.country.as_deref(), Some("FR"));
    assert_eq!(b.continent.as_deref(), Some("EU"));
    // Nothing useful at all: None. Unknown country: country only.
    let (a, b) = handmade(
        map(&[]),
        map(&[("country_code", string("ZZ")), ("x", double(1.0))]),
    );
    assert_eq!(a, None);
    assert_eq!(
        b,
        Some(Location {
            point: None,
            country: Some("ZZ".into()),
            continent: None
        })
    );
    // A record that is not a map at all.
    let (a, b) = handmade(string("US"), double(1.0));
    assert_eq!((a, b), (None, None));
}

#[test]
fn from_bytes_works() {
    let bytes = std::fs::read(data("test/steering-test-city.mmdb")).unwrap();
    let geo = Geo::from_bytes(bytes, vec![]).unwrap();
    assert!(near(
        geo.lookup(ip("10.4.0.1")).unwrap().point,
        -23.55,
        -46.63
    ));
}

#[test]
fn truncated_or_corrupt_database_never_panics() {
    let bytes = std::fs::read(data("test/steering-test-city.mmdb")).unwrap();
    let ips = [
        ip("10.1.2.3"),
        ip("127.5.0.1"),
        ip("fd00:3::1"),
        ip("8.8.8.8"),
    ];
    // Flip bytes all over the search tree and data section (the metadata
    // at the end is left alone so the reader still opens).
    for pos in 0..bytes.len().saturating_sub(300) {
        for flip in [0xff_u8, 0x01, 0x80] {
            let mut b = bytes.clone();
            b[pos] ^= flip;
            if let Ok(geo) = Geo::from_bytes(b, vec![]) {
                for a in ips {
                    let _ = geo.lookup(a);
                }
            }
        }
    }
    for cut in 0..bytes.len() {
        let _ = Geo::from_bytes(bytes[..cut].to_vec(), vec![]);
    }
}

#[test]
fn distance() {
    let fra = GeoPoint {
        lat: 50.11,
        lon: 8.68,
    };
    let nyc = GeoPoint {
        lat: 40.71,
        lon: -74.01,
    };
    let d = distance_km(fra, nyc);
    assert!((d - 6200.0).abs() < 50.0, "{d}");
    assert_eq!(distance_km(fra, fra), 0.0);
    assert!((distance_km(nyc, fra) - d).abs() < 1e-9);
    let pole = |lat| GeoPoint { lat, lon: 0.0 };
    let half = distance_km(pole(90.0), pole(-90.0));
    assert!((half - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1e-6);
    assert!(distance_km(pole(f64::NAN), fra).is_nan());
}

#[test]
fn prefixes() {
    assert_eq!(
        parse_prefix("10.9.0.0/16").unwrap(),
        (IpAddr::V4(Ipv4Addr::new(10, 9, 0, 0)), 16)
    );
    assert_eq!(
        parse_prefix(" 2001:db8::/32 ").unwrap(),
        (
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0)),
            32
        )
    );
    assert_eq!(parse_prefix("0.0.0.0/0").unwrap().1, 0);
    assert_eq!(parse_prefix("1.2.3.4/32").unwrap().1, 32);
    assert_eq!(parse_prefix("::1/128").unwrap().1, 128);
    for bad in [
        "10.0.0.1/16",
        "10.0.0.0/33",
        "x/8",
        "10.0.0.0",
        "10.0.0.0/",
        "10.0.0.0/+8",
        "10.0.0.0/-1",
        "10.0.0.0/256",
        "10.0.0.0/0008",
        "2001:db8::1/32",
        "::/129",
        "",
        "/",
    ] {
        assert!(
            matches!(parse_prefix(bad), Err(GeoError::BadPrefix(_))),
            "{bad}"
        );
    }
}

#[test]
fn masks() {
    assert_eq!(mask_v4(0xffff_ffff, 0), 0);
    assert_eq!(mask_v4(0xffff_ffff, 8), 0xff00_0000);
    assert_eq!(mask_v4(0xffff_ffff, 32), 0xffff_ffff);
    assert_eq!(mask_v4(0xffff_ffff, 200), 0xffff_ffff);
    assert_eq!(mask_v6(u128::MAX, 0), 0);
    assert_eq!(mask_v6(u128::MAX, 1), 1 << 127);
    assert_eq!(mask_v6(u128::MAX, 128), u128::MAX);
}

#[test]
fn centroid_table_contents() {
    assert_eq!(centroid_table().len(), 250);
    let (us, na) = country_centroid("US").unwrap();
    assert_eq!((us.lat, us.lon, na), (38.8951, -77.0364, "NA"));
    let (de, eu) = country_centroid("de").unwrap();
    assert_eq!((de.lat, de.lon, eu), (52.5244, 13.4105, "EU"));
    assert!(country_centroid("XK").is_some());
    // Quoted name with a comma in it.
    assert_eq!(country_centroid("BQ").unwrap().1, "NA");
    assert_eq!(country_centroid("ZZ"), None);
    assert_eq!(country_centroid(""), None);
}

#[test]
fn csv_parser() {
    let rows = parse_csv("\u{feff}a,b,c\r\n\"x, y\",\"say \"\"hi\"\"\",\r\n\n\"multi\nline\",z");
    let rows: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| r.iter().map(|f| f.as_ref()).collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["a", "b", "c"],
            vec!["x, y", "say \"hi\"", ""],
            vec!["multi\nline", "z"],
        ]
    );
    assert!(parse_csv("").is_empty());
    assert_eq!(parse_csv("a,").first().map(Vec::len), Some(2));
    // Unterminated quote and garbage after a closing quote: no panic.
    assert_eq!(parse_csv("\"abc")[0][0], "abc");
    assert_eq!(parse_csv("\"ab\"cd,e")[0], vec!["ab", "e"]);
    assert_eq!(parse_csv("\"é\",ü\n")[0], vec!["é", "ü"]);
    // A table built from junk is just smaller.
    assert!(build_centroid_table("h\nUS,NA,x,y,z,north,1\nDE,EU,,,,1,2,3").len() == 1);
}

/// A point is the report wire's location: `{"lat":..,"lon":..}`, nothing else.
#[test]
fn point_wire_encoding_is_the_reports() {
    let p = GeoPoint {
        lat: 50.11,
        lon: 8.68,
    };
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(json, r#"{"lat":50.11,"lon":8.68}"#);
    assert_eq!(serde_json::from_str::<GeoPoint>(&json).unwrap(), p);
    assert!(serde_json::from_str::<GeoPoint>(r#"{"lat":1.0,"lon":2.0,"alt":3.0}"#).is_err());
    assert!(serde_json::from_str::<GeoPoint>(r#"{"lat":1.0}"#).is_err());
}
