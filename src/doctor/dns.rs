//! The doctor's DNS I/O: lookups through a recursive resolver
//! (hickory-resolver) and non-recursive questions to one authority address
//! (hickory-proto messages over UDP, retried over TCP when truncated). Every
//! call is bounded by a timeout.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RData, RecordType};
use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::findings::{Answer, NsSet};

/// DNS errors of the doctor.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The system resolver configuration (/etc/resolv.conf) could not be read.
    #[error("reading the system resolver configuration: {0}")]
    SystemConfig(String),
    /// No answer within the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A socket error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The message could not be built or parsed.
    #[error("{0}")]
    Proto(#[from] hickory_proto::ProtoError),
    /// The resolver failed (SERVFAIL, NXDOMAIN, no records, timeout).
    #[error("{0}")]
    Resolve(#[from] hickory_resolver::ResolveError),
    /// The response does not answer our question.
    #[error("the response does not match the query")]
    Mismatch,
}

/// A recursive resolver and how to name it in messages.
pub struct Resolver {
    inner: TokioResolver,
    /// `127.0.0.53:53` or `system (…)`.
    pub label: String,
}

impl Resolver {
    /// The resolver at `addr` (UDP and TCP), or the system's (/etc/resolv.conf).
    pub fn new(addr: Option<SocketAddr>, timeout: Duration) -> Result<Self, DnsError> {
        let mut builder = match addr {
            Some(a) => {
                let group = NameServerConfigGroup::from_ips_clear(&[a.ip()], a.port(), true);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], group),
                    TokioConnectionProvider::default(),
                )
            }
            None => {
                TokioResolver::builder_tokio().map_err(|e| DnsError::SystemConfig(e.to_string()))?
            }
        };
        let opts = builder.options_mut();
        opts.timeout = timeout;
        opts.attempts = 2;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
        let inner = builder.build();
        let label = match addr {
            Some(a) => a.to_string(),
            None => {
                let servers: BTreeSet<String> = inner
                    .config()
                    .name_servers()
                    .iter()
                    .map(|s| s.socket_addr.to_string())
                    .collect();
                format!(
                    "the system resolver ({})",
                    servers.into_iter().collect::<Vec<_>>().join(", ")
                )
            }
        };
        Ok(Self { inner, label })
    }

    /// NS targets at exactly `name` (empty when `name` has none).
    pub async fn ns(&self, name: &Name) -> Result<Vec<LowerName>, DnsError> {
        match self.inner.lookup(name.clone(), RecordType::NS).await {
            Ok(l) => Ok(l
                .record_iter()
                .filter(|r| LowerName::new(r.name()) == LowerName::new(name))
                .filter_map(|r| match r.data() {
                    RData::NS(ns) => Some(LowerName::new(&ns.0)),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_no_records_found() => Ok(vec![]),
            Err(e) => Err(e.into()),
        }
    }

    /// A and AAAA of `name`, sorted (empty when it has none).
    pub async fn addrs(&self, name: &Name) -> Result<Vec<IpAddr>, DnsError> {
        match self.inner.lookup_ip(name.clone()).await {
            Ok(l) => {
                let mut v: Vec<IpAddr> = l.iter().collect();
                v.sort();
                v.dedup();
                Ok(v)
            }
            Err(e) if e.is_no_records_found() => Ok(vec![]),
            Err(e) => Err(e.into()),
        }
    }

    /// The closest enclosing zone above `zone` and its name servers: walks up
    /// from the parent name until a name with NS records.
    pub async fn parent_of(&self, zone: &Name) -> Result<(Name, Vec<LowerName>), DnsError> {
        let mut candidate = zone.base_name();
        loop {
            let ns = self.ns(&candidate).await?;
            if !ns.is_empty() || candidate.is_root() {
                return Ok((candidate, ns));
            }
            candidate = candidate.base_name();
        }
    }
}

/// Asks `server` one question without recursion (RD=0), over UDP, then over
/// TCP if the answer was truncated.
pub async fn ask(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Message, DnsError> {
    let mut q = Message::new();
    q.set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(false)
        .add_query(Query::query(name.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    q.set_edns(edns);
    let bytes = q.to_vec()?;
    let r = within(timeout, udp(server, bytes.clone())).await?;
    let r = if r.truncated() {
        within(timeout, tcp(server, bytes)).await?
    } else {
        r
    };
    let same_query = r.queries().first().is_some_and(|rq| {
        LowerName::new(rq.name()) == LowerName::new(name) && rq.query_type() == rtype
    });
    if r.id() != q.id() || !same_query {
        return Err(DnsError::Mismatch);
    }
    Ok(r)
}

async fn within<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, DnsError>>,
) -> Result<T, DnsError> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| DnsError::Timeout(timeout))?
}

async fn udp(server: SocketAddr, bytes: Vec<u8>) -> Result<Message, DnsError> {
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    sock.send(&bytes).await?;
    let mut buf = vec![0u8; 4096];
    let n = sock.recv(&mut buf).await?;
    Ok(Message::from_vec(buf.get(..n).unwrap_or_default())?)
}

async fn tcp(server: SocketAddr, bytes: Vec<u8>) -> Result<Message, DnsError> {
    let mut s = TcpStream::connect(server).await?;
    let len = u16::try_from(bytes.len()).map_err(|_| DnsError::Mismatch)?;
    s.write_all(&len.to_be_bytes()).await?;
    s.write_all(&bytes).await?;
    let mut l = [0u8; 2];
    s.read_exact(&mut l).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(l))];
    s.read_exact(&mut buf).await?;
    Ok(Message::from_vec(&buf)?)
}

/// The delegation of `zone` in a parent's response: NS records owned by
/// `zone` (in the answer or authority section) and the A/AAAA records for
/// those names (anywhere in the message).
pub fn referral(zone: &Name, msg: &Message) -> NsSet {
    let zone = LowerName::new(zone);
    let mut set = NsSet::default();
    for r in msg.answers().iter().chain(msg.name_servers()) {
        if let (true, RData::NS(ns)) = (LowerName::new(r.name()) == zone, r.data()) {
            set.0.entry(LowerName::new(&ns.0)).or_default();
        }
    }
    for r in msg
        .answers()
        .iter()
        .chain(msg.name_servers())
        .chain(msg.additionals())
    {
        let ip = match r.data() {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => continue,
        };
        if let Some(addrs) = set.0.get_mut(&LowerName::new(r.name())) {
            addrs.insert(ip);
        }
    }
    set
}

/// Summarizes an authority's response to a question for `name`/`rtype`.
pub fn summarize(name: &Name, rtype: RecordType, r: &Result<Message, DnsError>) -> Answer {
    match r {
        Err(e) => Answer::Failed(e.to_string()),
        Ok(m) => {
            let owner = LowerName::new(name);
            let matching = m
                .answers()
                .iter()
                .filter(|a| LowerName::new(a.name()) == owner && a.record_type() == rtype);
            let serial = matching.clone().find_map(|a| match a.data() {
                RData::SOA(s) => Some(s.serial()),
                _ => None,
            });
            Answer::Response {
                aa: m.authoritative(),
                rcode: rcode_name(m.response_code()),
                serial,
                records: matching.count(),
            }
        }
    }
}

/// The usual mnemonic of a response code (`NOERROR`, `REFUSED`, …).
fn rcode_name(rc: ResponseCode) -> String {
    match rc {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("RCODE{}", u16::from(other)),
    }
}
