//! Authoritative DNS: zone data, answer logic, and the hickory-server glue.
//!
//! `zone` and `answer` are pure; `server` adapts them to hickory-server's
//! UDP/TCP listeners and adds EDNS, ECS and truncation handling.

pub mod answer;
pub mod rrl;
pub mod server;
pub mod zone;
