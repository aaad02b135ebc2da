//! Pre-encoded answers: the sections of a response as wire bytes, with the
//! names left to be compressed against the question at send time (so a
//! template serves every spelling of the question's case).
//!
//! A [`Template`] is built once from the records [`resolve`](super::answer::resolve)
//! returns (at zone load, or per steering answer set in a view snapshot) and
//! checked then against hickory-proto's encoding of the same response; a
//! query copies it with [`Template::write`]. Pure; no I/O.

use std::net::IpAddr;

use hickory_proto::op::{Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use super::answer::Answer;
use super::wire::{WriteError, Writer};

#[derive(Debug, Clone, Copy)]
enum Piece {
    /// Literal bytes `bytes[start..end]`.
    Raw(u16, u16),
    /// A name's literal labels `bytes[start..end]`, compressed when written.
    Name(u16, u16),
    /// A name written uncompressed (canonical RDATA).
    Canonical(u16, u16),
    /// RDLENGTH placeholder; the next [`Piece::RdEnd`] fills it in.
    RdStart,
    /// End of RDATA whose length depends on compression.
    RdEnd,
}

/// The answer, authority and additional sections of a response, encoded.
#[derive(Debug, Clone)]
pub struct Template {
    bytes: Vec<u8>,
    pieces: Vec<Piece>,
    counts: [u16; 3],
    rcode: u8,
    authoritative: bool,
}

impl Template {
    /// Response code (the low four bits: the fast path takes no others).
    pub fn rcode(&self) -> u8 {
        self.rcode
    }

    /// AA bit.
    pub fn authoritative(&self) -> bool {
        self.authoritative
    }

    /// Answer, authority and additional record counts.
    pub fn counts(&self) -> [u16; 3] {
        self.counts
    }

    /// The sections of `ans`, or `None` when a record has RDATA this module
    /// does not encode (the reference path answers those).
    pub fn from_answer(ans: &Answer) -> Option<Self> {
        let code = u16::from(ans.rcode);
        let mut t = Self {
            bytes: vec![],
            pieces: vec![],
            counts: [0; 3],
            rcode: u8::try_from(code).ok().filter(|c| *c < 16)?,
            authoritative: ans.authoritative,
        };
        for (i, section) in [&ans.answers, &ans.authority, &ans.additional]
            .into_iter()
            .enumerate()
        {
            for r in section {
                t.record(r)?;
            }
            t.counts[i] = u16::try_from(section.len()).ok()?;
        }
        Some(t)
    }

    /// A steered answer: the addresses of the asked family (`v6`) as records
    /// owned by `site` with `ttl`, as `resolve` builds them. `None` when no
    /// address is of that family.
    pub fn steered(site: &LowerName, v6: bool, addrs: &[IpAddr], ttl: u32) -> Option<Self> {
        let owner = Name::from(site.clone());
        let answers: Vec<Record> = addrs
            .iter()
            .filter_map(|ip| match (ip, v6) {
                (IpAddr::V4(a), false) => Some(RData::A(A(*a))),
                (IpAddr::V6(a), true) => Some(RData::AAAA(AAAA(*a))),
                _ => None,
            })
            .map(|rd| Record::from_rdata(owner.clone(), ttl, rd))
            .collect();
        if answers.is_empty() {
            return None;
        }
        Self::from_answer(&Answer {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers,
            authority: vec![],
            additional: vec![],
            steered: true,
        })
    }

    fn raw(&mut self, b: &[u8]) -> Option<()> {
        let s = u16::try_from(self.bytes.len()).ok()?;
        self.bytes.extend_from_slice(b);
        let e = u16::try_from(self.bytes.len()).ok()?;
        self.pieces.push(Piece::Raw(s, e));
        Some(())
    }

    fn name(&mut self, n: &Name) -> Option<()> {
        self.name_as(n, false)
    }

    fn name_as(&mut self, n: &Name, canonical: bool) -> Option<()> {
        let n = if canonical {
            n.to_lowercase()
        } else {
            n.clone()
        };
        let s = u16::try_from(self.bytes.len()).ok()?;
        for l in n.iter() {
            if l.is_empty() || l.len() > 63 {
                return None;
            }
            self.bytes.push(l.len() as u8);
            self.bytes.extend_from_slice(l);
        }
        let e = u16::try_from(self.bytes.len()).ok()?;
        self.pieces.push(if canonical {
            Piece::Canonical(s, e)
        } else {
            Piece::Name(s, e)
        });
        Some(())
    }

    fn record(&mut self, r: &Record) -> Option<()> {
        self.name(r.name())?;
        let mut head = [0u8; 8];
        head[..2].copy_from_slice(&u16::from(r.record_type()).to_be_bytes());
        head[2..4].copy_from_slice(&u16::from(r.dns_class()).to_be_bytes());
        head[4..].copy_from_slice(&r.ttl().to_be_bytes());
        self.raw(&head)?;
        let named = |t: &mut Self, pre: &[u8], names: &[&Name], post: &[u8]| {
            t.pieces.push(Piece::RdStart);
            if !pre.is_empty() {
                t.raw(pre)?;
            }
            for n in names {
                t.name(n)?;
            }
            if !post.is_empty() {
                t.raw(post)?;
            }
            t.pieces.push(Piece::RdEnd);
            Some(())
        };
        match r.data() {
            RData::NS(n) => named(self, &[], &[&n.0], &[]),
            RData::CNAME(n) => named(self, &[], &[&n.0], &[]),
            RData::PTR(n) => named(self, &[], &[&n.0], &[]),
            RData::MX(mx) => named(self, &mx.preference().to_be_bytes(), &[mx.exchange()], &[]),
            RData::SRV(s) => {
                let mut pre = [0u8; 6];
                pre[..2].copy_from_slice(&s.priority().to_be_bytes());
                pre[2..4].copy_from_slice(&s.weight().to_be_bytes());
                pre[4..].copy_from_slice(&s.port().to_be_bytes());
                // hickory writes SRV RDATA in canonical form: lowercased, uncompressed.
                self.pieces.push(Piece::RdStart);
                self.raw(&pre)?;
                self.name_as(s.target(), true)?;
                self.pieces.push(Piece::RdEnd);
                Some(())
            }
            RData::SOA(s) => {
                let mut post = Vec::with_capacity(20);
                post.extend_from_slice(&s.serial().to_be_bytes());
                post.extend_from_slice(&s.refresh().to_be_bytes());
                post.extend_from_slice(&s.retry().to_be_bytes());
                post.extend_from_slice(&s.expire().to_be_bytes());
                post.extend_from_slice(&s.minimum().to_be_bytes());
                named(self, &[], &[s.mname(), s.rname()], &post)
            }
            // RDATA without names: encoded once, as hickory encodes it.
            RData::A(_)
            | RData::AAAA(_)
            | RData::TXT(_)
            | RData::CAA(_)
            | RData::SSHFP(_)
            | RData::TLSA(_) => {
                let mut v = Vec::new();
                r.data().emit(&mut BinEncoder::new(&mut v)).ok()?;
                let len = u16::try_from(v.len()).ok()?;
                let mut out = len.to_be_bytes().to_vec();
                out.extend_from_slice(&v);
                self.raw(&out)
            }
            _ => None,
        }
    }

    /// Writes the sections (after the question) into `w`.
    pub fn write(&self, w: &mut Writer<'_>) -> Result<(), WriteError> {
        let mut rd_at = 0usize;
        for p in &self.pieces {
            match *p {
                Piece::Raw(s, e) => w.bytes(self.slice(s, e)?)?,
                Piece::Name(s, e) => w.name(self.slice(s, e)?)?,
                Piece::Canonical(s, e) => w.name_uncompressed(self.slice(s, e)?)?,
                Piece::RdStart => {
                    rd_at = w.len();
                    w.u16(0)?;
                }
                Piece::RdEnd => {
                    let len = w.len() - rd_at - 2;
                    w.patch_u16(rd_at, u16::try_from(len).map_err(|_| WriteError::Full)?)?;
                }
            }
        }
        Ok(())
    }

    fn slice(&self, s: u16, e: u16) -> Result<&[u8], WriteError> {
        self.bytes
            .get(usize::from(s)..usize::from(e))
            .ok_or(WriteError::BadName)
    }

    /// True when writing this template after the question `qname qtype`
    /// gives exactly hickory-proto's encoding of the same response (the
    /// check made once per template before it is used).
    pub fn matches_reference(&self, ans: &Answer, qname: &Name, qtype: RecordType) -> bool {
        let mut header = Header::new();
        header.set_message_type(MessageType::Response);
        header.set_op_code(OpCode::Query);
        header.set_authoritative(ans.authoritative);
        header.set_response_code(ans.rcode);
        let mut msg = Message::new();
        msg.set_header(header);
        msg.add_query(Query::query(qname.clone(), qtype));
        msg.insert_answers(ans.answers.clone());
        msg.insert_name_servers(ans.authority.clone());
        msg.insert_additionals(ans.additional.clone());
        let Ok(want) = msg.to_vec() else {
            return false;
        };
        let mut buf = vec![0u8; want.len().max(512) + 64];
        let mut w = Writer::new(&mut buf);
        let mut lit = Vec::new();
        for l in qname.iter() {
            lit.push(l.len() as u8);
            lit.extend_from_slice(l);
        }
        let mut head = [0u8; 12];
        head[2] = 0x80 | if ans.authoritative { 0x04 } else { 0 };
        head[3] = self.rcode;
        head[5] = 1;
        for (i, c) in self.counts.iter().enumerate() {
            head[6 + 2 * i..8 + 2 * i].copy_from_slice(&c.to_be_bytes());
        }
        let ok = w.bytes(&head).is_ok()
            && w.name(&lit).is_ok()
            && w.u16(u16::from(qtype)).is_ok()
            && w.u16(1).is_ok()
            && self.write(&mut w).is_ok();
        ok && w.written() == want.as_slice()
    }
}
