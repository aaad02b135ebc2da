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
//! from a reused buffer to the disk, and a peer's blob pull reads what is
//! not already cached straight from the disk ([`read_range`]); bytes in the
//! page cache (a blob just published, a hot file) are still read from it.
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

    /// Bytes `range` of the aligned region as [`Bytes`], without a copy.
    fn into_bytes(self, range: std::ops::Range<usize>) -> Bytes {
        let (start, end) = (self.off + range.start, self.off + range.end);
        Bytes::from(self.buf).slice(start..end)
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
/// normally): what the page cache holds is copied from it, the rest is read
/// with direct I/O in aligned blocks (buffered where that is refused). An
/// early end of file is [`io::ErrorKind::UnexpectedEof`].
pub fn read_range(file: &File, path: &Path, pos: u64, len: usize) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let cached = cached_prefix(file, pos, len);
    if let Ok(b) = &cached {
        if b.len() == len {
            return cached;
        }
    }
    let (head, got) = match cached {
        Ok(b) => {
            let n = b.len();
            (Some(b), n)
        }
        Err(_) => (None, 0),
    };
    let rest_pos = pos + got as u64;
    let rest_len = len - got;
    let rest = match open(path, false) {
        Some(d) => match direct_read(&d, rest_pos, rest_len) {
            Ok(b) => b,
            // EINVAL: an alignment this device refuses; read it buffered.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                buffered_read(file, rest_pos, rest_len)?
            }
            Err(e) => return Err(e),
        },
        None => buffered_read(file, rest_pos, rest_len)?,
    };
    Ok(match head {
        Some(h) if !h.is_empty() => {
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(&h);
            v.extend_from_slice(&rest);
            Bytes::from(v)
        }
        _ => rest,
    })
}

/// The longest prefix of `pos..pos + len` the page cache holds, read
/// without waiting for the disk (`preadv2` with `RWF_NOWAIT`; an error
/// where that is not supported).
fn cached_prefix(file: &File, pos: u64, len: usize) -> io::Result<Bytes> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let mut buf: Vec<u8> = Vec::with_capacity(len);
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len,
        };
        let off = libc::off_t::try_from(pos).map_err(io::Error::other)?;
        // SAFETY: the iovec covers `len` bytes of `buf`'s allocation, which
        // outlives the call; the kernel writes at most `len` bytes.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, off, libc::RWF_NOWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel initialized the first `n` (≤ len) bytes.
        unsafe { buf.set_len((n as usize).min(len)) };
        Ok(Bytes::from(buf))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, pos, len);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Reads `pos..pos + len` through `direct` (an `O_DIRECT` file) in one
/// aligned block covering the range.
fn direct_read(direct: &File, pos: u64, len: usize) -> io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let lead = (pos % ALIGN as u64) as usize;
    let start = pos - lead as u64;
    let span = (lead + len).div_ceil(ALIGN) * ALIGN;
    let mut buf = AlignedBuf::new(span);
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
