//! Proof of possession for binding a node key to a name (pure).
//!
//! The binder sends a fresh random nonce with its `GET /node` request; the
//! peer answers with its node document and an ed25519 signature, made with
//! the node key the document names, over
//! `"p2pcdn-bind-v1\0" || nonce (32 bytes) || u16be(len name) || name || u16be(len url) || url`.
//! The request travels over the TLS connection verified for the URL's host,
//! so a valid answer shows that whoever holds the key answers for that name
//! now. Nobody can bind a key it does not hold, and a key's binding changes
//! only on a new proof made with that key (see `Federation::bind`).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use crate::keys::{PublicKey, SecretKey};

/// Domain separation prefix of binding proofs.
pub const BIND_DOMAIN: &[u8] = b"p2pcdn-bind-v1\0";
/// Length of a binding nonce in bytes.
pub const NONCE_LEN: usize = 32;

/// A binder's fresh challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nonce(pub [u8; NONCE_LEN]);

impl Nonce {
    /// A random nonce.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// Text form for the `challenge` query parameter: base64url, no padding.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Parses the text form; None unless exactly [`NONCE_LEN`] bytes.
    pub fn parse(s: &str) -> Option<Self> {
        let v = URL_SAFE_NO_PAD.decode(s.as_bytes()).ok()?;
        Some(Self(v.try_into().ok()?))
    }
}

/// The signed message (see the module docs). Name and URL longer than
/// 65,535 bytes are cut at that length prefix (such documents are refused
/// elsewhere anyway).
pub fn message(nonce: &Nonce, name: &str, url: &str) -> Vec<u8> {
    let mut m = BIND_DOMAIN.to_vec();
    m.extend_from_slice(&nonce.0);
    for part in [name.as_bytes(), url.as_bytes()] {
        let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
        m.extend_from_slice(&len.to_be_bytes());
        m.extend_from_slice(&part[..usize::from(len)]);
    }
    m
}

/// The proof a node answers with: standard base64 of the signature.
pub fn prove(key: &SecretKey, nonce: &Nonce, name: &str, url: &str) -> String {
    STANDARD.encode(key.sign(&message(nonce, name, url)))
}

/// Whether `proof` is `key`'s signature over this challenge, name and URL.
pub fn check(key: &PublicKey, nonce: &Nonce, name: &str, url: &str, proof: &str) -> bool {
    let Ok(sig) = STANDARD.decode(proof.as_bytes()) else {
        return false;
    };
    key.verify(&message(nonce, name, url), &sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_holds_only_for_its_key_nonce_name_and_url() {
        let k = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let n = Nonce::random();
        let p = prove(&k, &n, "a.test", "https://a.test");
        assert!(check(&k.public(), &n, "a.test", "https://a.test", &p));
        assert!(!check(&other.public(), &n, "a.test", "https://a.test", &p));
        assert!(!check(
            &k.public(),
            &Nonce::random(),
            "a.test",
            "https://a.test",
            &p
        ));
        assert!(!check(&k.public(), &n, "b.test", "https://a.test", &p));
        assert!(!check(&k.public(), &n, "a.test", "https://b.test", &p));
        // Moving bytes between name and URL changes the message.
        assert!(!check(&k.public(), &n, "a.testh", "ttps://a.test", &p));
        assert!(!check(
            &k.public(),
            &n,
            "a.test",
            "https://a.test",
            "not base64"
        ));
        // A report signature can never pass as a binding proof (domain).
        assert!(message(&n, "a", "b").starts_with(BIND_DOMAIN));
    }

    #[test]
    fn nonces_round_trip_and_have_one_length() {
        let n = Nonce::random();
        assert_eq!(Nonce::parse(&n.encode()), Some(n));
        assert_eq!(Nonce::parse("AAAA"), None);
        assert_eq!(Nonce::parse("!"), None);
    }
}
