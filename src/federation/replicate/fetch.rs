//! One blob pull from one peer: `GET /blob/{hash}` (a range when resuming),
//! streamed into the store's [`crate::store::PartialWriter`], which hashes
//! every byte and commits only a verified blob.

use std::time::Duration;

use futures_util::StreamExt;

use crate::federation::sources::{too_slow, MIN_PULL_RATE, PULL_GRACE};
use crate::hash::BlobHash;
use crate::store::{BlobStore, PartialWriter, StoreError};

/// Longest wait for a peer's response headers to a blob request.
pub const HEADERS_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes gathered from the network before one hand-off to the writer.
const BATCH: u64 = 1 << 20;

/// Why a blob pull failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    /// No response headers within the deadline.
    #[error("no response within {0} s")]
    NoResponse(u64),
    /// Connection or protocol failure.
    #[error("{0}")]
    Transport(String),
    /// The source answered with an error status (404: it lacks the blob).
    #[error("HTTP {0}")]
    Status(u16),
    /// The source sent slower than the minimum rate (a stall or a trickle).
    #[error("source too slow: {bytes} bytes in {millis} ms (minimum {min} B/s after the first {grace_ms} ms)", min = MIN_PULL_RATE, grace_ms = PULL_GRACE.as_millis())]
    TooSlow {
        /// Bytes received in this response.
        bytes: u64,
        /// Time since the request was sent.
        millis: u64,
    },
    /// More bytes than the manifest's size.
    #[error("peer sent more than {0} bytes")]
    TooLong(u64),
    /// The body ended early (the partial file is kept for the same source).
    #[error("truncated: {have} of {size} bytes (will resume from the same source)")]
    Truncated {
        /// Bytes held.
        have: u64,
        /// Expected size.
        size: u64,
    },
    /// The bytes do not hash to the blob's hash.
    #[error("peer sent wrong bytes: hash {got} instead of {want}")]
    WrongBytes {
        /// Hash of what arrived (short form).
        got: String,
        /// Expected hash (short form).
        want: String,
    },
    /// A local file-system failure (not the source's fault).
    #[error("{0}")]
    Local(String),
}

impl PullError {
    /// Whether the failure is the source's doing (stall, trickle, bad or
    /// extra bytes, no answer, connection failure) and it should be backed
    /// off. A 404 is not: peers holding an older version are asked for shared
    /// blobs and may lack new ones (lying holders are caught by spot-checks).
    pub fn blames_source(&self) -> bool {
        match self {
            Self::Local(_) => false,
            Self::Status(s) => *s != 404,
            _ => true,
        }
    }

    fn from_store(e: StoreError) -> Self {
        match e {
            StoreError::HashMismatch { expected, actual } => Self::WrongBytes {
                got: actual.short().to_string(),
                want: expected.short().to_string(),
            },
            StoreError::SizeMismatch {
                expected, actual, ..
            } if actual > expected => Self::TooLong(expected),
            StoreError::SizeMismatch {
                expected, actual, ..
            } => Self::Truncated {
                have: actual,
                size: expected,
            },
            e => Self::Local(e.to_string()),
        }
    }
}

/// Runs a writer operation on the blocking pool, handing the writer back.
async fn on_writer<T: Send + 'static>(
    w: PartialWriter,
    f: impl FnOnce(&mut PartialWriter) -> Result<T, StoreError> + Send + 'static,
) -> Result<(PartialWriter, T), PullError> {
    w.blocking(f).await.map_err(PullError::from_store)
}

/// The download's writer: idle, or busy writing one batch on the blocking
/// pool (so the next batch is received meanwhile: a direct write waits for
/// the disk).
enum Sink {
    Idle(Box<PartialWriter>),
    Busy(tokio::task::JoinHandle<Result<(PartialWriter, ()), crate::store::StoreError>>),
}

impl Sink {
    /// The writer, once its write (if any) is done.
    async fn writer(self) -> Result<PartialWriter, PullError> {
        match self {
            Sink::Idle(w) => Ok(*w),
            Sink::Busy(h) => h
                .await
                .map_err(|e| PullError::Local(e.to_string()))?
                .map(|(w, ())| w)
                .map_err(PullError::from_store),
        }
    }

    /// Starts writing `data` once the previous write is done.
    async fn write(self, data: Vec<bytes::Bytes>) -> Result<Sink, PullError> {
        let w = self.writer().await?;
        Ok(Sink::Busy(tokio::spawn(
            w.blocking(move |w| w.append_chunks(&data)),
        )))
    }
}

/// Downloads one blob from `url` into `store`, resuming a partial download
/// only if `source` (the peer's key) wrote it; the store commits it only if
/// size and BLAKE3 match. The transfer must keep an average of
/// [`MIN_PULL_RATE`] after [`PULL_GRACE`], which also bounds its total time.
/// Returns the bytes received.
pub async fn fetch_blob(
    http: &reqwest::Client,
    store: &BlobStore,
    url: &str,
    source: &str,
    h: BlobHash,
    size: u64,
) -> Result<u64, PullError> {
    let (st, src) = (store.clone(), source.to_string());
    let writer = tokio::task::spawn_blocking(move || st.partial(h, size, &src))
        .await
        .map_err(|e| PullError::Local(e.to_string()))?
        .map_err(PullError::from_store)?;
    let have = writer.offset();
    let started = tokio::time::Instant::now();
    let mut req = http
        .get(format!("{url}/.well-known/p2pcdn/v1/blob/{h}"))
        .timeout(Duration::from_secs(3600));
    if have > 0 && have < size {
        req = req.header("range", format!("bytes={have}-"));
    }
    // Response headers come quickly from a live peer; a pooled connection
    // into a partition would otherwise wait for the whole-request timeout.
    let resp = tokio::time::timeout(HEADERS_TIMEOUT, req.send())
        .await
        .map_err(|_| PullError::NoResponse(HEADERS_TIMEOUT.as_secs()))?
        .map_err(|e| PullError::Transport(e.to_string()))?;
    let status = resp.status();
    let writer = if status == reqwest::StatusCode::PARTIAL_CONTENT && have > 0 {
        tracing::info!(blob = %h.short(), resumed_at = have, "resuming partial download");
        writer
    } else if status.is_success() {
        if have > 0 {
            on_writer(writer, |w| w.restart()).await?.0
        } else {
            writer
        }
    } else {
        return Err(PullError::Status(status.as_u16()));
    };
    let mut stream = resp.bytes_stream();
    let mut received: u64 = 0;
    // Bytes handed to the writer (written, or in the write under way).
    let mut submitted = writer.offset();
    let mut sink = Sink::Idle(Box::new(writer));
    // Chunks as they arrived, handed to the writer together once they add up
    // to a batch (written with one vectored write, never copied together).
    // One batch is written on the blocking pool while the next arrives.
    let mut batch: Vec<bytes::Bytes> = Vec::new();
    let mut batch_len: u64 = 0;
    loop {
        // Wake at least every 250 ms, so a source that sends nothing is
        // measured against the minimum rate too.
        let next = tokio::time::timeout(Duration::from_millis(250), stream.next()).await;
        let mut done = false;
        match next {
            Ok(None) => done = true,
            Ok(Some(chunk)) => {
                let chunk = chunk.map_err(|e| PullError::Transport(e.to_string()))?;
                received += chunk.len() as u64;
                if submitted + batch_len + chunk.len() as u64 > size {
                    sink.writer().await?.abandon();
                    return Err(PullError::TooLong(size));
                }
                batch_len += chunk.len() as u64;
                batch.push(chunk);
            }
            Err(_) => {}
        }
        if batch_len >= BATCH || (done && batch_len > 0) {
            let data = std::mem::take(&mut batch);
            submitted += batch_len;
            batch_len = 0;
            sink = sink.write(data).await?;
        }
        if done {
            break;
        }
        let elapsed = started.elapsed();
        let held = submitted + batch_len;
        if held < size && too_slow(received, elapsed) {
            let data = std::mem::take(&mut batch);
            // Keep what arrived: the download resumes from this source.
            if let Ok(w) = sink.writer().await {
                let _ =
                    on_writer(w, move |w| w.append_chunks(&data).and_then(|()| w.flush())).await;
            }
            return Err(PullError::TooSlow {
                bytes: received,
                millis: elapsed.as_millis() as u64,
            });
        }
    }
    let writer = sink.writer().await?;
    tokio::task::spawn_blocking(move || writer.finish())
        .await
        .map_err(|e| PullError::Local(e.to_string()))?
        .map_err(PullError::from_store)?;
    Ok(received)
}
