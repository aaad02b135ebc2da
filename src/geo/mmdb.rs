//! MaxMind DB (`.mmdb`) record decoding into a [`Location`].

use std::fmt;
use std::net::IpAddr;

use maxminddb::{LookupResult, PathElement, Reader};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::{GeoPoint, Location};

/// Database-only lookup; any reader or decoding error means "unknown".
pub(super) fn lookup(reader: &Reader<Vec<u8>>, ip: IpAddr) -> Option<Location> {
    // Errors here: an IPv6 address against an IPv4-only database, or a
    // corrupt file. Neither is the client's fault; treat as unknown.
    let result = reader.lookup(ip).ok()?;
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

/// A number stored as any MaxMind numeric type (double, float, integer) or a numeric string.
#[derive(Debug, Clone, Copy)]
pub(super) struct Num(pub(super) f64);

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
pub(super) struct Record<'a> {
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
