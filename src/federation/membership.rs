//! SWIM-style membership and failure detection, sans I/O (Das, Gupta,
//! Motivala 2002, with the suspicion mechanism): every protocol period a
//! node pings **one** member (round-robin over a shuffled list); without
//! an ack within the probe timeout it asks [`INDIRECT`] other members to
//! ping it; without any ack by the end of the period it marks the member
//! suspect. A suspect that does not refute (a higher incarnation) within
//! the suspicion timeout is declared dead. Every change is piggybacked on
//! the next pings and acks a bounded number of times (about λ·log₂ N), so
//! each death is detected once and disseminated in O(log N) periods, at a
//! constant number of messages per node per period whatever N is.
//!
//! The caller owns time and transport: [`Swim::tick`] and
//! [`Swim::receive`] return the messages to send; nothing here sleeps or
//! touches a socket. The simulation benchmark (`benches/sim.rs`) drives it
//! over a virtual network. Identities are [`ShortId`]s (a node's key is
//! bound and its reports verified elsewhere; membership only says who is
//! alive).
//!
//! Authorities do not wait for this to steer away from a dead mirror: they
//! probe the mirrors they answer for themselves (`probe`, bounded by zone
//! size); membership covers the rest of the federation.

use std::collections::{BTreeMap, VecDeque};

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::gossip::ShortId;

/// Members asked to ping a target indirectly.
pub const INDIRECT: usize = 3;
/// Updates piggybacked on one message, at most.
pub const MAX_PIGGYBACK: usize = 8;

/// Timing of the protocol, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct SwimConfig {
    /// Protocol period: one direct probe per period.
    pub period_ms: u64,
    /// Wait for a direct ack before asking others.
    pub probe_timeout_ms: u64,
    /// Suspicion lasts this many periods per log₂(members) before death.
    pub suspicion_mult: u64,
    /// Retransmissions of an update: this × log₂(members).
    pub retransmit_mult: u32,
}

impl Default for SwimConfig {
    fn default() -> Self {
        Self {
            period_ms: 1000,
            probe_timeout_ms: 300,
            suspicion_mult: 1,
            retransmit_mult: 3,
        }
    }
}

impl SwimConfig {
    /// The agent's timing for a protocol period of `period_ms` (its probe
    /// interval): direct probe timeout 30 % of the period, the rest as
    /// [`Default`]. The simulation uses the same.
    pub fn with_period(period_ms: u64) -> Self {
        let period_ms = period_ms.clamp(100, 60_000);
        Self {
            period_ms,
            probe_timeout_ms: period_ms * 3 / 10,
            ..Self::default()
        }
    }
}

/// What a node believes about a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Alive.
    Alive,
    /// Suspected dead.
    Suspect,
    /// Declared dead.
    Dead,
}

/// One membership update: `id` is in `state` as of `incarnation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// Member.
    pub id: ShortId,
    /// Its incarnation (raised only by the member itself, to refute).
    pub incarnation: u64,
    /// State.
    pub state: State,
}

/// A membership message (JSON on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// Are you alive? (`on_behalf`: answer is forwarded to that node.)
    Ping {
        /// Probe number.
        seq: u64,
        /// Piggybacked updates.
        updates: Vec<Update>,
    },
    /// Please ping `target` for me.
    PingReq {
        /// Probe number.
        seq: u64,
        /// Member to ping.
        target: ShortId,
        /// Piggybacked updates.
        updates: Vec<Update>,
    },
    /// Alive (`about`: the member that answered, when relayed).
    Ack {
        /// Probe number.
        seq: u64,
        /// The member that is alive.
        about: ShortId,
        /// Piggybacked updates.
        updates: Vec<Update>,
    },
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    /// Destination.
    pub to: ShortId,
    /// Message.
    pub msg: Msg,
}

#[derive(Debug, Clone, Copy)]
struct Member {
    incarnation: u64,
    state: State,
    /// When it became suspect or dead (ms).
    since: u64,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    seq: u64,
    target: ShortId,
    started: u64,
    indirect_sent: bool,
    acked: bool,
}

/// One node's membership state machine.
#[derive(Debug)]
pub struct Swim {
    me: ShortId,
    incarnation: u64,
    cfg: SwimConfig,
    members: BTreeMap<ShortId, Member>,
    order: Vec<ShortId>,
    next: usize,
    probe: Option<Probe>,
    seq: u64,
    next_period: u64,
    /// Updates to piggyback, with sends left.
    queue: VecDeque<(Update, u32)>,
    /// Relayed probes: (seq, target) → who asked.
    relays: BTreeMap<(u64, ShortId), (ShortId, u64)>,
    rng: rand::rngs::StdRng,
}

impl Swim {
    /// A node `me` that starts knowing `members` alive (incarnation 0).
    pub fn new(
        me: ShortId,
        members: impl IntoIterator<Item = ShortId>,
        cfg: SwimConfig,
        seed: u64,
        now: u64,
    ) -> Self {
        use rand::SeedableRng;
        let members: BTreeMap<ShortId, Member> = members
            .into_iter()
            .filter(|m| *m != me)
            .map(|m| {
                (
                    m,
                    Member {
                        incarnation: 0,
                        state: State::Alive,
                        since: now,
                    },
                )
            })
            .collect();
        let mut s = Self {
            me,
            incarnation: 0,
            cfg,
            order: members.keys().copied().collect(),
            members,
            next: 0,
            probe: None,
            seq: 0,
            next_period: now + seed % cfg.period_ms.max(1),
            queue: VecDeque::new(),
            relays: BTreeMap::new(),
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        };
        s.order.shuffle(&mut s.rng);
        s
    }

    /// What this node believes about `id`.
    pub fn state(&self, id: &ShortId) -> Option<State> {
        self.members.get(id).map(|m| m.state)
    }

    /// Adds `id` as an alive member (incarnation 0) unless it is known
    /// (the agent adds every peer it binds).
    pub fn join(&mut self, id: ShortId, now: u64) {
        if id == self.me || self.members.contains_key(&id) {
            return;
        }
        self.members.insert(
            id,
            Member {
                incarnation: 0,
                state: State::Alive,
                since: now,
            },
        );
        self.order.push(id);
    }

    /// Every member and what this node believes about it.
    pub fn members(&self) -> impl Iterator<Item = (ShortId, State)> + '_ {
        self.members.iter().map(|(id, m)| (*id, m.state))
    }

    /// Members not declared dead.
    pub fn live(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.state != State::Dead)
            .count()
    }

    fn log_n(&self) -> u64 {
        u64::from((self.members.len() as u64 + 1).ilog2()) + 1
    }

    fn enqueue(&mut self, u: Update) {
        self.queue.retain(|(q, _)| q.id != u.id);
        let times = self.cfg.retransmit_mult * self.log_n() as u32;
        self.queue.push_back((u, times));
    }

    fn piggyback(&mut self) -> Vec<Update> {
        let mut out = Vec::new();
        for (u, left) in self.queue.iter_mut().take(MAX_PIGGYBACK) {
            out.push(*u);
            *left = left.saturating_sub(1);
        }
        self.queue.retain(|(_, left)| *left > 0);
        // Sent ones go to the back, so every update gets its turn.
        let n = out.len().min(self.queue.len());
        self.queue.rotate_left(n);
        out
    }

    fn apply(&mut self, u: Update, now: u64) {
        if u.id == self.me {
            // Refute a suspicion or death of ourselves.
            if u.state != State::Alive && u.incarnation >= self.incarnation {
                self.incarnation = u.incarnation + 1;
                self.enqueue(Update {
                    id: self.me,
                    incarnation: self.incarnation,
                    state: State::Alive,
                });
            }
            return;
        }
        let rank = |s: State| match s {
            State::Alive => 0,
            State::Suspect => 1,
            State::Dead => 2,
        };
        let changed = match self.members.get_mut(&u.id) {
            None => {
                self.members.insert(
                    u.id,
                    Member {
                        incarnation: u.incarnation,
                        state: u.state,
                        since: now,
                    },
                );
                self.order.push(u.id);
                true
            }
            Some(m) => {
                let newer = u.incarnation > m.incarnation
                    || (u.incarnation == m.incarnation && rank(u.state) > rank(m.state));
                if newer && (m.state != State::Dead || u.state == State::Alive) {
                    if m.state != u.state {
                        m.since = now;
                    }
                    m.incarnation = u.incarnation;
                    m.state = u.state;
                    true
                } else {
                    false
                }
            }
        };
        if changed {
            self.enqueue(u);
        }
    }

    fn receive_updates(&mut self, updates: &[Update], now: u64) {
        for u in updates.iter().take(MAX_PIGGYBACK) {
            self.apply(*u, now);
        }
    }

    fn next_target(&mut self) -> Option<ShortId> {
        for _ in 0..self.order.len() {
            if self.next >= self.order.len() {
                self.next = 0;
                self.order.shuffle(&mut self.rng);
            }
            let id = self.order[self.next];
            self.next += 1;
            if self
                .members
                .get(&id)
                .is_some_and(|m| m.state != State::Dead)
            {
                return Some(id);
            }
        }
        None
    }

    /// Advances the clock to `now` (ms): starts a period's probe, sends
    /// indirect probes after the timeout, suspects members that did not
    /// answer within the period and declares suspects dead.
    pub fn tick(&mut self, now: u64) -> Vec<Out> {
        let mut out = Vec::new();
        if let Some(p) = self.probe {
            if !p.acked && !p.indirect_sent && now >= p.started + self.cfg.probe_timeout_ms {
                let helpers: Vec<ShortId> = {
                    let mut c: Vec<ShortId> = self
                        .members
                        .iter()
                        .filter(|(id, m)| **id != p.target && m.state == State::Alive)
                        .map(|(id, _)| *id)
                        .collect();
                    c.shuffle(&mut self.rng);
                    c.truncate(INDIRECT);
                    c
                };
                for h in helpers {
                    let updates = self.piggyback();
                    out.push(Out {
                        to: h,
                        msg: Msg::PingReq {
                            seq: p.seq,
                            target: p.target,
                            updates,
                        },
                    });
                }
                if let Some(p) = &mut self.probe {
                    p.indirect_sent = true;
                }
            }
        }
        if now >= self.next_period {
            if let Some(p) = self.probe.take() {
                if !p.acked {
                    if let Some(m) = self.members.get(&p.target).copied() {
                        if m.state == State::Alive {
                            self.apply(
                                Update {
                                    id: p.target,
                                    incarnation: m.incarnation,
                                    state: State::Suspect,
                                },
                                now,
                            );
                        }
                    }
                }
            }
            let timeout = self.cfg.suspicion_mult * self.log_n() * self.cfg.period_ms;
            let expired: Vec<Update> = self
                .members
                .iter()
                .filter(|(_, m)| m.state == State::Suspect && now >= m.since + timeout)
                .map(|(id, m)| Update {
                    id: *id,
                    incarnation: m.incarnation,
                    state: State::Dead,
                })
                .collect();
            for u in expired {
                self.apply(u, now);
            }
            self.relays
                .retain(|_, (_, at)| now < *at + 2 * self.cfg.period_ms);
            if let Some(target) = self.next_target() {
                self.seq += 1;
                self.probe = Some(Probe {
                    seq: self.seq,
                    target,
                    started: now,
                    indirect_sent: false,
                    acked: false,
                });
                let updates = self.piggyback();
                out.push(Out {
                    to: target,
                    msg: Msg::Ping {
                        seq: self.seq,
                        updates,
                    },
                });
            }
            self.next_period = now + self.cfg.period_ms;
        }
        out
    }

    /// Takes in a message from `from` at `now`; returns replies.
    pub fn receive(&mut self, from: ShortId, msg: Msg, now: u64) -> Vec<Out> {
        // Hearing from a member directly is proof it is alive, unless it was
        // declared dead (it must rejoin with a higher incarnation).
        match msg {
            Msg::Ping { seq, updates } => {
                self.receive_updates(&updates, now);
                let mut updates = self.piggyback();
                // A member we declared dead pings us (it restarted, or a
                // partition healed): tell it, so it refutes with a higher
                // incarnation and rejoins.
                if let Some(m) = self.members.get(&from).filter(|m| m.state == State::Dead) {
                    updates.truncate(MAX_PIGGYBACK - 1);
                    updates.push(Update {
                        id: from,
                        incarnation: m.incarnation,
                        state: State::Dead,
                    });
                }
                vec![Out {
                    to: from,
                    msg: Msg::Ack {
                        seq,
                        about: self.me,
                        updates,
                    },
                }]
            }
            Msg::PingReq {
                seq,
                target,
                updates,
            } => {
                self.receive_updates(&updates, now);
                self.relays.insert((seq, target), (from, now));
                let updates = self.piggyback();
                vec![Out {
                    to: target,
                    msg: Msg::Ping { seq, updates },
                }]
            }
            Msg::Ack {
                seq,
                about,
                updates,
            } => {
                self.receive_updates(&updates, now);
                if let Some((asker, _)) = self.relays.remove(&(seq, about)) {
                    let updates = self.piggyback();
                    return vec![Out {
                        to: asker,
                        msg: Msg::Ack {
                            seq,
                            about,
                            updates,
                        },
                    }];
                }
                if let Some(p) = &mut self.probe {
                    if p.seq == seq && p.target == about {
                        p.acked = true;
                    }
                }
                vec![]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A lossless network with `latency` ms per message; node `dead` stops
    /// answering at `kill_at`. Returns, per node, when it saw `dead` dead,
    /// and the messages sent per node per period.
    fn run(n: u64, dead: u64, kill_at: u64, until: u64) -> (Vec<Option<u64>>, f64) {
        let ids: Vec<ShortId> = (0..n).map(|i| ShortId(i * 7919 + 1)).collect();
        let cfg = SwimConfig::default();
        let mut nodes: Vec<Swim> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Swim::new(*id, ids.iter().copied(), cfg, i as u64 * 37 + 5, 0))
            .collect();
        let index = |id: ShortId| ids.iter().position(|x| *x == id).unwrap();
        let mut inflight: Vec<(u64, ShortId, Out)> = vec![];
        let mut seen = vec![None; n as usize];
        let mut sent = 0u64;
        let step = 10;
        let mut t = 0;
        while t <= until {
            let mut outs = vec![];
            for (i, node) in nodes.iter_mut().enumerate() {
                if i as u64 == dead && t >= kill_at {
                    continue;
                }
                for o in node.tick(t) {
                    outs.push((ids[i], o));
                }
            }
            let due: Vec<(u64, ShortId, Out)> = {
                let (d, rest): (Vec<_>, Vec<_>) = inflight.drain(..).partition(|m| m.0 <= t);
                inflight = rest;
                d
            };
            for (_, from, o) in due {
                let i = index(o.to);
                if i as u64 == dead && t >= kill_at {
                    continue;
                }
                for r in nodes[i].receive(from, o.msg, t) {
                    outs.push((ids[i], r));
                }
            }
            for (from, o) in outs {
                sent += 1;
                inflight.push((t + 5, from, o));
            }
            for (i, node) in nodes.iter().enumerate() {
                let dead_id = ids[(dead % n) as usize];
                if seen[i].is_none() && node.state(&dead_id) == Some(State::Dead) {
                    seen[i] = Some(t);
                }
            }
            t += step;
        }
        let periods = (until / cfg.period_ms) as f64;
        (seen, sent as f64 / n as f64 / periods)
    }

    #[test]
    fn a_death_is_detected_and_reaches_everyone_at_constant_cost() {
        let (seen, per_node) = run(40, 3, 2_000, 20_000);
        let missing: BTreeSet<usize> = seen
            .iter()
            .enumerate()
            .filter(|(i, s)| *i != 3 && s.is_none())
            .map(|(i, _)| i)
            .collect();
        assert!(missing.is_empty(), "not seen dead by {missing:?}");
        // One ping + one ack per period, plus indirect probes of the dead
        // node: far below one message per member.
        assert!(per_node < 4.0, "{per_node} messages per node per period");
    }

    #[test]
    fn live_members_are_not_declared_dead() {
        // "Node 99" does not exist: node 99 % 20 = 19 is watched and never killed.
        let (seen, _) = run(20, 99, u64::MAX, 15_000);
        assert!(seen.iter().all(Option::is_none), "{seen:?}");
    }

    #[test]
    fn a_member_declared_dead_rejoins_when_it_pings() {
        let ids = [ShortId(1), ShortId(2)];
        let mut a = Swim::new(ids[0], [ids[0]], SwimConfig::default(), 1, 0);
        a.join(ids[1], 0);
        a.join(ids[1], 0);
        assert_eq!(a.members().count(), 1);
        let dead = Update {
            id: ids[1],
            incarnation: 0,
            state: State::Dead,
        };
        a.receive(
            ids[1],
            Msg::Ack {
                seq: 9,
                about: ids[1],
                updates: vec![dead],
            },
            5,
        );
        assert_eq!(a.state(&ids[1]), Some(State::Dead));
        // The restarted member pings; the ack tells it it is dead.
        let mut b = Swim::new(ids[1], ids, SwimConfig::default(), 2, 10);
        let out = a.receive(
            ids[1],
            Msg::Ping {
                seq: 1,
                updates: vec![],
            },
            10,
        );
        assert!(matches!(&out[0].msg, Msg::Ack { updates, .. } if updates.contains(&dead)));
        b.receive(ids[0], out[0].msg.clone(), 20);
        // Its next ping carries the refutation.
        let ping = b
            .tick(2_000)
            .into_iter()
            .find(|o| o.to == ids[0])
            .expect("b pings a");
        a.receive(ids[1], ping.msg, 2_010);
        assert_eq!(a.state(&ids[1]), Some(State::Alive));
    }

    #[test]
    fn a_suspect_refutes_with_a_higher_incarnation() {
        let ids = [ShortId(1), ShortId(2)];
        let mut a = Swim::new(ids[0], ids, SwimConfig::default(), 1, 0);
        let suspicion = Update {
            id: ids[0],
            incarnation: 0,
            state: State::Suspect,
        };
        let out = a.receive(
            ids[1],
            Msg::Ping {
                seq: 1,
                updates: vec![suspicion],
            },
            10,
        );
        let Msg::Ack { updates, .. } = &out[0].msg else {
            panic!("{out:?}")
        };
        assert!(updates.contains(&Update {
            id: ids[0],
            incarnation: 1,
            state: State::Alive
        }));
        let mut b = Swim::new(ids[1], ids, SwimConfig::default(), 2, 0);
        b.receive(
            ids[0],
            Msg::Ping {
                seq: 1,
                updates: vec![suspicion],
            },
            10,
        );
        assert_eq!(b.state(&ids[0]), Some(State::Suspect));
        b.receive(ids[0], out[0].msg.clone(), 20);
        assert_eq!(b.state(&ids[0]), Some(State::Alive));
    }
}
