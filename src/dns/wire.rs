//! DNS wire format for the fast path, pure and allocation-free.
//!
//! [`parse`] accepts only the common shape of a query (one question, class
//! IN, an uncompressed name of letters, digits, `-` and `_`, at most one OPT
//! record carrying at most one Client Subnet option and no other option
//! hickory-proto decodes specially). Anything else is `None`, and the caller
//! answers through the reference path instead, so the fast path never has to
//! agree with hickory on odd inputs.
//!
//! [`Writer`] writes a response into a fixed buffer with the same name
//! compression as hickory-proto's `BinEncoder` (case-sensitive suffix
//! matching, first match in the order names were written, no pointers past
//! offset 0x3FFF), so fast answers are byte-for-byte what the reference
//! path sends.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Length of the DNS header.
pub const HEADER_LEN: usize = 12;
/// Longest query name the fast path takes, wire bytes with the root byte.
pub const MAX_QNAME: usize = 250;
/// Most labels in a name the fast path takes.
const MAX_LABELS: usize = 128;
/// Record type OPT (RFC 6891).
pub const TYPE_OPT: u16 = 41;
/// EDNS option code of Client Subnet (RFC 7871).
const OPT_ECS: u16 = 8;

/// A query in the shape the fast path answers.
pub struct Query<'a> {
    /// Message id.
    pub id: u16,
    /// Recursion desired (copied to the response).
    pub rd: bool,
    /// Checking disabled (copied to the response).
    pub cd: bool,
    /// The question name as received: labels and the root byte.
    pub qname: &'a [u8],
    lower: [u8; MAX_QNAME],
    label_starts: [u8; MAX_LABELS],
    labels: usize,
    /// Question type.
    pub qtype: u16,
    /// The request's EDNS, if it has an OPT record.
    pub edns: Option<EdnsQuery>,
}

/// What the fast path needs from a request's OPT record.
#[derive(Debug, Clone, Copy)]
pub struct EdnsQuery {
    /// Requested UDP payload size (the OPT class, at least 512 as hickory reads it).
    pub payload: u16,
    /// The Client Subnet option, if any.
    pub ecs: Option<Ecs>,
}

/// A Client Subnet option in canonical form (address length = source prefix).
#[derive(Debug, Clone, Copy)]
pub struct Ecs {
    /// The address, zero-filled past the bytes sent.
    pub addr: IpAddr,
    /// Source prefix length.
    pub source: u8,
    data: [u8; 20],
    len: usize,
}

impl Ecs {
    /// The option data to echo (RFC 7871 §7.2.1): as received, with `scope`.
    pub fn echo(&self, scope: u8) -> ([u8; 20], usize) {
        let mut d = self.data;
        d[3] = scope;
        (d, self.len)
    }
}

impl Query<'_> {
    /// The question name lowercased (ASCII), wire form with the root byte.
    pub fn lower_name(&self) -> &[u8] {
        &self.lower[..self.qname.len()]
    }

    /// The lowercased name from label `i` on (a suffix at a label boundary).
    pub fn lower_suffix(&self, i: usize) -> Option<&[u8]> {
        if i == self.labels {
            return self.lower_name().get(self.qname.len() - 1..);
        }
        let at = usize::from(*self.label_starts.get(i)?);
        self.lower_name().get(at..)
    }

    /// Number of labels (the root not counted).
    pub fn label_count(&self) -> usize {
        self.labels
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn name_byte_ok(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// Parses a query of the common shape; `None` for anything else.
pub fn parse(p: &[u8]) -> Option<Query<'_>> {
    let flags1 = *p.get(2)?;
    let flags2 = *p.get(3)?;
    // QR = 0 and opcode QUERY.
    if flags1 & 0xF8 != 0 {
        return None;
    }
    if be16(p, 4)? != 1 || be16(p, 6)? != 0 || be16(p, 8)? != 0 {
        return None;
    }
    let ar = be16(p, 10)?;
    if ar > 1 {
        return None;
    }
    let mut q = Query {
        id: be16(p, 0)?,
        rd: flags1 & 1 != 0,
        cd: flags2 & 0x10 != 0,
        qname: &[],
        lower: [0; MAX_QNAME],
        label_starts: [0; MAX_LABELS],
        labels: 0,
        qtype: 0,
        edns: None,
    };
    let mut pos = HEADER_LEN;
    loop {
        let len = usize::from(*p.get(pos)?);
        let rel = pos - HEADER_LEN;
        if len == 0 {
            *q.lower.get_mut(rel)? = 0;
            pos += 1;
            break;
        }
        if len > 63 || rel + 1 + len + 1 > MAX_QNAME || q.labels >= MAX_LABELS {
            return None;
        }
        *q.label_starts.get_mut(q.labels)? = u8::try_from(rel).ok()?;
        q.labels += 1;
        *q.lower.get_mut(rel)? = len as u8;
        let label = p.get(pos + 1..pos + 1 + len)?;
        let dst = q.lower.get_mut(rel + 1..rel + 1 + len)?;
        for (d, &c) in dst.iter_mut().zip(label) {
            if !name_byte_ok(c) {
                return None;
            }
            *d = c.to_ascii_lowercase();
        }
        pos += 1 + len;
    }
    q.qname = p.get(HEADER_LEN..pos)?;
    q.qtype = be16(p, pos)?;
    // Class IN only.
    if be16(p, pos + 2)? != 1 {
        return None;
    }
    pos += 4;
    if ar == 1 {
        let (edns, end) = parse_opt(p, pos)?;
        q.edns = Some(edns);
        pos = end;
    }
    (pos == p.len()).then_some(q)
}

/// Parses the OPT record at `pos`: the EDNS facts and where it ends.
fn parse_opt(p: &[u8], pos: usize) -> Option<(EdnsQuery, usize)> {
    // Root owner, type OPT.
    if *p.get(pos)? != 0 || be16(p, pos + 1)? != TYPE_OPT {
        return None;
    }
    let payload = be16(p, pos + 3)?.max(512);
    // TTL: extended rcode, version (must be 0: else BADVERS), flags.
    if *p.get(pos + 6)? != 0 {
        return None;
    }
    let rdlen = usize::from(be16(p, pos + 9)?);
    let start = pos + 11;
    let end = start + rdlen;
    let rdata = p.get(start..end)?;
    let mut ecs = None;
    let mut at = 0;
    while at < rdata.len() {
        let code = be16(rdata, at)?;
        let len = usize::from(be16(rdata, at + 2)?);
        let data = rdata.get(at + 4..at + 4 + len)?;
        match code {
            OPT_ECS => {
                if ecs.is_some() {
                    return None;
                }
                ecs = Some(parse_ecs(data)?);
            }
            // Codes hickory may decode specially (DNSSEC algorithm lists).
            5..=7 => return None,
            _ => {}
        }
        at += 4 + len;
    }
    Some((EdnsQuery { payload, ecs }, end))
}

fn parse_ecs(d: &[u8]) -> Option<Ecs> {
    let family = be16(d, 0)?;
    let source = *d.get(2)?;
    let addr_len = usize::from(source).div_ceil(8);
    let bytes = d.get(4..)?;
    if bytes.len() != addr_len {
        return None;
    }
    // Bits past the source prefix: the reference path masks them (in the
    // steering input and the echo); leave such queries to it.
    let spare = (8 - source % 8) % 8;
    if bytes.last().is_some_and(|b| b & ((1u8 << spare) - 1) != 0) {
        return None;
    }
    let addr = match family {
        1 if source <= 32 => {
            let mut o = [0u8; 4];
            o.get_mut(..addr_len)?.copy_from_slice(bytes);
            IpAddr::V4(Ipv4Addr::from(o))
        }
        2 if source <= 128 => {
            let mut o = [0u8; 16];
            o.get_mut(..addr_len)?.copy_from_slice(bytes);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    let mut data = [0u8; 20];
    data.get_mut(..d.len())?.copy_from_slice(d);
    Some(Ecs {
        addr,
        source,
        data,
        len: d.len(),
    })
}

/// Why a response could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// It does not fit the buffer (the size limit).
    Full,
    /// More names than the compression table holds: use the reference path.
    TooManyNames,
    /// A malformed name in a template.
    BadName,
}

const MAX_POINTERS: usize = 64;
const ARENA: usize = 2048;

/// Suffixes of the names written so far, as hickory's encoder remembers
/// them: the output offset of a label and the literal bytes from it to the
/// end of its name (root byte excluded).
struct NameTable {
    pos: [u16; MAX_POINTERS],
    start: [u16; MAX_POINTERS],
    len: [u16; MAX_POINTERS],
    n: usize,
    arena: [u8; ARENA],
    used: usize,
}

impl NameTable {
    fn find(&self, search: &[u8]) -> Option<u16> {
        (0..self.n).find_map(|i| {
            let s = usize::from(self.start[i]);
            let l = usize::from(self.len[i]);
            (l == search.len() && self.arena.get(s..s + l) == Some(search)).then_some(self.pos[i])
        })
    }
}

/// A response being written into a fixed buffer.
pub struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
    names: NameTable,
}

impl<'b> Writer<'b> {
    /// Writes into `buf`; its length is the size limit.
    pub fn new(buf: &'b mut [u8]) -> Self {
        Self {
            buf,
            len: 0,
            names: NameTable {
                pos: [0; MAX_POINTERS],
                start: [0; MAX_POINTERS],
                len: [0; MAX_POINTERS],
                n: 0,
                arena: [0; ARENA],
                used: 0,
            },
        }
    }

    /// Bytes written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before anything is written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything written (the buffer is reused).
    pub fn clear(&mut self) {
        self.len = 0;
        self.names.n = 0;
        self.names.used = 0;
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> Result<(), WriteError> {
        let dst = self
            .buf
            .get_mut(self.len..self.len + b.len())
            .ok_or(WriteError::Full)?;
        dst.copy_from_slice(b);
        self.len += b.len();
        Ok(())
    }

    /// Appends a big-endian u16.
    pub fn u16(&mut self, v: u16) -> Result<(), WriteError> {
        self.bytes(&v.to_be_bytes())
    }

    /// Overwrites the u16 at `at` (a length or count written earlier).
    pub fn patch_u16(&mut self, at: usize, v: u16) -> Result<(), WriteError> {
        let dst = self.buf.get_mut(at..at + 2).ok_or(WriteError::Full)?;
        dst.copy_from_slice(&v.to_be_bytes());
        Ok(())
    }

    /// Writes a name given as its literal labels (no root byte), compressed
    /// exactly as hickory-proto's `Name::emit_as_canonical(_, false)` does.
    pub fn name(&mut self, literal: &[u8]) -> Result<(), WriteError> {
        self.name_as(literal, true)
    }

    /// Writes a name uncompressed, remembering its suffixes as hickory's
    /// encoder does for RDATA it writes in canonical form (SRV targets).
    pub fn name_uncompressed(&mut self, literal: &[u8]) -> Result<(), WriteError> {
        self.name_as(literal, false)
    }

    fn name_as(&mut self, literal: &[u8], compress: bool) -> Result<(), WriteError> {
        let start = self.len;
        self.bytes(literal)?;
        let last = self.len;
        let mut arena_at = None;
        let mut off = 0;
        while off < literal.len() {
            let label_len = usize::from(*literal.get(off).ok_or(WriteError::BadName)?);
            if label_len == 0 || label_len > 63 {
                return Err(WriteError::BadName);
            }
            let search = literal.get(off..).ok_or(WriteError::BadName)?;
            match self.names.find(search) {
                Some(_) if !compress => {}
                Some(loc) if loc & 0xC000 == 0 => {
                    self.len = start + off;
                    return self.u16(0xC000 | loc);
                }
                _ if last < 0x3FFF => {
                    let base = match arena_at {
                        Some(b) => b,
                        None => {
                            let b = self.names.used;
                            let dst = self
                                .names
                                .arena
                                .get_mut(b..b + literal.len())
                                .ok_or(WriteError::TooManyNames)?;
                            dst.copy_from_slice(literal);
                            self.names.used += literal.len();
                            arena_at = Some(b);
                            b
                        }
                    };
                    let i = self.names.n;
                    if i >= MAX_POINTERS {
                        return Err(WriteError::TooManyNames);
                    }
                    self.names.pos[i] = (start + off) as u16;
                    self.names.start[i] = (base + off) as u16;
                    self.names.len[i] = (literal.len() - off) as u16;
                    self.names.n += 1;
                }
                _ => {}
            }
            off += 1 + label_len;
        }
        self.bytes(&[0])
    }

    /// The bytes written.
    pub fn written(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, Query as HQuery};
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    use hickory_proto::rr::{Name, RecordType};
    use std::str::FromStr;

    fn literal(n: &Name) -> Vec<u8> {
        let mut v = vec![];
        for l in n.iter() {
            v.push(l.len() as u8);
            v.extend_from_slice(l);
        }
        v
    }

    #[test]
    fn compression_matches_hickory() {
        let names = [
            "WWW.t.test.",
            "www.t.test.",
            "t.test.",
            "ns1.t.test.",
            "hostmaster.t.test.",
            "x.ns1.t.test.",
            "other.example.",
            ".",
            "test.",
        ];
        let mut enc = Vec::new();
        {
            let mut e = hickory_proto::serialize::binary::BinEncoder::new(&mut enc);
            for n in names {
                Name::from_str(n)
                    .unwrap()
                    .emit_as_canonical(&mut e, false)
                    .unwrap();
            }
        }
        let mut buf = [0u8; 512];
        let mut w = Writer::new(&mut buf);
        for n in names {
            w.name(&literal(&Name::from_str(n).unwrap())).unwrap();
        }
        assert_eq!(w.written(), &enc[..]);
    }

    #[test]
    fn parses_the_common_shape_only() {
        let mut m = Message::new();
        m.set_id(0xBEEF);
        m.set_recursion_desired(true);
        m.add_query(HQuery::query(
            Name::from_str("WwW.t.test.").unwrap(),
            RecordType::AAAA,
        ));
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            "192.0.2.0".parse().unwrap(),
            24,
            0,
        )));
        m.set_edns(e);
        let b = m.to_vec().unwrap();
        let q = parse(&b).unwrap();
        assert_eq!((q.id, q.rd, q.cd, q.qtype), (0xBEEF, true, false, 28));
        assert_eq!(q.lower_name(), b"\x03www\x01t\x04test\x00");
        assert_eq!(q.lower_suffix(1), Some(&b"\x01t\x04test\x00"[..]));
        let edns = q.edns.unwrap();
        assert_eq!(edns.payload, 1232);
        let ecs = edns.ecs.unwrap();
        assert_eq!((ecs.addr, ecs.source), ("192.0.2.0".parse().unwrap(), 24));
        // Trailing bytes, a response, two questions: not the fast path's.
        let mut t = b.clone();
        t.push(0);
        assert!(parse(&t).is_none());
        let mut r = b.clone();
        r[2] |= 0x80;
        assert!(parse(&r).is_none());
        let mut two = b.clone();
        two[5] = 2;
        assert!(parse(&two).is_none());
        assert!(parse(&b[..11]).is_none());
    }
}
