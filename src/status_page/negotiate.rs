//! HTML or JSON for `/status`, from the request's `Accept` (RFC 9110 §12.5.1).
//!
//! JSON stays the default: a client gets the page only when it names
//! `text/html` (or `application/xhtml+xml`) itself, with a quality above zero
//! and at least that of JSON. Wildcards (`*/*`, `text/*`) never select HTML,
//! so `curl`, `p2pcdn status` and scripts keep getting JSON.

/// True when the page should be sent rather than JSON.
pub fn prefers_html(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    let mut html = 0.0f32;
    let mut json = 0.0f32;
    for range in accept.split(',').take(64) {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        // A missing q is 1; a malformed one counts as 0 (not acceptable).
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, v)| match v.trim().parse::<f32>() {
                Ok(q) if q.is_finite() => q.clamp(0.0, 1.0),
                _ => 0.0,
            });
        match media.as_str() {
            "text/html" | "application/xhtml+xml" => html = html.max(q),
            "application/json" | "application/*" | "*/*" => json = json.max(q),
            _ => {}
        }
    }
    html > 0.0 && html >= json
}

#[cfg(test)]
mod tests {
    use super::prefers_html;

    #[test]
    fn browsers_get_html() {
        let chromium = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";
        assert!(prefers_html(Some(chromium)));
        let firefox = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(prefers_html(Some(firefox)));
        assert!(prefers_html(Some("text/html")));
        assert!(prefers_html(Some("TEXT/HTML; charset=utf-8")));
    }

    #[test]
    fn everything_else_gets_json() {
        assert!(!prefers_html(None));
        assert!(!prefers_html(Some("")));
        assert!(!prefers_html(Some("*/*")));
        assert!(!prefers_html(Some("text/*")));
        assert!(!prefers_html(Some("application/json")));
        assert!(!prefers_html(Some("application/json, text/html;q=0.5")));
        assert!(!prefers_html(Some("text/html;q=0")));
        assert!(!prefers_html(Some("text/html;q=nan, */*")));
        assert!(!prefers_html(Some("garbage;;;=,,")));
    }
}
