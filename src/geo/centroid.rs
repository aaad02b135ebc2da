//! Country centroids: the embedded country → (capital point, continent) table.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use super::GeoPoint;

/// The country table shipped with the crate (GeoNames, CC BY 4.0).
const CENTROIDS_CSV: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/geodata/country-centroids.csv"
));

/// Continent codes a table row may use, so they can be handed out as `&'static str`.
const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

type CentroidTable = HashMap<String, (GeoPoint, &'static str)>;

pub(super) fn centroid_table() -> &'static CentroidTable {
    static TABLE: OnceLock<CentroidTable> = OnceLock::new();
    TABLE.get_or_init(|| build_centroid_table(CENTROIDS_CSV))
}

/// Builds the table from CSV text; malformed rows are skipped.
pub(super) fn build_centroid_table(text: &str) -> CentroidTable {
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
pub(super) fn parse_csv(text: &str) -> Vec<Vec<Cow<'_, str>>> {
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
