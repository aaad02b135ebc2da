//! DNS-01 through the federation: ask every authority of the zone to
//! publish (or withdraw) the challenge value with a request signed by the
//! node key, then check that every authority serves it, by asking each one
//! directly (hickory-resolver, no recursion, no cache), before the CA is
//! told to validate.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::Resolver;

use super::AcmeError;
use crate::catalog::unix_now;
use crate::challenge::{self, Action, LABEL};
use crate::federation::challenge::ZoneAuthority;
use crate::federation::Federation;

/// Lifetime of a published value: long enough for a slow validation, short
/// enough that a forgotten value disappears soon.
pub const VALUE_LIFETIME: u64 = 300;

/// The zone's authorities, once every one can be asked: this node, or a
/// peer bound under the NS name. `NotReady` otherwise (retried soon).
pub fn authorities(fed: &Federation, name: &str) -> Result<Vec<ZoneAuthority>, AcmeError> {
    let auths = fed.zone_authorities(name);
    if auths.is_empty() {
        return Err(AcmeError::NotReady(format!(
            "no zone data with NS records for {name} on this node"
        )));
    }
    if let Some(a) = auths.iter().find(|a| !a.is_self && a.url.is_none()) {
        return Err(AcmeError::NotReady(format!(
            "authority {} is not a bound peer yet",
            a.name
        )));
    }
    Ok(auths)
}

/// Sends a signed `action` request for (`name`, `value`) to every authority.
pub async fn send_all(
    fed: &Arc<Federation>,
    auths: &[ZoneAuthority],
    action: Action,
    name: &str,
    value: &str,
) -> Result<(), AcmeError> {
    let env = challenge::new_request(
        fed.node_key(),
        action,
        name,
        value,
        unix_now(),
        VALUE_LIFETIME,
    )
    .map_err(|e| AcmeError::Challenge(e.to_string()))?;
    let sends = auths.iter().map(|a| {
        let env = env.clone();
        async move {
            if a.is_self {
                fed.accept_challenge(&env)
                    .map(|_| ())
                    .map_err(|e| format!("{} (this node): {e}", a.name))
            } else {
                match &a.url {
                    Some(u) => fed.send_challenge(u, &env).await,
                    None => Err(format!("{}: not a bound peer", a.name)),
                }
            }
        }
    });
    let errors: Vec<String> = join_all(sends)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(AcmeError::Challenge(errors.join("; ")))
    }
}

/// Waits until every address of every authority answers `value` at
/// `_acme-challenge.<name>` TXT (port `port`), or `timeout` passes.
pub async fn await_everywhere(
    auths: &[ZoneAuthority],
    name: &str,
    value: &str,
    port: u16,
    timeout: Duration,
) -> Result<(), AcmeError> {
    let mut targets: Vec<(String, SocketAddr)> = vec![];
    for a in auths {
        let mut addrs: Vec<IpAddr> = a.addresses.clone();
        if addrs.is_empty() {
            addrs = tokio::net::lookup_host((a.name.as_str(), port))
                .await
                .map(|it| it.map(|s| s.ip()).collect())
                .unwrap_or_default();
        }
        if addrs.is_empty() {
            return Err(AcmeError::Propagation(format!(
                "no address for authority {}",
                a.name
            )));
        }
        targets.extend(
            addrs
                .into_iter()
                .map(|ip| (a.name.clone(), SocketAddr::new(ip, port))),
        );
    }
    let qname = format!("{LABEL}.{name}.");
    let deadline = Instant::now() + timeout;
    let checks = targets.iter().map(|(ns, addr)| {
        let qname = qname.clone();
        async move {
            loop {
                let last = match serves(*addr, &qname, value).await {
                    Ok(true) => return Ok(()),
                    Ok(false) => "value not served yet".to_string(),
                    Err(e) => e.to_string(),
                };
                if Instant::now() >= deadline {
                    return Err(format!("{ns} ({addr}): {last}"));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    });
    let errors: Vec<String> = join_all(checks)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(AcmeError::Propagation(errors.join("; ")))
    }
}

/// Asks one authority directly whether it serves `value` at `qname`.
async fn serves(
    addr: SocketAddr,
    qname: &str,
    value: &str,
) -> Result<bool, hickory_resolver::ResolveError> {
    let mut config = ResolverConfig::new();
    config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.attempts = 1;
    opts.timeout = Duration::from_secs(2);
    opts.recursion_desired = false;
    let resolver = Resolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(opts)
        .build();
    match resolver.txt_lookup(qname).await {
        Ok(txt) => Ok(txt
            .iter()
            .any(|t| t.txt_data().iter().any(|d| d.as_ref() == value.as_bytes()))),
        Err(e) if e.is_no_records_found() => Ok(false),
        Err(e) => Err(e),
    }
}
