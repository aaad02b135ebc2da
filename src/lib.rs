//! p2pcdn: a DNS-steered federation of authoritative mirrors.
//!
//! Module map (see `docs/ARCHITECTURE.md`):
//! - [`config`]: typed, validated TOML configuration.
//! - [`keys`], [`hash`]: ed25519 keys and BLAKE3 content addresses.
//! - [`manifest`]: owner-signed manifests and their acceptance rules (pure).
//! - [`store`]: the content-addressed blob store on disk.
//! - [`db`]: SQLite metadata (the only module with SQL).
//! - [`publish`]: bringing signed content into an instance; [`sites`]: each
//!   site's version lifecycle (offer, verify once, complete, retire) and the catalog.
//! - [`catalog`]: the in-memory snapshot of what is served.
//! - [`dns`]: authoritative DNS (zone data, answers, hickory-server glue).
//! - [`http`]: the HTTPS/HTTP mirror.
//! - [`federation`], [`report`]: peers, signed reports, gossip, probes, replication.
//! - [`geo`], [`steer`]: client location and the pure steering decision.
//! - [`latency`]: client RTTs aggregated per client network (pure).
//! - [`acme`], [`challenge`]: certificates by ACME DNS-01, challenges
//!   answered by the federation's authorities.
//! - [`instance`]: starting and stopping everything; [`reload`]: what SIGHUP may change live.
//! - [`doctor`]: checks delegation, authorities, certificates and clocks from the outside.
//! - [`devca`], [`demo`], [`cli`]: development CA, the demo, the command line.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod accept;
pub mod acme;
pub mod catalog;
pub mod challenge;
pub mod cli;
pub mod config;
pub mod db;
pub mod demo;
pub mod devca;
pub mod dns;
pub mod doctor;
pub mod expiry;
pub mod federation;
pub mod geo;
pub mod hash;
pub mod http;
pub mod instance;
pub mod keys;
pub mod latency;
pub mod manifest;
pub mod metrics;
pub mod owner;
pub mod publish;
pub mod reload;
pub mod remote_publish;
pub mod report;
pub mod sites;
pub mod status;
pub mod status_page;
pub mod steer;
pub mod store;
pub mod upload;
