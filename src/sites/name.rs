//! The site's value types: [`SiteName`] (normalized once, where a name
//! enters) and [`Version`].

use std::borrow::Borrow;
use std::fmt;

/// A site's hostname, normalized: lowercase ASCII, no trailing dot. Built
/// only through [`SiteName::new`], so code holding one never normalizes again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteName(String);

impl SiteName {
    /// Normalizes a name as it arrives (a Host header, a config key, a
    /// manifest field): trailing dots dropped, ASCII lowercased.
    pub fn new(raw: &str) -> Self {
        Self(crate::manifest::normalize_site(raw))
    }

    /// The normalized name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SiteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SiteName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for SiteName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<SiteName> for String {
    fn from(s: SiteName) -> Self {
        s.0
    }
}

impl PartialEq<str> for SiteName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// A manifest version: monotonically increasing per site (rollback rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(pub u64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for Version {
    fn from(v: u64) -> Self {
        Self(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_once() {
        let a = SiteName::new("WWW.Example.ORG.");
        assert_eq!(a.as_str(), "www.example.org");
        assert_eq!(a, SiteName::new("www.example.org"));
        assert_eq!(SiteName::new(a.as_str()), a);
        let m: std::collections::HashMap<SiteName, u8> = [(a.clone(), 1)].into();
        assert_eq!(m.get("www.example.org"), Some(&1));
    }

    #[test]
    fn versions_order() {
        assert!(Version(2) > Version(1));
        assert_eq!(Version::from(7).to_string(), "7");
    }
}
