//! Owner-signed site manifests: types, canonical bytes, signatures and the
//! acceptance rules (signature, site, version, expiry, file table).
//!
//! Pure: no disk, no network, no clock (the caller passes `now`).
//!
//! Wire form (see `docs/PROTOCOL.md`): a [`SignedManifest`] envelope, JSON
//! `{"manifest": <base64 of the canonical manifest bytes>, "key": "ed25519:…",
//! "signature": <base64 of ed25519(DOMAIN || bytes)>}`. The signature covers the
//! exact bytes, which are kept verbatim by the store; they are re-parsed, never
//! re-serialized, before use.

use std::collections::{BTreeMap, HashMap};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::hash::BlobHash;
use crate::keys::{PublicKey, SecretKey};

/// Domain separation prefix for manifest signatures.
pub const SIGNING_DOMAIN: &[u8] = b"p2pcdn-manifest-v1\0";
/// The manifest format this build understands.
pub const FORMAT: u32 = 1;
/// Largest signed envelope accepted, in bytes.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024 * 1024;
/// Largest number of files in one manifest.
pub const MAX_FILES: usize = 1_000_000;
/// How far in the future `issued` may lie (clock skew allowance), seconds.
pub const MAX_CLOCK_SKEW: u64 = 300;

/// One file of a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative path, '/'-separated, clean (see [`is_clean_relative_path`]).
    pub path: String,
    /// BLAKE3 of the content.
    pub blake3: BlobHash,
    /// Length in bytes.
    pub size: u64,
    /// MIME type sent as `Content-Type`.
    pub content_type: String,
    /// Extra response headers chosen by the owner (only names allowed by
    /// [`is_allowed_extra_header`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// The owner's description of a site's content and policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: u32,
    /// The steered hostname, lowercase, no trailing dot.
    pub site: String,
    /// Strictly increasing per site.
    pub version: u64,
    /// Unix seconds when signed.
    pub issued: u64,
    /// Unix seconds after which nobody may serve or accept it.
    pub expires: u64,
    /// File served for `/` and directory paths.
    pub default_document: String,
    /// `Cache-Control: max-age` for the site's files, seconds.
    pub cache_ttl: u32,
    /// Node keys of mirrors the owner authorizes (empty: only instances whose
    /// operator pinned this owner key serve it; used by federation).
    #[serde(default)]
    pub mirrors: Vec<PublicKey>,
    /// The file table, sorted by path, paths unique.
    pub files: Vec<FileEntry>,
    /// The zone's records, owner-signed, so any instance named in the zone's
    /// NS set can serve the zone without a local zone file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<ZoneDoc>,
}

/// An owner-signed zone: RFC 1035 zone file text for `origin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneDoc {
    /// The zone apex, lowercase, no trailing dot; must contain the site.
    pub origin: String,
    /// Zone file text (records relative to `origin`).
    pub text: String,
}

/// Largest zone text carried in a manifest, bytes.
pub const MAX_ZONE_TEXT: usize = 1024 * 1024;

/// The signed envelope, as stored and exchanged.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    /// Base64 of the canonical manifest bytes.
    pub manifest: String,
    /// The signer's public key.
    pub key: PublicKey,
    /// Base64 ed25519 signature over `SIGNING_DOMAIN || manifest bytes`.
    pub signature: String,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// The envelope is not valid JSON of the expected shape, or too large.
    #[error("malformed manifest envelope: {0}")]
    Envelope(String),
    /// The manifest bytes are not a valid manifest document.
    #[error("malformed manifest: {0}")]
    Body(String),
    /// Signed by a key other than the site's pinned owner key.
    #[error("manifest for {site} is signed by {got}, but the owner key for this site is {want}")]
    WrongKey {
        /// Site.
        site: String,
        /// Key in the envelope.
        got: String,
        /// Pinned key.
        want: String,
    },
    /// The signature does not verify over the manifest bytes.
    #[error("manifest signature does not verify (tampered or forged)")]
    BadSignature,
    /// Unknown format number.
    #[error("unsupported manifest format {0} (this build reads format {FORMAT})")]
    Format(u32),
    /// The manifest is for another site.
    #[error("manifest is for site {got:?}, expected {want:?}")]
    WrongSite {
        /// Site in the manifest.
        got: String,
        /// Expected site.
        want: String,
    },
    /// Not newer than what is already held (rollback protection).
    #[error("manifest version {got} for {site} is not newer than held version {held} (rollback refused)")]
    NotNewer {
        /// Site.
        site: String,
        /// Offered version.
        got: u64,
        /// Held version.
        held: u64,
    },
    /// Past its expiry (freeze protection).
    #[error("manifest version {version} for {site} expired at {expires} (now {now})")]
    Expired {
        /// Site.
        site: String,
        /// Version.
        version: u64,
        /// Expiry, unix seconds.
        expires: u64,
        /// Current time, unix seconds.
        now: u64,
    },
    /// Issued too far in the future.
    #[error("manifest issued at {issued}, more than {MAX_CLOCK_SKEW}s after now ({now})")]
    FromFuture {
        /// Issue time.
        issued: u64,
        /// Now.
        now: u64,
    },
    /// The file table breaks a rule.
    #[error("invalid file table: {0}")]
    Files(String),
}

/// A manifest whose signature and rules were checked, with its exact bytes.
#[derive(Debug, Clone)]
pub struct VerifiedManifest {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The envelope bytes exactly as received (what gets stored and relayed).
    pub envelope: Vec<u8>,
    index: HashMap<String, usize>,
}

impl VerifiedManifest {
    /// Looks a file up by its clean relative path.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.index
            .get(path)
            .and_then(|&i| self.manifest.files.get(i))
    }

    /// Distinct blobs referenced.
    pub fn blobs(&self) -> Vec<(BlobHash, u64)> {
        let mut v: Vec<(BlobHash, u64)> = self
            .manifest
            .files
            .iter()
            .map(|f| (f.blake3, f.size))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// What the caller knows when checking a manifest.
#[derive(Debug, Clone, Copy)]
pub struct Acceptance<'a> {
    /// The site this manifest must be for.
    pub site: &'a str,
    /// The pinned owner key.
    pub owner: &'a PublicKey,
    /// Highest version already held or seen for the site.
    pub held_version: Option<u64>,
    /// Current unix time.
    pub now: u64,
}

/// Lowercases a hostname and strips one trailing dot.
pub fn normalize_site(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Canonical bytes of a manifest (what gets signed). Files are sorted by path.
pub fn canonical_bytes(m: &Manifest) -> Result<Vec<u8>, ManifestError> {
    let mut m = m.clone();
    m.files.sort_by(|a, b| a.path.cmp(&b.path));
    serde_json::to_vec(&m).map_err(|e| ManifestError::Body(e.to_string()))
}

/// Signs a manifest and returns the envelope bytes.
pub fn sign(m: &Manifest, key: &SecretKey) -> Result<Vec<u8>, ManifestError> {
    let bytes = canonical_bytes(m)?;
    let mut msg = Vec::with_capacity(SIGNING_DOMAIN.len() + bytes.len());
    msg.extend_from_slice(SIGNING_DOMAIN);
    msg.extend_from_slice(&bytes);
    let env = SignedManifest {
        manifest: STANDARD.encode(&bytes),
        key: key.public(),
        signature: STANDARD.encode(key.sign(&msg)),
    };
    serde_json::to_vec_pretty(&env).map_err(|e| ManifestError::Envelope(e.to_string()))
}

/// Parses an envelope and checks the signature against the pinned owner key,
/// without version or expiry rules (used when reloading what was accepted).
pub fn verify_signature(
    envelope: &[u8],
    site: &str,
    owner: &PublicKey,
) -> Result<VerifiedManifest, ManifestError> {
    if envelope.len() > MAX_ENVELOPE_BYTES {
        return Err(ManifestError::Envelope(format!(
            "{} bytes exceeds the limit of {MAX_ENVELOPE_BYTES}",
            envelope.len()
        )));
    }
    let env: SignedManifest =
        serde_json::from_slice(envelope).map_err(|e| ManifestError::Envelope(e.to_string()))?;
    if env.key != *owner {
        return Err(ManifestError::WrongKey {
            site: site.to_string(),
            got: env.key.to_string(),
            want: owner.to_string(),
        });
    }
    let bytes = STANDARD
        .decode(env.manifest.as_bytes())
        .map_err(|e| ManifestError::Envelope(format!("manifest field: {e}")))?;
    let sig = STANDARD
        .decode(env.signature.as_bytes())
        .map_err(|e| ManifestError::Envelope(format!("signature field: {e}")))?;
    let mut msg = Vec::with_capacity(SIGNING_DOMAIN.len() + bytes.len());
    msg.extend_from_slice(SIGNING_DOMAIN);
    msg.extend_from_slice(&bytes);
    if !owner.verify(&msg, &sig) {
        return Err(ManifestError::BadSignature);
    }
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| ManifestError::Body(e.to_string()))?;
    if manifest.format != FORMAT {
        return Err(ManifestError::Format(manifest.format));
    }
    if manifest.site != normalize_site(site) {
        return Err(ManifestError::WrongSite {
            got: manifest.site.clone(),
            want: normalize_site(site),
        });
    }
    let index = check_files(&manifest)?;
    Ok(VerifiedManifest {
        manifest,
        envelope: envelope.to_vec(),
        index,
    })
}

/// Reads the site name from an envelope without verifying anything (only to
/// route it to the right owner key, which then verifies it).
pub fn peek_site(envelope: &[u8]) -> Result<String, ManifestError> {
    #[derive(Deserialize)]
    struct SiteOnly {
        site: String,
    }
    let s: SiteOnly = serde_json::from_slice(&unverified_bytes(envelope)?)
        .map_err(|e| ManifestError::Body(e.to_string()))?;
    Ok(normalize_site(&s.site))
}

/// Parses a stored envelope's manifest without checking the signature (for
/// garbage collection, which must keep whatever a stored row names).
pub fn peek_manifest(envelope: &[u8]) -> Result<Manifest, ManifestError> {
    serde_json::from_slice(&unverified_bytes(envelope)?)
        .map_err(|e| ManifestError::Body(e.to_string()))
}

/// The manifest bytes inside an envelope, unverified.
fn unverified_bytes(envelope: &[u8]) -> Result<Vec<u8>, ManifestError> {
    if envelope.len() > MAX_ENVELOPE_BYTES {
        return Err(ManifestError::Envelope("too large".into()));
    }
    let env: SignedManifest =
        serde_json::from_slice(envelope).map_err(|e| ManifestError::Envelope(e.to_string()))?;
    STANDARD
        .decode(env.manifest.as_bytes())
        .map_err(|e| ManifestError::Envelope(format!("manifest field: {e}")))
}

/// Full acceptance check for a newly offered manifest: signature, site,
/// format, file table, version strictly above `held_version`, not expired,
/// not issued in the future.
pub fn accept(envelope: &[u8], rules: Acceptance<'_>) -> Result<VerifiedManifest, ManifestError> {
    let vm = verify_signature(envelope, rules.site, rules.owner)?;
    let m = &vm.manifest;
    if let Some(held) = rules.held_version {
        if m.version <= held {
            return Err(ManifestError::NotNewer {
                site: m.site.clone(),
                got: m.version,
                held,
            });
        }
    }
    check_time(m, rules.now)?;
    Ok(vm)
}

/// Expiry and issue-time rules alone.
pub fn check_time(m: &Manifest, now: u64) -> Result<(), ManifestError> {
    if m.expires <= now {
        return Err(ManifestError::Expired {
            site: m.site.clone(),
            version: m.version,
            expires: m.expires,
            now,
        });
    }
    if m.issued > now.saturating_add(MAX_CLOCK_SKEW) {
        return Err(ManifestError::FromFuture {
            issued: m.issued,
            now,
        });
    }
    Ok(())
}

fn check_files(m: &Manifest) -> Result<HashMap<String, usize>, ManifestError> {
    if m.files.len() > MAX_FILES {
        return Err(ManifestError::Files(format!(
            "{} files exceeds the limit of {MAX_FILES}",
            m.files.len()
        )));
    }
    if m.expires <= m.issued {
        return Err(ManifestError::Body("expires is not after issued".into()));
    }
    if !is_clean_relative_path(&m.default_document) || m.default_document.contains('/') {
        return Err(ManifestError::Files(format!(
            "default document {:?} is not a plain file name",
            m.default_document
        )));
    }
    if let Some(z) = &m.zone {
        let origin = normalize_site(&z.origin);
        if origin != z.origin || !(m.site == origin || m.site.ends_with(&format!(".{origin}"))) {
            return Err(ManifestError::Body(format!(
                "zone {:?} does not contain site {}",
                z.origin, m.site
            )));
        }
        if z.text.len() > MAX_ZONE_TEXT {
            return Err(ManifestError::Body("zone text too large".into()));
        }
    }
    let mut index = HashMap::with_capacity(m.files.len());
    let mut prev: Option<&str> = None;
    for (i, f) in m.files.iter().enumerate() {
        if !is_clean_relative_path(&f.path) {
            return Err(ManifestError::Files(format!(
                "path {:?} is not clean",
                f.path
            )));
        }
        if let Some(p) = prev {
            if p >= f.path.as_str() {
                return Err(ManifestError::Files(format!(
                    "paths not sorted and unique at {:?}",
                    f.path
                )));
            }
        }
        prev = Some(&f.path);
        if f.content_type.is_empty()
            || f.content_type.len() > 255
            || f.content_type.bytes().any(|b| b.is_ascii_control())
        {
            return Err(ManifestError::Files(format!(
                "bad content type for {:?}",
                f.path
            )));
        }
        for (k, v) in &f.headers {
            if !is_allowed_extra_header(k)
                || v.len() > 1024
                || v.bytes().any(|b| b.is_ascii_control())
            {
                return Err(ManifestError::Files(format!(
                    "header {k:?} not allowed for {:?}",
                    f.path
                )));
            }
        }
        index.insert(f.path.clone(), i);
    }
    Ok(index)
}

/// Response headers an owner may set per file in the manifest.
pub fn is_allowed_extra_header(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "content-disposition"
            | "content-language"
            | "content-security-policy"
            | "link"
            | "x-robots-tag"
            | "access-control-allow-origin"
            | "referrer-policy"
    )
}

pub use crate::http::decide::is_clean_relative_path;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(version: u64) -> Manifest {
        Manifest {
            format: FORMAT,
            site: "www.example.org".into(),
            version,
            issued: 1000,
            expires: 2000,
            default_document: "index.html".into(),
            cache_ttl: 60,
            mirrors: vec![],
            files: vec![
                FileEntry {
                    path: "index.html".into(),
                    blake3: BlobHash::of(b"<html>"),
                    size: 6,
                    content_type: "text/html".into(),
                    headers: BTreeMap::new(),
                },
                FileEntry {
                    path: "css/a.css".into(),
                    blake3: BlobHash::of(b"a{}"),
                    size: 3,
                    content_type: "text/css".into(),
                    headers: BTreeMap::new(),
                },
            ],
            zone: None,
        }
    }

    fn rules<'a>(owner: &'a PublicKey, held: Option<u64>, now: u64) -> Acceptance<'a> {
        Acceptance {
            site: "WWW.example.org.",
            owner,
            held_version: held,
            now,
        }
    }

    #[test]
    fn accept_valid_and_lookup() {
        let k = SecretKey::generate().unwrap();
        let env = sign(&sample(3), &k).unwrap();
        let vm = accept(&env, rules(&k.public(), Some(2), 1500)).unwrap();
        assert_eq!(vm.manifest.version, 3);
        assert_eq!(vm.file("css/a.css").unwrap().size, 3);
        assert!(vm.file("missing").is_none());
        assert_eq!(vm.envelope, env);
    }

    #[test]
    fn refusals() {
        let k = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let pk = k.public();
        let env = sign(&sample(3), &k).unwrap();
        assert!(matches!(
            accept(&env, rules(&pk, Some(3), 1500)),
            Err(ManifestError::NotNewer { .. })
        ));
        assert!(matches!(
            accept(&env, rules(&pk, None, 2000)),
            Err(ManifestError::Expired { .. })
        ));
        assert!(matches!(
            accept(&env, rules(&pk, None, 100)),
            Err(ManifestError::FromFuture { .. })
        ));
        assert!(matches!(
            accept(&env, rules(&other.public(), None, 1500)),
            Err(ManifestError::WrongKey { .. })
        ));
        // Forged: signed by another key but claiming the owner's key.
        let forged = sign(&sample(9), &other).unwrap();
        let mut e: SignedManifest = serde_json::from_slice(&forged).unwrap();
        e.key = pk;
        let forged = serde_json::to_vec(&e).unwrap();
        assert_eq!(
            accept(&forged, rules(&pk, None, 1500)).unwrap_err(),
            ManifestError::BadSignature
        );
        // Tampered body.
        let mut e: SignedManifest = serde_json::from_slice(&env).unwrap();
        let mut m = sample(3);
        m.files[0].size = 7;
        e.manifest = STANDARD.encode(canonical_bytes(&m).unwrap());
        let t = serde_json::to_vec(&e).unwrap();
        assert_eq!(
            accept(&t, rules(&pk, None, 1500)).unwrap_err(),
            ManifestError::BadSignature
        );
        // Wrong site.
        let mut m = sample(3);
        m.site = "evil.example".into();
        let w = sign(&m, &k).unwrap();
        assert!(matches!(
            accept(&w, rules(&pk, None, 1500)),
            Err(ManifestError::WrongSite { .. })
        ));
        // Traversal in the file table.
        let mut m = sample(3);
        m.files[0].path = "../etc/passwd".into();
        let w = sign(&m, &k).unwrap();
        assert!(matches!(
            accept(&w, rules(&pk, None, 1500)),
            Err(ManifestError::Files(_))
        ));
        // Duplicate paths.
        let mut m = sample(3);
        m.files[1].path = "index.html".into();
        let w = sign(&m, &k).unwrap();
        assert!(matches!(
            accept(&w, rules(&pk, None, 1500)),
            Err(ManifestError::Files(_))
        ));
        assert!(matches!(
            accept(b"{not json", rules(&pk, None, 1500)),
            Err(ManifestError::Envelope(_))
        ));
    }

    #[test]
    fn clean_paths() {
        for ok in ["a", "a/b.txt", "x y/z", "✓.png"] {
            assert!(is_clean_relative_path(ok), "{ok}");
        }
        for bad in [
            "", "/a", "a/", "a//b", "./a", "a/../b", "..", "a\\b", "a\0b",
        ] {
            assert!(!is_clean_relative_path(bad), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn accept_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let k = SecretKey::generate().unwrap();
            let _ = accept(&data, rules(&k.public(), None, 1500));
        }

        #[test]
        fn only_strictly_newer_versions(held in 0u64..100, v in 0u64..100) {
            let k = SecretKey::generate().unwrap();
            let env = sign(&sample(v), &k).unwrap();
            let r = accept(&env, rules(&k.public(), Some(held), 1500));
            prop_assert_eq!(r.is_ok(), v > held);
        }
    }
}
