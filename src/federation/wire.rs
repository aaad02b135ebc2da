//! Federation wire types (JSON over HTTPS under `/.well-known/p2pcdn/v1/`).
//! See `docs/PROTOCOL.md`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Largest push body (and sync response) accepted, bytes.
pub const MAX_BUNDLE_BYTES: usize = 64 * 1024 * 1024;
/// Largest sync request (a digest) accepted, bytes.
pub const MAX_SYNC_BYTES: usize = 4 * 1024 * 1024;

/// `GET /node`: binds a node key to the DNS name the TLS connection was verified for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDoc {
    /// DNS name.
    pub name: String,
    /// Node key (`ed25519:...`).
    pub key: String,
    /// HTTPS base URL.
    pub url: String,
    /// Proof of possession of `key`: standard base64 of its signature over
    /// the binder's challenge (`federation::binding`). Present only when the
    /// request carried `?challenge=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
}

/// What a node holds: newest manifest version per site it knows (0 = knows
/// the site, holds no manifest) and newest report sequence per node key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digest {
    /// Site → newest manifest version.
    pub manifests: BTreeMap<String, u64>,
    /// Node key → newest report sequence.
    pub reports: BTreeMap<String, u64>,
}

/// Signed documents, each the exact envelope bytes, base64.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Manifest envelopes.
    pub manifests: Vec<String>,
    /// Report envelopes.
    pub reports: Vec<String>,
}

/// A bundle parsed without copying its documents out of the request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleRef<'a> {
    /// Manifest envelopes.
    #[serde(borrow)]
    pub manifests: Vec<Cow<'a, str>>,
    /// Report envelopes.
    #[serde(borrow)]
    pub reports: Vec<Cow<'a, str>>,
}

impl Bundle {
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.manifests.is_empty() && self.reports.is_empty()
    }
}

/// `POST /sync` request: the caller's digest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// Caller's digest.
    pub digest: Digest,
}

/// `POST /sync` response: what the caller lacks, and the responder's digest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncResponse {
    /// Documents newer than the caller's digest.
    pub bundle: Bundle,
    /// Responder's digest (the caller pushes what the responder lacks).
    pub digest: Digest,
}
