//! Replication I/O that bypasses the page cache (Linux `O_DIRECT`).
//!
//! A mirror receiving a version writes bytes it may not serve soon, and
//! peers pull those bytes back out once each. Through the page cache every
//! such byte takes a fresh page: it evicts content that clients are
//! reading, and on a virtual machine whose free memory is handed back to
//! the host (virtio free page reporting, as on the benchmark machine) each
//! fresh page also costs a host fault, about 7 µs per 4 KiB page
//! (docs/BENCHMARKS.md: 43 % of a 1 GiB replication's CPU was that copy).
//! So [`crate::store::PartialWriter`] writes whole aligned blocks straight
//! from a reused buffer to the disk, and a peer's blob pull reads a range
//! that is not wholly cached straight from the disk ([`read_range`]); a
//! range the page cache holds (a hot file) is still read from it.
//!
//! Where `O_DIRECT` is refused (tmpfs, other systems) both fall back to
//! ordinary buffered I/O: the same bytes, only the page-cache cost differs.

use std::fs::File;
use std::io;
use std::path::Path;

use bytes::Bytes;

/// Alignment of direct I/O offsets, lengths and buffers (the common
/// logical block size and page size; a larger one would refuse with
/// `EINVAL`, and the caller falls back to buffered I/O).
pub const ALIGN: usize = 4096;

/// A heap buffer of `len` bytes whose start is [`ALIGN`]-aligned.
pub struct AlignedBuf {
    buf: Vec<u8>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes.
    pub fn new(len: usize) -> Self {
        let buf = vec![0u8; len + ALIGN];
        let off = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        Self { buf, off, len }
    }

    /// The aligned bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.buf
            .get(self.off..self.off + self.len)
            .unwrap_or_default()
    }

    /// The aligned bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.buf
            .get_mut(self.off..self.off + self.len)
            .unwrap_or_default()
    }

    /// A buffer of at least `len` bytes: one kept from earlier use when
    /// `len` ≤ [`POOLED`] (hot memory, nothing to zero), else a new one.
    /// Its length is `len`.
    pub fn take(len: usize) -> Self {
        if len <= POOLED {
            let kept = POOL.lock().ok().and_then(|mut p| p.pop());
            let mut b = kept.unwrap_or_else(|| Self::new(POOLED));
            b.len = len;
            return b;
        }
        Self::new(len)
    }

    /// Returns a buffer from [`AlignedBuf::take`] for reuse (at most
    /// [`POOL_MAX`] are kept).
    pub fn give_back(mut self) {
        if self.buf.len() == POOLED + ALIGN {
            self.len = POOLED;
            if let Ok(mut p) = POOL.lock() {
                if p.len() < POOL_MAX {
                    p.push(self);
                }
            }
        }
    }

    /// Bytes `range` of the aligned region as [`Bytes`], without a copy;
    /// the buffer goes back to the pool when the last `Bytes` is dropped.
    fn into_bytes(self, range: std::ops::Range<usize>) -> Bytes {
        let (start, end) = (self.off + range.start, self.off + range.end);
        Bytes::from_owner(Lent(Some(self))).slice(start..end)
    }
}

/// Size of the buffers kept for reuse (a 1 MiB piece plus one block for
/// an unaligned start).
pub const POOLED: usize = (1 << 20) + ALIGN;
/// Most buffers kept (≈ 32 MiB).
const POOL_MAX: usize = 32;
static POOL: std::sync::Mutex<Vec<AlignedBuf>> = std::sync::Mutex::new(Vec::new());

/// An [`AlignedBuf`] lent to a [`Bytes`]; returned to the pool on drop.
struct Lent(Option<AlignedBuf>);

impl AsRef<[u8]> for Lent {
    /// The whole underlying allocation (the `Bytes` slices it by offset).
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], |b| b.buf.as_slice())
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            b.give_back();
        }
    }
}

/// Opens `path` for direct writes (`None` where direct I/O is refused).
pub fn open_write(path: &Path) -> Option<File> {
    open(path, true)
}

fn open(path: &Path, write: bool) -> Option<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (path, write);
        None
    }
}

/// Writes `data` at `pos` of `direct` (an `O_DIRECT` file): `pos` and
/// `data.len()` must be multiples of [`ALIGN`] and `data` aligned.
pub fn write_at(direct: &File, data: &[u8], pos: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    direct.write_all_at(data, pos)
}

/// Reads bytes `pos..pos + len` of the file at `path` (`file` is it opened
/// normally): from the page cache when it holds the whole range, else
/// with direct I/O in aligned blocks (buffered where that is refused). An
/// early end of file is [`io::ErrorKind::UnexpectedEof`].
pub fn read_range(file: &File, path: &Path, pos: u64, len: usize) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    if fully_cached(file, pos, len) {
        return buffered_read(file, pos, len);
    }
    match open(path, false) {
        Some(d) => match direct_read(&d, pos, len) {
            Ok(b) => Ok(b),
            // EINVAL: an alignment this device refuses; read it buffered.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => buffered_read(file, pos, len),
            Err(e) => Err(e),
        },
        None => buffered_read(file, pos, len),
    }
}

/// Whether the page cache holds every page of `pos..pos + len`, asked with
/// `cachestat(2)` (Linux 6.5+), which reads nothing and starts no
/// read-ahead (a `preadv2` with `RWF_NOWAIT` would start it, filling the
/// cache with exactly the pages this module avoids). `false` where the call
/// is missing.
fn fully_cached(file: &File, pos: u64, len: usize) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        #[repr(C)]
        struct Range {
            off: u64,
            len: u64,
        }
        #[repr(C)]
        #[derive(Default)]
        struct Stat {
            nr_cache: u64,
            nr_dirty: u64,
            nr_writeback: u64,
            nr_evicted: u64,
            nr_recently_evicted: u64,
        }
        /// `__NR_cachestat`, the same on every architecture.
        const SYS_CACHESTAT: libc::c_long = 451;
        let page = ALIGN as u64;
        let range = Range {
            off: pos / page * page,
            len: (pos % page + len as u64).div_ceil(page) * page,
        };
        let mut st = Stat::default();
        // SAFETY: both pointers are to live, properly laid out structs the
        // call only reads (`range`) or writes (`st`); flags must be 0.
        let r = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                file.as_raw_fd(),
                &range as *const Range,
                &mut st as *mut Stat,
                0,
            )
        };
        r == 0 && st.nr_cache >= range.len / page
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, pos, len);
        false
    }
}

/// Reads `pos..pos + len` through `direct` (an `O_DIRECT` file) in one
/// aligned block covering the range.
fn direct_read(direct: &File, pos: u64, len: usize) -> io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let lead = (pos % ALIGN as u64) as usize;
    let start = pos - lead as u64;
    let span = (lead + len).div_ceil(ALIGN) * ALIGN;
    let mut buf = AlignedBuf::take(span);
    let mut got = 0;
    while got < lead + len {
        let Some(dst) = buf.as_mut_slice().get_mut(got..) else {
            break;
        };
        match direct.read_at(dst, start + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        // A short read that is not block-aligned is the end of the file.
        if got % ALIGN != 0 {
            break;
        }
    }
    if got < lead + len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf.into_bytes(lead..lead + len))
}

fn buffered_read(file: &File, pos: u64, len: usize) -> io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, pos)?;
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 131 % 251) as u8).collect()
    }

    #[test]
    fn pooled_buffers_come_back_with_the_requested_length() {
        let mut b = AlignedBuf::take(10);
        assert_eq!(b.as_slice().len(), 10);
        b.as_mut_slice().fill(7);
        b.give_back();
        let b = AlignedBuf::take(ALIGN * 3);
        assert_eq!(b.as_slice().len(), ALIGN * 3);
        assert_eq!(b.as_slice().as_ptr() as usize % ALIGN, 0);
        let big = AlignedBuf::take(POOLED + 1);
        assert_eq!(big.as_slice().len(), POOLED + 1);
    }

    #[test]
    fn aligned_buffers_are_aligned() {
        for len in [1, ALIGN, 3 * ALIGN + 5] {
            let b = AlignedBuf::new(len);
            assert_eq!(b.as_slice().len(), len);
            assert_eq!(b.as_slice().as_ptr() as usize % ALIGN, 0);
        }
    }

    #[test]
    fn ranges_read_whole_from_cache_or_disk() {
        // Under the crate's directory (a disk file system where O_DIRECT
        // works; tmpfs exercises the buffered fallback instead).
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let p = dir.path().join("f");
        let d = data(3 * ALIGN * 7 + 123);
        File::create(&p).unwrap().write_all(&d).unwrap();
        let f = File::open(&p).unwrap();
        for (pos, len) in [
            (0, d.len()),
            (1, 10),
            (ALIGN - 1, ALIGN + 2),
            (5000, 20_000),
            (d.len() - 7, 7),
        ] {
            let b = read_range(&f, &p, pos as u64, len).unwrap();
            assert_eq!(&b[..], &d[pos..pos + len], "{pos}+{len}");
        }
        // Past the end: an error, never padding.
        let e = read_range(&f, &p, (d.len() - 5) as u64, 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // The direct path on its own (where the file system allows it).
        if let Some(df) = open(&p, false) {
            let b = direct_read(&df, 4097, 9000).unwrap();
            assert_eq!(&b[..], &d[4097..13_097]);
            assert_eq!(
                direct_read(&df, (d.len() - 5) as u64, 10)
                    .unwrap_err()
                    .kind(),
                io::ErrorKind::UnexpectedEof
            );
        }
    }
}
