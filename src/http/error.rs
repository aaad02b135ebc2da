//! The HTTP layer's one error type: every refusal a handler makes is an
//! [`HttpError`], and each status is rendered here, in one place (plain-text
//! body, `Cache-Control: no-store`, and the status's own headers: `Allow`
//! for 405, `Content-Range` for 416, `Retry-After` for 503 when a retry can
//! help).

use std::borrow::Cow;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Seconds a client waits before retrying content this mirror is still
/// fetching (or re-fetching after a failed verification).
pub const RETRY_SOON_SECS: u32 = 5;

/// A message for a client: static text, or built at run time.
pub type Message = Cow<'static, str>;

/// A refused request, by status.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(Message),
    /// 403: not allowed for this client.
    #[error("{0}")]
    Forbidden(Message),
    /// 404: nothing here by that name.
    #[error("{0}")]
    NotFound(Message),
    /// 405: only GET and HEAD are served.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 408: the body did not arrive in time.
    #[error("{0}")]
    Timeout(Message),
    /// 409: conflicts with the current state.
    #[error("{0}")]
    Conflict(Message),
    /// 413: the body is larger than allowed.
    #[error("{0}")]
    TooLarge(Message),
    /// 414: the request target is too long.
    #[error("URI too long")]
    UriTooLong,
    /// 416: the range lies outside the `size`-byte representation; `headers`
    /// (validators, caching) are sent along.
    #[error("range not satisfiable")]
    RangeNotSatisfiable {
        /// Size of the representation.
        size: u64,
        /// Headers of the representation sent with the refusal.
        headers: Box<HeaderMap>,
    },
    /// 421: this server does not serve that host (or not on this connection).
    #[error("{0}")]
    Misdirected(Message),
    /// 422: well-formed but unacceptable content.
    #[error("{0}")]
    Unprocessable(Message),
    /// 429: too many requests from this client.
    #[error("{0}")]
    TooManyRequests(Message),
    /// 500: a failure on this side (details are logged, not sent).
    #[error("internal error")]
    Internal,
    /// 503: not available now; `retry_after` seconds when waiting helps.
    #[error("{message}")]
    Unavailable {
        /// What is unavailable.
        message: Message,
        /// `Retry-After`, seconds; None when only someone else can fix it.
        retry_after: Option<u32>,
    },
}

impl HttpError {
    /// 503 with `Retry-After`: content this mirror is about to have.
    pub fn retry_soon(message: &'static str) -> Self {
        Self::Unavailable {
            message: Cow::Borrowed(message),
            retry_after: Some(RETRY_SOON_SECS),
        }
    }

    /// The error for a domain error's numeric status (unknown codes: 400).
    pub fn for_status(status: u16, message: String) -> Self {
        let m = Cow::Owned(message);
        match status {
            403 => Self::Forbidden(m),
            404 => Self::NotFound(m),
            408 => Self::Timeout(m),
            409 => Self::Conflict(m),
            413 => Self::TooLarge(m),
            421 => Self::Misdirected(m),
            422 => Self::Unprocessable(m),
            429 => Self::TooManyRequests(m),
            500..=599 => Self::Internal,
            _ => Self::BadRequest(m),
        }
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::RangeNotSatisfiable { size, mut headers } = self {
            // No body: the representation's headers and where it ends.
            headers.remove(header::CONTENT_TYPE);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            return (status, *headers).into_response();
        }
        let mut r = text(status, format!("{self}\n"));
        let h = r.headers_mut();
        match self {
            Self::MethodNotAllowed => {
                h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            Self::Unavailable {
                retry_after: Some(secs),
                ..
            } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            _ => {}
        }
        r
    }
}

/// A plain-text response that is never cached: the form of every refusal
/// and redirect.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.into(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of(r: &Response, n: header::HeaderName) -> Option<&str> {
        r.headers().get(n).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn each_status_renders_its_headers() {
        let r = HttpError::retry_soon("later").into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header_of(&r, header::RETRY_AFTER), Some("5"));
        assert_eq!(header_of(&r, header::CACHE_CONTROL), Some("no-store"));

        let r = HttpError::Unavailable {
            message: "not authorized".into(),
            retry_after: None,
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header_of(&r, header::RETRY_AFTER), None);

        let r = HttpError::MethodNotAllowed.into_response();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(header_of(&r, header::ALLOW), Some("GET, HEAD"));

        let mut hm = HeaderMap::new();
        hm.insert(header::ETAG, HeaderValue::from_static("\"x\""));
        hm.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        let r = HttpError::RangeNotSatisfiable {
            size: 10,
            headers: Box::new(hm),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(header_of(&r, header::CONTENT_RANGE), Some("bytes */10"));
        assert_eq!(header_of(&r, header::ETAG), Some("\"x\""));
        assert_eq!(header_of(&r, header::CONTENT_TYPE), None);
    }

    #[test]
    fn domain_statuses_map_to_variants() {
        for code in [400, 403, 404, 408, 409, 413, 421, 422, 429, 500, 503] {
            let e = HttpError::for_status(code, "m".into());
            let want = if code >= 500 { 500 } else { code };
            assert_eq!(e.status().as_u16(), want, "{code}");
        }
        assert_eq!(HttpError::for_status(418, "m".into()).status(), 400);
    }

    #[tokio::test]
    async fn body_is_the_message_and_a_newline() {
        let r = HttpError::NotFound("not found".into()).into_response();
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"not found\n");
    }
}
