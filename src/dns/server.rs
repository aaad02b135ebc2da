//! The DNS front: a [`Handler`] that turns request bytes into response bytes
//! (requests decoded as hickory-server's `MessageRequest`, answered from
//! [`resolve`], plus EDNS(0) (RFC 6891), Client Subnet echo (RFC 7871) and
//! UDP truncation), and the listeners: UDP with `dns.udp_threads`
//! `SO_REUSEPORT` sockets and receive loops ([`udp_threads`]), TCP in
//! [`super::tcp`].
//!
//! The handler does no I/O: steering asks an in-memory snapshot
//! ([`Steering`]).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, LowerName};
use hickory_proto::xfer::Protocol;
use hickory_server::authority::MessageRequest;
use hickory_server::server::Request;
use tokio::net::TcpListener;

use super::answer::{resolve, Answer, Question};
use super::fast::Fast;
use super::precomputed::Precomputed;
use super::template::Template;
use super::zone::ZoneSet;

/// A steering decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steered {
    /// Addresses, best first.
    pub addrs: Vec<IpAddr>,
    /// ECS scope prefix to return (0: valid for every client).
    pub scope: u8,
    /// TTL of the answer, seconds.
    pub ttl: u32,
}

/// Where steered addresses come from (an in-memory view; must not block).
pub trait Steering: Send + Sync + 'static {
    /// Addresses (of the family asked: `v6`) to answer for a steered site
    /// name, or `None` for the zone's fallback records.
    fn addresses(
        &self,
        site: &LowerName,
        v6: bool,
        client: IpAddr,
        subnet: Option<(IpAddr, u8)>,
    ) -> Option<Steered>;

    /// The number of the snapshot the answers come from, for callers that
    /// keep answers ([`super::worker::Worker`]'s first-level cache): an
    /// answer obtained while this returned `Some(g)` may be reused as long
    /// as it still returns `Some(g)`. `None` (the default): answers may
    /// change at any time and must not be kept.
    fn generation(&self) -> Option<u64> {
        None
    }

    /// The same decision as [`Steering::addresses`], as pre-encoded answer
    /// records (the fast path). The default encodes the addresses on every
    /// call; implementations keep the encoded answers in their snapshot.
    fn steered_wire(
        &self,
        site: &LowerName,
        v6: bool,
        client: IpAddr,
        subnet: Option<(IpAddr, u8)>,
    ) -> SteeredWire {
        self.addresses(site, v6, client, subnet)
            .and_then(|s| {
                let t = Template::steered(site, v6, &s.addrs, s.ttl)?;
                Some(SteeredWire::Answer {
                    records: Arc::new(t),
                    scope: s.scope,
                })
            })
            .unwrap_or(SteeredWire::NoAnswer)
    }
}

/// A steering decision as the fast path uses it.
#[derive(Debug, Clone)]
pub enum SteeredWire {
    /// Steered: these answer records, and the ECS scope to echo.
    Answer {
        /// The answer section (addresses of the family asked).
        records: Arc<Template>,
        /// ECS scope prefix.
        scope: u8,
    },
    /// No address of the family asked: the zone's fallback records.
    NoAnswer,
}

/// Settings for the DNS handler.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// Largest TTL of a steered name's fallback records (no mirror could
    /// serve); steered answers carry their own TTL.
    pub fallback_ttl: u32,
    /// Largest UDP payload we send.
    pub max_udp_payload: u16,
    /// UDP response rate limiting (None: off).
    pub rrl: Option<Arc<super::rrl::RateLimiter>>,
    /// Where responses are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// What the handler answers from: zones and the steered site names.
/// Swapped atomically when owner-signed zones arrive.
#[derive(Debug, Clone, Default)]
pub struct DnsData {
    /// Authoritative zones.
    pub zones: ZoneSet,
    /// Names whose A/AAAA answers are steered.
    pub steered: HashSet<LowerName>,
}

/// Shared, swappable DNS data.
pub type SharedDnsData = Arc<arc_swap::ArcSwap<DnsData>>;

/// The request handler.
pub struct Handler {
    pub(super) data: SharedDnsData,
    pub(super) steering: Arc<dyn Steering>,
    pub(super) settings: DnsSettings,
    /// Pre-encoded answers of the current `data` snapshot.
    pub(super) pre: arc_swap::ArcSwapOption<Precomputed>,
    /// Held while `pre` is rebuilt.
    pub(super) rebuild: std::sync::Mutex<()>,
    challenges: Option<Arc<crate::challenge::book::TxtBook>>,
}

impl Handler {
    /// The metrics this handler counts into.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.settings.metrics
    }

    /// Builds a handler.
    pub fn new(data: SharedDnsData, steering: Arc<dyn Steering>, settings: DnsSettings) -> Self {
        Self {
            data,
            steering,
            settings,
            pre: arc_swap::ArcSwapOption::empty(),
            rebuild: std::sync::Mutex::new(()),
            challenges: None,
        }
    }

    /// Also answers `_acme-challenge.<name>` TXT from the accepted
    /// challenge requests in `book` (see [`crate::challenge`]).
    pub fn with_challenges(mut self, book: Arc<crate::challenge::book::TxtBook>) -> Self {
        self.challenges = Some(book);
        self
    }

    /// Computes the full response for a request (pure apart from steering),
    /// truncated for UDP when it does not fit.
    pub fn respond(&self, request: &Request) -> Message {
        let mut msg = self.build(request);
        // Truncated when too big for the client, and also when it does not encode.
        if request.protocol() == Protocol::Udp && fit(&mut msg, self.udp_limit(request)).is_none() {
            truncate(&mut msg);
        }
        msg
    }

    /// The response before any size limit.
    fn build(&self, request: &Request) -> Message {
        let mut header = Header::response_from_request(request.header());
        let mut msg = Message::new();
        let req_edns = request.edns();
        let mut edns = req_edns.map(|_| {
            let mut e = Edns::new();
            e.set_max_payload(self.settings.max_udp_payload);
            e.set_version(0);
            e
        });

        let rcode_only = |mut header: Header, code: ResponseCode, edns: Option<Edns>| {
            header.set_response_code(code);
            let mut m = Message::new();
            m.set_header(header);
            if let Some(e) = edns {
                m.set_edns(e);
            }
            m
        };

        if let Some(e) = req_edns {
            if e.version() > 0 {
                return rcode_only(header, ResponseCode::BADVERS, edns);
            }
        }
        if request.message_type() != MessageType::Query {
            return rcode_only(header, ResponseCode::FormErr, edns);
        }
        if request.op_code() != OpCode::Query {
            return rcode_only(header, ResponseCode::NotImp, edns);
        }
        let queries = request.queries();
        let [query] = queries else {
            return rcode_only(header, ResponseCode::FormErr, edns);
        };
        if query.query_class() != DNSClass::IN {
            return rcode_only(header, ResponseCode::Refused, edns);
        }

        let client = unmap(request.src().ip());
        // RFC 7871 §6: bits past the source prefix must be zero; they are
        // cleared here, so a client cannot be located (and the answer
        // cached for its whole prefix) by more than the prefix it declares.
        let subnet = req_edns.and_then(|e| match e.option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(cs)) => Some(ClientSubnet::new(
                mask_to_prefix(cs.addr(), cs.source_prefix()),
                cs.source_prefix(),
                cs.scope_prefix(),
            )),
            _ => None,
        });
        let sub = subnet
            .as_ref()
            .map(|cs| (unmap(cs.addr()), cs.source_prefix()));
        let scope = std::cell::Cell::new(0u8);
        let v6 = query.query_type() == hickory_proto::rr::RecordType::AAAA;
        let steer = |name: &LowerName| {
            self.steering.addresses(name, v6, client, sub).map(|s| {
                scope.set(s.scope);
                (s.addrs, s.ttl)
            })
        };
        let data = self.data.load();
        if let Some(ans) = self.challenge_answer(&data.zones, query.name(), query.query_type()) {
            header.set_authoritative(true);
            header.set_response_code(ans.rcode);
            msg.set_header(header);
            msg.add_query(query.original().clone());
            msg.insert_answers(ans.answers);
            msg.insert_name_servers(ans.authority);
            if let (Some(e), Some(cs)) = (edns.as_mut(), subnet) {
                let echo = ClientSubnet::new(cs.addr(), cs.source_prefix(), 0);
                e.options_mut().insert(EdnsOption::Subnet(echo));
            }
            if let Some(e) = edns {
                msg.set_edns(e);
            }
            return msg;
        }
        let ans: Answer = resolve(
            &data.zones,
            &data.steered,
            &Question {
                name: query.name(),
                qtype: query.query_type(),
            },
            self.settings.fallback_ttl,
            &steer,
        );

        if let (Some(e), Some(cs)) = (edns.as_mut(), subnet) {
            // RFC 7871 §7.2.1: echo family, source prefix and address; scope 0
            // means the answer does not depend on the client's subnet.
            let scope = if ans.steered { scope.get() } else { 0 };
            let echo = ClientSubnet::new(cs.addr(), cs.source_prefix(), scope);
            e.options_mut().insert(EdnsOption::Subnet(echo));
        }

        header.set_authoritative(ans.authoritative);
        header.set_response_code(ans.rcode);
        msg.set_header(header);
        msg.add_query(query.original().clone());
        msg.insert_answers(ans.answers);
        msg.insert_name_servers(ans.authority);
        msg.insert_additionals(ans.additional);
        if let Some(e) = edns {
            msg.set_edns(e);
        }

        msg
    }

    /// True when `wire_name` (lowercased wire form) starts with the
    /// `_acme-challenge` label and challenge values are being served.
    pub(super) fn challenge_pending(&self, wire_name: &[u8]) -> bool {
        let label = crate::challenge::LABEL.as_bytes();
        wire_name
            .first()
            .is_some_and(|&n| usize::from(n) == label.len())
            && wire_name.get(1..=label.len()) == Some(label)
            && self.challenges.as_ref().is_some_and(|b| !b.is_empty())
    }

    /// The answer for `_acme-challenge.<name>` while accepted challenge
    /// values exist there: their TXT records (TTL 1 s: a value lives minutes
    /// and must not outlive its withdrawal in caches), or NODATA for other
    /// types. `None`: answer from the zones as usual.
    fn challenge_answer(
        &self,
        zones: &ZoneSet,
        name: &LowerName,
        qtype: hickory_proto::rr::RecordType,
    ) -> Option<Answer> {
        use hickory_proto::rr::rdata::TXT;
        use hickory_proto::rr::{RData, Record, RecordType};
        let book = self.challenges.as_ref()?;
        if book.is_empty() {
            return None;
        }
        let zone = zones.find(name)?;
        if zone.cut_above(name).is_some() {
            return None;
        }
        let mut owner = name.to_string();
        if owner.ends_with('.') {
            owner.pop();
        }
        if !owner.starts_with(crate::challenge::LABEL) {
            return None;
        }
        let values = book.values(&owner, crate::catalog::unix_now());
        if values.is_empty() {
            return None;
        }
        let (answers, authority) = if matches!(qtype, RecordType::TXT | RecordType::ANY) {
            let n = hickory_proto::rr::Name::from(name.clone());
            let recs = values
                .into_iter()
                .map(|v| Record::from_rdata(n.clone(), 1, RData::TXT(TXT::new(vec![v]))))
                .collect();
            (recs, vec![])
        } else {
            (vec![], vec![zone.negative_soa()])
        };
        Some(Answer {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers,
            authority,
            additional: vec![],
            steered: false,
        })
    }

    /// Largest UDP response for this request: 512 without EDNS (RFC 1035),
    /// else the client's size clamped to 512..=max_udp_payload.
    fn udp_limit(&self, request: &Request) -> usize {
        let limit = match request.edns() {
            Some(e) => e.max_payload().clamp(512, self.settings.max_udp_payload),
            None => 512,
        };
        usize::from(limit)
    }

    /// The UDP path: one datagram in, the response datagram out (None:
    /// send nothing), rate limited and truncated to the client's size.
    /// The fast path when it covers the query, else [`Handler::answer_udp_reference`].
    pub fn answer_udp(&self, packet: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        let mut out = vec![0u8; usize::from(self.settings.max_udp_payload.max(512))];
        let n = self.answer_udp_into(packet, src, &mut out)?;
        out.truncate(n);
        Some(out)
    }

    /// [`Handler::answer_udp`] into `out` (at least `max_udp_payload`
    /// bytes); the response's length. No allocation on the fast path.
    pub fn answer_udp_into(&self, packet: &[u8], src: SocketAddr, out: &mut [u8]) -> Option<usize> {
        match self.answer_fast(packet, src, false, out) {
            Fast::Reply(n) => Some(n),
            Fast::NoReply => None,
            Fast::Slow => copy_into(self.answer_udp_reference(packet, src)?, out),
        }
    }

    /// [`Handler::answer_udp_into`] as a UDP thread does it, within a batch
    /// of `w` (between [`Worker::begin`](super::worker::Worker::begin) and
    /// [`Worker::finish`](super::worker::Worker::finish)): the same bytes,
    /// steered answers through the worker's first-level cache.
    pub fn answer_udp_in(
        &self,
        w: &mut super::worker::Worker,
        packet: &[u8],
        src: SocketAddr,
        out: &mut [u8],
    ) -> Option<usize> {
        match self.answer_fast_in(w, packet, src, false, out) {
            Fast::Reply(n) => Some(n),
            Fast::NoReply => None,
            Fast::Slow => copy_into(self.answer_udp_reference(packet, src)?, out),
        }
    }

    /// [`Handler::answer_tcp`] into `out` (65,535 bytes); the response's length.
    pub fn answer_tcp_into(&self, packet: &[u8], src: SocketAddr, out: &mut [u8]) -> Option<usize> {
        match self.answer_fast(packet, src, true, out) {
            Fast::Reply(n) => Some(n),
            Fast::NoReply => None,
            Fast::Slow => copy_into(self.answer_tcp_reference(packet, src)?, out),
        }
    }

    /// The UDP path without the fast path: decode with hickory, [`resolve`],
    /// encode (the reference the fast path is checked against).
    pub fn answer_udp_reference(&self, packet: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        use crate::metrics::Metrics;
        let m = &self.settings.metrics;
        let req = match self.decode_counted(packet, "udp") {
            Ok(r) => r,
            Err(reply) => return reply,
        };
        let request = Request::new(req, src, Protocol::Udp);
        let mut msg = self.build(&request);
        if let Some(rrl) = &self.settings.rrl {
            match rrl.check(unmap(src.ip()), std::time::Instant::now()) {
                super::rrl::Verdict::Answer => {}
                super::rrl::Verdict::Slip => {
                    Metrics::count(&m.dns_rate_limited, "slip");
                    truncate(&mut msg);
                }
                super::rrl::Verdict::Drop => {
                    Metrics::count(&m.dns_rate_limited, "drop");
                    return None;
                }
            }
        }
        m.dns("udp", msg.response_code());
        fit(&mut msg, self.udp_limit(&request))
    }

    /// The TCP path: one message in (without its length prefix), the
    /// response message out (None: close the connection). Never rate
    /// limited; truncated only past the 65,535-byte TCP message limit.
    pub fn answer_tcp(&self, packet: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        let mut out = vec![0u8; usize::from(u16::MAX)];
        let n = self.answer_tcp_into(packet, src, &mut out)?;
        out.truncate(n);
        Some(out)
    }

    /// [`Handler::answer_tcp`] without the fast path.
    pub fn answer_tcp_reference(&self, packet: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        let req = match self.decode_counted(packet, "tcp") {
            Ok(r) => r,
            Err(reply) => return reply,
        };
        let mut msg = self.build(&Request::new(req, src, Protocol::Tcp));
        self.settings.metrics.dns("tcp", msg.response_code());
        fit(&mut msg, usize::from(u16::MAX))
    }

    /// [`decode`], counting the FORMERR replies it makes.
    fn decode_counted(
        &self,
        packet: &[u8],
        transport: &'static str,
    ) -> Result<MessageRequest, Option<Vec<u8>>> {
        let decoded = decode(packet);
        if let Err(Some(_)) = &decoded {
            self.settings.metrics.dns(transport, ResponseCode::FormErr);
        }
        decoded
    }
}

/// Copies a reference-path response into `out`; its length (None when it
/// does not fit, which the size limits rule out).
fn copy_into(resp: Vec<u8>, out: &mut [u8]) -> Option<usize> {
    out.get_mut(..resp.len())?.copy_from_slice(&resp);
    Some(resp.len())
}

/// Encodes `msg`; when that is longer than `limit` bytes, truncates it
/// (RFC 2181 §9) and encodes again. The bytes sent, or None if `msg` does
/// not encode.
fn fit(msg: &mut Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = msg.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    truncate(msg);
    msg.to_vec().ok()
}

/// Decodes a request. `Err(reply)`: what to send instead of an answer,
/// FORMERR for an undecodable query, nothing for fragments and responses
/// (never answer a response: reflection loops).
fn decode(packet: &[u8]) -> Result<MessageRequest, Option<Vec<u8>>> {
    use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
    if packet.len() < 12 {
        return Err(None);
    }
    match MessageRequest::from_bytes(packet) {
        Ok(r) if r.message_type() == MessageType::Response => Err(None),
        Ok(r) => Ok(r),
        Err(_) => {
            let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else {
                return Err(None);
            };
            if header.message_type() != MessageType::Query {
                return Err(None);
            }
            let mut h = Header::response_from_request(&header);
            h.set_response_code(ResponseCode::FormErr);
            let mut m = Message::new();
            m.set_header(h);
            Err(m.to_vec().ok())
        }
    }
}

/// RFC 2181 §9: set TC and drop the records, so the client retries over TCP.
fn truncate(msg: &mut Message) {
    msg.take_answers();
    msg.take_name_servers();
    msg.take_additionals();
    let mut h = *msg.header();
    h.set_truncated(true);
    msg.set_header(h);
}

/// `ip` with every bit after the first `prefix` cleared (a prefix beyond
/// the family's length keeps the whole address).
pub fn mask_to_prefix(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let keep = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((bits & keep).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((bits & keep).into())
        }
    }
}

/// Turns `::ffff:a.b.c.d` into `a.b.c.d`.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// UDP sockets per listen address for the `dns.udp_threads` setting (each
/// has a receive thread and a burst thread, see `dns::udp`):
/// `configured` when not 0, else one per two cores (at least one, at most
/// eight). On the 2-core benchmark machine one thread answered a steered
/// query for about 25 % less CPU than two (fewer wake-ups: larger
/// `recvmmsg` batches; docs/BENCHMARKS.md, 2026-11-30 "first-level cache").
pub fn udp_threads(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores / 2).clamp(1, 8)
}

/// Running DNS listeners: UDP (`SO_REUSEPORT` sockets, one thread each,
/// [`super::udp`]) and TCP ([`super::tcp`]) on the same port of each
/// address, claimed as [`super::bind`] describes.
pub struct DnsServer {
    tasks: tokio::task::JoinSet<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
    stop_udp: Arc<std::sync::atomic::AtomicBool>,
    /// Bound addresses (UDP and TCP share each port).
    pub addrs: Vec<SocketAddr>,
}

impl DnsServer {
    /// Binds UDP and TCP on every address (same port for both; port 0 picks
    /// one), with `udp_workers` UDP sockets and threads per address (at
    /// least one). An address already served fails with `AddrInUse`.
    pub async fn bind(
        handler: Handler,
        listen: &[SocketAddr],
        tcp: super::tcp::TcpLimits,
        udp_workers: usize,
    ) -> std::io::Result<Self> {
        let handler = Arc::new(handler);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let stop_udp = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        let permits = Arc::new(tokio::sync::Semaphore::new(tcp.max_connections));
        let workers = udp_workers.max(1);
        let mut claimed = vec![];
        for want in listen {
            claimed.push(super::bind::claim(*want, workers)?);
        }
        let mut addrs = vec![];
        let mut threads = vec![];
        for (listener, socks) in claimed {
            let listener = TcpListener::from_std(listener)?;
            addrs.push(listener.local_addr()?);
            match super::udp::spawn(&handler, socks, &stop_udp) {
                Ok(t) => threads.extend(t),
                Err(e) => {
                    stop_udp.store(true, std::sync::atomic::Ordering::Relaxed);
                    return Err(e);
                }
            }
            tasks.spawn(super::tcp::serve(
                listener,
                handler.clone(),
                permits.clone(),
                tcp.idle_timeout,
                stop_rx.clone(),
            ));
        }
        Ok(Self {
            tasks,
            threads,
            stop,
            stop_udp,
            addrs,
        })
    }

    /// Stops the listeners and closes open TCP connections.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.stop_udp
            .store(true, std::sync::atomic::Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop_udp
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod ecs_tests {
    use super::mask_to_prefix;
    use std::net::IpAddr;

    #[test]
    fn ecs_addresses_are_cut_to_their_source_prefix() {
        let m = |a: &str, p| mask_to_prefix(a.parse::<IpAddr>().unwrap(), p).to_string();
        assert_eq!(m("10.5.7.9", 16), "10.5.0.0");
        assert_eq!(m("10.5.7.9", 0), "0.0.0.0");
        assert_eq!(m("10.5.7.9", 32), "10.5.7.9");
        assert_eq!(m("10.5.7.9", 99), "10.5.7.9");
        assert_eq!(m("10.5.7.9", 21), "10.5.0.0");
        assert_eq!(m("fd00:3:1:ffff::1", 48), "fd00:3:1::");
        assert_eq!(m("fd00:3:1:ffff::1", 128), "fd00:3:1:ffff::1");
    }
}
