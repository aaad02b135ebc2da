//! Resumable, verified downloads into the store: [`PartialWriter`].
//!
//! A download of blob `h` keeps its bytes in `<data>/tmp/<hex>.partial` and
//! the peer that wrote them in `<hex>.partial.source`. The writer hashes
//! every byte as it is appended; [`PartialWriter::finish`] renames the file
//! into `blobs/` only when the size and BLAKE3 match, so nothing unverified
//! is ever served. A writer dropped without `finish` or `abandon` (a crash,
//! a cut connection) leaves its prefix behind; [`BlobStore::partial`] resumes
//! it only for the same source (re-hashing it), so bytes a bad source wrote
//! can never make a good source look bad.
//!
//! Appended bytes are gathered in an aligned buffer and written in whole
//! blocks with direct I/O where the file system allows it
//! ([`super::direct`]: no page-cache copy); a tail or an unaligned resume
//! point is written buffered.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::direct::{self, AlignedBuf, ALIGN};
use super::{io_err, BlobStore, StoreError};
use crate::hash::BlobHash;

/// Writes are batched into buffers of this size (a multiple of [`ALIGN`]).
const WRITE_BUFFER: usize = 1 << 20;
/// Every this many bytes appended, write-back of what was appended since the
/// last time is started (`sync_file_range`, not waited for), so the fsync
/// that commits the blob finds little left to write and the disk works while
/// bytes still arrive.
const WRITEBACK_EVERY: u64 = 8 << 20;
/// Longest source name recorded.
const MAX_SOURCE_LEN: u64 = 512;

/// A resumable download of one blob into the store (blocking I/O: call it
/// from a blocking thread). See the module documentation.
pub struct PartialWriter {
    store: BlobStore,
    hash: BlobHash,
    size: u64,
    path: PathBuf,
    /// The file, opened normally (buffered writes, fsync).
    file: File,
    /// The same file opened for direct I/O (`None` where refused).
    direct: Option<File>,
    /// Appended bytes not yet in the file: `stage[..staged]`.
    stage: AlignedBuf,
    staged: usize,
    hasher: blake3::Hasher,
    /// Bytes appended (in the file or staged).
    have: u64,
    /// Bytes in the file.
    flushed: u64,
    /// Offset up to which write-back of buffered writes was started.
    written_back: u64,
}

impl std::fmt::Debug for PartialWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartialWriter")
            .field("hash", &self.hash)
            .field("size", &self.size)
            .field("have", &self.have)
            .finish()
    }
}

impl BlobStore {
    /// Where a resumable download of `h` keeps its bytes (for inspection;
    /// only [`PartialWriter`] writes it).
    pub fn partial_path(&self, h: &BlobHash) -> PathBuf {
        self.inner.tmp.join(format!("{}.partial", h.to_hex()))
    }

    fn partial_source_path(&self, h: &BlobHash) -> PathBuf {
        self.inner
            .tmp
            .join(format!("{}.partial.source", h.to_hex()))
    }

    fn partial_source(&self, h: &BlobHash) -> Option<String> {
        let mut s = String::new();
        File::open(self.partial_source_path(h))
            .ok()?
            .take(MAX_SOURCE_LEN)
            .read_to_string(&mut s)
            .ok()?;
        Some(s)
    }

    fn discard_partial(&self, h: &BlobHash) {
        let _ = fs::remove_file(self.partial_path(h));
        let _ = fs::remove_file(self.partial_source_path(h));
    }

    /// Bytes a partial download of `h` from `source` holds (0 when none,
    /// when another source wrote it, or when it is longer than `size`);
    /// what [`BlobStore::partial`] would resume from, without hashing it.
    pub fn partial_held(&self, h: &BlobHash, source: &str, size: u64) -> u64 {
        if self.partial_source(h).as_deref() != Some(source) {
            return 0;
        }
        fs::metadata(self.partial_path(h))
            .map(|m| m.len())
            .ok()
            .filter(|n| *n <= size)
            .unwrap_or(0)
    }

    /// Opens the download of blob `h` (`size` bytes) from `source` (a peer's
    /// key): resumes what an interrupted download from the same source left
    /// (re-hashing it), else starts empty, discarding another source's bytes.
    pub fn partial(
        &self,
        h: BlobHash,
        size: u64,
        source: &str,
    ) -> Result<PartialWriter, StoreError> {
        let path = self.partial_path(&h);
        let mut hasher = blake3::Hasher::new();
        let mut have = 0;
        let resumable = self.partial_source(&h).as_deref() == Some(source);
        if resumable {
            if let Ok(f) = File::open(&path) {
                // Never read more than a blob can hold (the file may be
                // anything, even a device).
                let n = hasher
                    .update_reader(f.take(size.saturating_add(1)))
                    .map(|h| h.count())
                    .map_err(io_err(&path))?;
                if n <= size {
                    have = n;
                } else {
                    hasher = blake3::Hasher::new();
                }
            }
        } else if path.exists() {
            tracing::info!(blob = %h.short(), "discarding a partial download written by another source");
        }
        // Positioned writes (never O_APPEND, which Linux applies to pwrite too).
        let file = if have > 0 {
            OpenOptions::new().write(true).open(&path)
        } else {
            self.discard_partial(&h);
            File::create(&path)
        }
        .map_err(io_err(&path))?;
        if have == 0 {
            let sp = self.partial_source_path(&h);
            fs::write(&sp, source).map_err(io_err(&sp))?;
        }
        // Writing continues at `have`, which may be mid-block (see `room`).
        let direct = direct::open_write(&path);
        let stage_len = usize::try_from(size)
            .unwrap_or(WRITE_BUFFER)
            .clamp(ALIGN, WRITE_BUFFER)
            .div_ceil(ALIGN)
            * ALIGN;
        Ok(PartialWriter {
            store: self.clone(),
            hash: h,
            size,
            path,
            file,
            direct,
            stage: AlignedBuf::take(stage_len),
            staged: 0,
            hasher,
            have,
            flushed: have,
            written_back: have,
        })
    }
}

impl PartialWriter {
    /// Runs `f` on this writer on the blocking pool (its I/O blocks) and
    /// hands the writer back with the result. A panicked or cancelled task
    /// loses the writer (its file stays resumable) and reports an I/O error.
    pub async fn blocking<T: Send + 'static>(
        self,
        f: impl FnOnce(&mut PartialWriter) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<(PartialWriter, T), StoreError> {
        let path = self.path.display().to_string();
        tokio::task::spawn_blocking(move || {
            let mut w = self;
            f(&mut w).map(|t| (w, t))
        })
        .await
        .map_err(|e| StoreError::Io {
            path,
            source: std::io::Error::other(e.to_string()),
        })?
    }

    /// Bytes held so far (where a range request resumes).
    pub fn offset(&self) -> u64 {
        self.have
    }

    /// The blob's expected size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Drops the bytes held and starts over (the source answered with the
    /// whole blob instead of the requested range).
    pub fn restart(&mut self) -> Result<(), StoreError> {
        self.staged = 0;
        self.file.set_len(0).map_err(io_err(&self.path))?;
        self.hasher = blake3::Hasher::new();
        self.have = 0;
        self.flushed = 0;
        self.written_back = 0;
        Ok(())
    }

    /// Appends `data`, hashing it. More bytes than the blob's size abandon
    /// the download ([`StoreError::SizeMismatch`]; drop the writer then).
    pub fn append(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.append_chunks(&[data])
    }

    /// Appends `chunks` in order, hashing them; they are gathered in the
    /// aligned buffer and written a megabyte at a time. More bytes than the
    /// blob's size abandon the download ([`StoreError::SizeMismatch`]; drop
    /// the writer then).
    pub fn append_chunks<B: AsRef<[u8]>>(&mut self, chunks: &[B]) -> Result<(), StoreError> {
        let len: u64 = chunks.iter().map(|c| c.as_ref().len() as u64).sum();
        let total = self.have.saturating_add(len);
        if total > self.size {
            // Nothing of this download is kept (the writer is dead: the
            // caller drops it).
            self.store.discard_partial(&self.hash);
            return Err(StoreError::SizeMismatch {
                hash: self.hash,
                expected: self.size,
                actual: total,
            });
        }
        for c in chunks {
            let mut c = c.as_ref();
            self.hasher.update(c);
            while !c.is_empty() {
                let room = self.room();
                let n = room.min(c.len());
                let (now, later) = c.split_at(n);
                let at = self.staged;
                let Some(dst) = self.stage.as_mut_slice().get_mut(at..at + n) else {
                    return Err(self.short_buffer());
                };
                dst.copy_from_slice(now);
                self.staged += n;
                c = later;
                if n == room {
                    self.write_stage()?;
                }
            }
        }
        self.have = total;
        Ok(())
    }

    /// How many more bytes the buffer takes before it is written: up to
    /// the next block boundary when the file ends mid-block (a resumed
    /// or flushed download), else the whole buffer.
    fn room(&self) -> usize {
        let mis = (self.flushed % ALIGN as u64) as usize;
        let cap = if mis != 0 {
            ALIGN - mis
        } else {
            self.stage.as_slice().len()
        };
        cap.saturating_sub(self.staged).max(1)
    }

    fn short_buffer(&self) -> StoreError {
        StoreError::Io {
            path: self.path.display().to_string(),
            source: std::io::Error::other("write buffer overrun"),
        }
    }

    /// Writes the buffered bytes at the end of the file: directly when
    /// they are whole aligned blocks at an aligned offset, else buffered.
    fn write_stage(&mut self) -> Result<(), StoreError> {
        let n = self.staged;
        if n == 0 {
            return Ok(());
        }
        let data = self
            .stage
            .as_slice()
            .get(..n)
            .ok_or_else(|| self.short_buffer())?;
        let aligned = self.flushed % ALIGN as u64 == 0 && n % ALIGN == 0;
        let mut done = false;
        let mut refused = false;
        if let (true, Some(d)) = (aligned, &self.direct) {
            match direct::write_at(d, data, self.flushed) {
                Ok(()) => done = true,
                // Refused alignment or flags: buffered from now on.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => refused = true,
                Err(e) => return Err(io_err(&self.path)(e)),
            }
        }
        if refused {
            self.direct = None;
        }
        if !done {
            self.file
                .write_all_at(data, self.flushed)
                .map_err(io_err(&self.path))?;
        }
        self.flushed += n as u64;
        self.staged = 0;
        if !done && self.flushed - self.written_back >= WRITEBACK_EVERY {
            start_writeback(&self.file, self.written_back);
            self.written_back = self.flushed;
        }
        Ok(())
    }

    /// Writes what was appended to the file, keeping the download resumable.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.write_stage()
    }

    /// Completes the download: with every byte present and the BLAKE3
    /// matching, the file is fsync'd and renamed into `blobs/`. A short
    /// file stays resumable ([`StoreError::SizeMismatch`]); wrong bytes are
    /// removed ([`StoreError::HashMismatch`]).
    pub fn finish(mut self) -> Result<(), StoreError> {
        self.flush()?;
        if self.have < self.size {
            return Err(StoreError::SizeMismatch {
                hash: self.hash,
                expected: self.size,
                actual: self.have,
            });
        }
        let actual = BlobHash::from(self.hasher.finalize());
        if actual != self.hash {
            let expected = self.hash;
            self.abandon();
            return Err(StoreError::HashMismatch { expected, actual });
        }
        self.direct = None;
        let file = self.file.try_clone().map_err(io_err(&self.path))?;
        self.store.commit(file, &self.path, &self.hash)?;
        let _ = fs::remove_file(self.store.partial_source_path(&self.hash));
        Ok(())
    }

    /// Gives the download up: its bytes and source record are removed.
    pub fn abandon(self) {
        let (store, hash) = (self.store.clone(), self.hash);
        drop(self);
        store.discard_partial(&hash);
    }
}

impl Drop for PartialWriter {
    /// A writer dropped without [`PartialWriter::finish`] (a cut
    /// connection, a cancelled task) still writes what it holds, so the
    /// download resumes after every byte that was appended.
    fn drop(&mut self) {
        if let Err(e) = self.write_stage() {
            tracing::debug!(blob = %self.hash.short(), error = %e, "partial download: buffered bytes not written");
        }
        std::mem::replace(&mut self.stage, AlignedBuf::new(0)).give_back();
    }
}

/// Starts write-back of the file's dirty pages from `from` to its end
/// without waiting for it (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`;
/// elsewhere nothing). Durability still comes from the fsync at commit:
/// this only moves the disk work earlier. Failures are ignored for the same
/// reason.
fn start_writeback(file: &File, from: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let Ok(from) = libc::off64_t::try_from(from) else {
            return;
        };
        // SAFETY: the descriptor is open for the duration of the call (the
        // `File` is borrowed); the call reads no memory of this process.
        let _ = unsafe {
            libc::sync_file_range(file.as_raw_fd(), from, 0, libc::SYNC_FILE_RANGE_WRITE)
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn complete_download_is_verified_and_renamed() {
        let (_d, s) = store();
        let b = data(300_000);
        let h = BlobHash::of(&b);
        let mut w = s.partial(h, b.len() as u64, "peer").unwrap();
        assert_eq!(w.offset(), 0);
        for c in b.chunks(7_000) {
            w.append(c).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(fs::read(s.blob_path(&h)).unwrap(), b);
        assert!(!s.partial_path(&h).exists());
        assert!(s.partial_source(&h).is_none());
        assert!(s.open_verified(&h, b.len() as u64).is_ok());
    }

    #[test]
    fn chunked_appends_write_every_byte_in_order() {
        let (_d, s) = store();
        // Past the write-back interval, in batches around the buffer's size.
        let b = data(10 * WRITEBACK_EVERY as usize / 8 + 12_345);
        let h = BlobHash::of(&b);
        let mut w = s.partial(h, b.len() as u64, "peer").unwrap();
        w.append(&b[..100]).unwrap();
        let chunks: Vec<&[u8]> = b[100..].chunks(16_381).collect();
        for batch in chunks.chunks(70) {
            w.append_chunks(batch).unwrap();
        }
        assert_eq!(w.offset(), b.len() as u64);
        w.finish().unwrap();
        assert_eq!(fs::read(s.blob_path(&h)).unwrap(), b);
        // A batch that overshoots the size is refused whole.
        let small = data(3_000);
        let h = BlobHash::of(&small);
        let mut w = s.partial(h, 3_000, "peer").unwrap();
        let err = w.append_chunks(&[&small[..], b"x"]).unwrap_err();
        assert!(matches!(
            err,
            StoreError::SizeMismatch { actual: 3_001, .. }
        ));
        assert!(!s.partial_path(&h).exists());
    }

    #[test]
    fn interrupted_download_resumes_only_for_the_same_source() {
        let (_d, s) = store();
        let b = data(100_000);
        let (h, size) = (BlobHash::of(&b), b.len() as u64);
        let mut w = s.partial(h, size, "a").unwrap();
        w.append(&b[..40_000]).unwrap();
        drop(w); // a cut connection or a crash
        let mut w = s.partial(h, size, "a").unwrap();
        assert_eq!(w.offset(), 40_000, "resumed from the same source");
        w.append(&b[40_000..60_000]).unwrap();
        drop(w);
        let w = s.partial(h, size, "b").unwrap();
        assert_eq!(w.offset(), 0, "another source starts over");
        drop(w);
        let mut w = s.partial(h, size, "b").unwrap();
        w.append(&b).unwrap();
        w.finish().unwrap();
        assert!(s.contains(&h, size));
    }

    #[test]
    fn tampered_bytes_are_refused_and_removed() {
        let (_d, s) = store();
        let b = data(50_000);
        let (h, size) = (BlobHash::of(&b), b.len() as u64);
        let mut bad = b.clone();
        bad[1234] ^= 0x40;
        let mut w = s.partial(h, size, "a").unwrap();
        w.append(&bad).unwrap();
        assert!(matches!(w.finish(), Err(StoreError::HashMismatch { .. })));
        assert!(!s.contains(&h, size));
        assert!(!s.partial_path(&h).exists(), "bad bytes are not resumed");
        // A torn partial on disk (bytes changed after they were written).
        let mut w = s.partial(h, size, "a").unwrap();
        w.append(&b[..20_000]).unwrap();
        drop(w);
        let mut torn = fs::read(s.partial_path(&h)).unwrap();
        torn[5] ^= 1;
        fs::write(s.partial_path(&h), &torn).unwrap();
        let mut w = s.partial(h, size, "a").unwrap();
        assert_eq!(w.offset(), 20_000);
        w.append(&b[20_000..]).unwrap();
        assert!(matches!(w.finish(), Err(StoreError::HashMismatch { .. })));
        assert!(!s.contains(&h, size));
    }

    #[test]
    fn truncated_download_stays_resumable() {
        let (_d, s) = store();
        let b = data(10_000);
        let (h, size) = (BlobHash::of(&b), b.len() as u64);
        let mut w = s.partial(h, size, "a").unwrap();
        w.append(&b[..9_999]).unwrap();
        assert!(matches!(
            w.finish(),
            Err(StoreError::SizeMismatch { actual: 9_999, .. })
        ));
        assert!(!s.contains(&h, size));
        let mut w = s.partial(h, size, "a").unwrap();
        assert_eq!(w.offset(), 9_999);
        w.append(&b[9_999..]).unwrap();
        w.finish().unwrap();
        assert!(s.contains(&h, size));
    }

    #[test]
    fn oversize_input_is_cut_and_an_oversize_partial_discarded() {
        let (_d, s) = store();
        let b = data(1_000);
        let (h, size) = (BlobHash::of(&b), b.len() as u64);
        let mut w = s.partial(h, size, "a").unwrap();
        w.append(&b).unwrap();
        assert!(matches!(
            w.append(b"x"),
            Err(StoreError::SizeMismatch { actual: 1_001, .. })
        ));
        assert!(!s.partial_path(&h).exists());
        // A partial file longer than the blob (left by anything) restarts.
        let mut w = s.partial(h, size, "a").unwrap();
        w.append(&b[..10]).unwrap();
        drop(w);
        fs::write(s.partial_path(&h), data(5_000)).unwrap();
        let mut w = s.partial(h, size, "a").unwrap();
        assert_eq!(w.offset(), 0);
        w.append(&b).unwrap();
        w.finish().unwrap();
        assert!(s.contains(&h, size));
    }

    #[test]
    fn restart_drops_held_bytes() {
        let (_d, s) = store();
        let b = data(4_000);
        let (h, size) = (BlobHash::of(&b), b.len() as u64);
        for resumed in [false, true] {
            let mut w = s.partial(h, size, "a").unwrap();
            w.append(&[9u8; 3_000]).unwrap();
            if resumed {
                drop(w);
                w = s.partial(h, size, "a").unwrap();
                assert_eq!(w.offset(), 3_000);
            }
            w.restart().unwrap();
            assert_eq!(w.offset(), 0);
            w.append(&b).unwrap();
            w.finish().unwrap();
            assert_eq!(fs::read(s.blob_path(&h)).unwrap(), b, "resumed: {resumed}");
            fs::remove_file(s.blob_path(&h)).unwrap();
        }
    }

    #[test]
    fn disk_errors_name_the_path_and_commit_nothing() {
        let (d, s) = store();
        let b = data(2_000);
        let (h, size) = (BlobHash::of(&b), b.len() as u64);
        // The temp directory is gone: the download cannot start.
        fs::remove_dir_all(d.path().join("tmp")).unwrap();
        let e = s.partial(h, size, "a").unwrap_err().to_string();
        assert!(e.contains(".partial"), "{e}");
        fs::create_dir_all(d.path().join("tmp")).unwrap();
        // The blob's shard cannot be created (a file is in the way): the
        // rename fails, nothing is served, the bytes stay resumable.
        let shard = s.blob_path(&h).parent().unwrap().to_path_buf();
        fs::write(&shard, b"in the way").unwrap();
        let mut w = s.partial(h, size, "a").unwrap();
        w.append(&b).unwrap();
        assert!(matches!(w.finish(), Err(StoreError::Io { .. })));
        assert!(!s.contains(&h, size));
        fs::remove_file(&shard).unwrap();
        let w = s.partial(h, size, "a").unwrap();
        assert_eq!(w.offset(), size, "verified bytes kept for a retry");
        w.finish().unwrap();
        assert!(s.contains(&h, size));
    }
}
