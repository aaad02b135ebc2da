//! Jittered periods for the federation's loops (gossip, probes, reports).
//!
//! Instances started together (a fleet restart, a test world, the demo)
//! would otherwise run every round at the same instant for ever: each
//! second all of them exchange, probe and answer each other's exchanges
//! at once, a burst of TLS and signature work that delays every other
//! thread of the machines involved (on the benchmark machine: five demo
//! instances stalled the DNS threads once a second, the main source of
//! their p99 latency, docs/BENCHMARKS.md "Session 12"). Each period is
//! drawn uniformly from `interval × [1 − spread, 1 + spread]`, so the mean
//! stays `interval` (detection and convergence times are unchanged on
//! average) while the phases of different instances drift apart within a
//! few rounds. Memberlist and Serf jitter their gossip the same way.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Spread of the gossip and report periods (± 20 %).
pub const GOSSIP_SPREAD: f64 = 0.2;
/// Spread of the health-probe period (± 10 %: detection time stays close
/// to one interval).
pub const PROBE_SPREAD: f64 = 0.1;

/// One period of `interval` jittered by `spread` (0..1), for a uniform
/// draw `u` in `[0, 1)`: `interval × (1 − spread + 2·spread·u)`.
pub fn jittered(interval: Duration, spread: f64, u: f64) -> Duration {
    let spread = spread.clamp(0.0, 1.0);
    let u = if u.is_finite() {
        u.clamp(0.0, 1.0)
    } else {
        0.5
    };
    interval.mul_f64(1.0 - spread + 2.0 * spread * u)
}

/// A periodic timer with jittered periods. The first tick is immediate;
/// each next deadline is the previous one plus a jittered period, or a
/// jittered period from now when a round overran its deadline (no bursts
/// of catch-up ticks).
pub struct Pace {
    interval: Duration,
    spread: f64,
    next: Option<Instant>,
}

impl Pace {
    /// A timer of mean period `interval`, jittered by `spread`.
    pub fn new(interval: Duration, spread: f64) -> Self {
        Self {
            interval,
            spread,
            next: None,
        }
    }

    /// The next deadline after `deadline` (the previous one, or `None`
    /// for the first tick), given the time `now` and a draw `u` in `[0, 1)`.
    pub fn next_deadline(&self, deadline: Option<Instant>, now: Instant, u: f64) -> Instant {
        match deadline {
            None => now,
            Some(d) => {
                let next = d + jittered(self.interval, self.spread, u);
                if next < now {
                    now + jittered(self.interval, self.spread, u)
                } else {
                    next
                }
            }
        }
    }

    /// Waits for the next tick. `true` when `stop` fired instead.
    pub async fn tick(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let next = self.next_deadline(self.next, Instant::now(), rand::random::<f64>());
        self.next = Some(next);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => false,
            _ = stop.changed() => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_stay_within_the_spread_and_keep_the_mean() {
        let i = Duration::from_millis(1000);
        assert_eq!(jittered(i, 0.2, 0.0), Duration::from_millis(800));
        assert_eq!(jittered(i, 0.2, 0.5), Duration::from_millis(1000));
        assert!(jittered(i, 0.2, 0.999_999) <= Duration::from_millis(1200));
        // Out-of-range draws and spreads are clamped, never panic.
        assert_eq!(jittered(i, 0.2, f64::NAN), i);
        assert_eq!(jittered(i, 5.0, 0.0), Duration::ZERO);
        assert_eq!(jittered(i, -1.0, 0.9), i);
        let n = 10_000;
        let mean: f64 = (0..n)
            .map(|k| jittered(i, 0.2, k as f64 / n as f64).as_secs_f64())
            .sum::<f64>()
            / n as f64;
        assert!((mean - 1.0).abs() < 0.001, "mean {mean}");
    }

    #[test]
    fn deadlines_follow_the_previous_one_and_skip_missed_ticks() {
        let p = Pace::new(Duration::from_secs(1), 0.1);
        let t0 = Instant::now();
        assert_eq!(p.next_deadline(None, t0, 0.3), t0);
        // On time: counted from the previous deadline, not from now.
        let d = p.next_deadline(Some(t0), t0 + Duration::from_millis(200), 0.5);
        assert_eq!(d, t0 + Duration::from_secs(1));
        // A round that overran by seconds: one period from now, not a burst.
        let late = t0 + Duration::from_secs(5);
        let d = p.next_deadline(Some(t0), late, 0.0);
        assert_eq!(d, late + Duration::from_millis(900));
    }

    #[test]
    fn timers_started_together_drift_apart() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let p = Pace::new(Duration::from_secs(1), GOSSIP_SPREAD);
        let t0 = Instant::now();
        let (mut a, mut b) = (t0, t0);
        let mut apart = 0;
        for _ in 0..20 {
            a = p.next_deadline(Some(a), a, rng.random());
            b = p.next_deadline(Some(b), b, rng.random());
            let gap = if a > b { a - b } else { b - a };
            if gap > Duration::from_millis(20) {
                apart += 1;
            }
        }
        // Lockstep timers would never be apart; jittered ones nearly always are.
        assert!(apart >= 15, "only {apart} of 20 rounds apart");
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_come_about_once_per_interval_and_stop_on_shutdown() {
        let (tx, mut rx) = watch::channel(false);
        let mut p = Pace::new(Duration::from_secs(1), PROBE_SPREAD);
        let t0 = Instant::now();
        assert!(!p.tick(&mut rx).await);
        assert_eq!(Instant::now(), t0, "the first tick is immediate");
        for _ in 0..10 {
            assert!(!p.tick(&mut rx).await);
        }
        let took = Instant::now() - t0;
        assert!(
            took >= Duration::from_secs(9) && took <= Duration::from_secs(11),
            "{took:?}"
        );
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            tx.send(true).ok();
            tx
        });
        assert!(p.tick(&mut rx).await, "stop ends the wait");
        stopper.await.ok();
    }
}
