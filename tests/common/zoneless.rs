//! A DNS handler with no zones and no steering (every query REFUSED), for
//! tests of the listeners themselves.

use std::sync::Arc;

use p2pcdn::dns::server::{DnsData, DnsSettings, Handler, SharedDnsData, Steered, Steering};
use p2pcdn::metrics::Metrics;

/// Steers nothing.
pub struct NoSteering;

impl Steering for NoSteering {
    fn addresses(
        &self,
        _: &hickory_proto::rr::LowerName,
        _: bool,
        _: std::net::IpAddr,
        _: Option<(std::net::IpAddr, u8)>,
    ) -> Option<Steered> {
        None
    }
}

/// A handler without zones that counts into `metrics`.
pub fn handler(metrics: Arc<Metrics>) -> Handler {
    let data: SharedDnsData = Arc::new(arc_swap::ArcSwap::from_pointee(DnsData::default()));
    Handler::new(
        data,
        Arc::new(NoSteering),
        DnsSettings {
            fallback_ttl: 5,
            max_udp_payload: 1232,
            rrl: None,
            metrics,
        },
    )
}
