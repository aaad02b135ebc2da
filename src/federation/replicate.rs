//! Replication: a mirror that holds a newer valid manifest it is authorized
//! for pulls the missing blobs from its peers by swarming: it polls the
//! availability (`have`) of the peers replicating the same version, and a
//! pure planner ([`plan`]) decides who fetches which blob from whom so the
//! origin sends each byte about once; several blobs are pulled in parallel
//! from different peers. Each pull streams into the store's resumable
//! [`crate::store::PartialWriter`], which verifies every byte; only a
//! complete, verified set switches the served version (`Db::complete`, one
//! transaction). Reports still say "holds" only for complete versions, so a
//! partially replicated version is never steered to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Federation;
use crate::catalog::unix_now;
use crate::db::ManifestState;
use crate::hash::BlobHash;
use crate::keys::PublicKey;
use crate::manifest::VerifiedManifest;
use crate::sites::{SiteName, Version};

pub mod book;
pub mod fetch;
pub mod have;
pub mod plan;

pub use fetch::{fetch_blob, PullError, HEADERS_TIMEOUT};

use book::{SwarmBook, Track};
use have::Bitmap;
use plan::{Candidate, Holding};

/// Blobs fetched at once.
pub(crate) const PARALLEL: usize = 4;
/// Longest wait for a peer's availability answer.
const HAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Blob pulls running in the background (at most [`PARALLEL`]): a pass
/// starts pulls and returns, so a pull that ends frees its slot for the next
/// blob at once instead of waiting for the slowest pull of its pass.
#[derive(Default)]
struct Pulls {
    tasks: JoinSet<bool>,
    running: HashMap<tokio::task::Id, BlobHash>,
}

impl Pulls {
    fn is_running(&self, h: &BlobHash) -> bool {
        self.running.values().any(|r| r == h)
    }

    fn free(&self) -> usize {
        PARALLEL.saturating_sub(self.running.len())
    }

    fn spawn(
        &mut self,
        h: BlobHash,
        pull: impl std::future::Future<Output = bool> + Send + 'static,
    ) {
        let id = self.tasks.spawn(pull).id();
        self.running.insert(id, h);
    }

    /// Records an ended pull; true when it stored its blob.
    fn ended(&mut self, r: Result<(tokio::task::Id, bool), tokio::task::JoinError>) -> bool {
        match r {
            Ok((id, ok)) => {
                self.running.remove(&id);
                ok
            }
            Err(e) => {
                self.running.remove(&e.id());
                tracing::warn!(error = %e, "blob pull task ended abnormally");
                false
            }
        }
    }

    /// Collects pulls that ended without being waited for.
    fn reap(&mut self) {
        while let Some(r) = self.tasks.try_join_next_with_id() {
            self.ended(r);
        }
    }
}

/// Runs until shutdown: on every manifest arrival, whenever a pull stores a
/// blob, every second, and every 250 ms while blobs are being pulled or wait
/// for another replicator.
pub async fn run(fed: Arc<Federation>, mut stop: watch::Receiver<bool>) {
    let mut round: u64 = 0;
    let mut notified = true;
    let mut book = SwarmBook::default();
    let mut pulls = Pulls::default();
    let blobs = blob_client(&fed);
    'passes: loop {
        // Served (complete) versions are checked for missing blobs only when
        // something reported a problem, and every 30 s: that costs one stat()
        // per blob.
        pulls.reap();
        let waiting = replicate_once(
            &fed,
            &blobs,
            &mut book,
            &mut pulls,
            notified,
            round % 30 == 0,
        )
        .await;
        round = round.wrapping_add(1);
        notified = false;
        let pause = if waiting || !pulls.running.is_empty() {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(1)
        };
        let until = tokio::time::Instant::now() + pause;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                // A stored blob: plan again now (its slot is free, and peers
                // may wait for it). A failed pull waits for the timer, so a
                // source failing at once cannot spin this loop.
                Some(r) = pulls.tasks.join_next_with_id(), if !pulls.tasks.is_empty() => {
                    if pulls.ended(r) {
                        break;
                    }
                }
                _ = fed.replicate_now.notified() => {
                    notified = true;
                    break;
                }
                _ = stop.changed() => break 'passes,
            }
        }
    }
    // Pulls cut here keep their bytes for resuming.
    pulls.tasks.shutdown().await;
}

/// The client for blob pulls: the peer client's settings over HTTP/1.1, so
/// parallel pulls from one peer run on separate connections (and cores)
/// instead of sharing one HTTP/2 connection's frames and flow control. Falls
/// back to the shared peer client.
fn blob_client(fed: &Federation) -> reqwest::Client {
    match super::client_builder(&fed.config()).and_then(|b| {
        b.http1_only()
            .dns_resolver(fed.resolver.clone())
            .build()
            .map_err(|e| super::FederationError::Client(e.to_string()))
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "blob client: using the shared peer client");
            fed.http.clone()
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
/// checks served versions for missing blobs. Returns whether blobs are
/// waiting for another replicator (poll again soon).
async fn replicate_once(
    fed: &Arc<Federation>,
    blobs_client: &reqwest::Client,
    book: &mut SwarmBook,
    pulls: &mut Pulls,
    notified: bool,
    slow_round: bool,
) -> bool {
    let now = unix_now();
    let check_complete = notified || slow_round;
    let mut waiting = false;
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
        let blobs = vm.blobs();
        let missing: Vec<usize> = (0..blobs.len())
            .filter(|&i| !fed.store.contains(&blobs[i].0, blobs[i].1))
            .collect();
        if !missing.is_empty() {
            let pass = swarm_pass(
                fed,
                blobs_client,
                book,
                pulls,
                &site.hostname,
                &vm,
                &blobs,
                &missing,
            )
            .await;
            waiting |= pass;
        }
        let still_missing = blobs.iter().any(|(h, s)| !fed.store.contains(h, *s));
        if still_missing || row.state == ManifestState::Complete {
            if row.state == ManifestState::Complete && !missing.is_empty() && !still_missing {
                tracing::info!(site = %site.hostname, blobs = missing.len(), "repaired missing or corrupt blobs from peers");
            }
            continue;
        }
        book.done(&site.hostname);
        if let Err(e) =
            fed.sites
                .complete(&SiteName::new(&site.hostname), Version(row.version), now)
        {
            tracing::error!(error = %e, "could not mark version complete");
        }
    }
    waiting
}

/// Healthy peers (last probe answered) that may be asked for a site's blobs
/// (authorized by `mirrors`, the manifest being replicated, or already
/// delivered verified bytes of the site; see [`super::sources`]).
fn eligible_peers(
    fed: &Federation,
    site: &str,
    mirrors: &[PublicKey],
    now: u64,
) -> Vec<super::Peer> {
    fed.peers()
        .into_iter()
        // A peer whose last probe missed is skipped even while it still
        // counts as up: its requests would wait for the timeouts.
        .filter(|p| p.healthy(now) && !p.probe.last_missed())
        .filter(|p| super::sources::eligible(mirrors, &p.key, fed.source_delivered(&p.key, site)))
        .collect()
}

/// `GET /have/{site}/{version}` from one peer: Ok(Some) a bitmap, Ok(None)
/// the peer does not replicate this version, Err a failure.
async fn poll_have(
    http: &reqwest::Client,
    url: &str,
    site: &str,
    version: u64,
    blobs: usize,
) -> Result<Option<Bitmap>, String> {
    let resp = http
        .get(format!("{url}/.well-known/p2pcdn/v1/have/{site}/{version}"))
        .timeout(HAVE_TIMEOUT)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match resp.status() {
        reqwest::StatusCode::OK => {}
        reqwest::StatusCode::NOT_FOUND => return Ok(None),
        s => return Err(format!("HTTP {s}")),
    }
    // Read at most the bitmap's length (a peer cannot make us buffer more).
    let limit = blobs.div_ceil(8);
    let mut resp = resp;
    let mut body: Vec<u8> = Vec::with_capacity(limit);
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > limit {
            return Err("availability answer too long".into());
        }
        body.extend_from_slice(&chunk);
    }
    Bitmap::parse(&body, blobs)
        .map(Some)
        .ok_or_else(|| "malformed availability bitmap".into())
}

/// Polls the availability of `peers` that are due, in parallel.
async fn poll_peers(
    fed: &Federation,
    track: &mut Track,
    peers: &[&super::Peer],
    site: &str,
    version: u64,
    blobs: usize,
) {
    let at = Instant::now();
    let due: Vec<&super::Peer> = peers
        .iter()
        .copied()
        .filter(|p| track.poll_due(&p.key, at))
        .collect();
    let answers = futures_util::future::join_all(
        due.iter()
            .map(|p| poll_have(&fed.http, &p.url, site, version, blobs)),
    )
    .await;
    let now = Instant::now();
    for (p, a) in due.iter().zip(answers) {
        match a {
            Ok(h) => track.answered(&p.key, h, now),
            Err(e) => {
                tracing::debug!(peer = %p.name, error = %e, "availability poll failed");
                track.poll_failed(&p.key, now);
            }
        }
    }
}

/// For how long after a new version appears every authorized peer without
/// it is presumed to replicate it (two gossip intervals, at least 1 s: time
/// for the manifest to reach them and for them to answer polls); after
/// that only peers seen replicating and progressing count.
fn settle(fed: &Federation) -> Duration {
    Duration::from_millis(fed.config().federation.gossip_interval_ms.saturating_mul(2))
        .max(Duration::from_secs(1))
}

/// One swarming pass over the missing blobs (indexes into `blobs`, the
/// manifest's blob order) of `site` at `vm`'s version: poll availability,
/// plan, and start pulls of blobs not already being pulled into the free
/// slots of `pulls`. Returns whether blobs wait for another replicator or a
/// free slot (try again soon).
#[allow(clippy::too_many_arguments)]
async fn swarm_pass(
    fed: &Arc<Federation>,
    blobs_client: &reqwest::Client,
    book: &mut SwarmBook,
    pulls: &mut Pulls,
    site: &str,
    vm: &VerifiedManifest,
    blobs: &[(BlobHash, u64)],
    missing: &[usize],
) -> bool {
    let version = vm.manifest.version;
    let now = unix_now();
    let track = book.track(site, version, Instant::now());
    let peers = eligible_peers(fed, site, &vm.manifest.mirrors, now);
    // Peers whose report holds this version hold every blob; the others are
    // asked what they hold.
    let to_poll: Vec<&super::Peer> = peers
        .iter()
        .filter(|p| p.holds(site, now) != Some(version))
        .collect();
    poll_peers(fed, track, &to_poll, site, version, blobs.len()).await;
    let at = Instant::now();
    let settled = track.settled(at, settle(fed));
    let mut presumed: Vec<PublicKey> = vec![];
    let all: Vec<Candidate> = peers
        .iter()
        .filter_map(|p| {
            let held = p.holds(site, now);
            let bitmap = track.holding(&p.key, at);
            let full = held == Some(version) || bitmap.is_some_and(Bitmap::complete);
            // Until the replicators had time to get the manifest and answer,
            // every authorized peer still without the version is presumed to
            // replicate it, so the first-fetcher split is right from the
            // start and nobody waits to ask an origin.
            if !settled
                && !full
                && authorized(&vm.manifest.mirrors, &p.key)
                && fed.source_usable(&p.key)
            {
                presumed.push(p.key);
            }
            let holding = if full {
                Holding::All
            } else if let Some(b) = bitmap {
                Holding::Some(b.clone())
            } else if held.is_some() {
                Holding::Maybe
            } else {
                return None;
            };
            let load = p
                .report
                .as_ref()
                .map_or(1.0, |r| r.report.load.fraction(&r.report.capacity));
            Some(Candidate {
                key: p.key,
                origin: full && !track.seen_replicating(&p.key),
                rtt_ms: p.probe.rtt_ms(),
                load,
                holding,
            })
        })
        .collect();
    // Sources backed off after misbehaving are left out, unless every
    // candidate is (a slow machine must not lock itself out of its only
    // source).
    let usable: Vec<Candidate> = all
        .iter()
        .filter(|c| fed.source_usable(&c.key))
        .cloned()
        .collect();
    let candidates = if usable.is_empty() { all } else { usable };
    let sized: Vec<(usize, u64)> = missing.iter().map(|&i| (i, blobs[i].1)).collect();
    let overdue = track.overdue(&sized, at);
    // A replicator backed off after misbehaving as a source loses its
    // share of first fetches (its blobs would otherwise wait for it).
    let mut replicators: Vec<PublicKey> = track
        .replicators(at)
        .into_iter()
        .filter(|k| fed.source_usable(k))
        .collect();
    for k in presumed {
        if !replicators.contains(&k) {
            replicators.push(k);
        }
    }
    // Blobs being pulled are neither planned nor waiting.
    let missing: Vec<usize> = missing
        .iter()
        .copied()
        .filter(|&i| !pulls.is_running(&blobs[i].0))
        .collect();
    if missing.is_empty() {
        return false;
    }
    let plan = plan::plan(&plan::Input {
        me: fed.me,
        blobs,
        missing: &missing,
        candidates: &candidates,
        replicators: &replicators,
        origin_open: &overdue,
    });
    if plan.fetch.is_empty() {
        tracing::debug!(
            site,
            version,
            waiting = plan.waiting.len(),
            candidates = candidates.len(),
            "replication: nothing to fetch yet"
        );
        return true;
    }
    tracing::info!(
        site,
        version,
        fetch = plan.fetch.len(),
        waiting = plan.waiting.len(),
        candidates = candidates.len(),
        replicators = replicators.len(),
        "replicating"
    );
    let peers_by_key: HashMap<PublicKey, &super::Peer> = peers.iter().map(|p| (p.key, p)).collect();
    let free = pulls.free();
    for f in plan.fetch.iter().take(free) {
        let (h, size) = blobs[f.blob];
        let sources: Vec<(PublicKey, String, String, bool)> = f
            .sources
            .iter()
            .filter_map(|&k| {
                let c = candidates.get(k)?;
                let p = peers_by_key.get(&c.key)?;
                Some((c.key, p.url.clone(), p.name.clone(), c.origin))
            })
            .collect();
        let fed = fed.clone();
        let client = blobs_client.clone();
        let site = site.to_string();
        pulls.spawn(h, async move {
            pull_one(&fed, &client, &site, h, size, &sources).await
        });
    }
    !plan.waiting.is_empty() || plan.fetch.len() > free
}

/// Pulls one blob, trying `sources` (key, URL, name, is-origin) in order;
/// a source that misbehaves is blamed and backed off.
async fn pull_one(
    fed: &Federation,
    client: &reqwest::Client,
    site: &str,
    h: BlobHash,
    size: u64,
    sources: &[(PublicKey, String, String, bool)],
) -> bool {
    for (key, url, name, origin) in sources {
        // Another job may have caught this source misbehaving (skipped only
        // while another source is usable).
        if !fed.source_usable(key) && sources.iter().any(|o| fed.source_usable(&o.0)) {
            continue;
        }
        let pulled = fetch_blob(client, &fed.store, url, &key.to_string(), h, size).await;
        crate::metrics::Metrics::count(
            &fed.metrics.blob_pulls,
            if pulled.is_ok() { "ok" } else { "failed" },
        );
        match pulled {
            Ok(bytes) => {
                tracing::debug!(blob = %h.short(), peer = %name, origin, bytes, "blob pulled");
                fed.source_succeeded(key, site);
                return true;
            }
            Err(e) if e.blames_source() => {
                let backoff = fed.source_failed(key);
                tracing::warn!(blob = %h.short(), peer = %name, error = %e, backoff_s = backoff.as_secs(), "blob pull failed: source misbehaved; skipping it for a while");
            }
            Err(e) => {
                tracing::warn!(blob = %h.short(), peer = %name, error = %e, "blob pull failed; trying another peer")
            }
        }
    }
    false
}
