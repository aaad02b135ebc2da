//! SWIM membership over the peer API: drives [`membership::Swim`] (sans
//! I/O) with `POST /.well-known/p2pcdn/v1/swim` (protocol 2,
//! `docs/PROTOCOL.md`).
//!
//! A request carries one membership message from a bound peer, signed
//! with its node key (header [`SIG_HEADER`], over the exact body bytes);
//! the response carries the messages the receiver sends back to it, so an
//! `Ack` travels inside the TLS connection the prober opened to the
//! member's bound name. A `PingReq` is answered once the helper's own
//! `Ping` to the target was answered or timed out: the relayed `Ack`, if
//! any, is in the response.
//!
//! Each period a node probes one member; a member that does not answer
//! within the probe timeout is probed indirectly through
//! [`membership::INDIRECT`] others, then suspected, then declared dead;
//! the death is piggybacked on the next messages. Membership feeds the
//! peer table (`Peer::member`); authorities still probe the mirrors they
//! steer to themselves (`probe`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::gossip::{ShortId, PROTOCOL};
use super::membership::{Msg, Out, State, Swim, SwimConfig, MAX_PIGGYBACK};
use crate::keys::PublicKey;

/// The endpoint.
pub const PATH: &str = "/.well-known/p2pcdn/v1/swim";
/// Header carrying the sender's ed25519 signature (standard base64) over
/// the request body.
pub const SIG_HEADER: &str = "x-p2pcdn-signature";
/// Largest request or response body, bytes (a message carries at most
/// [`MAX_PIGGYBACK`] updates of about 70 bytes).
pub const MAX_SWIM_BYTES: usize = 4 * 1024;
/// A request older (or further in the future) than this is refused.
pub const MAX_SKEW_MS: u64 = 30_000;

/// `POST /swim` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwimRequest {
    /// Protocol version ([`PROTOCOL`]).
    pub v: u32,
    /// The sender's short id (its node key must be bound by the receiver).
    pub from: ShortId,
    /// Sender's clock, unix milliseconds (replay window).
    pub at: u64,
    /// The message.
    pub msg: Msg,
}

/// `POST /swim` response: the receiver's messages to the sender.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwimReply {
    /// Protocol version ([`PROTOCOL`]).
    pub v: u32,
    /// Messages (an `Ack`, or nothing).
    pub msgs: Vec<Msg>,
}

/// Why a membership message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// Not JSON of the expected shape.
    #[error("bad membership message: {0}")]
    Malformed(String),
    /// The sender's key is not bound here (bind first, over `/node`).
    #[error("membership message from {0}, which is not a bound peer here")]
    Unknown(ShortId),
    /// Missing or wrong signature.
    #[error("membership message from {0} with a missing or bad signature")]
    Signature(ShortId),
    /// Outside the replay window.
    #[error("membership message from {0} outside the {MAX_SKEW_MS} ms window")]
    Stale(ShortId),
    /// Too many updates.
    #[error("membership message from {0} with more than {MAX_PIGGYBACK} updates")]
    TooLarge(ShortId),
}

/// Checks a request body: shape, size, replay window, sender bound
/// (`key_of`) and signature. Pure.
pub fn check(
    body: &[u8],
    sig: Option<&str>,
    now_ms: u64,
    key_of: impl Fn(ShortId) -> Option<PublicKey>,
) -> Result<SwimRequest, Refusal> {
    let req: SwimRequest =
        serde_json::from_slice(body).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let from = req.from;
    let updates = match &req.msg {
        Msg::Ping { updates, .. } | Msg::PingReq { updates, .. } | Msg::Ack { updates, .. } => {
            updates.len()
        }
    };
    if updates > MAX_PIGGYBACK {
        return Err(Refusal::TooLarge(from));
    }
    if req.at.abs_diff(now_ms) > MAX_SKEW_MS {
        return Err(Refusal::Stale(from));
    }
    let key = key_of(from).ok_or(Refusal::Unknown(from))?;
    let sig = sig
        .and_then(|s| STANDARD.decode(s).ok())
        .ok_or(Refusal::Signature(from))?;
    if !key.verify(body, &sig) {
        return Err(Refusal::Signature(from));
    }
    Ok(req)
}

/// The answer to a well-formed `Ping` from a sender not bound here yet
/// (it bound us first): a bare `Ack` from `me`, so it does not suspect us,
/// with no update taken from it or given to it. `None` for anything else.
pub fn bare_ack(body: &[u8], me: ShortId) -> Option<SwimReply> {
    let req: SwimRequest = serde_json::from_slice(body).ok()?;
    let Msg::Ping { seq, .. } = req.msg else {
        return None;
    };
    Some(SwimReply {
        v: PROTOCOL,
        msgs: vec![Msg::Ack {
            seq,
            about: me,
            updates: vec![],
        }],
    })
}

/// A member's address book entry.
#[derive(Debug, Clone)]
struct Contact {
    key: PublicKey,
    url: String,
    name: String,
}

/// One node's membership: the state machine, the clock it runs on, and
/// who is who.
pub struct Membership {
    me: ShortId,
    swim: Mutex<Swim>,
    epoch: Instant,
    period: Duration,
    book: Mutex<HashMap<ShortId, Contact>>,
    /// What the peer table was last told, per member.
    seen: Mutex<BTreeMap<ShortId, State>>,
    /// Members that answered 404 (no SWIM endpoint): warned once each.
    warned: Mutex<HashSet<ShortId>>,
}

impl Membership {
    /// Membership of node `me` with protocol period `period`.
    pub fn new(me: &PublicKey, period: Duration) -> Self {
        let me = ShortId::of(me);
        let cfg = SwimConfig::with_period(period.as_millis() as u64);
        let period_ms = cfg.period_ms;
        Self {
            me,
            swim: Mutex::new(Swim::new(me, [], cfg, me.0, 0)),
            epoch: Instant::now(),
            period: Duration::from_millis(period_ms),
            book: Mutex::new(HashMap::new()),
            seen: Mutex::new(BTreeMap::new()),
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// This node's short id.
    pub fn me(&self) -> ShortId {
        self.me
    }

    /// The protocol period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Milliseconds on the membership clock.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Adds or updates a bound peer (and makes it a member).
    pub fn learn(&self, key: &PublicKey, url: &str, name: &str) {
        let id = ShortId::of(key);
        if id == self.me {
            return;
        }
        if let Ok(mut b) = self.book.lock() {
            b.insert(
                id,
                Contact {
                    key: *key,
                    url: url.to_string(),
                    name: name.to_string(),
                },
            );
        }
        let now = self.now();
        if let Ok(mut s) = self.swim.lock() {
            s.join(id, now);
        }
    }

    /// The node key of a member, if bound.
    pub fn key_of(&self, id: ShortId) -> Option<PublicKey> {
        self.book.lock().ok()?.get(&id).map(|c| c.key)
    }

    fn contact(&self, id: ShortId) -> Option<Contact> {
        self.book.lock().ok()?.get(&id).cloned()
    }

    /// What this node believes about the member with key `key`.
    pub fn state_of(&self, key: &PublicKey) -> Option<State> {
        self.swim.lock().ok()?.state(&ShortId::of(key))
    }

    /// Advances the clock: messages to send now.
    pub fn tick(&self) -> Vec<Out> {
        let now = self.now();
        self.swim
            .lock()
            .map(|mut s| s.tick(now))
            .unwrap_or_default()
    }

    /// Takes in a message from `from`: messages to send.
    pub fn receive(&self, from: ShortId, msg: Msg) -> Vec<Out> {
        let now = self.now();
        self.swim
            .lock()
            .map(|mut s| s.receive(from, msg, now))
            .unwrap_or_default()
    }

    /// Members whose state changed since the last call, and the count per
    /// state.
    pub fn changes(&self) -> (Vec<(ShortId, State)>, [usize; 3]) {
        let now: Vec<(ShortId, State)> = self
            .swim
            .lock()
            .map(|s| s.members().collect())
            .unwrap_or_default();
        let mut counts = [0; 3];
        let mut changed = vec![];
        if let Ok(mut seen) = self.seen.lock() {
            for (id, st) in now {
                counts[match st {
                    State::Alive => 0,
                    State::Suspect => 1,
                    State::Dead => 2,
                }] += 1;
                if seen.insert(id, st) != Some(st) {
                    changed.push((id, st));
                }
            }
        }
        (changed, counts)
    }

    /// The name of a member, for logs.
    pub fn name_of(&self, id: ShortId) -> String {
        self.contact(id).map_or_else(|| id.to_string(), |c| c.name)
    }

    /// Whether `id` was already warned about (and marks it).
    fn warn_once(&self, id: ShortId) -> bool {
        self.warned.lock().is_ok_and(|mut w| w.insert(id))
    }
}

/// Signs and sends one message to its destination; returns the messages
/// the destination answered with (empty when it did not answer in time).
/// `relay`: sent on behalf of another member (a helper's ping), counted
/// apart from this node's own probes.
pub async fn send(fed: &super::Federation, out: &Out, timeout: Duration, relay: bool) -> Vec<Msg> {
    let m = &fed.membership;
    let Some(c) = m.contact(out.to) else {
        return vec![];
    };
    let kind = match out.msg {
        Msg::Ping { .. } if relay => Some("relay"),
        Msg::Ping { .. } => Some("ping"),
        Msg::PingReq { .. } => Some("ping_req"),
        Msg::Ack { .. } => None,
    };
    if let Some(k) = kind {
        crate::metrics::Metrics::count(&fed.metrics.swim_probes, k);
    }
    let req = SwimRequest {
        v: PROTOCOL,
        from: m.me,
        at: super::unix_millis(),
        msg: out.msg.clone(),
    };
    let Ok(body) = serde_json::to_vec(&req) else {
        return vec![];
    };
    let sig = STANDARD.encode(fed.node_key().sign(&body));
    let resp = fed
        .http
        .post(format!("{}{PATH}", c.url))
        .header(SIG_HEADER, sig)
        .header("content-type", "application/json")
        .body(body)
        .timeout(timeout)
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(peer = %c.name, error = %super::error_chain(&e.without_url()), "membership message not answered");
            return vec![];
        }
    };
    let status = resp.status();
    if !status.is_success() {
        let text = super::agent::first_line(resp, 512).await;
        // A peer without the endpoint (an older protocol 2 build) never
        // acks: say so once instead of letting it look dead for no reason.
        if status == reqwest::StatusCode::NOT_FOUND && m.warn_once(out.to) {
            tracing::warn!(peer = %c.name, "peer has no SWIM endpoint ({PATH}): it speaks an older protocol 2 and will be suspected and declared dead by membership; upgrade it");
        } else {
            tracing::debug!(peer = %c.name, %status, %text, "membership message refused");
        }
        return vec![];
    }
    match super::agent::read_limited(resp, MAX_SWIM_BYTES).await {
        Ok(b) => match serde_json::from_slice::<SwimReply>(&b) {
            Ok(r) if r.v == PROTOCOL => r.msgs.into_iter().take(2).collect(),
            Ok(r) => {
                tracing::debug!(peer = %c.name, v = r.v, "membership reply of another protocol");
                vec![]
            }
            Err(e) => {
                tracing::debug!(peer = %c.name, error = %e, "bad membership reply");
                vec![]
            }
        },
        Err(e) => {
            tracing::debug!(peer = %c.name, error = %e, "membership reply unreadable");
            vec![]
        }
    }
}

/// Sends `out`, feeds the answer into membership and returns what that
/// produced.
async fn exchange(fed: &super::Federation, out: Out, timeout: Duration, relay: bool) -> Vec<Out> {
    let to = out.to;
    let mut next = vec![];
    for msg in send(fed, &out, timeout, relay).await {
        next.extend(fed.membership.receive(to, msg));
    }
    next
}

/// Handles a checked request from `from`: the messages to answer it with.
/// Messages for others (a helper's `Ping` to a `PingReq` target) are sent
/// first, and a relayed `Ack` they produce goes into the answer.
pub async fn handle(fed: &super::Federation, from: ShortId, msg: Msg) -> SwimReply {
    let m = &fed.membership;
    let wait = m.period() / 2;
    let mut back = vec![];
    let mut pending = m.receive(from, msg);
    // Two rounds at most: our Ping to a target, then its Ack relayed.
    for _ in 0..2 {
        let mut later = vec![];
        for o in pending {
            if o.to == from {
                back.push(o.msg);
            } else {
                later.extend(exchange(fed, o, wait, true).await);
            }
        }
        pending = later;
        if pending.is_empty() {
            break;
        }
    }
    SwimReply {
        v: PROTOCOL,
        msgs: back.into_iter().take(2).collect(),
    }
}

/// The membership loop: a tick every 50 ms; each period one probe (and
/// indirect probes after a miss), sent in the background. State changes
/// go to the peer table and the metrics; a confirmed death is logged once.
pub async fn run(
    fed: std::sync::Arc<super::Federation>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let period = fed.membership.period();
    let timeout = period.mul_f64(0.9);
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sends = tokio::task::JoinSet::new();
    let mut last_book = Instant::now() - period;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        while sends.try_join_next().is_some() {}
        if last_book.elapsed() >= period {
            last_book = Instant::now();
            for p in fed.peers() {
                fed.membership.learn(&p.key, &p.url, &p.name);
            }
        }
        for out in fed.membership.tick() {
            let fed = fed.clone();
            sends.spawn(async move {
                for o in exchange(&fed, out, timeout, false).await {
                    // Rare (a reply that asks for more): one more hop.
                    let _ = exchange(&fed, o, timeout, true).await;
                }
            });
        }
        let (changed, counts) = fed.membership.changes();
        for (label, n) in ["alive", "suspect", "dead"].into_iter().zip(counts) {
            fed.metrics
                .swim_members
                .get_or_create(&crate::metrics::Outcome { outcome: label })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        for (id, st) in changed {
            let name = fed.membership.name_of(id);
            match st {
                State::Dead => tracing::info!(peer = %name, "membership: member confirmed dead"),
                State::Suspect => tracing::debug!(peer = %name, "membership: member suspected"),
                State::Alive => tracing::debug!(peer = %name, "membership: member alive"),
            }
        }
    }
    sends.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    #[test]
    fn requests_are_checked_before_use() {
        let k = SecretKey::generate().unwrap();
        let id = ShortId::of(&k.public());
        let req = SwimRequest {
            v: PROTOCOL,
            from: id,
            at: 100_000,
            msg: Msg::Ping {
                seq: 1,
                updates: vec![],
            },
        };
        let body = serde_json::to_vec(&req).unwrap();
        let sig = STANDARD.encode(k.sign(&body));
        let bound = |i: ShortId| (i == id).then(|| k.public());
        assert_eq!(check(&body, Some(&sig), 100_500, bound), Ok(req.clone()));
        assert_eq!(
            check(&body, None, 100_500, bound),
            Err(Refusal::Signature(id))
        );
        let other = STANDARD.encode(SecretKey::generate().unwrap().sign(&body));
        assert_eq!(
            check(&body, Some(&other), 100_500, bound),
            Err(Refusal::Signature(id))
        );
        assert_eq!(
            check(&body, Some(&sig), 100_500, |_| None),
            Err(Refusal::Unknown(id))
        );
        assert_eq!(
            check(&body, Some(&sig), 100_000 + MAX_SKEW_MS + 1, bound),
            Err(Refusal::Stale(id))
        );
        assert!(matches!(
            check(b"{", Some(&sig), 100_500, bound),
            Err(Refusal::Malformed(_))
        ));
        let flood = SwimRequest {
            msg: Msg::Ping {
                seq: 1,
                updates: vec![
                    crate::federation::membership::Update {
                        id,
                        incarnation: 0,
                        state: State::Alive,
                    };
                    MAX_PIGGYBACK + 1
                ],
            },
            ..req
        };
        let body = serde_json::to_vec(&flood).unwrap();
        let sig = STANDARD.encode(k.sign(&body));
        assert_eq!(
            check(&body, Some(&sig), 100_500, bound),
            Err(Refusal::TooLarge(id))
        );
    }
}
