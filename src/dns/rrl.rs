//! Response rate limiting (RRL), like Knot's and BIND's: a token bucket per
//! client network (/24 for IPv4, /56 for IPv6) over UDP responses. When a
//! network exceeds its rate, every `slip`-th response is sent truncated (TC,
//! no records: a real client retries over TCP, which is not limited) and the
//! others are dropped, so a spoofed-source flood cannot use us as an amplifier.
//!
//! Pure apart from a mutex: the caller passes `now`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it.
    Answer,
    /// Send an empty truncated response instead.
    Slip,
    /// Send nothing.
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    limited: u32,
}

/// Per-network token buckets.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    slip: u32,
    exempt: Vec<(IpAddr, u8)>,
    shards: Vec<Mutex<HashMap<u128, Bucket>>>,
}

/// Entries per shard before idle buckets are swept.
const SWEEP_AT: usize = 50_000;
const SHARDS: usize = 16;

fn network(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4) & 0xffff_ff00),
        IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 72) - 1)) | (1u128 << 127),
    }
}

fn in_prefix(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl RateLimiter {
    /// `rate` responses per second per network with a burst of `2 × rate`;
    /// `slip` 0 never slips, 1 slips every limited response, N every N-th.
    pub fn new(rate: u32, slip: u32, exempt: Vec<(IpAddr, u8)>) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(rate) * 2.0,
            slip,
            exempt,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Decides for one response to `ip` at `now`.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Verdict {
        if self.exempt.iter().any(|(n, l)| in_prefix(ip, *n, *l)) {
            return Verdict::Answer;
        }
        let key = network(ip);
        let Some(shard) = self.shards.get((key % SHARDS as u128) as usize) else {
            return Verdict::Answer;
        };
        let Ok(mut map) = shard.lock() else {
            return Verdict::Answer;
        };
        if map.len() > SWEEP_AT {
            let rate = self.rate.max(1.0);
            let burst = self.burst;
            map.retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < burst);
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            last: now,
            limited: 0,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.limited = 0;
            return Verdict::Answer;
        }
        b.limited = b.limited.wrapping_add(1);
        if self.slip > 0 && b.limited % self.slip == 0 {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn limits_per_network_and_refills() {
        let r = RateLimiter::new(10, 2, vec![("127.0.0.0".parse().unwrap(), 8)]);
        let t = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let same_net: IpAddr = "192.0.2.200".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        let answered = (0..40).filter(|_| r.check(a, t) == Verdict::Answer).count();
        assert_eq!(answered, 20, "burst = 2 × rate");
        assert_ne!(
            r.check(same_net, t),
            Verdict::Answer,
            "the whole /24 shares the bucket"
        );
        assert_eq!(r.check(other, t), Verdict::Answer);
        let verdicts: Vec<_> = (0..10).map(|_| r.check(a, t)).collect();
        assert!(verdicts.contains(&Verdict::Slip) && verdicts.contains(&Verdict::Drop));
        assert_eq!(
            r.check(a, t + Duration::from_secs(1)),
            Verdict::Answer,
            "refilled"
        );
        for _ in 0..1000 {
            assert_eq!(
                r.check("127.0.0.1".parse().unwrap(), t),
                Verdict::Answer,
                "exempt"
            );
        }
    }
}
