//! Federation wire types (JSON over HTTPS under `/.well-known/p2pcdn/v1/`),
//! protocol [`PROTOCOL`]. See `docs/PROTOCOL.md`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::gossip::{Entry, Fingerprint, ShortId, PROTOCOL};
use crate::report::SignedReport;

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
    /// Federation protocol version spoken ([`PROTOCOL`]); absent in
    /// protocol 1 documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
    /// Proof of possession of `key`: standard base64 of its signature over
    /// the binder's challenge (`federation::binding`). Present only when the
    /// request carried `?challenge=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
}

/// `POST /sync` request (protocol 2): the caller's manifest versions per
/// configured site (which are also its interest) and the fingerprint of
/// the reports it holds for those sites.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// Protocol version ([`PROTOCOL`]).
    pub v: u32,
    /// Site → newest manifest version held (0: none).
    pub sites: BTreeMap<String, u64>,
    /// Fingerprint of the caller's reports for its sites (XOR of entry hashes).
    pub fp: ShortId,
    /// Number of reports fingerprinted.
    pub n: u32,
    /// Buckets whose digest entries the caller asks for (after an answer
    /// with bucket fingerprints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Vec<u8>>,
    /// The caller's own (short id, seq): its report is not in `fp`; the
    /// responder asks for it (`want_me`) when it keeps it and holds older.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub me: Option<Entry>,
    /// Sites of `sites` the caller follows thinly: the only co-mirrors it
    /// keeps for each (at most [`super::gossip::MAX_FOLLOW`] read).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub follow: BTreeMap<String, Vec<ShortId>>,
}

impl SyncRequest {
    /// The request's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            fp: self.fp,
            n: self.n,
        }
    }
}

/// `POST /sync` response: manifests newer than the caller's, the
/// responder's site versions, and its report digest only when the
/// fingerprints differ.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncResponse {
    /// Protocol version ([`PROTOCOL`]).
    pub v: u32,
    /// Responder's site → newest manifest version (also its interest).
    pub sites: BTreeMap<String, u64>,
    /// Manifest envelopes newer than the caller's (standard base64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<String>,
    /// The responder's (short id, seq) for the caller's sites; absent when
    /// the fingerprints agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reports: Option<Vec<Entry>>,
    /// Instead of `reports` for a large view: the fingerprint of each of
    /// the 16 buckets (by the top 4 bits of the short id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Vec<Fingerprint>>,
    /// The responder's thin follow lists (as in [`SyncRequest::follow`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub follow: BTreeMap<String, Vec<ShortId>>,
    /// The responder keeps the caller's report and holds an older one (or
    /// none): the caller's push carries it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub want_me: bool,
}

/// `POST /push` request (protocol 2): documents the receiver lacks, and the
/// reports the caller wants back (answered as a [`Bundle`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// Protocol version ([`PROTOCOL`]).
    pub v: u32,
    /// Manifest envelopes (standard base64).
    #[serde(default)]
    pub manifests: Vec<String>,
    /// Signed reports.
    #[serde(default)]
    pub reports: Vec<SignedReport>,
    /// Short ids whose reports the caller wants.
    #[serde(default)]
    pub want: Vec<ShortId>,
}

/// A push parsed without copying manifest envelopes out of the body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRef<'a> {
    /// Protocol version.
    pub v: u32,
    /// Manifest envelopes.
    #[serde(borrow, default)]
    pub manifests: Vec<Cow<'a, str>>,
    /// Signed reports.
    #[serde(default)]
    pub reports: Vec<SignedReport>,
    /// Wanted short ids.
    #[serde(default)]
    pub want: Vec<ShortId>,
}

/// Documents sent back for a push's `want` list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Signed reports.
    pub reports: Vec<SignedReport>,
}

/// The protocol version a peer's request or document states (absent:
/// protocol 1, which carried none), read without caring about the rest.
pub fn stated_version(body: &[u8]) -> u32 {
    #[derive(Deserialize)]
    struct V {
        #[serde(default)]
        v: Option<u32>,
    }
    serde_json::from_slice::<V>(body)
        .ok()
        .and_then(|v| v.v)
        .unwrap_or(1)
}

/// The refusal text for a peer speaking another protocol version.
pub fn version_refusal(theirs: u32) -> String {
    format!(
        "federation protocol {theirs} is not supported: this node speaks protocol {PROTOCOL} \
         (see docs/PROTOCOL.md, Versioning)"
    )
}
