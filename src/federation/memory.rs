//! Peers remembered across restarts: bound peers are written to the `peers`
//! table (on binding, and every [`REMEMBER_EVERY`] while they are up), and
//! at start the most recently seen are queued for binding again, so an
//! instance whose bootstrap peers are down rejoins through any peer it knew.
//!
//! A remembered row is only a hint (URL, name, last addresses): it is bound
//! again over TLS with a proof of possession before anything it says counts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Federation;
use crate::catalog::unix_now;
use crate::db::RememberedPeer;

/// Remembered peers queued for binding at start, at most.
pub const AT_START: usize = 64;
/// Rows kept, at most (the most recently seen).
pub const CAP: usize = 256;
/// A peer not seen for this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(7 * 86_400);
/// How often live peers' `last_seen` is refreshed.
pub const REMEMBER_EVERY: Duration = Duration::from_secs(60);

/// Writes `seen` to the table (errors are logged: losing this hint costs a
/// slower rejoin, never correctness).
pub fn remember(fed: &Federation, seen: &[RememberedPeer]) {
    if let Err(e) = fed
        .db
        .remember_peers(seen, unix_now(), FORGET_AFTER.as_secs(), CAP)
    {
        tracing::warn!(error = %e, "could not remember peers for the next start");
    }
}

/// Every [`REMEMBER_EVERY`], records the bound peers the probes see up.
pub async fn run(fed: Arc<Federation>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REMEMBER_EVERY) => {}
            _ = stop.changed() => break,
        }
        let live: Vec<RememberedPeer> = fed
            .peers()
            .into_iter()
            .filter(|p| p.probe.is_up())
            .map(|p| fed.remembered(&p.url, &p.name, &p.key))
            .collect();
        if !live.is_empty() {
            remember(&fed, &live);
        }
    }
}
