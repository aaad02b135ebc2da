//! The `_acme-challenge` TXT values an authority serves: accepted requests'
//! values until they are withdrawn or expire, the nonces seen (replays), and
//! the rate limits that bound what one signer or one name can make us serve
//! (TXT flooding). Pure apart from a mutex: the caller passes `now`.
//!
//! Nothing here survives a restart: a value lives minutes at most, and a
//! mirror whose validation failed asks again.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::{Action, Refusal, VerifiedRequest, MAX_SKEW};
use crate::keys::PublicKey;

/// Bounds on what the book holds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Publish requests per signer within [`Limits::window_secs`].
    pub requests_per_signer: usize,
    /// Sliding window of the request count, seconds.
    pub window_secs: u64,
    /// Values one signer may have published at once.
    pub values_per_signer: usize,
    /// Values served at one name at once (several mirrors validate the same
    /// site concurrently).
    pub values_per_name: usize,
    /// Values served in total.
    pub values_total: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            requests_per_signer: 60,
            window_secs: 600,
            values_per_signer: 16,
            values_per_name: 16,
            values_total: 4096,
        }
    }
}

/// What applying a request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The value is now served (new, or its expiry extended).
    Published,
    /// The same request was applied before and its value is still served
    /// (a duplicate, e.g. relayed by another authority).
    AlreadyPublished,
    /// The signer's value is no longer served.
    Withdrawn,
    /// The same withdrawal was applied before (nothing changed).
    AlreadyWithdrawn,
}

#[derive(Debug, Clone)]
struct Entry {
    value: String,
    node: PublicKey,
    expires: u64,
    nonce: String,
}

#[derive(Debug, Default)]
struct State {
    /// TXT owner name (`_acme-challenge.<name>`, lowercase, no dot) → values.
    values: HashMap<String, Vec<Entry>>,
    /// Nonce → until when it is remembered.
    seen: HashMap<String, u64>,
    /// Signer → times of its recent publish requests.
    recent: HashMap<PublicKey, VecDeque<u64>>,
}

/// The served challenge values. Shared by the peer API (writes) and the DNS
/// handler (reads).
#[derive(Debug, Default)]
pub struct TxtBook {
    limits: Limits,
    state: Mutex<State>,
}

impl TxtBook {
    /// An empty book with the given limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    /// Applies an authorized, verified request (see [`super::check`]).
    pub fn apply(&self, v: &VerifiedRequest, now: u64) -> Result<Applied, Refusal> {
        let r = &v.request;
        let Ok(mut st) = self.state.lock() else {
            return Err(Refusal::RateLimited("challenge book unavailable".into()));
        };
        prune(&mut st, now, self.limits.window_secs);
        let owner = r.txt_name();
        if st.seen.contains_key(&r.nonce) {
            let live = st
                .values
                .get(&owner)
                .is_some_and(|es| es.iter().any(|e| e.nonce == r.nonce));
            return match r.action {
                Action::Publish if live => Ok(Applied::AlreadyPublished),
                Action::Publish => Err(Refusal::Replay),
                // Withdrawing again changes nothing.
                Action::Withdraw => Ok(Applied::AlreadyWithdrawn),
            };
        }
        match r.action {
            Action::Withdraw => {
                st.seen.insert(r.nonce.clone(), r.expires + MAX_SKEW);
                if let Some(es) = st.values.get_mut(&owner) {
                    es.retain(|e| !(e.node == r.node && e.value == r.value));
                    if es.is_empty() {
                        st.values.remove(&owner);
                    }
                }
                Ok(Applied::Withdrawn)
            }
            Action::Publish => {
                let l = self.limits;
                let recent = st.recent.entry(r.node).or_default();
                if recent.len() >= l.requests_per_signer {
                    return Err(Refusal::RateLimited(format!(
                        "more than {} requests in {} s from this node",
                        l.requests_per_signer, l.window_secs
                    )));
                }
                let existing = st.values.get(&owner).and_then(|es| {
                    es.iter()
                        .position(|e| e.node == r.node && e.value == r.value)
                });
                if existing.is_none() {
                    let by_signer = st
                        .values
                        .values()
                        .flatten()
                        .filter(|e| e.node == r.node)
                        .count();
                    if by_signer >= l.values_per_signer {
                        return Err(Refusal::RateLimited(format!(
                            "this node already has {by_signer} values published"
                        )));
                    }
                    let at_name = st.values.get(&owner).map_or(0, Vec::len);
                    if at_name >= l.values_per_name {
                        return Err(Refusal::RateLimited(format!(
                            "{owner} already has {at_name} values"
                        )));
                    }
                    let total: usize = st.values.values().map(Vec::len).sum();
                    if total >= l.values_total {
                        return Err(Refusal::RateLimited(format!(
                            "{total} challenge values served in total"
                        )));
                    }
                }
                st.recent.entry(r.node).or_default().push_back(now);
                st.seen.insert(r.nonce.clone(), r.expires + MAX_SKEW);
                let entry = Entry {
                    value: r.value.clone(),
                    node: r.node,
                    expires: r.expires,
                    nonce: r.nonce.clone(),
                };
                let es = st.values.entry(owner).or_default();
                match existing {
                    Some(i) => {
                        if let Some(e) = es.get_mut(i) {
                            *e = entry;
                        }
                    }
                    None => es.push(entry),
                }
                Ok(Applied::Published)
            }
        }
    }

    /// The values served at `owner` (`_acme-challenge.<name>`, lowercase,
    /// without the trailing dot) now.
    pub fn values(&self, owner: &str, now: u64) -> Vec<String> {
        self.state
            .lock()
            .map(|st| {
                st.values
                    .get(owner)
                    .map(|es| {
                        es.iter()
                            .filter(|e| e.expires > now)
                            .map(|e| e.value.clone())
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    /// True when any value is served (a cheap check for the DNS path).
    pub fn is_empty(&self) -> bool {
        self.state.lock().map_or(true, |st| st.values.is_empty())
    }

    /// Number of values served (for status and tests).
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .map_or(0, |st| st.values.values().map(Vec::len).sum())
    }
}

/// Forgets expired values, nonces and request times.
fn prune(st: &mut State, now: u64, window: u64) {
    st.values.retain(|_, es| {
        es.retain(|e| e.expires > now);
        !es.is_empty()
    });
    st.seen.retain(|_, until| *until > now);
    st.recent.retain(|_, times| {
        while times.front().is_some_and(|t| *t + window <= now) {
            times.pop_front();
        }
        !times.is_empty()
    });
}
