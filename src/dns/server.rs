//! hickory-server glue: a [`RequestHandler`] that answers from [`resolve`],
//! plus EDNS(0) (RFC 6891), Client Subnet echo (RFC 7871) and UDP truncation.
//!
//! The handler never does I/O besides sending the response: steering asks
//! an in-memory snapshot ([`Steering`]).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, LowerName, Record};
use hickory_proto::xfer::Protocol;
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use tokio::net::{TcpListener, UdpSocket};

use super::answer::{resolve, Answer, Question};
use super::zone::ZoneSet;

/// A steering decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steered {
    /// Addresses, best first.
    pub addrs: Vec<IpAddr>,
    /// ECS scope prefix to return (0: valid for every client).
    pub scope: u8,
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
}

/// Settings for the DNS handler.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// TTL of steered answers.
    pub answer_ttl: u32,
    /// Largest UDP payload we send.
    pub max_udp_payload: u16,
    /// UDP response rate limiting (None: off).
    pub rrl: Option<Arc<super::rrl::RateLimiter>>,
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
    data: SharedDnsData,
    steering: Arc<dyn Steering>,
    settings: DnsSettings,
}

impl Handler {
    /// Builds a handler.
    pub fn new(data: SharedDnsData, steering: Arc<dyn Steering>, settings: DnsSettings) -> Self {
        Self {
            data,
            steering,
            settings,
        }
    }

    /// Computes the full response for a request (pure apart from steering).
    pub fn respond(&self, request: &Request) -> Message {
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
        let subnet = req_edns.and_then(|e| match e.option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(cs)) => Some(*cs),
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
                s.addrs
            })
        };
        let data = self.data.load();
        let ans: Answer = resolve(
            &data.zones,
            &data.steered,
            &Question {
                name: query.name(),
                qtype: query.query_type(),
            },
            self.settings.answer_ttl,
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

        if request.protocol() == Protocol::Udp {
            let limit = match req_edns {
                Some(e) => e.max_payload().clamp(512, self.settings.max_udp_payload),
                None => 512,
            } as usize;
            let too_big = msg.to_vec().map(|v| v.len() > limit).unwrap_or(true);
            if too_big {
                // RFC 2181 §9: set TC and send what fits; we send an empty
                // answer so the client retries over TCP.
                msg.take_answers();
                msg.take_name_servers();
                msg.take_additionals();
                let mut h = *msg.header();
                h.set_truncated(true);
                msg.set_header(h);
            }
        }
        msg
    }
}

/// Turns `::ffff:a.b.c.d` into `a.b.c.d`.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut msg = self.respond(request);
        if request.protocol() == Protocol::Udp {
            if let Some(rrl) = &self.settings.rrl {
                match rrl.check(unmap(request.src().ip()), std::time::Instant::now()) {
                    super::rrl::Verdict::Answer => {}
                    super::rrl::Verdict::Slip => {
                        msg.take_answers();
                        msg.take_name_servers();
                        msg.take_additionals();
                        let mut h = *msg.header();
                        h.set_truncated(true);
                        msg.set_header(h);
                    }
                    super::rrl::Verdict::Drop => {
                        tracing::trace!(src = %request.src(), "rate limited: response dropped");
                        return (*msg.header()).into();
                    }
                }
            }
        }
        let header = *msg.header();
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = msg.extensions().clone() {
            builder.edns(e);
        }
        let response = builder.build(
            header,
            msg.answers().iter(),
            msg.name_servers().iter(),
            std::iter::empty::<&Record>(),
            msg.additionals().iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "failed to send DNS response");
                let mut h = header;
                h.set_response_code(ResponseCode::ServFail);
                h.into()
            }
        }
    }
}

/// Running DNS listeners.
pub struct DnsServer {
    server: ServerFuture<Handler>,
    /// Bound addresses (UDP and TCP share each port).
    pub addrs: Vec<SocketAddr>,
}

impl DnsServer {
    /// Binds UDP and TCP on every address (same port for both; port 0 picks one).
    pub async fn bind(
        handler: Handler,
        listen: &[SocketAddr],
        tcp_timeout: Duration,
    ) -> std::io::Result<Self> {
        let mut server = ServerFuture::new(handler);
        let mut addrs = vec![];
        for want in listen {
            let (udp, tcp) = bind_pair(*want).await?;
            let addr = udp.local_addr()?;
            server.register_socket(udp);
            server.register_listener(tcp, tcp_timeout);
            addrs.push(addr);
        }
        Ok(Self { server, addrs })
    }

    /// Stops the listeners.
    pub async fn shutdown(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}

async fn bind_pair(want: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last_err = None;
    for _ in 0..32 {
        let udp = UdpSocket::bind(want).await?;
        let addr = udp.local_addr()?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if want.port() == 0 => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("could not bind UDP and TCP on one port")))
}
