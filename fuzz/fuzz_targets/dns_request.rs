//! Arbitrary bytes as a DNS request -> `p2pcdn::dns::server::Handler`.
//!
//! 0. `Handler::answer_udp` (the production UDP path: datagram in, datagram
//!    out): no answer to < 12 bytes or to responses; every decodable query
//!    gets an answer; what it sends decodes, echoes the id, is a response and
//!    fits the UDP limit; it equals `respond()`'s encoding for the request.
//!
//! 1. `Handler::answer_tcp` (the production TCP path: one message in, one
//!    out): the same rules without the UDP limit (<= 65535 bytes), equal to
//!    `respond()`'s TCP encoding; this also covers a QNAME with a compression
//!    pointer, which hickory-server's own TCP path echoed undecodably
//!    (tests/fuzz_regressions/dns_request/).
//!
//! 2. The fast path (`Handler::answer_fast`: pre-encoded templates, no
//!    hickory decoding) against the reference paths
//!    (`answer_udp_reference`, `answer_tcp_reference`: hickory decode,
//!    `resolve`, hickory encode): whenever it answers, its bytes equal the
//!    reference's byte for byte. Nothing is allowed to differ: the id, the
//!    question's case and the ECS option are patched into the templates, and
//!    name compression follows hickory's encoder exactly.
//!
//! 3. The UDP threads' path (`Handler::answer_udp_in` with a `Worker`: the
//!    first-level cache of steered answers, kept across inputs, so an
//!    answer cached for one input's question, client and subnet is served
//!    to later inputs) equals `answer_udp_reference` byte for byte, asked
//!    twice (the second time from the cache when it was steered).
//!
//! For each input that hickory-server decodes as a `MessageRequest`, the
//! request is also answered per protocol by `Handler::respond` (the pure
//! answer); the `Message` must encode with `to_vec()`, decode again, carry
//! the request's id, and over UDP fit the advertised limit (512 without
//! EDNS, else clamp(payload, 512, max)).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_proto::op::{Message, MessageType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_proto::xfer::Protocol;
use hickory_server::authority::MessageRequest;
use hickory_server::server::Request;
use libfuzzer_sys::fuzz_target;
use p2pcdn::dns::fast::Fast;
use p2pcdn::dns::worker::Worker;
use p2pcdn_fuzz::{dns_handler, MAX_UDP_PAYLOAD};

fn src_for(id: u16) -> SocketAddr {
    let ip = match id % 3 {
        0 => IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        1 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 3, 4, 5, 6)),
        // v4-mapped: the handler unmaps it.
        _ => IpAddr::V6(Ipv4Addr::new(203, 0, 113, 9).to_ipv6_mapped()),
    };
    SocketAddr::new(ip, 53000)
}

fn parse(data: &[u8]) -> Option<MessageRequest> {
    let mut decoder = BinDecoder::new(data);
    MessageRequest::read(&mut decoder).ok()
}

fn check_respond(data: &[u8], protocol: Protocol) -> Option<Vec<u8>> {
    let msg = parse(data)?;
    let id = msg.id();
    let request = Request::new(msg, src_for(id), protocol);
    let response = dns_handler().respond(&request);
    assert_eq!(response.id(), id, "response id differs from request id");
    assert_eq!(response.message_type(), MessageType::Response);
    let bytes = match response.to_vec() {
        Ok(b) => b,
        Err(e) => {
            panic!("respond() built a message that does not encode ({protocol}): {e}\n{response:?}")
        }
    };
    if let Err(e) = Message::from_vec(&bytes) {
        panic!("response does not decode again ({protocol}): {e}\n{response:?}");
    }
    if protocol == Protocol::Udp {
        assert!(
            bytes.len() <= 65535,
            "UDP response of {} bytes",
            bytes.len()
        );
        let limit = limit_for(Some(&request), protocol);
        assert!(
            bytes.len() <= limit,
            "UDP response of {} bytes exceeds the limit {limit}",
            bytes.len()
        );
    }
    Some(bytes)
}

/// The largest response allowed for `request` over `protocol`: 512 bytes
/// without EDNS, else clamp(payload, 512, max) over UDP; 65,535 over TCP.
fn limit_for(request: Option<&MessageRequest>, protocol: Protocol) -> usize {
    match protocol {
        Protocol::Udp => request
            .and_then(|r| r.edns())
            .map_or(512, |e| e.max_payload().clamp(512, MAX_UDP_PAYLOAD))
            as usize,
        _ => 65535,
    }
}

/// The production path of `protocol` (`answer_udp` or `answer_tcp`); returns
/// its answer for comparison with `respond()`.
fn check_answer(data: &[u8], protocol: Protocol) -> Option<Vec<u8>> {
    let id = data
        .get(..2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let out = match protocol {
        Protocol::Udp => dns_handler().answer_udp(data, src_for(id)),
        _ => dns_handler().answer_tcp(data, src_for(id)),
    };
    let parsed = parse(data);
    if data.len() < 12 {
        assert!(
            out.is_none(),
            "answered ({protocol}) a message shorter than a header"
        );
        return None;
    }
    if let Some(m) = &parsed {
        if m.message_type() == MessageType::Query {
            assert!(out.is_some(), "no {protocol} answer to a decodable query");
        } else {
            assert!(out.is_none(), "answered a response over {protocol}");
        }
    }
    let bytes = out?;
    let m = match Message::from_vec(&bytes) {
        Ok(m) => m,
        Err(e) => panic!("the {protocol} path sent bytes that do not decode: {e}"),
    };
    assert_eq!(m.id(), id, "the {protocol} path changed the id");
    assert_eq!(m.message_type(), MessageType::Response);
    assert!(
        bytes.len() <= 65535,
        "{protocol} message of {} bytes",
        bytes.len()
    );
    let limit = limit_for(parsed.as_ref(), protocol);
    assert!(
        bytes.len() <= limit,
        "the {protocol} path sent {} bytes, over the limit {limit}",
        bytes.len()
    );
    parsed.is_some().then_some(bytes)
}

/// The fast path, where it answers, equals the reference path.
fn check_fast(data: &[u8]) {
    let id = data
        .get(..2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let src = src_for(id);
    let mut out = vec![0u8; 65535];
    for tcp in [false, true] {
        match dns_handler().answer_fast(data, src, tcp, &mut out) {
            Fast::Reply(n) => {
                let want = if tcp {
                    dns_handler().answer_tcp_reference(data, src)
                } else {
                    dns_handler().answer_udp_reference(data, src)
                };
                assert_eq!(
                    Some(&out[..n]),
                    want.as_deref(),
                    "fast path and reference differ (tcp: {tcp})"
                );
            }
            Fast::NoReply => panic!("fast path dropped a query without rate limiting"),
            Fast::Slow => {}
        }
    }
}

thread_local! {
    static WORKER: std::cell::RefCell<Worker> = std::cell::RefCell::new(Worker::new());
}

/// The UDP worker's path equals the reference, cold and from the cache.
fn check_worker(data: &[u8]) {
    let id = data
        .get(..2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let src = src_for(id);
    let h = dns_handler();
    let want = h.answer_udp_reference(data, src);
    let mut out = vec![0u8; 65535];
    WORKER.with(|w| {
        let mut w = w.borrow_mut();
        for round in 0..2 {
            w.begin(h);
            let got = h.answer_udp_in(&mut w, data, src, &mut out);
            w.finish(h);
            assert_eq!(
                got.map(|n| &out[..n]),
                want.as_deref(),
                "UDP worker path and reference differ (round {round})"
            );
        }
    });
}

fuzz_target!(|data: &[u8]| {
    check_fast(data);
    check_worker(data);
    let fast = check_answer(data, Protocol::Udp);
    let udp = check_respond(data, Protocol::Udp);
    if let (Some(fast), Some(udp)) = (&fast, &udp) {
        assert_eq!(fast, udp, "answer_udp and respond(UDP) differ");
    }
    let tcp_path = check_answer(data, Protocol::Tcp);
    let tcp = check_respond(data, Protocol::Tcp);
    if let (Some(a), Some(b)) = (&tcp_path, &tcp) {
        if b.len() <= 65535 {
            assert_eq!(a, b, "answer_tcp and respond(TCP) differ");
        }
    }
});
