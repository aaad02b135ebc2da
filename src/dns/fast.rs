//! The fast path: a query of the common shape ([`wire::parse`]) answered by
//! copying a pre-encoded [`Template`] (zone answers from [`Precomputed`],
//! steered answers from the steering view's snapshot) after the question,
//! and writing the header and OPT record around it. No allocation.
//!
//! It gives the same bytes as the reference path ([`Handler::respond`]);
//! whatever it does not cover returns [`Fast::Slow`] and goes there.

use std::net::SocketAddr;
use std::sync::Arc;

use super::precomputed::{fast_qtype, steerable_qtype, Lookup, Precomputed};
use super::rrl::Verdict;
use super::server::{unmap, Handler, SteeredWire};
use super::template::Template;
use super::wire::{self, Query, WriteError, Writer, TYPE_OPT};
use super::worker::{Key, Worker};

/// Outcome of the fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fast {
    /// A response of this many bytes is in the output buffer.
    Reply(usize),
    /// Send nothing (rate limited).
    NoReply,
    /// Not covered: answer through the reference path.
    Slow,
}

/// What [`Handler::respond_fast`] did.
enum Answered {
    /// This many bytes, with this response code.
    Reply(usize, u8),
    NoReply,
    Slow,
}

/// What surrounds the template in one response.
struct Shape<'a> {
    template: &'a Template,
    steered_scope: Option<u8>,
    truncated: bool,
}

impl Handler {
    /// The pre-encoded answers of the current zone snapshot, rebuilt on the
    /// first query after the snapshot changes (`None` while another thread
    /// rebuilds them).
    pub(super) fn precomputed(&self) -> Option<Arc<Precomputed>> {
        let data = self.data.load();
        if let Some(p) = self.pre.load().as_ref() {
            if p.is_for(&data) {
                return Some(Arc::clone(p));
            }
        }
        let _only_one = self.rebuild.try_lock().ok()?;
        let p = Arc::new(Precomputed::build(
            Arc::clone(&data),
            self.settings.fallback_ttl,
        ));
        self.pre.store(Some(Arc::clone(&p)));
        Some(p)
    }

    /// Answers `packet` from `src` into `out` when the fast path covers it.
    /// `tcp`: no rate limiting, and the 65,535-byte limit instead of UDP's.
    pub fn answer_fast(&self, packet: &[u8], src: SocketAddr, tcp: bool, out: &mut [u8]) -> Fast {
        let mut w = Worker::without_cache();
        w.begin(self);
        let r = self.answer_fast_in(&mut w, packet, src, tcp, out);
        w.finish(self);
        r
    }

    /// [`Handler::answer_fast`] as a worker thread does it: from the zone
    /// snapshot taken by [`Worker::begin`], steered answers through the
    /// worker's first-level cache, responses counted in the worker (added
    /// to the metrics by [`Worker::finish`]).
    pub fn answer_fast_in(
        &self,
        w: &mut Worker,
        packet: &[u8],
        src: SocketAddr,
        tcp: bool,
        out: &mut [u8],
    ) -> Fast {
        let Some(q) = wire::parse(packet) else {
            return Fast::Slow;
        };
        if !fast_qtype(q.qtype) {
            return Fast::Slow;
        }
        // ACME challenge values live outside the zone snapshot: while any
        // exist, `_acme-challenge.*` questions take the reference path.
        if self.challenge_pending(q.lower_name()) {
            return Fast::Slow;
        }
        let client = unmap(src.ip());
        let subnet = q
            .edns
            .and_then(|e| e.ecs)
            .map(|c| (unmap(c.addr), c.source));
        // Only steered answers are cached.
        let key = steerable_qtype(q.qtype)
            .then(|| Key::new(q.lower_name(), q.qtype, client, subnet))
            .flatten();
        let r = match key.as_ref().and_then(|k| w.get(k)) {
            Some((records, scope)) => {
                let shape = Shape {
                    template: records,
                    steered_scope: Some(scope),
                    truncated: false,
                };
                self.respond_fast(&q, shape, src, tcp, out)
            }
            None => {
                let Some(pre) = w.pre() else {
                    return Fast::Slow;
                };
                let mut steered: Option<(Arc<Template>, u8)> = None;
                let fixed = match pre.lookup(q.lower_name(), q.label_count(), |i| q.lower_suffix(i))
                {
                    Lookup::Slow => return Fast::Slow,
                    Lookup::Fixed(t) => Some(t),
                    Lookup::Name(e) => {
                        if let Some(site) = e.is_steered(q.qtype) {
                            let v6 = q.qtype == 28;
                            if let SteeredWire::Answer { records, scope } =
                                self.steering.steered_wire(site, v6, client, subnet)
                            {
                                steered = Some((records, scope));
                            }
                        }
                        e.template(q.qtype)
                    }
                };
                let shape = match (&steered, fixed) {
                    (Some((t, scope)), _) => Shape {
                        template: t,
                        steered_scope: Some(*scope),
                        truncated: false,
                    },
                    (None, Some(t)) => Shape {
                        template: t,
                        steered_scope: None,
                        truncated: false,
                    },
                    (None, None) => return Fast::Slow,
                };
                let r = self.respond_fast(&q, shape, src, tcp, out);
                if let (Some(k), Some((t, scope))) = (key, &steered) {
                    w.put(k, t, *scope);
                }
                r
            }
        };
        match r {
            Answered::Reply(n, rcode) => {
                w.count(tcp, rcode);
                Fast::Reply(n)
            }
            Answered::NoReply => Fast::NoReply,
            Answered::Slow => Fast::Slow,
        }
    }

    /// Rate limits (UDP), then writes the response shaped by `shape`.
    fn respond_fast(
        &self,
        q: &Query<'_>,
        mut shape: Shape<'_>,
        src: SocketAddr,
        tcp: bool,
        out: &mut [u8],
    ) -> Answered {
        if !tcp {
            if let Some(rrl) = &self.settings.rrl {
                use crate::metrics::Metrics;
                let m = &self.settings.metrics;
                match rrl.check(unmap(src.ip()), std::time::Instant::now()) {
                    Verdict::Answer => {}
                    Verdict::Slip => {
                        Metrics::count(&m.dns_rate_limited, "slip");
                        shape.truncated = true;
                    }
                    Verdict::Drop => {
                        Metrics::count(&m.dns_rate_limited, "drop");
                        return Answered::NoReply;
                    }
                }
            }
        }
        let limit = if tcp {
            usize::from(u16::MAX)
        } else {
            let max = self.settings.max_udp_payload;
            usize::from(q.edns.map_or(512, |e| e.payload.clamp(512, max)))
        };
        let Some(buf) = out.get_mut(..limit) else {
            return Answered::Slow;
        };
        let n = match self.write(q, &shape, buf) {
            Ok(n) => n,
            Err(WriteError::Full) if !shape.truncated => {
                // RFC 2181 §9, as the reference path does it.
                shape.truncated = true;
                match self.write(q, &shape, buf) {
                    Ok(n) => n,
                    Err(_) => return Answered::Slow,
                }
            }
            Err(_) => return Answered::Slow,
        };
        Answered::Reply(n, shape.template.rcode())
    }

    /// Writes the whole response; its length.
    fn write(&self, q: &Query<'_>, s: &Shape<'_>, buf: &mut [u8]) -> Result<usize, WriteError> {
        let t = s.template;
        let mut w = Writer::new(buf);
        w.u16(q.id)?;
        let aa = if t.authoritative() { 0x04 } else { 0 };
        let tc = if s.truncated { 0x02 } else { 0 };
        let cd = if q.cd { 0x10 } else { 0 };
        w.bytes(&[0x80 | aa | tc | u8::from(q.rd), cd | t.rcode()])?;
        let [an, ns, ar] = if s.truncated { [0; 3] } else { t.counts() };
        let opt = u16::from(q.edns.is_some());
        for c in [1, an, ns, ar + opt] {
            w.u16(c)?;
        }
        let literal = q
            .qname
            .get(..q.qname.len() - 1)
            .ok_or(WriteError::BadName)?;
        w.name(literal)?;
        w.u16(q.qtype)?;
        w.u16(1)?;
        if !s.truncated {
            t.write(&mut w)?;
        }
        if let Some(e) = q.edns {
            w.bytes(&[0])?;
            w.u16(TYPE_OPT)?;
            w.u16(self.settings.max_udp_payload.max(512))?;
            w.bytes(&[0, 0, 0, 0])?;
            match e.ecs {
                Some(ecs) => {
                    // RFC 7871 §7.2.1: scope 0 unless the answer was steered.
                    let (data, len) = ecs.echo(s.steered_scope.unwrap_or(0));
                    let len16 = len as u16;
                    w.u16(4 + len16)?;
                    w.u16(8)?;
                    w.u16(len16)?;
                    w.bytes(data.get(..len).ok_or(WriteError::BadName)?)?;
                }
                None => w.u16(0)?,
            }
        }
        Ok(w.len())
    }
}
