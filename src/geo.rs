//! IP address → typed location.
//!
//! [`Geo`] answers "where is this client?" from a MaxMind DB (`.mmdb`) file
//! plus a list of operator prefix overrides. It does no ranking; see
//! `crate::steer` for that.
//!
//! Three record layouts are understood (all fields optional):
//!
//! * flat DB-IP country: `country_code` (the point and continent then come
//!   from the embedded country table, see [`country_centroid`]);
//! * flat DB-IP city: `latitude`, `longitude`, `country_code`;
//! * GeoIP2 / GeoLite2 City or Country: `location.latitude`,
//!   `location.longitude`, `country.iso_code` (falling back to
//!   `registered_country.iso_code`), `continent.code`.
//!
//! A record with a country but no usable coordinates gets the country's
//! capital from the embedded table. Lookups never panic: database errors and
//! unexpected record shapes degrade to "unknown" (`None`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use maxminddb::{LookupResult, PathElement, Reader};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Mean Earth radius in km (IUGG), used by [`distance_km`].
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A point on the Earth's surface in decimal degrees (WGS 84).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    /// Latitude in degrees, -90 (south) ..= 90 (north).
    pub lat: f64,
    /// Longitude in degrees, -180 (west) ..= 180 (east).
    pub lon: f64,
}

impl GeoPoint {
    /// True when both coordinates are finite and within their ranges.
    pub fn is_valid(&self) -> bool {
        self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon)
    }
}

/// Great-circle (haversine) distance in km, Earth radius 6371.0088 km.
///
/// Never panics; non-finite coordinates give a non-finite (NaN) result.
pub fn distance_km(a: GeoPoint, b: GeoPoint) -> f64 {
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = (b.lat - a.lat).to_radians();
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    // Rounding can push `h` a hair outside [0, 1]; clamp keeps asin defined.
    // (`clamp` passes NaN through, so bad input stays visibly bad.)
    2.0 * EARTH_RADIUS_KM * h.clamp(0.0, 1.0).sqrt().asin()
}

/// What is known about where an address is.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    /// Coordinates (city-level, or the country's capital when only the country is known).
    pub point: Option<GeoPoint>,
    /// ISO 3166-1 alpha-2 country code, upper case (e.g. `"DE"`).
    pub country: Option<String>,
    /// Continent code: `AF`, `AN`, `AS`, `EU`, `NA`, `OC` or `SA`.
    pub continent: Option<String>,
}

impl Location {
    /// True when nothing at all is known.
    fn is_empty(&self) -> bool {
        self.point.is_none() && self.country.is_none() && self.continent.is_none()
    }

    /// Fills a missing point and continent from the country table, and
    /// upper-cases the codes.
    fn completed(mut self) -> Location {
        self.country = self.country.map(|c| c.to_ascii_uppercase());
        self.continent = self.continent.map(|c| c.to_ascii_uppercase());
        if let Some((point, continent)) = self.country.as_deref().and_then(country_centroid) {
            if self.point.is_none() {
                self.point = Some(point);
            }
            if self.continent.is_none() {
                self.continent = Some(continent.to_string());
            }
        }
        self
    }
}

/// An operator-configured location for a network, taking precedence over the database.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefixOverride {
    /// Network address; host bits must be zero.
    pub network: IpAddr,
    /// Prefix length, at most 32 for IPv4 and 128 for IPv6.
    pub prefix_len: u8,
    /// Location reported for every address in the network. A missing point
    /// or continent is filled in from `country` when the country is known.
    pub location: Location,
}

/// Errors from opening a database or validating prefixes.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The database file could not be read or is not a valid MaxMind DB.
    #[error("cannot open geo database {}: {message}", path.display())]
    Open {
        /// Path that was being opened.
        path: PathBuf,
        /// Why it failed.
        message: String,
    },
    /// In-memory database bytes are not a valid MaxMind DB.
    #[error("invalid geo database: {0}")]
    InvalidDatabase(String),
    /// A network prefix is malformed, too long, or has host bits set.
    #[error("bad network prefix: {0}")]
    BadPrefix(String),
    /// A prefix override carries an unusable location (e.g. coordinates out of range).
    #[error("bad prefix override: {0}")]
    BadOverride(String),
}

/// Parses "10.9.0.0/16" or "2001:db8::/32" (host bits must be zero, len ≤ 32/128).
///
/// Surrounding whitespace is ignored; the length is required.
pub fn parse_prefix(s: &str) -> Result<(IpAddr, u8), GeoError> {
    let bad = |why: &str| GeoError::BadPrefix(format!("{s:?}: {why}"));
    let (addr, len) = s
        .trim()
        .split_once('/')
        .ok_or_else(|| bad("expected ADDRESS/LENGTH"))?;
    let network: IpAddr = addr
        .parse()
        .map_err(|_| bad("not an IPv4 or IPv6 address"))?;
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("prefix length is not a number"));
    }
    let prefix_len: u8 = len.parse().map_err(|_| bad("prefix length too large"))?;
    check_prefix(network, prefix_len).map_err(bad)?;
    Ok((network, prefix_len))
}

/// Checks length bounds and zero host bits.
fn check_prefix(network: IpAddr, prefix_len: u8) -> Result<(), &'static str> {
    match network {
        IpAddr::V4(a) => {
            if prefix_len > 32 {
                return Err("IPv4 prefix length above 32");
            }
            let bits = u32::from(a);
            if mask_v4(bits, prefix_len) != bits {
                return Err("host bits are set");
            }
        }
        IpAddr::V6(a) => {
            if prefix_len > 128 {
                return Err("IPv6 prefix length above 128");
            }
            let bits = u128::from(a);
            if mask_v6(bits, prefix_len) != bits {
                return Err("host bits are set");
            }
        }
    }
    Ok(())
}

/// Keeps the top `len` bits of an IPv4 address (len is clamped to 32).
fn mask_v4(bits: u32, len: u8) -> u32 {
    let shift = 32 - u32::from(len.min(32));
    bits & u32::MAX.checked_shl(shift).unwrap_or(0)
}

/// Keeps the top `len` bits of an IPv6 address (len is clamped to 128).
fn mask_v6(bits: u128, len: u8) -> u128 {
    let shift = 128 - u32::from(len.min(128));
    bits & u128::MAX.checked_shl(shift).unwrap_or(0)
}

/// Turns `::ffff:a.b.c.d` into `a.b.c.d`; everything else is unchanged.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Override tables, one hash map per prefix length, longest length first.
#[derive(Debug, Default)]
struct Overrides {
    v4: Vec<(u8, HashMap<u32, Location>)>,
    v6: Vec<(u8, HashMap<u128, Location>)>,
}

impl Overrides {
    /// Validates and indexes the overrides; for a repeated network the later entry wins.
    fn build(list: Vec<PrefixOverride>) -> Result<Overrides, GeoError> {
        let mut v4: HashMap<u8, HashMap<u32, Location>> = HashMap::new();
        let mut v6: HashMap<u8, HashMap<u128, Location>> = HashMap::new();
        for o in list {
            let shown = format!("{}/{}", o.network, o.prefix_len);
            check_prefix(o.network, o.prefix_len)
                .map_err(|why| GeoError::BadPrefix(format!("{shown}: {why}")))?;
            if let Some(p) = o.location.point {
                if !p.is_valid() {
                    return Err(GeoError::BadOverride(format!(
                        "{shown}: coordinates ({}, {}) out of range",
                        p.lat, p.lon
                    )));
                }
            }
            let location = o.location.completed();
            match o.network {
                IpAddr::V4(a) => {
                    v4.entry(o.prefix_len)
                        .or_default()
                        .insert(u32::from(a), location);
                }
                IpAddr::V6(a) => match a.to_ipv4_mapped() {
                    // Clients are unmapped before matching, so store
                    // ::ffff:a.b.c.d/N (N ≥ 96) as the IPv4 prefix it means.
                    Some(v4addr) if o.prefix_len >= 96 => {
                        v4.entry(o.prefix_len - 96)
                            .or_default()
                            .insert(u32::from(v4addr), location);
                    }
                    _ => {
                        v6.entry(o.prefix_len)
                            .or_default()
                            .insert(u128::from(a), location);
                    }
                },
            }
        }
        let mut v4: Vec<_> = v4.into_iter().collect();
        let mut v6: Vec<_> = v6.into_iter().collect();
        v4.sort_by_key(|e| std::cmp::Reverse(e.0));
        v6.sort_by_key(|e| std::cmp::Reverse(e.0));
        Ok(Overrides { v4, v6 })
    }

    /// Longest matching override for an (already unmapped) address.
    fn find(&self, ip: IpAddr) -> Option<&Location> {
        match ip {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                self.v4
                    .iter()
                    .find_map(|(len, map)| map.get(&mask_v4(bits, *len)))
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                self.v6
                    .iter()
                    .find_map(|(len, map)| map.get(&mask_v6(bits, *len)))
            }
        }
    }
}

/// IP geolocation: a MaxMind DB plus operator prefix overrides.
#[derive(Debug)]
pub struct Geo {
    reader: Reader<Vec<u8>>,
    overrides: Overrides,
}

impl Geo {
    /// Loads the database at `path` into memory and indexes `overrides`.
    pub fn open(path: &Path, overrides: Vec<PrefixOverride>) -> Result<Geo, GeoError> {
        let open_err = |message: String| GeoError::Open {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| open_err(e.to_string()))?;
        let reader = Reader::from_source(bytes).map_err(|e| open_err(e.to_string()))?;
        Ok(Geo {
            reader,
            overrides: Overrides::build(overrides)?,
        })
    }

    /// Uses an in-memory database image and indexes `overrides`.
    pub fn from_bytes(bytes: Vec<u8>, overrides: Vec<PrefixOverride>) -> Result<Geo, GeoError> {
        let reader =
            Reader::from_source(bytes).map_err(|e| GeoError::InvalidDatabase(e.to_string()))?;
        Ok(Geo {
            reader,
            overrides: Overrides::build(overrides)?,
        })
    }

    /// Database type from metadata (e.g. "country ipvAll" for the shipped DB-IP file, "GeoIP2-City").
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// Location of `ip`: IPv4-mapped IPv6 (::ffff:a.b.c.d) is unmapped first; the longest matching override wins over the database; None when nothing is known.
    pub fn lookup(&self, ip: IpAddr) -> Option<Location> {
        let ip = unmap(ip);
        if let Some(location) = self.overrides.find(ip) {
            return Some(location.clone());
        }
        self.lookup_database(ip)
    }

    /// Database-only lookup; any reader or decoding error means "unknown".
    fn lookup_database(&self, ip: IpAddr) -> Option<Location> {
        // Errors here: an IPv6 address against an IPv4-only database, or a
        // corrupt file. Neither is the client's fault; treat as unknown.
        let result = self.reader.lookup(ip).ok()?;
        if !result.has_data() {
            return None;
        }
        let fields = match result.decode::<Record>() {
            Ok(Some(record)) => record.into_fields(),
            Ok(None) => return None,
            // A record that does not fit the combined schema (say `location`
            // is a string): salvage what each known path still yields.
            Err(_) => Fields::by_path(&result),
        };
        let location = fields.into_location();
        (!location.is_empty()).then_some(location)
    }
}

/// A number stored as any MaxMind numeric type (double, float, integer) or a numeric string.
#[derive(Debug, Clone, Copy)]
struct Num(f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Num, D::Error> {
        struct NumVisitor;
        impl Visitor<'_> for NumVisitor {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                Ok(Num(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Num, E> {
                v.trim()
                    .parse()
                    .map(Num)
                    .map_err(|_| E::custom("not a number"))
            }
        }
        // `deserialize_f64` in maxminddb accepts only the `double` type;
        // `deserialize_any` lets `float` and integers through as well.
        d.deserialize_any(NumVisitor)
    }
}

/// `{ "code": .. }` / `{ "iso_code": .. }` sub-maps of the GeoIP2 layout.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CodeMap<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
    #[serde(borrow)]
    code: Option<&'a str>,
}

/// GeoIP2 `location` sub-map.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LocationMap {
    latitude: Option<Num>,
    longitude: Option<Num>,
}

/// The union of the supported record schemas.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Record<'a> {
    // Flat DB-IP layout.
    #[serde(borrow)]
    country_code: Option<&'a str>,
    latitude: Option<Num>,
    longitude: Option<Num>,
    // GeoIP2 layout.
    location: Option<LocationMap>,
    #[serde(borrow)]
    country: Option<CodeMap<'a>>,
    #[serde(borrow)]
    registered_country: Option<CodeMap<'a>>,
    #[serde(borrow)]
    continent: Option<CodeMap<'a>>,
}

/// Raw values pulled from a record, before validation.
#[derive(Debug, Default)]
struct Fields {
    country: Option<String>,
    continent: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
}

impl Record<'_> {
    fn into_fields(self) -> Fields {
        let (geo_lat, geo_lon) = match self.location {
            Some(l) => (l.latitude, l.longitude),
            None => (None, None),
        };
        // Prefer a complete coordinate pair from one layout.
        let (lat, lon) = match (geo_lat, geo_lon) {
            (Some(a), Some(b)) => (Some(a.0), Some(b.0)),
            _ => (self.latitude.map(|n| n.0), self.longitude.map(|n| n.0)),
        };
        let country = self
            .country
            .and_then(|c| c.iso_code)
            .or(self.country_code)
            .or(self.registered_country.and_then(|c| c.iso_code));
        Fields {
            country: country.map(str::to_string),
            continent: self.continent.and_then(|c| c.code).map(str::to_string),
            lat,
            lon,
        }
    }
}

impl Fields {
    /// Field-by-field extraction for records the combined schema rejects.
    fn by_path(result: &LookupResult<'_, Vec<u8>>) -> Fields {
        let string = |path: &[&str]| -> Option<String> {
            let path: Vec<PathElement<'_>> = path.iter().map(|k| PathElement::Key(k)).collect();
            result.decode_path::<String>(&path).ok().flatten()
        };
        let number = |path: &[&str]| -> Option<f64> {
            let path: Vec<PathElement<'_>> = path.iter().map(|k| PathElement::Key(k)).collect();
            result.decode_path::<Num>(&path).ok().flatten().map(|n| n.0)
        };
        let (lat, lon) = match (
            number(&["location", "latitude"]),
            number(&["location", "longitude"]),
        ) {
            (Some(a), Some(b)) => (Some(a), Some(b)),
            _ => (number(&["latitude"]), number(&["longitude"])),
        };
        Fields {
            country: string(&["country", "iso_code"])
                .or_else(|| string(&["country_code"]))
                .or_else(|| string(&["registered_country", "iso_code"])),
            continent: string(&["continent", "code"]),
            lat,
            lon,
        }
    }

    fn into_location(self) -> Location {
        let point = match (self.lat, self.lon) {
            (Some(lat), Some(lon)) => Some(GeoPoint { lat, lon }).filter(GeoPoint::is_valid),
            _ => None,
        };
        let nonempty = |s: String| {
            let s = s.trim().to_string();
            (!s.is_empty()).then_some(s)
        };
        Location {
            point,
            country: self.country.and_then(nonempty),
            continent: self.continent.and_then(nonempty),
        }
        .completed()
    }
}

/// The country table shipped with the crate (GeoNames, CC BY 4.0).
const CENTROIDS_CSV: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/geodata/country-centroids.csv"
));

/// Continent codes a table row may use, so they can be handed out as `&'static str`.
const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

type CentroidTable = HashMap<String, (GeoPoint, &'static str)>;

fn centroid_table() -> &'static CentroidTable {
    static TABLE: OnceLock<CentroidTable> = OnceLock::new();
    TABLE.get_or_init(|| build_centroid_table(CENTROIDS_CSV))
}

/// Builds the table from CSV text; malformed rows are skipped.
fn build_centroid_table(text: &str) -> CentroidTable {
    let mut table = HashMap::new();
    // Columns: country_code,continent_code,country_name,point_name,
    //          point_kind,latitude,longitude,geonameid
    for row in parse_csv(text).into_iter().skip(1) {
        let (Some(code), Some(continent), Some(lat), Some(lon)) =
            (row.first(), row.get(1), row.get(5), row.get(6))
        else {
            continue;
        };
        let Some(continent) = CONTINENTS
            .iter()
            .copied()
            .find(|c| c.eq_ignore_ascii_case(continent.trim()))
        else {
            continue;
        };
        let (Ok(lat), Ok(lon)) = (lat.trim().parse::<f64>(), lon.trim().parse::<f64>()) else {
            continue;
        };
        let point = GeoPoint { lat, lon };
        let code = code.trim().to_ascii_uppercase();
        if code.is_empty() || !point.is_valid() {
            continue;
        }
        table.insert(code, (point, continent));
    }
    table
}

/// The embedded country table: ISO code → (capital point, continent code).
///
/// The code is matched case-insensitively. The point is the capital (or
/// largest town), not a geometric centroid.
pub fn country_centroid(code: &str) -> Option<(GeoPoint, &'static str)> {
    let table = centroid_table();
    let code = code.trim();
    if code.bytes().any(|b| b.is_ascii_lowercase()) {
        table.get(&code.to_ascii_uppercase()).copied()
    } else {
        table.get(code).copied()
    }
}

/// Minimal RFC 4180 reader: comma-separated fields, `"`-quoted fields may
/// hold commas, line breaks and `""` (an escaped quote); records end in LF
/// or CRLF. A leading BOM and blank lines are ignored. Lenient rather than
/// failing: an unterminated quote runs to the end of the input, and stray
/// text after a closing quote is dropped.
fn parse_csv(text: &str) -> Vec<Vec<Cow<'_, str>>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let bytes = text.as_bytes();
    let slice = |a: usize, b: usize| text.get(a..b).unwrap_or_default();
    let is_end = |b: u8| b == b',' || b == b'\n' || b == b'\r';
    let mut rows = Vec::new();
    let mut row: Vec<Cow<'_, str>> = Vec::new();
    let mut i = 0;
    if bytes.is_empty() {
        return rows;
    }
    loop {
        let field = if bytes.get(i) == Some(&b'"') {
            i += 1;
            let mut owned: Option<String> = None;
            let mut start = i;
            let tail = loop {
                match bytes.get(i) {
                    None => break slice(start, i),
                    Some(b'"') if bytes.get(i + 1) == Some(&b'"') => {
                        // Keep one quote of the pair.
                        owned
                            .get_or_insert_with(String::new)
                            .push_str(slice(start, i + 1));
                        i += 2;
                        start = i;
                    }
                    Some(b'"') => {
                        let piece = slice(start, i);
                        i += 1;
                        break piece;
                    }
                    Some(_) => i += 1,
                }
            };
            while bytes.get(i).is_some_and(|&b| !is_end(b)) {
                i += 1;
            }
            match owned {
                None => Cow::Borrowed(tail),
                Some(mut s) => {
                    s.push_str(tail);
                    Cow::Owned(s)
                }
            }
        } else {
            let start = i;
            while bytes.get(i).is_some_and(|&b| !is_end(b)) {
                i += 1;
            }
            Cow::Borrowed(slice(start, i))
        };
        row.push(field);
        match bytes.get(i) {
            Some(b',') => i += 1,
            Some(b'\r') | Some(b'\n') => {
                if bytes.get(i) == Some(&b'\r') && bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                i += 1;
                push_row(&mut rows, &mut row);
                if i >= bytes.len() {
                    break;
                }
            }
            _ => {
                push_row(&mut rows, &mut row);
                break;
            }
        }
    }
    rows
}

/// Ends a CSV record, dropping blank lines.
fn push_row<'a>(rows: &mut Vec<Vec<Cow<'a, str>>>, row: &mut Vec<Cow<'a, str>>) {
    let blank = row.len() == 1 && row.first().is_some_and(|f| f.is_empty());
    let done = std::mem::take(row);
    if !blank {
        rows.push(done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

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
        let rows =
            parse_csv("\u{feff}a,b,c\r\n\"x, y\",\"say \"\"hi\"\"\",\r\n\n\"multi\nline\",z");
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
}
