//! Ed25519 keys: node keys and site-owner keys.
//!
//! Text forms (stable, documented in `docs/PROTOCOL.md`):
//! - public key: `ed25519:<base64url, no padding, 32 bytes>`
//! - secret key file: one line `p2pcdn-ed25519-secret:<base64url 32-byte seed>`,
//!   created with mode 0600.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const PUB_PREFIX: &str = "ed25519:";
const SECRET_PREFIX: &str = "p2pcdn-ed25519-secret:";

/// Errors reading, writing or parsing keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A public key string is not `ed25519:<base64url>` of a valid point
    /// (the value is described, never echoed whole: it may be a secret).
    #[error("invalid public key ({0}): expected ed25519:<43 base64url characters>")]
    BadPublic(String),
    /// A secret key file does not hold a valid secret.
    #[error(
        "{path}: not a p2pcdn secret key file (expected one line starting with {SECRET_PREFIX})"
    )]
    BadSecret {
        /// The file.
        path: String,
    },
    /// The secret key file is readable by group or others.
    #[error(
        "{path}: secret key file has mode {mode:o}; it must not be readable by others (chmod 600)"
    )]
    Permissions {
        /// The file.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
    /// I/O failure on a key file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Key generation could not get randomness from the OS.
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

/// A public ed25519 key (node key or owner key).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Verifies `sig` over `msg` (strict: rejects malleable and small-order forms).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = Signature::from_slice(sig) else {
            return false;
        };
        self.0.verify_strict(msg, &sig).is_ok()
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let bad = || KeyError::BadPublic(describe_bad_public(s));
        let b64 = s.trim().strip_prefix(PUB_PREFIX).ok_or_else(bad)?;
        let raw = URL_SAFE_NO_PAD.decode(b64).map_err(|_| bad())?;
        let arr: [u8; 32] = raw.try_into().map_err(|_| bad())?;
        VerifyingKey::from_bytes(&arr).map(Self).map_err(|_| bad())
    }
}

/// A description of a value that is not a public key, safe to print: a
/// secret key given by mistake is named, never shown.
fn describe_bad_public(s: &str) -> String {
    let t = s.trim();
    if t.to_ascii_lowercase().contains(SECRET_PREFIX) {
        return format!(
            "this is a SECRET key ({SECRET_PREFIX}…, not shown): give the public key, `p2pcdn pubkey <file>` prints it"
        );
    }
    if let Some(rest) = t.strip_prefix(PUB_PREFIX) {
        return format!(
            "{PUB_PREFIX}… with {} characters after the prefix",
            rest.chars().count()
        );
    }
    format!(
        "a value of {} characters without the ed25519: prefix",
        t.chars().count()
    )
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PUB_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(self.0.as_bytes())
        )
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A secret signing key.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// Makes a new random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }

    /// Writes the key to `path` (mode 0600, refuses to overwrite).
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(io)?;
        let line = format!(
            "{SECRET_PREFIX}{}\n",
            URL_SAFE_NO_PAD.encode(self.0.to_bytes())
        );
        f.write_all(line.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// Reads a key file written by [`SecretKey::write_new`].
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: p.clone(),
            source,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(md) = std::fs::metadata(path) {
                let mode = md.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyError::Permissions { path: p, mode });
                }
            }
        }
        let bad = || KeyError::BadSecret { path: p.clone() };
        let b64 = text.trim().strip_prefix(SECRET_PREFIX).ok_or_else(bad)?;
        let raw = URL_SAFE_NO_PAD.decode(b64).map_err(|_| bad())?;
        let seed: [u8; 32] = raw.try_into().map_err(|_| bad())?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_roundtrip() {
        let k = SecretKey::generate().unwrap();
        let pk: PublicKey = k.public().to_string().parse().unwrap();
        let sig = k.sign(b"msg");
        assert!(pk.verify(b"msg", &sig));
        assert!(!pk.verify(b"msh", &sig));
        assert!(!pk.verify(b"msg", &sig[..63]));
        assert!("ed25519:AAAA".parse::<PublicKey>().is_err());
        assert!("rsa:xyz".parse::<PublicKey>().is_err());
        // A secret key given where a public key belongs is never echoed.
        let secret = SecretKey::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        secret.write_new(&f).unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        let body = text.trim().rsplit(':').next().unwrap().to_string();
        assert!(body.len() > 20);
        for given in [text.clone(), format!("ed25519:{body}x"), body.clone()] {
            let e = given.parse::<PublicKey>().unwrap_err().to_string();
            assert!(!e.contains(&body), "{e}");
            assert!(!e.contains(&body[..6]), "{e}");
        }
        let e = text.parse::<PublicKey>().unwrap_err().to_string();
        assert!(e.contains("SECRET key"), "{e}");
    }

    #[test]
    fn key_file_roundtrip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        let k = SecretKey::generate().unwrap();
        k.write_new(&p).unwrap();
        assert!(k.write_new(&p).is_err(), "must not overwrite");
        let k2 = SecretKey::read(&p).unwrap();
        assert_eq!(k.public(), k2.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                SecretKey::read(&p),
                Err(KeyError::Permissions { .. })
            ));
        }
    }
}
