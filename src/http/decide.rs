//! Pure HTTP decision logic for the file server: `Range`/`If-Range` evaluation,
//! conditional-request preconditions (RFC 9110 §13.2.2) and request-path
//! normalization. Nothing here performs I/O, and no function panics on any
//! input string.

use std::time::{SystemTime, UNIX_EPOCH};

use percent_encoding::percent_decode_str;

/// Maximum accepted length, in bytes, of a raw request path or a manifest path.
const MAX_PATH_LEN: usize = 4096;

/// Maximum number of ranges accepted in one `Range` header before it is ignored.
const MAX_RANGES: usize = 16;

/// Outcome of evaluating a `Range` header against a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeDecision {
    /// Serve the whole representation with 200.
    Full,
    /// Serve bytes `start..=end` (inclusive) with 206 and `Content-Range: bytes start-end/len`.
    Partial {
        /// First byte offset served (inclusive).
        start: u64,
        /// Last byte offset served (inclusive).
        end: u64,
    },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Result of evaluating conditional request headers (RFC 9110 §13.2.2 order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// No precondition blocks the request: serve it normally.
    Proceed,
    /// Answer 304 Not Modified.
    NotModified,
    /// Answer 412 Precondition Failed.
    Failed,
}

/// A request path after percent-decoding and normalization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath {
    /// Segments joined by '/', no leading slash; "" for the root.
    pub path: String,
    /// True when the path names a directory (root or trailing slash).
    pub is_dir: bool,
}

/// Why a request path was rejected by [`normalize_request_path`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with '/'.
    #[error("request path is not absolute")]
    NotAbsolute,
    /// An invalid percent-escape, or the decoded bytes are not UTF-8.
    #[error("request path has an invalid percent-encoding or is not UTF-8")]
    BadEncoding,
    /// A "." or ".." segment (raw or encoded), or an encoded '/' inside a segment.
    #[error("request path attempts directory traversal")]
    Traversal,
    /// A forbidden character: NUL, a control character or a backslash.
    #[error("request path contains a forbidden character")]
    Forbidden,
    /// The raw path is longer than 4096 bytes.
    #[error("request path is too long")]
    TooLong,
}

/// Trims optional whitespace (SP / HTAB) as defined by RFC 9110.
fn ows_trim(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// Whole seconds since the Unix epoch, floored (negative before 1970).
fn unix_secs(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::from(d.as_secs()),
        Err(e) => {
            let d = e.duration();
            let s = i128::from(d.as_secs());
            if d.subsec_nanos() > 0 {
                -s - 1
            } else {
                -s
            }
        }
    }
}

/// Parses an HTTP date into whole seconds since the epoch; `None` if invalid.
fn parse_date_secs(s: &str) -> Option<i128> {
    httpdate::parse_http_date(ows_trim(s)).ok().map(unix_secs)
}

/// Iterator over the elements of an entity-tag list (`#entity-tag`).
///
/// Yields `(weak, tag)` where `tag` includes its quotes. Malformed elements
/// are yielded verbatim (trimmed) so that they simply never match.
struct EtagList<'a> {
    rest: &'a str,
}

impl<'a> Iterator for EtagList<'a> {
    type Item = (bool, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest.trim_start_matches([',', ' ', '\t']);
        if rest.is_empty() {
            self.rest = rest;
            return None;
        }
        let (weak, body) = match rest.strip_prefix("W/") {
            Some(b) => (true, b),
            None => (false, rest),
        };
        if let Some(after_open) = body.strip_prefix('"') {
            if let Some((inner, after)) = after_open.split_once('"') {
                let tag = body.get(..inner.len() + 2).unwrap_or(body);
                self.rest = after;
                return Some((weak, tag));
            }
        }
        let (item, after) = body.split_once(',').unwrap_or((body, ""));
        self.rest = after;
        Some((weak, ows_trim(item)))
    }
}

/// Splits an entity-tag list into its elements.
fn etag_list(s: &str) -> EtagList<'_> {
    EtagList { rest: s }
}

/// Splits our own ETag into `(weak, opaque-tag)`.
fn split_weak(etag: &str) -> (bool, &str) {
    match etag.strip_prefix("W/") {
        Some(t) => (true, t),
        None => (false, etag),
    }
}

/// Strong comparison of a list element against our ETag.
fn strong_match(weak: bool, tag: &str, etag: &str) -> bool {
    let (our_weak, our_tag) = split_weak(etag);
    !weak && !our_weak && tag == our_tag
}

/// Weak comparison of a list element against our ETag.
fn weak_match(tag: &str, etag: &str) -> bool {
    split_weak(etag).1 == tag
}

/// True when an `If-Range` value validates against our ETag or Last-Modified.
fn if_range_matches(if_range: &str, etag: &str, last_modified: SystemTime) -> bool {
    let v = ows_trim(if_range);
    if v.starts_with("W/") {
        return false;
    }
    if v.starts_with('"') {
        return strong_match(false, v, etag);
    }
    parse_date_secs(v) == Some(unix_secs(last_modified))
}

/// Parses a non-empty run of ASCII digits; `None` if malformed or overflowing u64.
fn parse_num(s: &str) -> Option<u64> {
    let s = ows_trim(s);
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// One syntactically valid range spec evaluated against `len`.
enum Spec {
    /// Satisfiable, clamped to `start..=end`.
    Sat(u64, u64),
    /// Valid but not satisfiable.
    Unsat,
}

/// Evaluates one `range-spec`; `None` when it is syntactically invalid.
fn eval_spec(spec: &str, len: u64) -> Option<Spec> {
    let (first, last) = spec.split_once('-')?;
    let first = ows_trim(first);
    let last = ows_trim(last);
    let last_byte = len.checked_sub(1);
    match (first.is_empty(), last.is_empty()) {
        (true, true) => None,
        (true, false) => {
            let n = parse_num(last)?;
            Some(match last_byte {
                Some(end) if n > 0 => Spec::Sat(len.saturating_sub(n), end),
                _ => Spec::Unsat,
            })
        }
        (false, true) => {
            let a = parse_num(first)?;
            Some(match last_byte {
                Some(end) if a < len => Spec::Sat(a, end),
                _ => Spec::Unsat,
            })
        }
        (false, false) => {
            let a = parse_num(first)?;
            let b = parse_num(last)?;
            if b < a {
                return None;
            }
            Some(match last_byte {
                Some(end) if a < len => Spec::Sat(a, b.min(end)),
                _ => Spec::Unsat,
            })
        }
    }
}

/// Decides how to answer a request given its `Range` and `If-Range` headers.
///
/// `range`: the raw Range header value if present; `if_range`: raw If-Range
/// header if present; `etag`: our strong ETag *including quotes*, e.g.
/// `"\"abc\""`; `last_modified`: our Last-Modified time (If-Range may carry an
/// HTTP date, which matches only if exactly equal at second precision).
/// Invalid, unknown-unit or abusive (> 16 ranges) headers yield `Full`;
/// several valid ranges are coalesced into one span.
pub fn decide_range(
    range: Option<&str>,
    if_range: Option<&str>,
    etag: &str,
    last_modified: SystemTime,
    len: u64,
) -> RangeDecision {
    let Some(range) = range else {
        return RangeDecision::Full;
    };
    if let Some(ir) = if_range {
        if !if_range_matches(ir, etag, last_modified) {
            return RangeDecision::Full;
        }
    }
    let Some((unit, set)) = range.split_once('=') else {
        return RangeDecision::Full;
    };
    if !ows_trim(unit).eq_ignore_ascii_case("bytes") {
        return RangeDecision::Full;
    }
    let mut count = 0usize;
    let mut span: Option<(u64, u64)> = None;
    for spec in set.split(',').map(ows_trim).filter(|s| !s.is_empty()) {
        count += 1;
        if count > MAX_RANGES {
            return RangeDecision::Full;
        }
        match eval_spec(spec, len) {
            None => return RangeDecision::Full,
            Some(Spec::Unsat) => {}
            Some(Spec::Sat(s, e)) => {
                span = Some(match span {
                    Some((s0, e0)) => (s0.min(s), e0.max(e)),
                    None => (s, e),
                });
            }
        }
    }
    match (count, span) {
        (0, _) => RangeDecision::Full,
        (_, Some((start, end))) => RangeDecision::Partial { start, end },
        (_, None) => RangeDecision::Unsatisfiable,
    }
}

/// Evaluates conditional headers for a GET/HEAD request in RFC 9110 §13.2.2 order.
///
/// If-Match (strong) failing or, absent If-Match, If-Unmodified-Since failing
/// gives `Failed`; If-None-Match (weak) matching or, absent If-None-Match,
/// If-Modified-Since not older than `last_modified` gives `NotModified`.
/// Invalid dates are ignored. Times are compared at second precision.
pub fn evaluate_preconditions(
    if_match: Option<&str>,
    if_none_match: Option<&str>,
    if_modified_since: Option<&str>,
    if_unmodified_since: Option<&str>,
    etag: &str,
    last_modified: SystemTime,
) -> Precondition {
    let lm = unix_secs(last_modified);
    if let Some(im) = if_match {
        let matched =
            ows_trim(im) == "*" || etag_list(im).any(|(weak, tag)| strong_match(weak, tag, etag));
        if !matched {
            return Precondition::Failed;
        }
    } else if let Some(date) = if_unmodified_since.and_then(parse_date_secs) {
        if lm > date {
            return Precondition::Failed;
        }
    }
    if let Some(inm) = if_none_match {
        let matched = ows_trim(inm) == "*" || etag_list(inm).any(|(_, tag)| weak_match(tag, etag));
        if matched {
            return Precondition::NotModified;
        }
    } else if let Some(date) = if_modified_since.and_then(parse_date_secs) {
        if lm <= date {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// True when every `%` in `s` starts a valid two-hex-digit escape.
fn escapes_valid(s: &str) -> bool {
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = bytes.next();
            let lo = bytes.next();
            match (hi, lo) {
                (Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {}
                _ => return false,
            }
        }
    }
    true
}

/// True for characters never allowed in a path segment.
fn is_forbidden_char(c: char) -> bool {
    c == '\\' || c.is_control()
}

/// Percent-decodes and normalizes an absolute request path (query already removed).
///
/// The raw path is split on '/' before decoding; empty segments are skipped;
/// decoded segments may not be "." or "..", contain '/', a backslash, NUL or
/// control characters. `is_dir` is set for the root or a trailing slash.
pub fn normalize_request_path(raw: &str) -> Result<RequestPath, PathError> {
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut path = String::with_capacity(rest.len());
    for seg in rest.split('/').filter(|s| !s.is_empty()) {
        if !escapes_valid(seg) {
            return Err(PathError::BadEncoding);
        }
        let decoded = percent_decode_str(seg)
            .decode_utf8()
            .map_err(|_| PathError::BadEncoding)?;
        if decoded == "." || decoded == ".." || decoded.contains('/') {
            return Err(PathError::Traversal);
        }
        if decoded.chars().any(is_forbidden_char) {
            return Err(PathError::Forbidden);
        }
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(&decoded);
    }
    let is_dir = path.is_empty() || raw.ends_with('/');
    Ok(RequestPath { path, is_dir })
}

/// True when `p` is a clean relative file path acceptable in a signed manifest.
///
/// Requires: non-empty, ≤ 4096 bytes, '/'-separated, no leading or trailing
/// '/', no empty, "." or ".." segments, no backslash, NUL or control characters.
pub fn is_clean_relative_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= MAX_PATH_LEN
        && !p.chars().any(is_forbidden_char)
        && p.split('/').all(|s| !s.is_empty() && s != "." && s != "..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    const ETAG: &str = "\"abc\"";

    fn lm() -> SystemTime {
        // 2015-10-21T07:28:00Z plus a sub-second part that must be ignored.
        UNIX_EPOCH + Duration::new(1_445_412_480, 500_000_000)
    }
    const LM_DATE: &str = "Wed, 21 Oct 2015 07:28:00 GMT";
    const BEFORE: &str = "Wed, 21 Oct 2015 07:27:59 GMT";
    const AFTER: &str = "Wed, 21 Oct 2015 07:28:01 GMT";

    fn r(range: &str, len: u64) -> RangeDecision {
        decide_range(Some(range), None, ETAG, lm(), len)
    }

    fn p(start: u64, end: u64) -> RangeDecision {
        RangeDecision::Partial { start, end }
    }

    use RangeDecision::{Full, Unsatisfiable};

    #[test]
    fn range_absent_is_full() {
        assert_eq!(decide_range(None, None, ETAG, lm(), 100), Full);
        assert_eq!(decide_range(None, Some(ETAG), ETAG, lm(), 100), Full);
    }

    #[test]
    fn range_single_forms() {
        assert_eq!(r("bytes=0-9", 100), p(0, 9));
        assert_eq!(r("bytes=10-", 100), p(10, 99));
        assert_eq!(r("bytes=-10", 100), p(90, 99));
        assert_eq!(r("bytes=-1000", 100), p(0, 99));
        assert_eq!(r("bytes=0-0", 1), p(0, 0));
        assert_eq!(r("bytes=99-99", 100), p(99, 99));
    }

    #[test]
    fn range_unit_case_and_whitespace() {
        assert_eq!(r("BYTES=0-9", 100), p(0, 9));
        assert_eq!(r("Bytes=0-9", 100), p(0, 9));
        assert_eq!(r("  bytes = 0 - 9 ", 100), p(0, 9));
        assert_eq!(r("bytes=\t5-\t", 100), p(5, 99));
        assert_eq!(r("bytes= - 5", 100), p(95, 99));
        assert_eq!(r("bytes=0-1 , 5-6", 100), p(0, 6));
    }

    #[test]
    fn range_end_clamped() {
        assert_eq!(r("bytes=50-1000", 100), p(50, 99));
        assert_eq!(r(&format!("bytes=0-{}", u64::MAX), 100), p(0, 99));
    }

    #[test]
    fn range_unsatisfiable() {
        assert_eq!(r("bytes=100-", 100), Unsatisfiable);
        assert_eq!(r("bytes=100-200", 100), Unsatisfiable);
        assert_eq!(r("bytes=-0", 100), Unsatisfiable);
        assert_eq!(r("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(r("bytes=0-", 0), Unsatisfiable);
        assert_eq!(r("bytes=-5", 0), Unsatisfiable);
        assert_eq!(r("bytes=100-200,300-400", 100), Unsatisfiable);
    }

    #[test]
    fn range_invalid_is_full() {
        for h in [
            "",
            "bytes",
            "bytes=",
            "bytes=,",
            "bytes=abc",
            "bytes=5-2",
            "items=0-1",
            "bytes=-",
            "bytes=1",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=--1",
            "bytes=1--2",
            "bytes=0x1-2",
            "bytes=1-2,abc",
            "bytes=1-2,5-3",
            "bytes=1.5-2",
            "bytes=١-٢",
        ] {
            assert_eq!(r(h, 100), Full, "header {h:?}");
        }
        // Invalid syntax wins over emptiness of the representation.
        assert_eq!(r("bytes=abc", 0), Full);
    }

    #[test]
    fn range_overflow_is_full() {
        assert_eq!(r("bytes=18446744073709551616-", 100), Full);
        assert_eq!(r("bytes=0-18446744073709551616", 100), Full);
        assert_eq!(r("bytes=-18446744073709551616", 100), Full);
        assert_eq!(r("bytes=18446744073709551615-", u64::MAX), Unsatisfiable);
        assert_eq!(
            r("bytes=-18446744073709551615", u64::MAX),
            p(0, u64::MAX - 1)
        );
    }

    #[test]
    fn range_multiple_coalesced() {
        assert_eq!(r("bytes=0-1,5-6", 100), p(0, 6));
        assert_eq!(r("bytes=5-6,0-1", 100), p(0, 6));
        assert_eq!(r("bytes=0-1,-10", 100), p(0, 99));
        assert_eq!(r("bytes=50-60,200-300", 100), p(50, 60));
        assert_eq!(r("bytes=200-300,-0,10-20", 100), p(10, 20));
        assert_eq!(r("bytes=0-1,,5-6", 100), p(0, 6));
    }

    #[test]
    fn range_too_many_is_full() {
        let sixteen = (0..16)
            .map(|i| format!("{}-{}", i * 2, i * 2))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(r(&format!("bytes={sixteen}"), 100), p(0, 30));
        assert_eq!(r(&format!("bytes={sixteen},40-41"), 100), Full);
        let many = vec!["0-0"; 1000].join(",");
        assert_eq!(r(&format!("bytes={many}"), 100), Full);
    }

    #[test]
    fn if_range_etag() {
        let d = |ir: &str| decide_range(Some("bytes=0-9"), Some(ir), ETAG, lm(), 100);
        assert_eq!(d(ETAG), p(0, 9));
        assert_eq!(d(" \"abc\" "), p(0, 9));
        assert_eq!(d("\"other\""), Full);
        assert_eq!(d("W/\"abc\""), Full);
        assert_eq!(d("abc"), Full);
        assert_eq!(d(""), Full);
        assert_eq!(d("*"), Full);
        // Our own weak ETag can never match strongly.
        assert_eq!(
            decide_range(Some("bytes=0-9"), Some("W/\"abc\""), "W/\"abc\"", lm(), 100),
            Full
        );
    }

    #[test]
    fn if_range_date() {
        let d = |ir: &str| decide_range(Some("bytes=0-9"), Some(ir), ETAG, lm(), 100);
        assert_eq!(d(LM_DATE), p(0, 9));
        assert_eq!(d("Wednesday, 21-Oct-15 07:28:00 GMT"), p(0, 9));
        assert_eq!(d("Wed Oct 21 07:28:00 2015"), p(0, 9));
        assert_eq!(d(BEFORE), Full);
        assert_eq!(d(AFTER), Full);
        assert_eq!(d("not a date"), Full);
        // If-Range mismatch also suppresses a 416.
        assert_eq!(
            decide_range(Some("bytes=500-"), Some(BEFORE), ETAG, lm(), 100),
            Full
        );
        // A pre-epoch Last-Modified must not panic and never matches.
        let old = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(
            decide_range(Some("bytes=0-9"), Some(LM_DATE), ETAG, old, 100),
            Full
        );
    }

    fn pc(
        im: Option<&str>,
        inm: Option<&str>,
        ims: Option<&str>,
        ius: Option<&str>,
    ) -> Precondition {
        evaluate_preconditions(im, inm, ims, ius, ETAG, lm())
    }

    use Precondition::{Failed, NotModified, Proceed};

    #[test]
    fn preconditions_none() {
        assert_eq!(pc(None, None, None, None), Proceed);
    }

    #[test]
    fn if_match() {
        assert_eq!(pc(Some("*"), None, None, None), Proceed);
        assert_eq!(pc(Some(" * "), None, None, None), Proceed);
        assert_eq!(pc(Some(ETAG), None, None, None), Proceed);
        assert_eq!(pc(Some("\"x\", \"abc\""), None, None, None), Proceed);
        assert_eq!(pc(Some("\"x\",\"abc\",\"y\""), None, None, None), Proceed);
        assert_eq!(pc(Some("\"x\""), None, None, None), Failed);
        assert_eq!(pc(Some("W/\"abc\""), None, None, None), Failed);
        assert_eq!(pc(Some("\"x\", W/\"abc\""), None, None, None), Failed);
        assert_eq!(pc(Some(""), None, None, None), Failed);
        assert_eq!(pc(Some("garbage"), None, None, None), Failed);
        // Commas inside an entity-tag are part of the tag.
        assert_eq!(
            evaluate_preconditions(Some("\"a,b\""), None, None, None, "\"a,b\"", lm()),
            Proceed
        );
        // If-Match takes precedence over If-Unmodified-Since.
        assert_eq!(pc(Some(ETAG), None, None, Some(BEFORE)), Proceed);
        assert_eq!(pc(Some("\"x\""), None, None, Some(AFTER)), Failed);
    }

    #[test]
    fn if_unmodified_since() {
        assert_eq!(pc(None, None, None, Some(BEFORE)), Failed);
        assert_eq!(pc(None, None, None, Some(LM_DATE)), Proceed);
        assert_eq!(pc(None, None, None, Some(AFTER)), Proceed);
        assert_eq!(pc(None, None, None, Some("yesterday")), Proceed);
    }

    #[test]
    fn if_none_match() {
        assert_eq!(pc(None, Some("*"), None, None), NotModified);
        assert_eq!(pc(None, Some(ETAG), None, None), NotModified);
        assert_eq!(pc(None, Some("W/\"abc\""), None, None), NotModified);
        assert_eq!(pc(None, Some("\"x\", W/\"abc\""), None, None), NotModified);
        assert_eq!(pc(None, Some("\"x\""), None, None), Proceed);
        assert_eq!(pc(None, Some("\"x\", \"y\""), None, None), Proceed);
        // Weak comparison also matches when our own ETag is weak.
        assert_eq!(
            evaluate_preconditions(None, Some(ETAG), None, None, "W/\"abc\"", lm()),
            NotModified
        );
        // If-None-Match present: If-Modified-Since is ignored.
        assert_eq!(pc(None, Some("\"x\""), Some(AFTER), None), Proceed);
        assert_eq!(pc(None, Some(ETAG), Some(BEFORE), None), NotModified);
    }

    #[test]
    fn if_modified_since() {
        assert_eq!(pc(None, None, Some(LM_DATE), None), NotModified);
        assert_eq!(pc(None, None, Some(AFTER), None), NotModified);
        assert_eq!(pc(None, None, Some(BEFORE), None), Proceed);
        assert_eq!(pc(None, None, Some("garbage"), None), Proceed);
        assert_eq!(pc(None, None, Some(" ✓ "), None), Proceed);
    }

    #[test]
    fn precondition_order() {
        // Failed If-Match wins over a matching If-None-Match.
        assert_eq!(pc(Some("\"x\""), Some(ETAG), None, None), Failed);
        // Failed If-Unmodified-Since wins over If-Modified-Since.
        assert_eq!(pc(None, None, Some(AFTER), Some(BEFORE)), Failed);
        // Passing If-Match then matching If-None-Match.
        assert_eq!(pc(Some(ETAG), Some(ETAG), None, None), NotModified);
        assert_eq!(
            pc(Some("*"), None, Some(LM_DATE), Some(BEFORE)),
            NotModified
        );
    }

    fn ok(path: &str, is_dir: bool) -> Result<RequestPath, PathError> {
        Ok(RequestPath {
            path: path.to_string(),
            is_dir,
        })
    }

    #[test]
    fn path_examples() {
        let n = normalize_request_path;
        assert_eq!(n("/"), ok("", true));
        assert_eq!(n("//"), ok("", true));
        assert_eq!(n("/a//b/"), ok("a/b", true));
        assert_eq!(n("/a/b"), ok("a/b", false));
        assert_eq!(n("/a%20b.txt"), ok("a b.txt", false));
        assert_eq!(n("/img/%E2%9C%93.png"), ok("img/✓.png", false));
        assert_eq!(n("/img/✓.png"), ok("img/✓.png", false));
        assert_eq!(n("/a/.b/..c/c.."), ok("a/.b/..c/c..", false));
        assert_eq!(n("/%41"), ok("A", false));
        assert_eq!(n("/a%25b"), ok("a%b", false));
        assert_eq!(n("/dir/"), ok("dir", true));
    }

    #[test]
    fn path_not_absolute() {
        assert_eq!(
            normalize_request_path("etc/passwd"),
            Err(PathError::NotAbsolute)
        );
        assert_eq!(normalize_request_path(""), Err(PathError::NotAbsolute));
        assert_eq!(
            normalize_request_path("%2Fetc"),
            Err(PathError::NotAbsolute)
        );
    }

    #[test]
    fn path_traversal() {
        for raw in [
            "/../etc/passwd",
            "/a/../b",
            "/a/..",
            "/./a",
            "/a/.",
            "/%2e%2e/x",
            "/%2E%2E/x",
            "/.%2e/x",
            "/%2e./x",
            "/%2e/x",
            "/a/%2fetc",
            "/a/%2Fetc",
            "/a%2f..%2fb",
        ] {
            assert_eq!(
                normalize_request_path(raw),
                Err(PathError::Traversal),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn path_bad_encoding() {
        for raw in ["/%zz", "/a%4", "/a%", "/%4g", "/%ff", "/%C3%28", "/%E2%9C"] {
            assert_eq!(
                normalize_request_path(raw),
                Err(PathError::BadEncoding),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn path_forbidden() {
        for raw in [
            "/a%00b", "/a\0b", "/a%5cb", "/a%5Cb", "/a\\b", "/a%0Ab", "/a\tb", "/%7f", "/%C2%85",
        ] {
            assert_eq!(
                normalize_request_path(raw),
                Err(PathError::Forbidden),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn path_too_long() {
        let max = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
        assert_eq!(
            normalize_request_path(&max),
            ok(&"a".repeat(MAX_PATH_LEN - 1), false)
        );
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(normalize_request_path(&long), Err(PathError::TooLong));
    }

    #[test]
    fn clean_relative_paths() {
        for good in [
            "a",
            "a/b",
            "a b.txt",
            "img/✓.png",
            ".hidden",
            "a/..b",
            "a..",
            "%2e%2e",
        ] {
            assert!(is_clean_relative_path(good), "{good:?}");
        }
        let long = "a".repeat(MAX_PATH_LEN + 1);
        for bad in [
            "",
            "/a",
            "a/",
            "/",
            "a//b",
            ".",
            "..",
            "a/./b",
            "a/../b",
            "../a",
            "a/..",
            "a\\b",
            "a\0b",
            "a\nb",
            "a\u{7f}",
            long.as_str(),
        ] {
            assert!(!is_clean_relative_path(bad), "{bad:?}");
        }
        assert!(is_clean_relative_path(&"a".repeat(MAX_PATH_LEN)));
    }

    #[test]
    fn path_error_messages() {
        assert!(!PathError::Traversal.to_string().is_empty());
    }

    fn arb_time() -> impl Strategy<Value = SystemTime> {
        prop_oneof![
            (0u64..300_000_000_000, 0u32..1_000_000_000)
                .prop_map(|(s, n)| UNIX_EPOCH + Duration::new(s, n)),
            (0u64..1_000_000_000).prop_map(|s| UNIX_EPOCH - Duration::from_secs(s)),
        ]
    }

    fn arb_range() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[ ]*[bB][yY][tT][eE][sS][ ]*=[0-9, \\-]{0,40}",
            proptest::collection::vec((0u64..1000, 0u64..1000), 1..20).prop_map(|v| {
                let specs: Vec<String> = v.iter().map(|(a, b)| format!("{a}-{b}")).collect();
                format!("bytes={}", specs.join(","))
            }),
        ]
    }

    proptest! {
        #[test]
        fn prop_decide_range_total(
            range in proptest::option::of(arb_range()),
            if_range in proptest::option::of(any::<String>()),
            etag in any::<String>(),
            lm in arb_time(),
            len in prop_oneof![any::<u64>(), 0u64..2000],
        ) {
            let d = decide_range(range.as_deref(), if_range.as_deref(), &etag, lm, len);
            if let RangeDecision::Partial { start, end } = d {
                prop_assert!(start <= end);
                prop_assert!(end < len);
            }
        }

        #[test]
        fn prop_partial_respects_len(spec in arb_range(), len in 0u64..2000) {
            let d = decide_range(Some(&spec), None, ETAG, lm(), len);
            if let RangeDecision::Partial { start, end } = d {
                prop_assert!(start <= end && end < len);
            }
        }

        #[test]
        fn prop_normalize_total(raw in prop_oneof![
            any::<String>(),
            "/[a-z./%0-9A-F\\\\]{0,40}",
            "/(%2[eEfF]|%5[cC]|\\.|/|a|%[0-9a-fA-F]{2}|%)*",
        ]) {
            if let Ok(rp) = normalize_request_path(&raw) {
                prop_assert!(rp.path.is_empty() || is_clean_relative_path(&rp.path));
                prop_assert!(!rp.path.split('/').any(|s| s == ".." || s == "."));
                prop_assert!(!rp.path.is_empty() || rp.is_dir);
            }
        }

        #[test]
        fn prop_clean_path_roundtrips(segs in proptest::collection::vec("[a-zA-Z0-9_.-]{1,8}", 1..6)) {
            prop_assume!(segs.iter().all(|s| s != "." && s != ".."));
            let p = segs.join("/");
            prop_assert!(is_clean_relative_path(&p));
            let rp = normalize_request_path(&format!("/{p}"));
            prop_assert_eq!(rp, Ok(RequestPath { path: p, is_dir: false }));
        }

        #[test]
        fn prop_preconditions_total(
            im in proptest::option::of(any::<String>()),
            inm in proptest::option::of(any::<String>()),
            ims in proptest::option::of(any::<String>()),
            ius in proptest::option::of(any::<String>()),
            etag in any::<String>(),
            lm in arb_time(),
        ) {
            let _ = evaluate_preconditions(
                im.as_deref(), inm.as_deref(), ims.as_deref(), ius.as_deref(), &etag, lm,
            );
        }

        #[test]
        fn prop_preconditions_dates(secs in 0u64..4_000_000_000, lm in arb_time()) {
            let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            let lm_secs = unix_secs(lm);
            let expect_nm = lm_secs <= i128::from(secs);
            let got = evaluate_preconditions(None, None, Some(&date), None, ETAG, lm);
            prop_assert_eq!(got == Precondition::NotModified, expect_nm);
            let got = evaluate_preconditions(None, None, None, Some(&date), ETAG, lm);
            prop_assert_eq!(got == Precondition::Failed, !expect_nm);
        }
    }
}
