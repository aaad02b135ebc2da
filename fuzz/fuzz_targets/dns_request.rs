//! Arbitrary bytes as a DNS request -> `p2pcdn::dns::server::Handler`.
//!
//! 0. `Handler::answer_udp` (the production UDP path: datagram in, datagram
//!    out): no answer to < 12 bytes or to responses; every decodable query
//!    gets an answer; what it sends decodes, echoes the id, is a response and
//!    fits the UDP limit; it equals `respond()`'s encoding for the request.
//!
//! For each input that hickory-server decodes as a `MessageRequest` (exactly
//! as its UDP/TCP listeners do), the request is also answered per protocol by:
//! 1. `Handler::respond` (the pure answer); the `Message` must encode with
//!    `to_vec()`, decode again, carry the request's id, and over UDP fit the
//!    advertised limit (512 without EDNS, else clamp(payload, 512, max)) and
//!    never exceed 65535 bytes;
//! 2. the production path, `RequestHandler::handle_request`, with a response
//!    handler that encodes exactly like hickory-server's `ResponseHandle`
//!    (`MessageResponse::destructive_emit` with the same size limit); the
//!    bytes sent must decode again (also when a QNAME uses a compression
//!    pointer: hickory-server echoes raw question bytes, so p2pcdn hands it
//!    a re-encoded question; tests/fuzz_regressions/dns_request/).
#![no_main]

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_proto::xfer::Protocol;
use hickory_server::authority::{MessageRequest, MessageResponse};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use libfuzzer_sys::fuzz_target;
use p2pcdn_fuzz::{dns_handler, MAX_UDP_PAYLOAD};

/// What hickory-server's UDP handle uses without EDNS (hickory_proto::udp::MAX_RECEIVE_BUFFER_SIZE).
const HICKORY_UDP_DEFAULT: u16 = 4096;

#[derive(Clone)]
struct Capture {
    protocol: Protocol,
    sent: Arc<Mutex<Option<Result<Vec<u8>, String>>>>,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> io::Result<ResponseInfo> {
        // Same as hickory_server::server::ResponseHandle::send_response.
        let header = *response.header();
        let max_size = match self.protocol {
            Protocol::Udp => response
                .get_edns()
                .as_ref()
                .map_or(HICKORY_UDP_DEFAULT, |e| e.max_payload()),
            _ => u16::MAX,
        };
        let mut buffer = Vec::with_capacity(512);
        let result = {
            let mut encoder = BinEncoder::new(&mut buffer);
            encoder.set_max_size(max_size);
            response.destructive_emit(&mut encoder)
        };
        let out = match result {
            Ok(_) => Ok(buffer),
            Err(e) => Err(e.to_string()),
        };
        *self.sent.lock().unwrap() = Some(out);
        Ok(header.into())
    }
}

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
        Err(e) => panic!("respond() built a message that does not encode ({protocol}): {e}\n{response:?}"),
    };
    if let Err(e) = Message::from_vec(&bytes) {
        panic!("response does not decode again ({protocol}): {e}\n{response:?}");
    }
    if protocol == Protocol::Udp {
        assert!(bytes.len() <= 65535, "UDP response of {} bytes", bytes.len());
        let limit = request
            .edns()
            .map_or(512, |e| e.max_payload().clamp(512, MAX_UDP_PAYLOAD)) as usize;
        assert!(
            bytes.len() <= limit,
            "UDP response of {} bytes exceeds the limit {limit}",
            bytes.len()
        );
    }
    Some(bytes)
}

/// The UDP fast path; returns its answer for comparison with `respond()`.
fn check_answer_udp(data: &[u8]) -> Option<Vec<u8>> {
    let id = data.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let out = dns_handler().answer_udp(data, src_for(id));
    let parsed = parse(data);
    if data.len() < 12 {
        assert!(out.is_none(), "answered a datagram shorter than a header");
        return None;
    }
    if let Some(m) = &parsed {
        if m.message_type() == MessageType::Query {
            assert!(out.is_some(), "no UDP answer to a decodable query");
        } else {
            assert!(out.is_none(), "answered a response datagram");
        }
    }
    let bytes = out?;
    let m = match Message::from_vec(&bytes) {
        Ok(m) => m,
        Err(e) => panic!("answer_udp sent bytes that do not decode: {e}"),
    };
    assert_eq!(m.id(), id, "answer_udp changed the id");
    assert_eq!(m.message_type(), MessageType::Response);
    assert!(bytes.len() <= 65535);
    let limit = parsed
        .as_ref()
        .and_then(|r| r.edns())
        .map_or(512, |e| e.max_payload().clamp(512, MAX_UDP_PAYLOAD)) as usize;
    assert!(
        bytes.len() <= limit,
        "answer_udp sent {} bytes, over the limit {limit}",
        bytes.len()
    );
    parsed.is_some().then_some(bytes)
}

fn check_handle_request(data: &[u8], protocol: Protocol) {
    let Some(msg) = parse(data) else { return };
    // hickory-server drops responses before calling the handler.
    if msg.message_type() == MessageType::Response {
        return;
    }
    let id = msg.id();
    let request = Request::new(msg, src_for(id), protocol);
    let sent = Arc::new(Mutex::new(None));
    let capture = Capture {
        protocol,
        sent: sent.clone(),
    };
    let mut fut = std::pin::pin!(dns_handler().handle_request(&request, capture));
    let mut cx = Context::from_waker(Waker::noop());
    // The handler does no I/O: it must complete on the first poll.
    let Poll::Ready(_) = fut.as_mut().poll(&mut cx) else {
        panic!("handle_request did not complete synchronously");
    };
    let sent = sent.lock().unwrap().take().expect("no response sent");
    match sent {
        Ok(bytes) => {
            if let Err(e) = Message::from_vec(&bytes) {
                panic!("sent response does not decode ({protocol}): {e}");
            }
            if protocol == Protocol::Udp {
                assert!(bytes.len() <= 65535);
            }
        }
        // hickory-server would send a fallback SERVFAIL; treat it as a finding.
        Err(e) => panic!("sent response fails to encode ({protocol}): {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let fast = check_answer_udp(data);
    let udp = check_respond(data, Protocol::Udp);
    if let (Some(fast), Some(udp)) = (&fast, &udp) {
        assert_eq!(fast, udp, "answer_udp and respond(UDP) differ");
    }
    check_handle_request(data, Protocol::Udp);
    check_respond(data, Protocol::Tcp);
    check_handle_request(data, Protocol::Tcp);
});
