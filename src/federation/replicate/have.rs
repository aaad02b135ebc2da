//! Per-blob availability of a version being replicated (pure).
//!
//! A mirror answers `GET /.well-known/p2pcdn/v1/have/{site}/{version}` with a
//! bitmap over the manifest's blob order ([`crate::manifest::VerifiedManifest::blobs`]:
//! sorted by hash, deduplicated): bit `i` (byte `i / 8`, most significant bit
//! first) is set when blob `i` is verified in its store. The body is exactly
//! `ceil(n / 8)` bytes; a manifest of [`MAX_BLOBS`] blobs gives 8 KiB.

/// Most blobs a version may have for its availability to be answered.
pub const MAX_BLOBS: usize = 65_536;

/// Which blobs of a version a node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    bits: Vec<u8>,
    len: usize,
}

impl Bitmap {
    /// All clear, `len` blobs.
    pub fn new(len: usize) -> Self {
        Self {
            bits: vec![0; len.div_ceil(8)],
            len,
        }
    }

    /// From a flag per blob.
    pub fn from_flags(flags: impl IntoIterator<Item = bool>) -> Self {
        let mut b = Self::new(0);
        for f in flags {
            if b.len % 8 == 0 {
                b.bits.push(0);
            }
            if f {
                if let Some(byte) = b.bits.get_mut(b.len / 8) {
                    *byte |= 0x80 >> (b.len % 8);
                }
            }
            b.len += 1;
        }
        b
    }

    /// Parses a body for a manifest of `len` blobs: None if its length is
    /// wrong or padding bits are set.
    pub fn parse(body: &[u8], len: usize) -> Option<Self> {
        if body.len() != len.div_ceil(8) {
            return None;
        }
        let b = Self {
            bits: body.to_vec(),
            len,
        };
        let pad_clear = (len..body.len() * 8).all(|i| !b.bit(i));
        pad_clear.then_some(b)
    }

    fn bit(&self, i: usize) -> bool {
        self.bits
            .get(i / 8)
            .is_some_and(|byte| byte & (0x80 >> (i % 8)) != 0)
    }

    /// Whether blob `i` is held (false past the end).
    pub fn has(&self, i: usize) -> bool {
        i < self.len && self.bit(i)
    }

    /// Blobs held.
    pub fn count(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
    }

    /// Blobs in the version.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the version has no blobs.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether every blob is held.
    pub fn complete(&self) -> bool {
        self.count() == self.len
    }

    /// The wire form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_msb_first() {
        let b = Bitmap::from_flags([true, false, false, false, false, false, false, true, true]);
        assert_eq!(b.as_bytes(), &[0x81, 0x80]);
        assert_eq!(b.count(), 3);
        assert!(!b.complete());
        assert!(Bitmap::from_flags([true; 3]).complete());
        assert!(Bitmap::new(0).complete());
    }

    #[test]
    fn bad_bodies_are_refused() {
        assert!(Bitmap::parse(&[0xff], 9).is_none(), "too short");
        assert!(Bitmap::parse(&[0xff, 0, 0], 9).is_none(), "too long");
        assert!(Bitmap::parse(&[0xff, 0xc0], 9).is_none(), "padding set");
        assert!(Bitmap::parse(&[0xff, 0x80], 9).unwrap().complete());
    }

    proptest! {
        #[test]
        fn round_trips(flags in proptest::collection::vec(any::<bool>(), 0..200)) {
            let b = Bitmap::from_flags(flags.iter().copied());
            let p = Bitmap::parse(b.as_bytes(), flags.len()).unwrap();
            prop_assert_eq!(&p, &b);
            for (i, f) in flags.iter().enumerate() {
                prop_assert_eq!(p.has(i), *f);
            }
            prop_assert!(!p.has(flags.len()));
            prop_assert_eq!(p.count(), flags.iter().filter(|f| **f).count());
        }
    }
}
