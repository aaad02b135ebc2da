//! Operator prefix overrides: prefix parsing, masking and longest-prefix match.

use std::collections::HashMap;
use std::net::IpAddr;

use super::{GeoError, Location};

/// An operator-configured location for a network, taking precedence over the database.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefixOverride {
    /// Network address; host bits must be zero.
    pub network: IpAddr,
    /// Prefix length, at most 32 for IPv4 and 128 for IPv6.
    pub prefix_len: u8,
    /// Location reported for every address in the network. A missing point
    /// or continent is filled in from `country` when the country is known.
    pub location: Location,
}

/// Parses "10.9.0.0/16" or "2001:db8::/32" (host bits must be zero, len ≤ 32/128).
///
/// Surrounding whitespace is ignored; the length is required.
pub fn parse_prefix(s: &str) -> Result<(IpAddr, u8), GeoError> {
    let bad = |why: &str| GeoError::BadPrefix(format!("{s:?}: {why}"));
    let (addr, len) = s
        .trim()
        .split_once('/')
        .ok_or_else(|| bad("expected ADDRESS/LENGTH"))?;
    let network: IpAddr = addr
        .parse()
        .map_err(|_| bad("not an IPv4 or IPv6 address"))?;
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("prefix length is not a number"));
    }
    let prefix_len: u8 = len.parse().map_err(|_| bad("prefix length too large"))?;
    check_prefix(network, prefix_len).map_err(bad)?;
    Ok((network, prefix_len))
}

/// Checks length bounds and zero host bits.
fn check_prefix(network: IpAddr, prefix_len: u8) -> Result<(), &'static str> {
    match network {
        IpAddr::V4(a) => {
            if prefix_len > 32 {
                return Err("IPv4 prefix length above 32");
            }
            let bits = u32::from(a);
            if mask_v4(bits, prefix_len) != bits {
                return Err("host bits are set");
            }
        }
        IpAddr::V6(a) => {
            if prefix_len > 128 {
                return Err("IPv6 prefix length above 128");
            }
            let bits = u128::from(a);
            if mask_v6(bits, prefix_len) != bits {
                return Err("host bits are set");
            }
        }
    }
    Ok(())
}

/// Keeps the top `len` bits of an IPv4 address (len is clamped to 32).
pub(super) fn mask_v4(bits: u32, len: u8) -> u32 {
    let shift = 32 - u32::from(len.min(32));
    bits & u32::MAX.checked_shl(shift).unwrap_or(0)
}

/// Keeps the top `len` bits of an IPv6 address (len is clamped to 128).
pub(super) fn mask_v6(bits: u128, len: u8) -> u128 {
    let shift = 128 - u32::from(len.min(128));
    bits & u128::MAX.checked_shl(shift).unwrap_or(0)
}

/// Override tables, one hash map per prefix length, longest length first.
#[derive(Debug, Default)]
pub(super) struct Overrides {
    v4: Vec<(u8, HashMap<u32, Location>)>,
    v6: Vec<(u8, HashMap<u128, Location>)>,
}

impl Overrides {
    /// Validates and indexes the overrides; for a repeated network the later entry wins.
    pub(super) fn build(list: Vec<PrefixOverride>) -> Result<Overrides, GeoError> {
        let mut v4: HashMap<u8, HashMap<u32, Location>> = HashMap::new();
        let mut v6: HashMap<u8, HashMap<u128, Location>> = HashMap::new();
        for o in list {
            let shown = format!("{}/{}", o.network, o.prefix_len);
            check_prefix(o.network, o.prefix_len)
                .map_err(|why| GeoError::BadPrefix(format!("{shown}: {why}")))?;
            if let Some(p) = o.location.point {
                if !p.is_valid() {
                    return Err(GeoError::BadOverride(format!(
                        "{shown}: coordinates ({}, {}) out of range",
                        p.lat, p.lon
                    )));
                }
            }
            let location = o.location.completed();
            match o.network {
                IpAddr::V4(a) => {
                    v4.entry(o.prefix_len)
                        .or_default()
                        .insert(u32::from(a), location);
                }
                IpAddr::V6(a) => match a.to_ipv4_mapped() {
                    // Clients are unmapped before matching, so store
                    // ::ffff:a.b.c.d/N (N ≥ 96) as the IPv4 prefix it means.
                    Some(v4addr) if o.prefix_len >= 96 => {
                        v4.entry(o.prefix_len - 96)
                            .or_default()
                            .insert(u32::from(v4addr), location);
                    }
                    _ => {
                        v6.entry(o.prefix_len)
                            .or_default()
                            .insert(u128::from(a), location);
                    }
                },
            }
        }
        let mut v4: Vec<_> = v4.into_iter().collect();
        let mut v6: Vec<_> = v6.into_iter().collect();
        v4.sort_by_key(|e| std::cmp::Reverse(e.0));
        v6.sort_by_key(|e| std::cmp::Reverse(e.0));
        Ok(Overrides { v4, v6 })
    }

    /// Longest matching override for an (already unmapped) address.
    pub(super) fn find(&self, ip: IpAddr) -> Option<&Location> {
        match ip {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                self.v4
                    .iter()
                    .find_map(|(len, map)| map.get(&mask_v4(bits, *len)))
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                self.v6
                    .iter()
                    .find_map(|(len, map)| map.get(&mask_v6(bits, *len)))
            }
        }
    }
}
