//! A byte range of an open file as a stream of [`Bytes`] for a response
//! body: each piece is read on the blocking pool straight into the buffer
//! handed to the connection (no intermediate buffer and copy, as
//! `tokio::fs::File` plus `ReaderStream` make), one piece read ahead.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// How many pieces are read ahead of the one being sent (a direct read
/// waits for the disk; the next one is read while this one is sent).
const READ_AHEAD: usize = 2;

/// Streams `len` bytes of `file` (opened from `path`) from `start`, in
/// pieces of at most `piece` bytes, for a peer's blob pull: each piece is
/// read with [`crate::store::direct::read_range`], from the page cache when
/// it holds the piece, else with direct I/O, so bytes a peer pulls once take
/// no fresh page-cache pages. A file that ends early ends the stream with
/// [`io::ErrorKind::UnexpectedEof`] (the connection is cut, never padded).
pub fn uncached_stream(
    file: File,
    path: PathBuf,
    start: u64,
    len: u64,
    piece: usize,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let piece = piece.max(1) as u64;
    let file = Arc::new(file);
    let path = Arc::new(path);
    let end = start.saturating_add(len);
    futures_util::stream::iter(0..len.div_ceil(piece))
        .map(move |i| {
            let (file, path) = (Arc::clone(&file), Arc::clone(&path));
            let pos = start + i * piece;
            let n = piece.min(end - pos);
            async move {
                tokio::task::spawn_blocking(move || {
                    let n = usize::try_from(n).map_err(io::Error::other)?;
                    crate::store::direct::read_range(&file, &path, pos, n)
                })
                .await
                .map_err(io::Error::other)
                .and_then(|r| r)
            }
        })
        .buffered(READ_AHEAD)
        // Ends the stream after the first error.
        .scan(false, |failed, r| {
            let out = if *failed {
                None
            } else {
                *failed = r.is_err();
                Some(r)
            };
            std::future::ready(out)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::io::Write;

    async fn collect(
        s: impl Stream<Item = io::Result<Bytes>>,
    ) -> (Vec<u8>, Vec<usize>, Option<io::ErrorKind>) {
        let mut s = std::pin::pin!(s);
        let (mut out, mut sizes) = (Vec::new(), Vec::new());
        while let Some(x) = s.next().await {
            match x {
                Ok(b) => {
                    sizes.push(b.len());
                    out.extend_from_slice(&b);
                }
                Err(e) => return (out, sizes, Some(e.kind())),
            }
        }
        (out, sizes, None)
    }

    /// Streams `len` bytes of the file at `p` from `start` in `piece`s and collects them.
    async fn read(
        p: &std::path::Path,
        start: u64,
        len: u64,
        piece: usize,
    ) -> (Vec<u8>, Vec<usize>, Option<io::ErrorKind>) {
        collect(uncached_stream(
            File::open(p).unwrap(),
            p.to_path_buf(),
            start,
            len,
            piece,
        ))
        .await
    }

    fn file_with(data: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        File::create(&p).unwrap().write_all(data).unwrap();
        (d, p)
    }

    #[tokio::test]
    async fn ranges_arrive_whole_in_pieces() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (_d, p) = file_with(&data);
        let (out, sizes, err) = read(&p, 0, 10_000, 4096).await;
        assert_eq!((out, err), (data.clone(), None));
        assert_eq!(sizes, vec![4096, 4096, 1808]);
        let (out, _, err) = read(&p, 123, 5_000, 1000).await;
        assert_eq!((out.as_slice(), err), (&data[123..5_123], None));
        let (out, sizes, _) = read(&p, 10_000, 0, 1000).await;
        assert!(out.is_empty() && sizes.is_empty());
    }

    #[tokio::test]
    async fn uncached_ranges_are_the_same_bytes() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let d = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let p = d.path().join("f");
        File::create(&p).unwrap().write_all(&data).unwrap();
        for (start, len, piece) in [
            (0u64, 100_000u64, 4096usize),
            (4095, 50_001, 30_000),
            (99_999, 1, 7),
        ] {
            let (out, _, err) = read(&p, start, len, piece).await;
            assert_eq!(err, None);
            assert_eq!(out, &data[start as usize..(start + len) as usize]);
        }
        let (out, _, err) = read(&p, 90_000, 20_000, 8192).await;
        assert_eq!((out.len(), err), (8192, Some(io::ErrorKind::UnexpectedEof)));
    }

    #[tokio::test]
    async fn a_short_file_ends_with_an_error() {
        let (_d, p) = file_with(&[1u8; 3000]);
        let (out, _, err) = read(&p, 0, 5000, 2048).await;
        assert_eq!(out.len(), 2048, "whole pieces only");
        assert_eq!(err, Some(io::ErrorKind::UnexpectedEof));
    }
}
