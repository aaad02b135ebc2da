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
    if let Some(sites) = v["sites"].as_array() {
        for s in sites {
            println!(
                "  site {}: serving {} newest {} authorized mirrors {}  cert {}",
                s["site"].as_str().unwrap_or("?"),
                s["serving"],
                s["newest"],
                s["mirrors"].as_array().map_or(0, |a| a.len()),
                cert_text(&s["cert"], now)
            );
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
