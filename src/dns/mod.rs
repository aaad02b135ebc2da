//! Authoritative DNS: zone data, answer logic, and the listeners.
//!
//! `zone` and `answer` are pure; `server` turns request bytes into response
//! bytes (EDNS, ECS, truncation, rate limiting) and runs the UDP listeners;
//! `tcp` runs the TCP listeners with their connection cap and deadlines.

pub mod answer;
pub mod rrl;
pub mod server;
pub mod tcp;
pub mod zone;
