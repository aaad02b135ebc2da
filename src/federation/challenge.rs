//! The authority side of ACME DNS-01: judges signed challenge requests
//! against this node's zones, catalog and bindings ([`crate::challenge`]),
//! keeps accepted values in the [`TxtBook`] the DNS handler answers from,
//! and relays new requests to the zone's other authorities.
//!
//! Also the zone facts the mirror side needs: which names are the zone's
//! authorities (NS), where they are (glue), and which peers they are.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::{LowerName, Name, RData, RecordType};

use super::Federation;
use crate::catalog::unix_now;
use crate::challenge::book::{Applied, TxtBook};
use crate::challenge::{self, Context, Refusal, VerifiedRequest};
use crate::keys::PublicKey;

/// The URL path of the challenge endpoint of the node API.
pub const PATH: &str = "/.well-known/p2pcdn/v1/acme-challenge";

/// One authority of a zone, as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneAuthority {
    /// Its NS name, lowercase, no trailing dot.
    pub name: String,
    /// Addresses from the zone's glue (A/AAAA at the NS name).
    pub addresses: Vec<IpAddr>,
    /// The HTTPS base URL of the bound peer of that name, if any.
    pub url: Option<String>,
    /// True when the authority is this node.
    pub is_self: bool,
}

/// What [`Federation`] knows, seen as a challenge [`Context`].
struct FedContext<'a> {
    fed: &'a Federation,
}

impl Context for FedContext<'_> {
    fn serves(&self, name: &str) -> bool {
        let Some(dns) = self.fed.dns_data.get() else {
            return false;
        };
        let Some(n) = lower(name) else {
            return false;
        };
        let data = dns.load();
        data.zones
            .find(&n)
            .is_some_and(|z| z.cut_above(&n).is_none())
    }

    fn site_mirrors(&self, name: &str) -> Option<Vec<PublicKey>> {
        let cat = self.fed.catalog.load();
        let site = cat.site(name)?;
        site.newest.as_ref().map(|m| m.manifest.mirrors.clone())
    }

    fn node_name(&self, key: &PublicKey) -> Option<String> {
        if *key == self.fed.me {
            return Some(self.fed.name.clone());
        }
        self.fed
            .peers
            .read()
            .ok()
            .and_then(|p| p.get(key).map(|p| p.name.clone()))
    }
}

pub(super) fn lower(name: &str) -> Option<LowerName> {
    Name::from_str(&format!("{}.", name.trim_end_matches('.')))
        .ok()
        .map(|n| LowerName::new(&n))
}

impl Federation {
    /// The challenge values this node serves in DNS.
    pub fn txt_book(&self) -> &Arc<TxtBook> {
        &self.txt
    }

    /// Judges and applies one signed challenge request (from a peer, or
    /// from this node itself). Refusals are logged and never reach DNS.
    pub fn accept_challenge(&self, envelope: &[u8]) -> Result<(Applied, VerifiedRequest), Refusal> {
        let now = unix_now();
        let outcome = challenge::verify(envelope, now).and_then(|v| {
            challenge::check(&v.request, &FedContext { fed: self })?;
            let applied = self.txt.apply(&v, now)?;
            Ok((applied, v))
        });
        match &outcome {
            Ok((applied, v)) => tracing::info!(
                name = %v.request.name, node = %v.request.node, action = ?v.request.action,
                outcome = ?applied, "ACME challenge request accepted"
            ),
            // Someone asking for names it may not have is worth a warning;
            // noise (malformed, stale, replayed, limited) is not.
            Err(e @ (Refusal::NotAuthorized { .. } | Refusal::OutsideZones(_))) => {
                tracing::warn!(error = %e, "ACME challenge request refused")
            }
            Err(e) => tracing::info!(error = %e, "ACME challenge request refused"),
        }
        outcome
    }

    /// The authorities of the zone that contains `name`, from this node's
    /// zone data (NS at the apex, glue at the NS names).
    pub fn zone_authorities(&self, name: &str) -> Vec<ZoneAuthority> {
        let (Some(dns), Some(n)) = (self.dns_data.get(), lower(name)) else {
            return vec![];
        };
        let data = dns.load();
        let Some(zone) = data.zones.find(&n) else {
            return vec![];
        };
        let peers = self.peers();
        let mut out = vec![];
        for r in zone.rrset(zone.origin(), RecordType::NS) {
            let RData::NS(ns) = r.data() else { continue };
            let ns_name = LowerName::new(&ns.0);
            let mut text = ns_name.to_string();
            if text.ends_with('.') {
                text.pop();
            }
            let glue_zone = data.zones.find(&ns_name);
            let addresses = glue_zone
                .map(|z| {
                    z.rrset(&ns_name, RecordType::A)
                        .into_iter()
                        .chain(z.rrset(&ns_name, RecordType::AAAA))
                        .filter_map(|r| match r.data() {
                            RData::A(a) => Some(IpAddr::V4(a.0)),
                            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(ZoneAuthority {
                is_self: text == self.name,
                url: peers.iter().find(|p| p.name == text).map(|p| p.url.clone()),
                name: text,
                addresses,
            });
        }
        out
    }

    /// Sends a signed challenge request to one authority's node API.
    pub async fn send_challenge(&self, url: &str, envelope: &[u8]) -> Result<(), String> {
        let resp = self
            .http
            .post(format!("{url}{PATH}"))
            .header("content-type", "application/json")
            .body(envelope.to_vec())
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(format!("{url}: {status}: {}", body.trim()))
    }

    /// Relays a newly applied request to the zone's other authorities that
    /// are bound peers (best effort, in the background).
    pub fn relay_challenge(self: &Arc<Self>, v: &VerifiedRequest) {
        let targets: Vec<String> = self
            .zone_authorities(&v.request.name)
            .into_iter()
            .filter(|a| !a.is_self)
            .filter_map(|a| a.url)
            .collect();
        for url in targets {
            let fed = self.clone();
            let env = v.envelope.clone();
            tokio::spawn(async move {
                if let Err(e) = fed.send_challenge(&url, &env).await {
                    tracing::debug!(error = %e, "relaying a challenge request failed");
                }
            });
        }
    }
}
