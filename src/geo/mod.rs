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

mod centroid;
mod mmdb;
mod overrides;
mod point;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::Reader;

pub use centroid::country_centroid;
pub use overrides::{parse_prefix, PrefixOverride};
pub use point::{distance_km, GeoPoint};

use overrides::Overrides;

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
    pub(super) fn is_empty(&self) -> bool {
        self.point.is_none() && self.country.is_none() && self.continent.is_none()
    }

    /// Fills a missing point and continent from the country table, and
    /// upper-cases the codes.
    pub(super) fn completed(mut self) -> Location {
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

/// Turns `::ffff:a.b.c.d` into `a.b.c.d`; everything else is unchanged.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
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
        mmdb::lookup(&self.reader, ip)
    }
}
