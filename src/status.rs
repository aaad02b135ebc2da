//! `p2pcdn status`: asks a running instance for `/.well-known/p2pcdn/v1/status`
//! and prints the federation as it sees it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::config::Config;

fn local(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(v) if v.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), a.port())
        }
        IpAddr::V6(v) if v.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), a.port())
        }
        _ => a,
    }
}

/// Fetches and prints the status of the instance configured by `cfg`.
pub async fn show(cfg: &Config, json: bool) -> Result<()> {
    let name = &cfg.node.name;
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .use_rustls_tls()
        .tls_built_in_root_certs(cfg.federation.webpki_roots);
    if let Some(ca) = &cfg.federation.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        for c in reqwest::Certificate::from_pem_bundle(&pem)? {
            b = b.add_root_certificate(c);
        }
    }
    let url = if let Some(a) = cfg.https_listen.first() {
        b = b.resolve(name, local(*a));
        format!("https://{name}:{}/.well-known/p2pcdn/v1/status", a.port())
    } else if let Some(a) = cfg.http_listen.first() {
        format!("http://{}/.well-known/p2pcdn/v1/status", local(*a))
    } else {
        bail!("the config has no http or https listener to ask");
    };
    let client = b.build()?;
    let v: Value = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("is the instance running? GET {url}"))?
        .error_for_status()?
        .json()
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let holds = |h: &Value| -> String {
        h.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| format!("{}@{}", x["site"].as_str().unwrap_or("?"), x["version"]))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    let num = |x: &Value, prec: usize| {
        x.as_f64()
            .map_or("-".to_string(), |f| format!("{f:.prec$}"))
    };
    println!(
        "node {}  key {}\n  load {}  rps {}  holds {}",
        v["node"].as_str().unwrap_or("?"),
        v["key"].as_str().unwrap_or("?"),
        num(&v["load"], 2),
        num(&v["rps"], 1),
        holds(&v["holds"])
    );
    let now = crate::catalog::unix_now();
    // Node names by key, for the authorized-mirror lists.
    let mut names: std::collections::HashMap<String, String> = v["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["key"].as_str()?.to_string(),
                p["name"].as_str()?.to_string(),
            ))
        })
        .collect();
    if let (Some(k), Some(n)) = (v["key"].as_str(), v["node"].as_str()) {
        names.insert(k.to_string(), format!("{n} (this node)"));
    }
    if let Some(sites) = v["sites"].as_array() {
        for s in sites {
            let mirrors: Vec<String> = s["mirrors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str())
                .map(|k| names.get(k).cloned().unwrap_or_else(|| k.to_string()))
                .collect();
            println!(
                "  site {}: serving {} newest {} authorized mirrors ({}): {}",
                s["site"].as_str().unwrap_or("?"),
                s["serving"],
                s["newest"],
                mirrors.len(),
                if mirrors.is_empty() {
                    "any".to_string()
                } else {
                    mirrors.join(", ")
                }
            );
            println!("    cert {}", cert_text(&s["cert"], now));
            if s["expiry_warning"].as_bool() == Some(true) {
                let left = s["expires_in_s"].as_i64().unwrap_or(0);
                println!(
                    "    WARNING: {} version {} EXPIRES in {:.1} days: run `p2pcdn resign --site {}` or publish again",
                    s["site"].as_str().unwrap_or("?"),
                    s["serving"],
                    left as f64 / 86400.0,
                    s["site"].as_str().unwrap_or("?"),
                );
            }
            if s["authorized"].as_bool() == Some(false) {
                println!(
                    "    THIS NODE IS NOT AUTHORIZED for {}: the owner must add its key {} (publish --mirror)",
                    s["site"].as_str().unwrap_or("?"),
                    v["key"].as_str().unwrap_or("?")
                );
            }
        }
    }
    println!(
        "\n{:<28} {:<8} {:>8} {:>6} {:>8} {:>9} {:>7}  HOLDS  CERTS",
        "PEER", "HEALTH", "RTT ms", "LOAD", "RPS", "CAP rps", "REPORT"
    );
    for p in v["peers"].as_array().into_iter().flatten() {
        let health = if p["healthy"].as_bool() == Some(true) {
            "up"
        } else if p["probe_up"].as_bool() == Some(true) {
            "stale"
        } else {
            "down"
        };
        let certs = match p["certs"].as_array() {
            None => "-".to_string(),
            Some(cs) if cs.is_empty() => "none".to_string(),
            Some(cs) => cs
                .iter()
                .map(|c| {
                    format!(
                        "{}:{}",
                        c["site"].as_str().unwrap_or("?"),
                        cert_text(c, now)
                    )
                })
                .collect::<Vec<_>>()
                .join(" "),
        };
        println!(
            "{:<28} {:<8} {:>8} {:>6} {:>8} {:>9} {:>7}  {}  {certs}",
            p["name"].as_str().unwrap_or("?"),
            health,
            num(&p["rtt_ms"], 2),
            num(&p["load"], 2),
            num(&p["rps"], 1),
            num(&p["capacity_rps"], 0),
            p["report_age_s"]
                .as_u64()
                .map_or("-".into(), |s| format!("{s}s")),
            holds(&p["holds"])
        );
    }
    let unbound = v["unbound_peers"].as_array().cloned().unwrap_or_default();
    if !unbound.is_empty() {
        println!("\nCONFIGURED PEERS NOT BOUND YET");
        for p in unbound {
            println!(
                "  {}: {}",
                p["url"].as_str().unwrap_or("?"),
                p["error"].as_str().unwrap_or("not tried yet")
            );
        }
    }
    Ok(())
}

/// `acme, expires in 59d` or `none` for a certificate state object.
fn cert_text(c: &Value, now: u64) -> String {
    let Some(until) = c["not_after"].as_u64() else {
        return "none".into();
    };
    let left = until.saturating_sub(now);
    let left = if left >= 2 * 86400 {
        format!("{}d", left / 86400)
    } else if left >= 7200 {
        format!("{}h", left / 3600)
    } else {
        format!("{left}s")
    };
    format!("{}, expires in {left}", c["source"].as_str().unwrap_or("?"))
}
