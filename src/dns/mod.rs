//! Authoritative DNS: zone data, answer logic, and the listeners.
//!
//! `zone` and `answer` are pure (the reference answer); `server` turns
//! request bytes into response bytes (EDNS, ECS, truncation, rate limiting).
//! `fast` answers common queries from pre-encoded `template`s (`precomputed`
//! per zone snapshot, steered ones per steering view) through `wire`, and
//! falls back to the reference path for the rest. `udp` runs the UDP
//! threads (`recvmmsg`/`sendmmsg`), each with a `worker` (batch snapshot,
//! first-level cache of steered answers, per-batch metrics) and asks
//! `sched` for a short time slice for them; `tcp` runs the TCP listeners,
//! `bind` claims their addresses.

pub mod answer;
mod bind;
pub mod fast;
pub mod precomputed;
pub mod rrl;
mod sched;
pub mod server;
pub mod tcp;
pub mod template;
mod udp;
pub mod wire;
pub mod worker;
pub mod zone;
