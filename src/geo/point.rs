//! Point math: a WGS 84 point and great-circle distance.

use serde::{Deserialize, Serialize};

/// Mean Earth radius in km (IUGG), used by [`distance_km`].
pub(crate) const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A point on the Earth's surface in decimal degrees (WGS 84): the one
/// location type (configuration, geodata, steering and the report wire,
/// where it encodes as `{"lat": .., "lon": ..}`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
