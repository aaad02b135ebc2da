//! ACME DNS-01 challenge requests answered by the federation's authorities.
//!
//! A mirror that orders a certificate asks each authority of the zone to
//! publish `_acme-challenge.<name> TXT <value>` with a [`ChallengeRequest`]
//! signed by its node key, and to withdraw it after validation. This module
//! holds the wire form, signing, and the pure acceptance checks ([`check`]);
//! [`book::TxtBook`] holds the published values, replay memory and rate
//! limits. No I/O, no clock: the caller passes `now` and a [`Context`].
//!
//! An authority accepts a request only when (in this order, first failure
//! wins, see docs/PROTOCOL.md "ACME challenges"): the envelope parses and the
//! signature verifies with the key in `node`; it is fresh (`issued` not in
//! the future beyond skew, `expires` in the future and at most
//! [`MAX_LIFETIME`] after `issued`); `name` is a hostname lying in a zone
//! this authority serves; and the signer is listed in the current manifest's
//! `mirrors` of the site `name`, or `name` is the signer's own node name as
//! bound over TLS. Replays and rate limits are the book's job.

pub mod book;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SecretKey};

/// Domain separation prefix for challenge request signatures.
pub const CHALLENGE_DOMAIN: &[u8] = b"p2pcdn-acme-challenge-v1\0";
/// Largest request envelope accepted, bytes.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// Longest lifetime a request (and so a published value) may have, seconds.
pub const MAX_LIFETIME: u64 = 600;
/// Clock skew allowance, seconds.
pub const MAX_SKEW: u64 = 60;
/// The DNS label in front of the validated name.
pub const LABEL: &str = "_acme-challenge";

/// What the signer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Serve the value until the request expires.
    Publish,
    /// Stop serving the value (validation is over).
    Withdraw,
}

/// The signed body of a challenge request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// Format (1).
    pub format: u32,
    /// Signing node key.
    pub node: PublicKey,
    /// Publish or withdraw.
    pub action: Action,
    /// The name being validated (without `_acme-challenge.`), lowercase.
    pub name: String,
    /// The TXT value: base64url (no padding) of SHA-256 of the key
    /// authorization, 43 characters (RFC 8555 §8.4).
    pub value: String,
    /// 16 random bytes, base64url: makes each request unique (replays).
    pub nonce: String,
    /// Unix seconds when signed.
    pub issued: u64,
    /// Unix seconds after which the request and its value are void.
    pub expires: u64,
}

impl ChallengeRequest {
    /// The owner name of the TXT record, without a trailing dot.
    pub fn txt_name(&self) -> String {
        format!("{LABEL}.{}", self.name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    request: String,
    signature: String,
}

/// Why a challenge request was refused. Each maps to one HTTP status in
/// [`Refusal::status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Not a valid envelope or body, or too large.
    #[error("malformed challenge request: {0}")]
    Malformed(String),
    /// The signature does not verify with the key in `node`.
    #[error("challenge request signature does not verify")]
    BadSignature,
    /// Expired, from the future, or living longer than allowed.
    #[error("stale challenge request: {0}")]
    Stale(String),
    /// `name` is not in any zone this authority serves.
    #[error("{0} is not in a zone this authority serves")]
    OutsideZones(String),
    /// The signer may not ask for this name.
    #[error("node {node} is not authorized for {name}: not a mirror listed in the site's current manifest, and not its own node name")]
    NotAuthorized {
        /// Signer.
        node: String,
        /// Name asked for.
        name: String,
    },
    /// The nonce was seen before (a replay or a duplicate after withdrawal).
    #[error("replayed challenge request (nonce already used)")]
    Replay,
    /// Too many requests or values from this signer or for this name.
    #[error("rate limited: {0}")]
    RateLimited(String),
}

impl Refusal {
    /// The HTTP status the peer API answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Malformed(_) => 400,
            Self::BadSignature | Self::NotAuthorized { .. } | Self::OutsideZones(_) => 403,
            Self::Stale(_) | Self::Replay => 409,
            Self::RateLimited(_) => 429,
        }
    }
}

/// A request whose signature, shape and times were checked.
#[derive(Debug, Clone)]
pub struct VerifiedRequest {
    /// The parsed request.
    pub request: ChallengeRequest,
    /// The envelope bytes exactly as received (relayed to other authorities).
    pub envelope: Vec<u8>,
}

/// Signs a request with the node key (which must be `r.node`'s).
pub fn sign(r: &ChallengeRequest, key: &SecretKey) -> Result<Vec<u8>, Refusal> {
    let bytes = serde_json::to_vec(r).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let mut msg = CHALLENGE_DOMAIN.to_vec();
    msg.extend_from_slice(&bytes);
    let env = Envelope {
        request: STANDARD.encode(&bytes),
        signature: STANDARD.encode(key.sign(&msg)),
    };
    serde_json::to_vec(&env).map_err(|e| Refusal::Malformed(e.to_string()))
}

/// A fresh request for `name`, valid for `lifetime` seconds from `now`.
pub fn new_request(
    key: &SecretKey,
    action: Action,
    name: &str,
    value: &str,
    now: u64,
    lifetime: u64,
) -> Result<Vec<u8>, Refusal> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| Refusal::Malformed(format!("no randomness: {e}")))?;
    let r = ChallengeRequest {
        format: 1,
        node: key.public(),
        action,
        name: name.to_ascii_lowercase(),
        value: value.to_string(),
        nonce: URL_SAFE_NO_PAD.encode(nonce),
        issued: now,
        expires: now + lifetime.min(MAX_LIFETIME),
    };
    sign(&r, key)
}

/// Verifies shape, signature and times of an envelope.
pub fn verify(envelope: &[u8], now: u64) -> Result<VerifiedRequest, Refusal> {
    if envelope.len() > MAX_REQUEST_BYTES {
        return Err(Refusal::Malformed(format!(
            "{} bytes is too large",
            envelope.len()
        )));
    }
    let bad = |e: &dyn std::fmt::Display| Refusal::Malformed(e.to_string());
    let env: Envelope = serde_json::from_slice(envelope).map_err(|e| bad(&e))?;
    let bytes = STANDARD
        .decode(env.request.as_bytes())
        .map_err(|e| bad(&e))?;
    let sig = STANDARD
        .decode(env.signature.as_bytes())
        .map_err(|e| bad(&e))?;
    let request: ChallengeRequest = serde_json::from_slice(&bytes).map_err(|e| bad(&e))?;
    let mut msg = CHALLENGE_DOMAIN.to_vec();
    msg.extend_from_slice(&bytes);
    if !request.node.verify(&msg, &sig) {
        return Err(Refusal::BadSignature);
    }
    if request.format != 1 {
        return Err(Refusal::Malformed(format!(
            "unsupported format {}",
            request.format
        )));
    }
    if !is_txt_value(&request.value) {
        return Err(Refusal::Malformed(
            "value must be 43 base64url characters (SHA-256 digest)".into(),
        ));
    }
    if !is_nonce(&request.nonce) {
        return Err(Refusal::Malformed(
            "nonce must be 22 base64url characters".into(),
        ));
    }
    if request.name != request.name.to_ascii_lowercase()
        || request.name.ends_with('.')
        || request.name.starts_with("*.")
        || !crate::config::is_hostname(&request.name)
        || request.name.len() > 253 - LABEL.len() - 1
    {
        return Err(Refusal::Malformed(format!(
            "{:?} is not a lowercase host name",
            request.name
        )));
    }
    if request.issued > now + MAX_SKEW {
        return Err(Refusal::Stale("issued in the future".into()));
    }
    if request.expires <= now {
        return Err(Refusal::Stale("expired".into()));
    }
    if request.expires <= request.issued || request.expires - request.issued > MAX_LIFETIME {
        return Err(Refusal::Stale(format!(
            "lifetime must be within 1..={MAX_LIFETIME} s"
        )));
    }
    Ok(VerifiedRequest {
        request,
        envelope: envelope.to_vec(),
    })
}

fn is_b64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_txt_value(s: &str) -> bool {
    s.len() == 43 && is_b64url(s)
}

fn is_nonce(s: &str) -> bool {
    s.len() == 22 && is_b64url(s)
}

/// What an authority knows when it judges a request.
pub trait Context {
    /// True when `name` lies in a zone this authority serves (and not below
    /// a delegation).
    fn serves(&self, name: &str) -> bool;
    /// The mirrors listed in the current manifest of the site `name`, if
    /// `name` is a configured site with a valid manifest.
    fn site_mirrors(&self, name: &str) -> Option<Vec<PublicKey>>;
    /// The node name bound to `key` (over TLS for peers; this node's own).
    fn node_name(&self, key: &PublicKey) -> Option<String>;
}

/// The authorization checks of a verified request (pure). Both actions
/// need the same authority: only who may publish a value may withdraw it.
pub fn check(r: &ChallengeRequest, ctx: &dyn Context) -> Result<(), Refusal> {
    if !ctx.serves(&r.name) {
        return Err(Refusal::OutsideZones(r.name.clone()));
    }
    let listed = ctx
        .site_mirrors(&r.name)
        .is_some_and(|m| m.contains(&r.node));
    let own = ctx.node_name(&r.node).is_some_and(|n| n == r.name);
    if listed || own {
        Ok(())
    } else {
        Err(Refusal::NotAuthorized {
            node: r.node.to_string(),
            name: r.name.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
