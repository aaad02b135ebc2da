//! Replication: a mirror that holds a newer valid manifest it is authorized
//! for pulls the missing blobs from peers that hold the site (healthy ones
//! first, those holding the newest version first, then by RTT and load),
//! several in parallel, resuming partial downloads, hashing while it
//! streams; only a complete, verified set switches the served version
//! (`Db::complete`, one transaction).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::{Federation, Peer};
use crate::catalog::unix_now;
use crate::db::ManifestState;
use crate::hash::BlobHash;
use crate::sites::{SiteName, Version};

/// Blobs fetched at once.
const PARALLEL: usize = 4;
/// Longest wait for a peer's response headers to a blob request.
const HEADERS_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until shutdown: on every manifest arrival and every second.
pub async fn run(fed: Arc<Federation>, mut stop: watch::Receiver<bool>) {
    let mut round: u64 = 0;
    let mut notified = true;
    loop {
        // Served (complete) versions are checked for missing blobs only when
        // something reported a problem, and every 30 s: that costs one stat()
        // per blob.
        replicate_once(&fed, notified, round % 30 == 0).await;
        round = round.wrapping_add(1);
        notified = false;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = fed.replicate_now.notified() => notified = true,
            _ = stop.changed() => break,
        }
    }
}

/// Re-hashes every blob of every served version once an hour (and shortly
/// after start), quarantining corrupt ones; the replicator then re-fetches
/// them from peers.
pub async fn scrub_loop(fed: Arc<Federation>, mut stop: watch::Receiver<bool>) {
    let mut wait = Duration::from_secs(30);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
        wait = Duration::from_secs(3600);
        let cat = fed.catalog.load_full();
        let wanted: Vec<(BlobHash, u64)> = cat
            .sites()
            .filter_map(|s| s.current.as_ref())
            .flat_map(|m| m.blobs())
            .collect();
        let store = fed.store.clone();
        let bad = tokio::task::spawn_blocking(move || store.scrub(&wanted))
            .await
            .unwrap_or_default();
        if bad.is_empty() {
            tracing::debug!("scrub: every served blob verified");
        } else {
            tracing::warn!(
                blobs = bad.len(),
                "scrub: missing or corrupt blobs; re-fetching from peers"
            );
            fed.replicate_now.notify_one();
        }
    }
}

/// Whether `me` may serve content of a manifest with this mirror list.
pub fn authorized(mirrors: &[crate::keys::PublicKey], me: &crate::keys::PublicKey) -> bool {
    mirrors.is_empty() || mirrors.contains(me)
}

/// One replication pass. `notified`: something asked for it (a manifest
/// arrived, a blob went missing); `slow_round`: the ~30 s round, which also
/// checks served versions for missing blobs and asks peers that do not
/// report the version being replicated.
async fn replicate_once(fed: &Arc<Federation>, notified: bool, slow_round: bool) {
    let now = unix_now();
    let check_complete = notified || slow_round;
    for site in fed.config().sites.iter().filter(|s| s.mirror) {
        let row = match fed.db.newest_manifest(&site.hostname) {
            // Pending: still replicating. Complete: repair blobs that went
            // missing (quarantined after failing verification).
            Ok(Some(r))
                if r.state == ManifestState::Pending
                    || (check_complete && r.state == ManifestState::Complete) =>
            {
                r
            }
            _ => continue,
        };
        let vm = match fed.sites.verified(&row, now) {
            Ok(vm) => vm,
            Err(e) => {
                tracing::warn!(site = %site.hostname, version = row.version, error = %e, "pending manifest no longer valid");
                continue;
            }
        };
        if !authorized(&vm.manifest.mirrors, &fed.me) {
            tracing::debug!(site = %site.hostname, version = row.version, "not authorized by the owner to mirror this version");
            continue;
        }
        let missing: Vec<(BlobHash, u64)> = vm
            .blobs()
            .into_iter()
            .filter(|(h, s)| !fed.store.contains(h, *s))
            .collect();
        if !missing.is_empty() {
            let sources = sources_for(fed, &site.hostname, row.version, &vm.manifest.mirrors, now);
            if sources.0.is_empty() {
                tracing::debug!(site = %site.hostname, "no healthy peer holds this site yet");
                continue;
            }
            // Nobody reports this version yet (the manifest travels ahead of
            // its holders' next reports): wait for a report rather than ask
            // peers that most likely lack the new blobs; on the slow rounds
            // try them anyway (blobs shared with older versions).
            if sources.1 == 0 && !slow_round {
                tracing::debug!(site = %site.hostname, version = row.version, "no peer reports this version yet");
                continue;
            }
            tracing::info!(site = %site.hostname, version = row.version, blobs = missing.len(), sources = sources.0.len(), with_version = sources.1, "replicating");
            let sources = Arc::new(sources);
            let jobs: Vec<_> = missing
                .iter()
                .copied()
                .enumerate()
                .map(|(i, (h, size))| {
                let fed = fed.clone();
                let sources = sources.clone();
                let site = site.hostname.clone();
                async move {
                    for k in source_order(sources.0.len(), sources.1, i) {
                        let Some(p) = sources.0.get(k) else { continue };
                        // Another job may have caught this source misbehaving
                        // (skipped only while another source is usable).
                        if !fed.source_usable(&p.key)
                            && sources.0.iter().any(|o| fed.source_usable(&o.key))
                        {
                            continue;
                        }
                        let pulled =
                            fetch_blob(&fed.http, &fed.store, &p.url, &p.key.to_string(), h, size)
                                .await;
                        crate::metrics::Metrics::count(
                            &fed.metrics.blob_pulls,
                            if pulled.is_ok() { "ok" } else { "failed" },
                        );
                        match pulled {
                            Ok(()) => {
                                fed.source_succeeded(&p.key, &site);
                                return true;
                            }
                            Err(e) if e.blames_source() => {
                                let backoff = fed.source_failed(&p.key);
                                tracing::warn!(blob = %h.short(), peer = %p.name, error = %e, backoff_s = backoff.as_secs(), "blob pull failed: source misbehaved; skipping it for a while");
                            }
                            Err(e) => tracing::warn!(blob = %h.short(), peer = %p.name, error = %e, "blob pull failed; trying another peer"),
                        }
                    }
                    false
                }
            })
            .collect();
            let results = futures_util::stream::iter(jobs)
                .buffer_unordered(PARALLEL)
                .collect::<Vec<bool>>()
                .await;
            if results.iter().any(|ok| !ok) {
                continue;
            }
        }
        let still_missing = vm.blobs().iter().any(|(h, s)| !fed.store.contains(h, *s));
        if still_missing || row.state == ManifestState::Complete {
            if row.state == ManifestState::Complete && !missing.is_empty() && !still_missing {
                tracing::info!(site = %site.hostname, blobs = missing.len(), "repaired missing or corrupt blobs from peers");
            }
            continue;
        }
        if let Err(e) =
            fed.sites
                .complete(&SiteName::new(&site.hostname), Version(row.version), now)
        {
            tracing::error!(error = %e, "could not mark version complete");
        }
    }
}

/// The order in which blob job `job` tries `n` sources whose first `m`
/// hold exactly the version being replicated: those first, then the others
/// (which may hold the blob through an older version); each group rotated
/// by the job number so parallel pulls spread over peers.
pub fn source_order(n: usize, m: usize, job: usize) -> impl Iterator<Item = usize> {
    let m = m.min(n);
    let rest = n - m;
    (0..m)
        .map(move |k| (job + k) % m)
        .chain((0..rest).map(move |k| m + (job + k) % rest))
}

/// Healthy peers (last probe answered) that report holding the site and
/// may be asked for it (authorized by `mirrors`, the manifest being
/// replicated, or already delivered verified bytes of the site; not backed
/// off after a failed pull, see [`super::sources`]), best first, and how many
/// of them (a prefix) hold exactly `version`. Order: holders of `version`
/// first, then by measured RTT, then by self-reported load (a claim, so it
/// only breaks ties). When every eligible source is backed off, they are
/// all returned anyway (a slow machine must not lock itself out of its only
/// source); a misbehaving source among good ones stays skipped.
fn sources_for(
    fed: &Federation,
    site: &str,
    version: u64,
    mirrors: &[crate::keys::PublicKey],
    now: u64,
) -> (Vec<Peer>, usize) {
    let usable = sources_among(fed, site, version, mirrors, now, true);
    if usable.0.is_empty() {
        return sources_among(fed, site, version, mirrors, now, false);
    }
    usable
}

fn sources_among(
    fed: &Federation,
    site: &str,
    version: u64,
    mirrors: &[crate::keys::PublicKey],
    now: u64,
    only_usable: bool,
) -> (Vec<Peer>, usize) {
    let mut v: Vec<(bool, f64, f64, Peer)> = fed
        .peers()
        .into_iter()
        // A peer whose last probe missed is skipped even while it still
        // counts as up: its blob requests would wait for HEADERS_TIMEOUT.
        .filter(|p| p.healthy(now) && !p.probe.last_missed())
        .filter(|p| {
            super::sources::eligible(mirrors, &p.key, fed.source_delivered(&p.key, site))
                && (!only_usable || fed.source_usable(&p.key))
        })
        .filter_map(|p| {
            let r = p.report.as_ref()?;
            let held = p.holds(site, now)?;
            let load = r.report.load.fraction(&r.report.capacity);
            Some((held != version, p.probe.rtt_ms().unwrap_or(1e6), load, p))
        })
        .collect();
    v.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.1.total_cmp(&b.1).then(a.2.total_cmp(&b.2)))
    });
    let m = v.iter().take_while(|x| !x.0).count();
    (v.into_iter().map(|x| x.3).collect(), m)
}

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
    #[error("source too slow: {bytes} bytes in {millis} ms (minimum {min} B/s after the first {grace_ms} ms)", min = super::sources::MIN_PULL_RATE, grace_ms = super::sources::PULL_GRACE.as_millis())]
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
}

/// Downloads one blob from `url`, resuming a partial file only if `source`
/// (the peer's key) wrote it, hashing while streaming; commits it to the
/// store only if size and BLAKE3 match. The transfer must keep an average of
/// [`super::sources::MIN_PULL_RATE`] after [`super::sources::PULL_GRACE`],
/// which also bounds its total time.
pub async fn fetch_blob(
    http: &reqwest::Client,
    store: &crate::store::BlobStore,
    url: &str,
    source: &str,
    h: BlobHash,
    size: u64,
) -> Result<(), PullError> {
    use super::sources::too_slow;
    let part = store.partial_path(&h);
    let store = store.clone();
    let part2 = part.clone();
    let store2 = store.clone();
    let source2 = source.to_string();
    // Re-hash what an interrupted download from the same source left
    // behind; bytes another source wrote are discarded, so a bad source can
    // never make a good one look bad.
    let (hasher, have) = tokio::task::spawn_blocking(move || -> (blake3::Hasher, u64) {
        let mut hasher = blake3::Hasher::new();
        if store2.partial_source(&h).as_deref() != Some(source2.as_str()) {
            if part2.exists() {
                tracing::info!(blob = %h.short(), "discarding a partial download written by another source");
            }
            store2.discard_partial(&h);
            return (hasher, 0);
        }
        match std::fs::File::open(&part2) {
            Ok(f) => match hasher.update_reader(f).map(|h| h.count()) {
                Ok(n) if n <= size => (hasher, n),
                _ => {
                    store2.discard_partial(&h);
                    (blake3::Hasher::new(), 0)
                }
            },
            Err(_) => (hasher, 0),
        }
    })
    .await
    .map_err(|e| PullError::Local(e.to_string()))?;
    let mut hasher = hasher;
    let mut have = have;
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
    let local = |e: std::io::Error| PullError::Local(format!("{}: {e}", part.display()));
    let file = if status == reqwest::StatusCode::PARTIAL_CONTENT && have > 0 {
        tokio::fs::OpenOptions::new()
            .append(true)
            .open(&part)
            .await
            .map_err(local)?
    } else if status.is_success() {
        hasher = blake3::Hasher::new();
        have = 0;
        let f = tokio::fs::File::create(&part).await.map_err(local)?;
        let (st, src, hh) = (store.clone(), source.to_string(), h);
        tokio::task::spawn_blocking(move || st.set_partial_source(&hh, &src))
            .await
            .map_err(|e| PullError::Local(e.to_string()))?
            .map_err(|e| PullError::Local(e.to_string()))?;
        f
    } else {
        return Err(PullError::Status(status.as_u16()));
    };
    if have > 0 {
        tracing::info!(blob = %h.short(), resumed_at = have, "resuming partial download");
    }
    // Each tokio::fs write is a round trip to the blocking pool; batch the
    // network's small chunks into 1 MiB writes. A partial file stays a prefix
    // of the blob whatever is lost unflushed, so resuming remains correct.
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut stream = resp.bytes_stream();
    let mut received: u64 = 0;
    loop {
        // Wake at least every 250 ms, so a source that sends nothing is
        // measured against the minimum rate too.
        let next = tokio::time::timeout(Duration::from_millis(250), stream.next()).await;
        match next {
            Ok(None) => break,
            Ok(Some(chunk)) => {
                let chunk = chunk.map_err(|e| PullError::Transport(e.to_string()))?;
                have += chunk.len() as u64;
                received += chunk.len() as u64;
                if have > size {
                    drop(file);
                    store.discard_partial(&h);
                    return Err(PullError::TooLong(size));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(local)?;
            }
            Err(_) => {}
        }
        let elapsed = started.elapsed();
        if have < size && too_slow(received, elapsed) {
            let _ = file.flush().await;
            return Err(PullError::TooSlow {
                bytes: received,
                millis: elapsed.as_millis() as u64,
            });
        }
    }
    file.flush().await.map_err(local)?;
    drop(file);
    if have < size {
        return Err(PullError::Truncated { have, size });
    }
    let got = BlobHash::from(hasher.finalize());
    if got != h {
        store.discard_partial(&h);
        return Err(PullError::WrongBytes {
            got: got.short().to_string(),
            want: h.short().to_string(),
        });
    }
    tokio::task::spawn_blocking(move || store.commit_partial(&h, &part))
        .await
        .map_err(|e| PullError::Local(e.to_string()))?
        .map_err(|e| PullError::Local(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::source_order;

    #[test]
    fn sources_holding_the_version_are_tried_first_and_rotated() {
        // 5 sources, the first 2 hold the version.
        for job in 0..10 {
            let order: Vec<usize> = source_order(5, 2, job).collect();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, vec![0, 1, 2, 3, 4], "each source once");
            assert!(order[..2].iter().all(|&k| k < 2), "{order:?}");
            assert_eq!(order[0], job % 2);
            assert_eq!(order[2], 2 + job % 3);
        }
        assert_eq!(source_order(3, 0, 1).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert_eq!(source_order(2, 5, 1).collect::<Vec<_>>(), vec![1, 0]);
        assert_eq!(source_order(0, 0, 3).count(), 0);
    }
}
