//! `POST /.well-known/p2pcdn/v1/acme-challenge`: a mirror's signed request
//! to publish or withdraw an ACME DNS-01 value (docs/PROTOCOL.md, "ACME
//! challenges"). The handler translates; the checks are in
//! [`crate::challenge`] and [`crate::federation::challenge`].

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{AppState, HttpError};
use crate::challenge::book::Applied;
use crate::challenge::MAX_REQUEST_BYTES;

/// Judges the request; a new one is relayed to the zone's other authorities.
pub async fn challenge(State(st): State<AppState>, body: Bytes) -> Response {
    let Some(fed) = st.fed.clone() else {
        return HttpError::NotFound("federation is not enabled on this node".into())
            .into_response();
    };
    if body.len() > MAX_REQUEST_BYTES {
        return HttpError::TooLarge("challenge request too large".into()).into_response();
    }
    match fed.accept_challenge(&body) {
        Ok((applied, v)) => {
            if matches!(applied, Applied::Published | Applied::Withdrawn) {
                fed.relay_challenge(&v);
            }
            let outcome = match applied {
                Applied::Published => "published",
                Applied::AlreadyPublished => "already-published",
                Applied::Withdrawn => "withdrawn",
                Applied::AlreadyWithdrawn => "already-withdrawn",
            };
            Json(serde_json::json!({ "outcome": outcome })).into_response()
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::FORBIDDEN);
            (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
        }
    }
}
