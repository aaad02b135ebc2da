//! The agent's background loops: signed reports, anti-entropy gossip with
//! binding of new peers, and health probes. Each loop stops on shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::IndexedRandom;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::pace::{self, Pace};
use super::wire::{Bundle, SyncResponse};
use super::{replicate, Federation, Peer};
use crate::catalog::unix_now;
use crate::report::{self, Capacity, Held, Load, Report};

/// Starts the report, gossip, probe and replication loops.
pub fn spawn(fed: Arc<Federation>, tasks: &mut JoinSet<()>, shutdown: watch::Receiver<bool>) {
    tasks.spawn(report_loop(fed.clone(), shutdown.clone()));
    tasks.spawn(gossip_loop(fed.clone(), shutdown.clone()));
    tasks.spawn(probe_loop(fed.clone(), shutdown.clone()));
    tasks.spawn(super::swim::run(fed.clone(), shutdown.clone()));
    tasks.spawn(super::memory::run(fed.clone(), shutdown.clone()));
    tasks.spawn(replicate::scrub_loop(fed.clone(), shutdown.clone()));
    tasks.spawn(replicate::run(fed, shutdown));
}

/// The certificates this node serves for its mirrored sites (`None`
/// without an HTTPS listener).
pub fn cert_states(fed: &Federation, now: u64) -> Option<Vec<crate::report::CertState>> {
    let store = fed.certs()?;
    Some(
        fed.config()
            .sites
            .iter()
            .filter(|s| s.mirror)
            .filter_map(|s| {
                store
                    .valid_for(&s.hostname, now)
                    .map(|c| crate::report::CertState {
                        site: s.hostname.clone(),
                        not_after: c.not_after,
                        source: c.source,
                    })
            })
            .collect(),
    )
}

/// This node's current state as an unsigned report (sequence and times
/// filled in by [`make_report`]). Floats are rounded to a useful precision
/// (loads to 0.01, RTTs to 0.1 ms) so the JSON stays short.
pub fn current_report(fed: &Federation) -> Report {
    let cfg = fed.config();
    let now = unix_now();
    let (rps, bps) = fed.load.rates();
    let holds = fed
        .catalog
        .load()
        .versions()
        .into_iter()
        .map(|(site, version)| Held { site, version })
        .collect();
    let mut client_rtt = fed.client_rtt.snapshot();
    for c in &mut client_rtt {
        c.rtt_ms = report::round_to(c.rtt_ms, 1);
    }
    Report {
        format: report::FORMAT,
        node: fed.me,
        name: fed.name.clone(),
        url: fed.url.clone(),
        addresses: cfg.node.addresses.clone(),
        location: cfg.node.location,
        capacity: Capacity {
            rps: cfg.node.capacity_rps,
            bps: cfg.node.capacity_bps,
        },
        load: Load {
            rps: report::round_to(rps, 2),
            bps: report::round_to(bps, 0),
            connections: fed.connections.get(),
        },
        holds,
        mirrors: cfg
            .sites
            .iter()
            .filter(|s| s.mirror)
            .map(|s| s.hostname.clone())
            .collect(),
        rtt_ms: fed.rtts(),
        client_rtt,
        certs: cert_states(fed, now),
        seq: 0,
        issued: now,
        expires: now + cfg.federation.report_ttl_secs,
    }
}

/// Signs `r` as this node's next report (sequence: milliseconds, strictly
/// above the previous one).
pub fn make_report_from(fed: &Federation, mut r: Report) -> Option<crate::report::VerifiedReport> {
    let now = unix_now();
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let prev = fed.own_report().map_or(0, |r| r.report.seq);
    r.seq = millis.max(prev + 1);
    let signed = report::sign_report(&r, &fed.key).ok()?;
    report::verify_signed(signed, now).ok()
}

/// Builds and signs this node's current report.
pub fn make_report(fed: &Federation) -> Option<crate::report::VerifiedReport> {
    make_report_from(fed, current_report(fed))
}

/// Whether a new report is due: none yet, a third of the lifetime passed
/// since the last one was issued, or something material changed
/// ([`report::material_change`]).
pub fn report_due(old: Option<&Report>, current: &Report, now: u64, ttl_secs: u64) -> bool {
    let refresh_after = ttl_secs.div_ceil(3).max(1);
    old.is_none_or(|o| now >= o.issued + refresh_after || report::material_change(o, current))
}

async fn report_loop(fed: Arc<Federation>, mut stop: watch::Receiver<bool>) {
    let mut last = Instant::now();
    let mut pace = Pace::new(Duration::from_secs(1), pace::GOSSIP_SPREAD);
    loop {
        if pace.tick(&mut stop).await {
            break;
        }
        fed.load.tick(last.elapsed().as_secs_f64());
        last = Instant::now();
        // Re-sign only when something peers act on changed or a third of
        // the lifetime passed: unchanged reports are not re-gossiped.
        let current = current_report(&fed);
        let old = fed.own_report();
        let ttl = fed.config().federation.report_ttl_secs;
        if report_due(old.as_ref().map(|o| &o.report), &current, unix_now(), ttl) {
            if let Some(r) = make_report_from(&fed, current) {
                fed.set_own_report(r);
            }
        }
    }
}

async fn gossip_loop(fed: Arc<Federation>, mut stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(fed.config().federation.gossip_interval_ms);
    let mut rounds = JoinSet::new();
    let in_flight = Arc::new(std::sync::Mutex::new(
        std::collections::HashSet::<String>::new(),
    ));
    let mut pace = Pace::new(interval, pace::GOSSIP_SPREAD);
    loop {
        if pace.tick(&mut stop).await {
            break;
        }
        // Bind URLs we learned (bootstrap peers, URLs named in reports): a
        // few per round, from a bounded queue (`bindq`).
        let mut binds = JoinSet::new();
        for url in fed.binds_due(super::bindq::BINDS_PER_ROUND) {
            let fed = fed.clone();
            binds.spawn(async move {
                let r = fed.bind(&url).await;
                fed.bind_finished(&url, &r);
            });
        }
        while binds.join_next().await.is_some() {}

        // Anti-entropy with a few random peers. Exchanges run in the
        // background and the next round starts on time: a peer that hangs
        // (a partition keeps pooled connections open until the request
        // timeout) must not hold back exchanges with the others. A peer is
        // not picked again while its previous exchange is still running.
        while rounds.try_join_next().is_some() {}
        let peers = fed.peers();
        let busy: Vec<String> = in_flight
            .lock()
            .map(|f| f.iter().cloned().collect())
            .unwrap_or_default();
        // Partners share this node's interest (their reports are kept)
        // first; others only fill the remaining slots.
        let fanout = fed.config().federation.fanout;
        let mine = fed.interest().sites;
        let authorities = fed.zone_authority_names();
        let (kept, others): (Vec<&Peer>, Vec<&Peer>) = peers
            .iter()
            .partition(|p| gossip_partner(p, &mine, &authorities));
        // Up: peers whose reports we keep are probed (`probe_loop`); the
        // others are what SWIM membership says.
        let candidates = |ps: &[&Peer]| -> Vec<(String, String, bool)> {
            ps.iter()
                .map(|p| {
                    let up = if p.report.is_some() {
                        p.probe.is_up()
                    } else {
                        fed.membership.state_of(&p.key) == Some(super::membership::State::Alive)
                    };
                    (p.url.clone(), p.name.clone(), up)
                })
                .collect()
        };
        let mut chosen = choose_gossip_peers(&candidates(&kept), &busy, fanout, &mut rand::rng());
        if chosen.len() < fanout {
            chosen.extend(choose_gossip_peers(
                &candidates(&others),
                &busy,
                fanout - chosen.len(),
                &mut rand::rng(),
            ));
        }
        for (url, name) in chosen {
            if let Ok(mut f) = in_flight.lock() {
                f.insert(url.clone());
            }
            let fed = fed.clone();
            let in_flight = in_flight.clone();
            rounds.spawn(async move {
                let outcome = match sync_with(&fed, &url).await {
                    Ok(()) => {
                        if fed.note_sync_error(&url, None) {
                            tracing::info!(peer = %name, "sync with peer works again");
                        }
                        "ok"
                    }
                    Err(e) => {
                        // A bound peer that stops syncing is worth a WARN
                        // (partition, certificate, overload), once per cause.
                        if fed.note_sync_error(&url, Some(&e)) {
                            tracing::warn!(peer = %name, error = %e, "sync with peer failed (will retry)");
                        } else {
                            tracing::debug!(peer = %name, error = %e, "sync failed");
                        }
                        "failed"
                    }
                };
                crate::metrics::Metrics::count(&fed.metrics.gossip_exchanges, outcome);
                if let Ok(mut f) = in_flight.lock() {
                    f.remove(&url);
                }
            });
        }
    }
    rounds.abort_all();
}

/// Whether `p` is a preferred gossip partner: its report is kept and names
/// one of this node's sites (a mirror of them, the core of a thinly
/// followed one), or it is an authority of one of their zones (`authorities`:
/// NS names). Other authorities, whose reports name no site and are kept by
/// everyone, only fill remaining slots: partners, and so the load on
/// authorities, stay within this node's zones.
pub fn gossip_partner(
    p: &Peer,
    mine: &std::collections::BTreeSet<String>,
    authorities: &std::collections::HashSet<String>,
) -> bool {
    let Some(r) = p.report.as_ref().map(|r| &r.report) else {
        return false;
    };
    authorities.contains(&p.name)
        || r.mirrors.iter().any(|s| mine.contains(s))
        || r.holds.iter().any(|h| mine.contains(&h.site))
        || (r.mirrors.is_empty() && r.holds.is_empty() && authorities.is_empty())
}

/// Picks up to `fanout` gossip partners from `(url, name, probed up)`,
/// skipping `busy` URLs: peers the probes see up first, in random order,
/// then the others (so a peer coming back is still reached).
pub fn choose_gossip_peers<R: rand::Rng + ?Sized>(
    peers: &[(String, String, bool)],
    busy: &[String],
    fanout: usize,
    rng: &mut R,
) -> Vec<(String, String)> {
    use rand::seq::SliceRandom;
    let mut free = |up: bool| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = peers
            .iter()
            .filter(|(url, _, u)| *u == up && !busy.contains(url))
            .map(|(url, name, _)| (url.clone(), name.clone()))
            .collect();
        v.shuffle(rng);
        v
    };
    let mut out = free(true);
    out.extend(free(false));
    out.truncate(fanout);
    out
}

/// One `/sync` request to the peer at `url` and its parsed answer.
async fn post_sync(
    fed: &Federation,
    url: &str,
    req: &super::wire::SyncRequest,
) -> Result<SyncResponse, String> {
    let resp = post_json(fed, url, "sync", req).await?;
    // Responses of every exchange share one byte budget: bound peers are
    // anyone with a domain, and each may answer with 64 MiB.
    let (body, _held) =
        read_budgeted(resp, super::wire::MAX_BUNDLE_BYTES, &fed.response_budget).await?;
    parse_versioned(&body, "sync response")
}

/// One exchange with the peer at `url` (protocol 2, `docs/PROTOCOL.md`):
/// `/sync` with our fingerprint; when the peer's answer carries a digest
/// (views differ) or we hold manifests it lacks, `/push` with what it
/// lacks and the ids we want, whose reports come back in the answer.
pub async fn sync_with(fed: &Federation, url: &str) -> Result<(), String> {
    let sr = post_sync(fed, url, &fed.sync_request()).await?;
    fed.ingest_docs(&sr.manifests, vec![]);
    // A large view that differs: ask for the entries of the buckets that
    // differ only.
    let (sr, buckets) = match &sr.buckets {
        None => (sr, None),
        Some(theirs) => {
            let diff = fed.differing_buckets(theirs);
            if diff.is_empty() {
                // Our view moved meanwhile and now agrees.
                let push = fed.plan_push(&sr, None);
                return push_to(fed, url, &push).await;
            }
            let mut req = fed.sync_request();
            req.buckets = Some(diff.clone());
            (post_sync(fed, url, &req).await?, Some(diff))
        }
    };
    let push = fed.plan_push(&sr, buckets.as_deref());
    push_to(fed, url, &push).await
}

/// The `/push` of an exchange, if it carries anything; takes in the
/// reports it wanted.
async fn push_to(
    fed: &Federation,
    url: &str,
    push: &super::wire::PushRequest,
) -> Result<(), String> {
    if push.manifests.is_empty() && push.reports.is_empty() && push.want.is_empty() {
        return Ok(());
    }
    let resp = post_json(fed, url, "push", push).await?;
    if push.want.is_empty() {
        return Ok(());
    }
    let (body, _held) =
        read_budgeted(resp, super::wire::MAX_BUNDLE_BYTES, &fed.response_budget).await?;
    let b: Bundle = serde_json::from_slice(&body).map_err(|e| format!("bad push answer: {e}"))?;
    drop(body);
    fed.ingest_docs::<String>(&[], b.reports);
    Ok(())
}

/// POSTs `body` as JSON to the peer API endpoint `endpoint` (`sync`,
/// `push`) at `url`; an error status becomes [`refuse_on_error`]'s text.
async fn post_json<T: serde::Serialize + ?Sized>(
    fed: &Federation,
    url: &str,
    endpoint: &str,
    body: &T,
) -> Result<reqwest::Response, String> {
    let resp = fed
        .http
        .post(format!("{url}/.well-known/p2pcdn/v1/{endpoint}"))
        .json(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| super::error_chain(&e.without_url()))?;
    refuse_on_error(resp).await
}

/// A peer's error status, with the first line of its body (a protocol
/// version refusal names both versions there).
async fn refuse_on_error(resp: reqwest::Response) -> Result<reqwest::Response, String> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = first_line(resp, 1024).await;
    Err(format!("HTTP {status}: {text}"))
}

/// The first line of a peer's answer body, read up to `limit` bytes
/// (empty when unreadable): what an error answer says.
pub(super) async fn first_line(resp: reqwest::Response, limit: usize) -> String {
    read_limited(resp, limit)
        .await
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

/// Parses a peer's answer, naming a protocol version mismatch plainly.
fn parse_versioned<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, String> {
    let v = super::wire::stated_version(body);
    if v != super::gossip::PROTOCOL {
        return Err(super::wire::version_refusal(v));
    }
    serde_json::from_slice(body).map_err(|e| format!("bad {what}: {e}"))
}

/// Bytes per permit of [`Federation::response_budget`].
pub const RESPONSE_BUDGET_UNIT: usize = 64 * 1024;

/// Reads a response body of at most `limit` bytes, taking permits of
/// `budget` (one per [`RESPONSE_BUDGET_UNIT`]) as it grows; fails at once
/// when the budget is spent. The permits are held until the guard drops.
pub async fn read_budgeted(
    mut resp: reqwest::Response,
    limit: usize,
    budget: &Arc<tokio::sync::Semaphore>,
) -> Result<(Vec<u8>, Vec<tokio::sync::OwnedSemaphorePermit>), String> {
    if resp.content_length().is_some_and(|l| l > limit as u64) {
        return Err(format!("response larger than {limit} bytes"));
    }
    let mut out = Vec::new();
    let mut held = vec![];
    let mut covered = 0usize;
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if out.len() + chunk.len() > limit {
            return Err(format!("response larger than {limit} bytes"));
        }
        while covered < out.len() + chunk.len() {
            let p = budget
                .clone()
                .try_acquire_owned()
                .map_err(|_| "response byte budget spent; exchange dropped".to_string())?;
            held.push(p);
            covered += RESPONSE_BUDGET_UNIT;
        }
        out.extend_from_slice(&chunk);
    }
    Ok((out, held))
}

/// Reads a response body, refusing more than `limit` bytes.
pub async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|l| l > limit as u64) {
        return Err(format!("response larger than {limit} bytes"));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if out.len() + chunk.len() > limit {
            return Err(format!("response larger than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn probe_loop(fed: Arc<Federation>, mut stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(fed.config().federation.probe_interval_ms);
    // A hung peer is a miss after this; a dead one fails at once. Generous,
    // so a busy peer (or a busy prober) is not declared down by mistake.
    let timeout = interval
        .mul_f64(0.8)
        .clamp(Duration::from_secs(1), Duration::from_secs(2));
    let recheck = suspect_recheck(interval);
    let mut pace = Pace::new(interval, pace::PROBE_SPREAD);
    let mut round: u64 = 0;
    // Proof-of-holding checks run beside the probes, one round of them at a
    // time: a check may download a whole blob (up to 3 s), and health
    // detection must never wait for it.
    let mut spot: Option<tokio::task::JoinHandle<()>> = None;
    'rounds: loop {
        if pace.tick(&mut stop).await {
            break;
        }
        let round_start = Instant::now();
        // Peers whose reports this node keeps (the mirrors of its sites:
        // the ones it may answer) every round, bounded by zone size; the
        // rest of the federation is SWIM membership's (`swim`).
        let kept: Vec<Peer> = fed
            .peers()
            .into_iter()
            .filter(|p| p.report.is_some())
            .collect();
        probe_all(&fed, kept, timeout).await;
        check_addresses(&fed);
        // A peer that just missed is suspect: probe it again every `recheck`
        // until it answers or is down, instead of waiting whole rounds. A
        // dead peer (connection refused) is then down in about one round
        // plus two rechecks, not three rounds.
        loop {
            let suspects: Vec<Peer> = fed
                .peers()
                .into_iter()
                .filter(|p| p.probe.suspect())
                .collect();
            if suspects.is_empty() || round_start.elapsed() + recheck >= interval {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(recheck) => {}
                _ = stop.changed() => break 'rounds,
            }
            probe_all(&fed, suspects, timeout).await;
        }
        round = round.wrapping_add(1);
        if round % SPOT_CHECK_EVERY == 0 && spot.as_ref().is_none_or(|h| h.is_finished()) {
            let fed = fed.clone();
            spot = Some(tokio::spawn(async move { spot_check(&fed).await }));
        }
    }
    if let Some(h) = spot {
        h.abort();
    }
}

/// Starts checks of the advertised addresses that are due (in the
/// background; each takes at most ~2 s). The SNI is a site of ours the peer
/// claims to hold and is authorized for: its addresses matter only for
/// answers about such sites.
fn check_addresses(fed: &Arc<Federation>) {
    let cat = fed.catalog.load();
    for p in fed.peers() {
        let Some(r) = p.report.as_ref().map(|r| &r.report) else {
            continue;
        };
        // Only a peer the site's manifest authorizes can be answered for it:
        // others' addresses are never checked (no work for strangers).
        let Some(sni) = r.holds.iter().map(|h| h.site.clone()).find(|s| {
            cat.site(s)
                .and_then(|l| l.newest.as_ref())
                .is_some_and(|m| replicate::authorized(&m.manifest.mirrors, &p.key))
        }) else {
            continue;
        };
        for ip in fed.addresses_due(&p) {
            let fed = fed.clone();
            let (p, sni) = (p.clone(), sni.clone());
            tokio::spawn(async move {
                if fed.check_address(&p, &sni, ip).await {
                    fed.health_changed.notify_one();
                }
            });
        }
    }
}

/// Pause between re-probes of a suspect peer: a fifth of the probe
/// interval, within 100..=250 ms.
pub fn suspect_recheck(interval: Duration) -> Duration {
    (interval / 5).clamp(Duration::from_millis(100), Duration::from_millis(250))
}

/// Probes `peers` concurrently and records the outcomes.
async fn probe_all(fed: &Arc<Federation>, peers: Vec<Peer>, timeout: Duration) {
    let mut probes = JoinSet::new();
    for p in peers {
        let fed = fed.clone();
        probes.spawn(async move {
            let start = Instant::now();
            let ok = fed
                .http
                .get(format!("{}/.well-known/p2pcdn/v1/health", p.url))
                .timeout(timeout)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let rtt = ok.then(|| start.elapsed().as_secs_f64() * 1000.0);
            fed.record_probe(&p.key, rtt);
        });
    }
    while probes.join_next().await.is_some() {}
}

/// Probe rounds between spot-checks.
const SPOT_CHECK_EVERY: u64 = 5;
/// Proof-of-holding checks started per spot-check round, at most.
const SPOT_CHECKS_PER_ROUND: usize = 16;

/// Asks every authorized peer that claims to hold the newest version of a site for
/// real bytes of a random blob of that version and verifies them
/// ([`super::holding`]); wrong bytes, or repeated failures of any kind
/// (404, short body, timeout), make this node ignore the peer's claim for
/// the site for a while, which takes it out of the site's answers.
pub async fn spot_check(fed: &Arc<Federation>) {
    use super::holding::{self, Outcome, Plan};
    let now = unix_now();
    let cat = fed.catalog.load_full();
    let mut checks = JoinSet::new();
    // At most SPOT_CHECKS_PER_ROUND checks, on peers chosen at random, so
    // the cost per round stays bounded however large the federation grows.
    let mut peers = fed.peers();
    {
        use rand::seq::SliceRandom;
        peers.shuffle(&mut rand::rng());
    }
    for p in peers {
        if checks.len() >= SPOT_CHECKS_PER_ROUND {
            break;
        }
        for live in cat.sites() {
            let Some(m) = live.newest.as_ref() else {
                continue;
            };
            let site = live.config.hostname.clone();
            if p.holds(&site, now) != Some(m.manifest.version) || !p.healthy(now) {
                continue;
            }
            // Claims of unauthorized peers change no answer and no source:
            // not worth a request (nor an amplification vector).
            if !replicate::authorized(&m.manifest.mirrors, &p.key) {
                continue;
            }
            let blobs: Vec<_> = m.blobs().into_iter().filter(|(_, s)| *s > 0).collect();
            let (pick, r1, r2) = {
                let mut rng = rand::rng();
                (
                    blobs.choose(&mut rng).copied(),
                    rand::Rng::random::<u64>(&mut rng),
                    rand::Rng::random::<u64>(&mut rng),
                )
            };
            let Some((h, size)) = pick else {
                continue;
            };
            let held = fed.store.contains(&h, size);
            let Some(plan) = holding::plan(size, held, r1, r2) else {
                continue;
            };
            let fed = fed.clone();
            let p = p.clone();
            checks.spawn(async move {
                let outcome = check_holding(&fed, &p.url, h, size, plan).await;
                fed.holding_checked(&p.key, &site, &outcome);
            });
        }
    }
    while checks.join_next().await.is_some() {}

    /// One check: fetch, then verify against the hash or the local copy.
    async fn check_holding(
        fed: &Federation,
        url: &str,
        h: crate::hash::BlobHash,
        size: u64,
        plan: Plan,
    ) -> Outcome {
        let (range, want_len) = match plan {
            Plan::Whole => (None, size),
            Plan::Range { start, len } => (Some(format!("bytes={start}-{}", start + len - 1)), len),
        };
        let mut req = fed
            .http
            .get(format!("{url}/.well-known/p2pcdn/v1/blob/{h}"))
            .timeout(Duration::from_secs(3));
        if let Some(r) = &range {
            req = req.header("range", r);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let want_status = if range.is_some() {
            reqwest::StatusCode::PARTIAL_CONTENT
        } else {
            reqwest::StatusCode::OK
        };
        if resp.status() != want_status {
            return Outcome::Failed(format!("HTTP {}", resp.status()));
        }
        let body = match read_limited(resp, want_len as usize).await {
            Ok(b) => b,
            Err(e) => return Outcome::Failed(e),
        };
        if body.len() as u64 != want_len {
            return Outcome::Failed(format!("{} of {want_len} bytes", body.len()));
        }
        let good = match plan {
            Plan::Whole => crate::hash::BlobHash::of(&body) == h,
            Plan::Range { start, len } => {
                let store = fed.store.clone();
                let local = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
                    use std::io::{Read, Seek, SeekFrom};
                    let mut f = store
                        .open_verified(&h, size)
                        .map_err(std::io::Error::other)?;
                    f.seek(SeekFrom::Start(start))?;
                    let mut buf = Vec::with_capacity(len as usize);
                    f.take(len).read_to_end(&mut buf)?;
                    Ok(buf)
                })
                .await;
                match local {
                    Ok(Ok(l)) => l == body,
                    // Our own copy is unreadable: no verdict on the peer.
                    _ => return Outcome::Passed,
                }
            }
        };
        if good {
            Outcome::Passed
        } else {
            Outcome::WrongBytes
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{choose_gossip_peers, report_due};
    use crate::keys::SecretKey;
    use crate::report::{Capacity, Load, Report, FORMAT};

    #[test]
    fn reports_are_resigned_on_material_change_or_after_a_third_of_their_life() {
        let r = Report {
            format: FORMAT,
            node: SecretKey::generate().unwrap().public(),
            name: "m".into(),
            url: "https://m".into(),
            addresses: vec![],
            location: None,
            capacity: Capacity {
                rps: 100.0,
                bps: 100.0,
            },
            load: Load::default(),
            holds: vec![],
            mirrors: vec![],
            rtt_ms: Default::default(),
            client_rtt: vec![],
            certs: None,
            seq: 1,
            issued: 1000,
            expires: 1015,
        };
        assert!(report_due(None, &r, 1000, 15));
        let mut now = r.clone();
        now.load.connections = 7;
        assert!(
            !report_due(Some(&r), &now, 1004, 15),
            "nothing material, 4 s of 15"
        );
        assert!(
            report_due(Some(&r), &now, 1005, 15),
            "a third of the lifetime"
        );
        now.load.rps = 50.0;
        assert!(report_due(Some(&r), &now, 1001, 15), "load crossed tenths");
    }

    #[test]
    fn gossip_partners_are_co_mirrors_and_authorities_of_our_zones() {
        let peer = |name: &str, site: Option<&str>| {
            let key = SecretKey::generate().unwrap();
            let r = Report {
                format: FORMAT,
                node: key.public(),
                name: name.into(),
                url: format!("https://{name}"),
                addresses: vec![],
                location: None,
                capacity: Capacity { rps: 1.0, bps: 1.0 },
                load: Load::default(),
                holds: vec![],
                mirrors: site.map(String::from).into_iter().collect(),
                rtt_ms: Default::default(),
                client_rtt: vec![],
                certs: None,
                seq: 1,
                issued: 1000,
                expires: 1015,
            };
            let signed = crate::report::sign_report(&r, &key).unwrap();
            crate::federation::Peer {
                key: key.public(),
                name: name.into(),
                url: format!("https://{name}"),
                report: crate::report::verify_signed(signed, 1001).ok(),
                probe: Default::default(),
                distrusted: Default::default(),
            }
        };
        let mine: std::collections::BTreeSet<String> = ["www.a".to_string()].into();
        let ns: std::collections::HashSet<String> = ["ns1.a".to_string()].into();
        assert!(super::gossip_partner(
            &peer("m1", Some("www.a")),
            &mine,
            &ns
        ));
        assert!(!super::gossip_partner(
            &peer("m2", Some("www.b")),
            &mine,
            &ns
        ));
        assert!(super::gossip_partner(&peer("ns1.a", None), &mine, &ns));
        assert!(!super::gossip_partner(&peer("ns9.b", None), &mine, &ns));
        // Without zone data, siteless peers stay partners.
        assert!(super::gossip_partner(
            &peer("ns9.b", None),
            &mine,
            &Default::default()
        ));
        let mut unreported = peer("m3", Some("www.a"));
        unreported.report = None;
        assert!(!super::gossip_partner(&unreported, &mine, &ns));
    }

    fn peers() -> Vec<(String, String, bool)> {
        (1..=5)
            .map(|i| (format!("https://n{i}"), format!("n{i}"), i != 5))
            .collect()
    }

    #[test]
    fn gossip_prefers_up_peers_and_skips_busy_ones() {
        let mut rng = rand::rng();
        for _ in 0..200 {
            let c = choose_gossip_peers(&peers(), &["https://n1".into()], 3, &mut rng);
            assert_eq!(c.len(), 3);
            assert!(c
                .iter()
                .all(|(u, _)| u != "https://n1" && u != "https://n5"));
            let mut urls: Vec<_> = c.iter().map(|(u, _)| u.clone()).collect();
            urls.sort();
            urls.dedup();
            assert_eq!(urls.len(), 3);
        }
        // Down peers fill the remaining slots, so a peer coming back is reached.
        let c = choose_gossip_peers(&peers(), &[], 5, &mut rng);
        assert_eq!(c.len(), 5);
        assert_eq!(c[4].0, "https://n5");
        // Everything busy: nobody.
        let busy: Vec<String> = peers().into_iter().map(|p| p.0).collect();
        assert!(choose_gossip_peers(&peers(), &busy, 3, &mut rng).is_empty());
    }
}
