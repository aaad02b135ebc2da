//! Content-addressed blob store on disk.
//!
//! Layout: `<data>/blobs/<first 2 hex>/<64 hex>`, temp files in `<data>/tmp`
//! (same file system, so `rename` is atomic), corrupt blobs moved to
//! `<data>/quarantine`. [`BlobStore::blob_path`] is the one hash-to-path mapping.
//!
//! Invariants:
//! - a file appears under `blobs/` only after its BLAKE3 matched the expected
//!   hash while it was written, was fsync'd, and renamed into place;
//! - a blob is only handed out for serving by [`BlobStore::open_verified`], which
//!   re-hashes it whenever its (inode, size, mtime) differ from what was last
//!   verified in this process, so bytes changed on disk are never served.
//!
//! Crash safety: a crash leaves at most stray files in `tmp/` (removed at open);
//! `blobs/` never holds a partial file.
//!
//! Downloads from peers go through [`PartialWriter`] (`store::partial`): the
//! only code that creates, resumes, verifies or removes `.partial` files.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::hash::BlobHash;

pub mod direct;
mod partial;
pub use partial::PartialWriter;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// File system failure (includes disk full), with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: io::Error,
    },
    /// The bytes offered do not hash to the expected value.
    #[error("blob content does not match its hash: expected {expected}, got {actual}")]
    HashMismatch {
        /// Expected hash.
        expected: BlobHash,
        /// Hash of the bytes received.
        actual: BlobHash,
    },
    /// The bytes offered have the wrong length.
    #[error("blob {hash} has {actual} bytes, expected {expected}")]
    SizeMismatch {
        /// Hash.
        hash: BlobHash,
        /// Expected size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// The blob is not in the store.
    #[error("blob {0} is not in the store")]
    Missing(BlobHash),
    /// The blob on disk no longer matches its hash; it was quarantined.
    #[error("blob {0} is corrupt on disk and was quarantined")]
    Corrupt(BlobHash),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

impl Stamp {
    fn of(md: &fs::Metadata) -> Self {
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(md);
        #[cfg(not(unix))]
        let ino = 0;
        Self {
            ino,
            len: md.len(),
            mtime: md.modified().ok(),
        }
    }
}

/// The blob store. Cheap to clone.
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<Inner>,
}

struct Inner {
    blobs: PathBuf,
    tmp: PathBuf,
    quarantine: PathBuf,
    verified: Mutex<HashMap<BlobHash, Stamp>>,
    counter: AtomicU64,
    small: Mutex<SmallCache>,
}

/// Verified contents of small blobs, kept in memory so hot small files are
/// served without a system call. Bytes enter only after their hash matched.
#[derive(Default)]
struct SmallCache {
    map: HashMap<BlobHash, bytes::Bytes>,
    order: std::collections::VecDeque<BlobHash>,
    total: usize,
}

/// Blobs up to this size are cached in memory once verified.
pub const SMALL_BLOB: u64 = 64 * 1024;
/// Memory for cached small blobs.
const SMALL_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Grace period during which a fresh blob is never garbage-collected (it may
/// belong to a publish or download still in progress).
pub const GC_GRACE: Duration = Duration::from_secs(3600);

impl BlobStore {
    /// Opens (creating if needed) the store under `data_dir`, removing stale temp files.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let blobs = data_dir.join("blobs");
        let tmp = data_dir.join("tmp");
        let quarantine = data_dir.join("quarantine");
        for d in [&blobs, &tmp, &quarantine] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        if let Ok(rd) = fs::read_dir(&tmp) {
            for e in rd.flatten() {
                // Another process (a publish) may be writing here right now;
                // only remove temp files untouched for a while.
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > GC_GRACE);
                if old {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                blobs,
                tmp,
                quarantine,
                verified: Mutex::new(HashMap::new()),
                counter: AtomicU64::new(0),
                small: Mutex::new(SmallCache::default()),
            }),
        })
    }

    /// The one mapping from hash to file path.
    pub fn blob_path(&self, h: &BlobHash) -> PathBuf {
        let hex = h.to_hex();
        self.inner.blobs.join(&hex[..2]).join(hex)
    }

    /// True when a file for `h` of the given size is present.
    pub fn contains(&self, h: &BlobHash, size: u64) -> bool {
        fs::metadata(self.blob_path(h)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// A fresh temp file path on the store's file system (for
    /// [`BlobStore::put_reader`], which hashes while it writes).
    fn temp_path(&self) -> PathBuf {
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        self.inner
            .tmp
            .join(format!("{}.{}.{n}.part", std::process::id(), nanos()))
    }

    /// Streams `reader` into the store, hashing while writing. The blob is
    /// renamed into place only if it hashes to `expected` with `size` bytes.
    /// Returns `false` when the blob was already present (nothing written).
    pub fn put_reader(
        &self,
        expected: BlobHash,
        size: u64,
        reader: impl Read,
    ) -> Result<bool, StoreError> {
        if self.contains(&expected, size) {
            return Ok(false);
        }
        let tmp = self.temp_path();
        let guard = TempGuard(tmp.clone());
        let mut out = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut hasher = blake3::Hasher::new();
        let mut reader = reader.take(size.saturating_add(1));
        let mut buf = vec![0u8; 256 * 1024];
        let mut total: u64 = 0;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(StoreError::Io {
                        path: "source".into(),
                        source: e,
                    })
                }
            };
            let chunk = buf.get(..n).unwrap_or_default();
            hasher.update(chunk);
            out.write_all(chunk).map_err(io_err(&tmp))?;
            total += n as u64;
        }
        if total != size {
            return Err(StoreError::SizeMismatch {
                hash: expected,
                expected: size,
                actual: total,
            });
        }
        let actual = BlobHash::from(hasher.finalize());
        if actual != expected {
            return Err(StoreError::HashMismatch { expected, actual });
        }
        self.commit(out, &tmp, &expected)?;
        std::mem::forget(guard);
        Ok(true)
    }

    /// Copies a local file into the store, hashing it (multi-threaded, memory
    /// mapped) first. Returns its hash and whether new bytes were written.
    pub fn put_file(&self, src: &Path) -> Result<(BlobHash, u64, bool), StoreError> {
        let (hash, size) = hash_file(src)?;
        let f = File::open(src).map_err(io_err(src))?;
        let wrote = self.put_reader(hash, size, f)?;
        Ok((hash, size, wrote))
    }

    fn commit(&self, out: File, tmp: &Path, h: &BlobHash) -> Result<(), StoreError> {
        out.sync_all().map_err(io_err(tmp))?;
        drop(out);
        let dst = self.blob_path(h);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        fs::rename(tmp, &dst).map_err(io_err(&dst))?;
        if let Some(parent) = dst.parent() {
            if let Ok(d) = File::open(parent) {
                let _ = d.sync_all();
            }
        }
        if let Ok(md) = fs::metadata(&dst) {
            self.remember(*h, Stamp::of(&md));
        }
        Ok(())
    }

    /// Opens a verified blob of unknown size (its file length is checked by hashing).
    pub fn open_verified_any(&self, h: &BlobHash) -> Result<(File, u64), StoreError> {
        let path = self.blob_path(h);
        let size = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::Missing(*h)),
            Err(e) => return Err(io_err(&path)(e)),
        };
        Ok((self.open_verified(h, size)?, size))
    }

    fn remember(&self, h: BlobHash, s: Stamp) {
        if let Ok(mut m) = self.inner.verified.lock() {
            m.insert(h, s);
        }
    }

    fn forget(&self, h: &BlobHash) {
        if let Ok(mut m) = self.inner.verified.lock() {
            m.remove(h);
        }
        if let Ok(mut c) = self.inner.small.lock() {
            if let Some(b) = c.map.remove(h) {
                c.total = c.total.saturating_sub(b.len());
            }
        }
    }

    /// The verified bytes of a small blob (≤ [`SMALL_BLOB`]) from memory, if cached.
    pub fn cached_small(&self, h: &BlobHash) -> Option<bytes::Bytes> {
        self.inner.small.lock().ok()?.map.get(h).cloned()
    }

    /// Reads a small blob, verifying it, and caches its bytes.
    pub fn read_small_verified(&self, h: &BlobHash, size: u64) -> Result<bytes::Bytes, StoreError> {
        if let Some(b) = self.cached_small(h) {
            return Ok(b);
        }
        let path = self.blob_path(h);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::Missing(*h)),
            Err(e) => return Err(io_err(&path)(e)),
        };
        if data.len() as u64 != size || BlobHash::of(&data) != *h {
            self.quarantine(h);
            return Err(StoreError::Corrupt(*h));
        }
        let b = bytes::Bytes::from(data);
        if size <= SMALL_BLOB {
            if let Ok(mut c) = self.inner.small.lock() {
                if !c.map.contains_key(h) {
                    c.total += b.len();
                    c.map.insert(*h, b.clone());
                    c.order.push_back(*h);
                    while c.total > SMALL_CACHE_BYTES {
                        let Some(old) = c.order.pop_front() else {
                            break;
                        };
                        if let Some(ob) = c.map.remove(&old) {
                            c.total = c.total.saturating_sub(ob.len());
                        }
                    }
                }
            }
        }
        Ok(b)
    }

    fn known(&self, h: &BlobHash) -> Option<Stamp> {
        self.inner
            .verified
            .lock()
            .ok()
            .and_then(|m| m.get(h).copied())
    }

    /// Opens a blob for serving, guaranteeing its bytes hash to `h`.
    ///
    /// Re-hashes the open file when its inode, size or mtime changed since it
    /// was last verified by this process; a mismatch quarantines the file and
    /// returns [`StoreError::Corrupt`].
    pub fn open_verified(&self, h: &BlobHash, size: u64) -> Result<File, StoreError> {
        let path = self.blob_path(h);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::Missing(*h)),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let md = f.metadata().map_err(io_err(&path))?;
        let stamp = Stamp::of(&md);
        if self.known(h) == Some(stamp) && stamp.len == size {
            return Ok(f);
        }
        let ok = md.len() == size && {
            let mut hasher = blake3::Hasher::new();
            hasher.update_reader(&f).map_err(io_err(&path))?;
            BlobHash::from(hasher.finalize()) == *h
        };
        if !ok {
            self.quarantine(h);
            return Err(StoreError::Corrupt(*h));
        }
        // Hashing read the file to its end: rewind before handing it out.
        let mut f = f;
        io::Seek::seek(&mut f, io::SeekFrom::Start(0)).map_err(io_err(&path))?;
        self.remember(*h, stamp);
        Ok(f)
    }

    /// Moves a blob out of `blobs/` so it is never served; it will be fetched again.
    pub fn quarantine(&self, h: &BlobHash) {
        self.forget(h);
        let src = self.blob_path(h);
        let dst = self
            .inner
            .quarantine
            .join(format!("{}.{}", h.to_hex(), nanos()));
        if let Err(e) = fs::rename(&src, &dst) {
            tracing::warn!(blob = %h, error = %e, "could not quarantine corrupt blob; removing it");
            let _ = fs::remove_file(&src);
        }
        tracing::error!(blob = %h, quarantined = %dst.display(), "blob on disk does not match its hash");
    }

    /// Re-hashes every blob referenced in `wanted` (ignoring what this process
    /// verified before, so silent bit rot is found too), quarantining corrupt
    /// ones. Returns the hashes that are missing or corrupt.
    pub fn scrub(&self, wanted: &[(BlobHash, u64)]) -> Vec<BlobHash> {
        wanted
            .iter()
            .filter(|(h, size)| {
                self.forget(h);
                self.open_verified(h, *size).is_err()
            })
            .map(|(h, _)| *h)
            .collect()
    }

    /// Deletes blobs not in `keep` and older than [`GC_GRACE`].
    /// Returns (files removed, bytes freed).
    pub fn gc(&self, keep: &HashSet<BlobHash>) -> Result<(usize, u64), StoreError> {
        let mut removed = 0;
        let mut freed = 0;
        let rd = fs::read_dir(&self.inner.blobs).map_err(io_err(&self.inner.blobs))?;
        for shard in rd.flatten() {
            let Ok(files) = fs::read_dir(shard.path()) else {
                continue;
            };
            for e in files.flatten() {
                let name = e.file_name();
                let Some(h) = name.to_str().and_then(|s| s.parse::<BlobHash>().ok()) else {
                    continue;
                };
                if keep.contains(&h) {
                    continue;
                }
                let Ok(md) = e.metadata() else { continue };
                let young = md
                    .modified()
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_none_or(|age| age < GC_GRACE);
                if young {
                    continue;
                }
                if fs::remove_file(e.path()).is_ok() {
                    self.forget(&h);
                    removed += 1;
                    freed += md.len();
                }
            }
        }
        Ok((removed, freed))
    }
}

/// Hashes a file with BLAKE3 (memory-mapped, multi-threaded for large files).
pub fn hash_file(path: &Path) -> Result<(BlobHash, u64), StoreError> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap_rayon(path).map_err(io_err(path))?;
    Ok((BlobHash::from(hasher.finalize()), hasher.count()))
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

struct TempGuard(PathBuf);

impl Drop for TempGuard {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_verify_and_reject() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path()).unwrap();
        let data = b"hello world".to_vec();
        let h = BlobHash::of(&data);
        assert!(s.put_reader(h, 11, &data[..]).unwrap());
        assert!(!s.put_reader(h, 11, &data[..]).unwrap(), "dedup");
        let mut fresh = BlobStore::open(dir.path())
            .unwrap()
            .open_verified(&h, 11)
            .unwrap();
        let mut got = String::new();
        fresh.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello world", "first (verifying) open is rewound");

        let wrong = BlobHash::of(b"other");
        assert!(matches!(
            s.put_reader(wrong, 11, &data[..]),
            Err(StoreError::HashMismatch { .. })
        ));
        assert!(!s.contains(&wrong, 11));
        assert!(matches!(
            s.put_reader(wrong, 5, &data[..]),
            Err(StoreError::SizeMismatch { .. })
        ));
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "no temp left"
        );
    }

    #[test]
    fn corrupt_on_disk_is_never_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path()).unwrap();
        let data = vec![7u8; 100_000];
        let h = BlobHash::of(&data);
        s.put_reader(h, data.len() as u64, &data[..]).unwrap();
        let p = s.blob_path(&h);
        let mut bad = data.clone();
        bad[500] ^= 1;
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&p, &bad).unwrap();
        assert!(matches!(
            s.open_verified(&h, data.len() as u64),
            Err(StoreError::Corrupt(_))
        ));
        assert!(!p.exists(), "quarantined");
        assert!(matches!(
            s.open_verified(&h, data.len() as u64),
            Err(StoreError::Missing(_))
        ));
    }
}
