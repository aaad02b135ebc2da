//! Pure HTTP decisions: `p2pcdn::http::decide::{decide_range,
//! evaluate_preconditions, normalize_request_path, is_clean_relative_path}`.
//!
//! Invariants: a `Partial { start, end }` satisfies `start <= end < len`;
//! no `Partial` for an empty body or without a Range header; a matching strong
//! If-Range changes nothing; an accepted path is "" or a clean relative path,
//! `is_dir` exactly for the root or a trailing '/'; preconditions follow the
//! RFC 9110 shortcuts checked below.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use p2pcdn::http::decide::{
    decide_range, evaluate_preconditions, is_clean_relative_path, normalize_request_path,
    Precondition, RangeDecision,
};

/// Input layout: 16 control bytes (etag choice, length choice, length u64
/// LE, Last-Modified seconds as i48 LE), then '\n'-separated UTF-8 fields:
/// Range, If-Range, If-Match, If-None-Match, If-Modified-Since,
/// If-Unmodified-Since, ETag, request path. An empty or missing field is an
/// absent header.
#[derive(Debug, Default)]
struct Input<'a> {
    range: Option<&'a str>,
    if_range: Option<&'a str>,
    if_match: Option<&'a str>,
    if_none_match: Option<&'a str>,
    if_modified_since: Option<&'a str>,
    if_unmodified_since: Option<&'a str>,
    etag_choice: u8,
    etag: &'a str,
    lm_secs: i64,
    lm_nanos: u32,
    len_choice: u8,
    len: u64,
    path: &'a str,
}

fn parse(data: &[u8]) -> Option<Input<'_>> {
    if data.len() < 16 {
        return None;
    }
    let (ctl, rest) = data.split_at(16);
    let text = std::str::from_utf8(rest).ok()?;
    let mut f = text.split('\n');
    let mut opt = || f.next().filter(|s| !s.is_empty());
    let mut secs = [0u8; 8];
    secs[..6].copy_from_slice(&ctl[10..16]);
    let lm_secs = (i64::from_le_bytes(secs) << 16) >> 16;
    let mut inp = Input {
        etag_choice: ctl[0],
        len_choice: ctl[1],
        len: u64::from_le_bytes(ctl[2..10].try_into().ok()?),
        lm_secs,
        lm_nanos: u32::from(ctl[0]) * 3_900_000,
        ..Default::default()
    };
    inp.range = opt();
    inp.if_range = opt();
    inp.if_match = opt();
    inp.if_none_match = opt();
    inp.if_modified_since = opt();
    inp.if_unmodified_since = opt();
    inp.etag = opt().unwrap_or("");
    inp.path = opt().unwrap_or("");
    Some(inp)
}

fn model_clean(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 4096
        && !p.chars().any(|c| c == '\\' || c.is_control())
        && p.split('/').all(|s| !s.is_empty() && s != "." && s != "..")
}

fuzz_target!(|data: &[u8]| {
    let Some(inp) = parse(data) else { return };
    let etag: &str = match inp.etag_choice % 4 {
        0 => "\"abc\"",
        1 => "W/\"abc\"",
        2 => "\"\"",
        _ => inp.etag,
    };
    let lm = {
        let d = Duration::new(inp.lm_secs.unsigned_abs() % (1 << 40), inp.lm_nanos % 1_000_000_000);
        if inp.lm_secs < 0 {
            UNIX_EPOCH.checked_sub(d).unwrap_or(UNIX_EPOCH)
        } else {
            UNIX_EPOCH + d
        }
    };
    let len = match inp.len_choice % 4 {
        0 => 0,
        1 => inp.len % 100,
        2 => u64::MAX - inp.len % 4,
        _ => inp.len,
    };

    // Ranges.
    let d = decide_range(inp.range, inp.if_range, etag, lm, len);
    if let RangeDecision::Partial { start, end } = d {
        assert!(start <= end, "start {start} > end {end}");
        assert!(end < len, "end {end} >= len {len}");
    }
    if inp.range.is_none() {
        assert_eq!(d, RangeDecision::Full);
    }
    if len == 0 {
        assert!(!matches!(d, RangeDecision::Partial { .. }));
    }
    let plain = decide_range(inp.range, None, etag, lm, len);
    if inp.if_range.is_none() {
        assert_eq!(d, plain);
    }
    if etag.starts_with('"') && etag.ends_with('"') && etag.len() >= 2 {
        // A strong If-Range equal to our strong ETag validates.
        assert_eq!(decide_range(inp.range, Some(etag), etag, lm, len), plain);
        // A weak If-Range never does.
        let weak = format!("W/{etag}");
        assert!(matches!(
            decide_range(inp.range, Some(&weak), etag, lm, len),
            RangeDecision::Full
        ));
    }
    if let Some(r) = inp.range {
        // The whole-representation range.
        if len > 0 && r == "bytes=0-" {
            assert_eq!(plain, RangeDecision::Partial { start: 0, end: len - 1 });
        }
    }

    // Preconditions.
    let p = evaluate_preconditions(
        inp.if_match,
        inp.if_none_match,
        inp.if_modified_since,
        inp.if_unmodified_since,
        etag,
        lm,
    );
    if inp.if_match.is_none()
        && inp.if_none_match.is_none()
        && inp.if_modified_since.is_none()
        && inp.if_unmodified_since.is_none()
    {
        assert_eq!(p, Precondition::Proceed);
    }
    if inp.if_match.map(|s| s.trim_matches([' ', '\t'])) == Some("*") {
        assert_ne!(p, Precondition::Failed);
    }
    if inp.if_none_match.map(|s| s.trim_matches([' ', '\t'])) == Some("*")
        && p != Precondition::Failed
    {
        assert_eq!(p, Precondition::NotModified);
    }
    // If-None-Match, when present, makes If-Modified-Since irrelevant.
    if inp.if_none_match.is_some() {
        let q = evaluate_preconditions(
            inp.if_match,
            inp.if_none_match,
            None,
            inp.if_unmodified_since,
            etag,
            lm,
        );
        assert_eq!(p, q);
    }
    // If-Match, when present, makes If-Unmodified-Since irrelevant.
    if inp.if_match.is_some() {
        let q = evaluate_preconditions(
            inp.if_match,
            inp.if_none_match,
            inp.if_modified_since,
            None,
            etag,
            lm,
        );
        assert_eq!(p, q);
    }
    // Our own strong ETag always satisfies If-Match.
    if !etag.starts_with("W/") && !etag.is_empty() && !etag.contains(',') && etag.trim_matches([' ', '\t']) == etag {
        if etag.starts_with('"') && etag.len() >= 2 && etag[1..].find('"') == Some(etag.len() - 2) {
            let q = evaluate_preconditions(Some(etag), None, None, None, etag, lm);
            assert_eq!(q, Precondition::Proceed, "own ETag {etag:?} fails If-Match");
            let q = evaluate_preconditions(None, Some(etag), None, None, etag, lm);
            assert_eq!(q, Precondition::NotModified, "own ETag {etag:?} misses If-None-Match");
        }
    }

    // Our Last-Modified printed as an HTTP date matches at second precision.
    let secs = lm.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).ok();
    if secs.is_some_and(|s| s < 253_402_300_799) {
        let date = httpdate::fmt_http_date(lm);
        let q = evaluate_preconditions(None, None, Some(&date), None, etag, lm);
        assert_eq!(q, Precondition::NotModified, "If-Modified-Since {date}");
        let q = evaluate_preconditions(None, None, None, Some(&date), etag, lm);
        assert_eq!(q, Precondition::Proceed, "If-Unmodified-Since {date}");
        if len > 0 {
            assert_eq!(
                decide_range(Some("bytes=0-0"), Some(&date), etag, lm, len),
                RangeDecision::Partial { start: 0, end: 0 },
                "If-Range {date}"
            );
        }
    }

    // Paths.
    for raw in [inp.path, inp.range.unwrap_or("/")] {
        match normalize_request_path(raw) {
            Ok(rp) => {
                assert!(raw.starts_with('/'));
                assert!(raw.len() <= 4096);
                assert!(
                    rp.path.is_empty() || is_clean_relative_path(&rp.path),
                    "accepted path {raw:?} normalizes to unclean {:?}",
                    rp.path
                );
                assert!(rp.path.is_empty() || model_clean(&rp.path));
                assert_eq!(rp.is_dir, rp.path.is_empty() || raw.ends_with('/'));
                assert!(rp.path.len() <= raw.len());
            }
            Err(_) => {}
        }
    }
    assert_eq!(is_clean_relative_path(inp.path), model_clean(inp.path));
});
