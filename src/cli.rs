//! Command line: parse arguments, load config, wire modules, run to shutdown.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::instance::Instance;
use crate::keys::SecretKey;
use crate::publish::{self, PublishOptions};

/// p2pcdn: a DNS-steered federation of authoritative mirrors for owner-signed static sites.
#[derive(Parser, Debug)]
#[command(name = "p2pcdn", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (RUST_LOG syntax), e.g. "info" or "p2pcdn=debug".
    #[arg(long, global = true, env = "P2PCDN_LOG", default_value = "info")]
    pub log: String,
    /// Log line format: `text` for people, `json` (one object per line) for
    /// log collectors.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "P2PCDN_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where a remote publish goes.
#[derive(clap::Args, Debug)]
pub struct RemoteArgs {
    /// Publish to this running instance (`https://host[:port]`) instead of a
    /// local data directory.
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    /// Extra CA certificates (PEM) to trust for `--to`.
    #[arg(long, value_name = "PEM", requires = "to")]
    pub ca_file: Option<PathBuf>,
    /// Connect to this address instead of resolving the `--to` host (the
    /// certificate is still checked against the host).
    #[arg(long, value_name = "ADDR:PORT", requires = "to")]
    pub connect: Option<std::net::SocketAddr>,
}

/// Log line formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make an ed25519 key pair (a node key or a site owner key).
    ///
    /// Writes the secret key to OUT with mode 0600 (never overwrites) and prints
    /// the public key, `ed25519:...`, to paste into configs (`owner_key`).
    Keygen {
        /// Where to write the secret key.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Print the public key of a secret key file.
    Pubkey {
        /// Secret key file.
        key: PathBuf,
    },
    /// Publish a folder as a site's new signed version, into an instance's
    /// data directory (`--config`) or to any running instance (`--to`).
    ///
    /// Hashes every file with BLAKE3, signs the manifest with the owner key.
    /// Locally it stores new blobs and imports the manifest; a running `serve`
    /// on the same data directory switches to it within a second. With `--to`
    /// it uploads only the blobs the instance lacks (re-running after an
    /// interruption continues), and the instance imports and gossips it.
    Publish {
        /// The instance's config file (names the data directory and pins the owner key).
        #[arg(long, short, required_unless_present = "to", conflicts_with = "to")]
        config: Option<PathBuf>,
        /// Remote target.
        #[command(flatten)]
        remote: RemoteArgs,
        /// Upload rate cap, bytes per second (`--to` only).
        #[arg(long, value_name = "BYTES_PER_SEC", requires = "to")]
        max_rate: Option<u64>,
        /// Site hostname, e.g. www.cdn.example.org.
        #[arg(long)]
        site: String,
        /// Owner secret key file.
        #[arg(long)]
        key: PathBuf,
        /// Version number (default: max(unix time, held version + 1)).
        #[arg(long)]
        version: Option<u64>,
        /// Days the manifest stays valid (default: publish.validity_days, 90).
        #[arg(long)]
        validity_days: Option<u64>,
        /// Cache-Control max-age for the files, seconds.
        #[arg(long, default_value_t = 300)]
        cache_ttl: u32,
        /// File served for `/` and directories.
        #[arg(long, default_value = "index.html")]
        default_document: String,
        /// Also write the signed manifest to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Authorize this mirror's node key (repeatable); this instance's own
        /// key and the site's configured `mirrors` are always included.
        #[arg(long = "mirror", value_name = "ed25519:KEY")]
        mirrors: Vec<crate::keys::PublicKey>,
        /// Sign this zone file into the manifest, so instances named in the
        /// zone's NS set can serve the zone without a local copy. Without
        /// it, the previous version's signed zone is carried forward.
        #[arg(long, value_name = "FILE", conflicts_with = "drop_zone")]
        zone_file: Option<PathBuf>,
        /// Sign no zone, even if the previous version had one (instances
        /// without a local zone file then stop answering for the zone).
        #[arg(long)]
        drop_zone: bool,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
        /// Folder with the site's files.
        dir: PathBuf,
    },
    /// Extend a site's expiry without re-uploading: sign the newest version's
    /// files again as a new version with a new expiry, and publish it locally
    /// (`--config`) or to a running instance (`--to`).
    Resign {
        /// The instance's config file.
        #[arg(long, short, required_unless_present = "to", conflicts_with = "to")]
        config: Option<PathBuf>,
        /// Remote target.
        #[command(flatten)]
        remote: RemoteArgs,
        /// Site hostname.
        #[arg(long)]
        site: String,
        /// Owner secret key file.
        #[arg(long)]
        key: PathBuf,
        /// Days the new manifest stays valid (default: publish.validity_days
        /// locally, 90 remotely).
        #[arg(long)]
        validity_days: Option<u64>,
    },
    /// Run an instance: authoritative DNS, HTTPS/HTTP mirror.
    Serve {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file and the zone files it names, then exit.
    Check {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show the federation as a running instance sees it: peers, health,
    /// load and capacity, RTT, and site versions held.
    Status {
        /// The instance's config file (to find its listener and CA).
        #[arg(long, short)]
        config: PathBuf,
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check this instance's setup from the outside, as resolvers and clients
    /// see it: the parent's NS set and glue against the zone's, the SOA serial
    /// at every authority, every site name through the resolver and AA at every
    /// authority, certificates (site names and node name), clock skew against
    /// peers, and the geodata file's age.
    ///
    /// Prints one line per check, `ok`, `warn` or `FAIL` with the fix; exits
    /// non-zero on any FAIL.
    Doctor {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Recursive resolver to ask (default: the system's, /etc/resolv.conf).
        #[arg(long, value_name = "ADDR:PORT")]
        resolver: Option<std::net::SocketAddr>,
        /// Bound on each DNS question, TLS handshake and HTTP request, seconds.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Issue a development TLS certificate from a local development CA
    /// (created in CA_DIR if absent). For tests and private federations only.
    DevCert {
        /// Directory of the development CA (ca.pem, ca.key) and output files.
        #[arg(long)]
        ca_dir: PathBuf,
        /// Output file stem: writes <CA_DIR>/<STEM>.pem and <STEM>.key.
        #[arg(long)]
        out: String,
        /// DNS names or IP addresses the certificate is for.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Set up and run a five-city demo federation on 127.N.0.1 (N = 1..5).
    ///
    /// Each instance answers DNS on :5300 (UDP and TCP), HTTPS on :8443 and HTTP
    /// on :8080, and is NS for demo.p2pcdn.test. Creates keys, a development CA
    /// and certificates, the zone, a sample site (HTML, CSS, image, 20 MiB file)
    /// in DIR, publishes it at the origin (Frankfurt, 127.1.0.1), shows it
    /// replicating, and prints dig and curl commands that show steering.
    /// Ctrl-C stops it.
    Demo {
        /// Working directory (reused across runs; default: $TMPDIR/p2pcdn-demo).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Prepare and publish, print the commands, but do not serve.
        #[arg(long)]
        no_serve: bool,
    },
}

impl Cli {
    /// Where instance logs go instead of the terminal: `demo` keeps the
    /// terminal for its own guide and logs to `<dir>/demo.log`.
    pub fn log_file(&self) -> Option<PathBuf> {
        match &self.command {
            Command::Demo {
                dir,
                no_serve: false,
            } => Some(demo_dir(dir).join("demo.log")),
            _ => None,
        }
    }
}

/// The demo's working directory.
fn demo_dir(dir: &Option<PathBuf>) -> PathBuf {
    dir.clone()
        .unwrap_or_else(|| std::env::temp_dir().join("p2pcdn-demo"))
}

/// Runs the CLI.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Keygen { out } => {
            let k = SecretKey::generate()?;
            k.write_new(&out)?;
            println!("{}", k.public());
            eprintln!(
                "secret key written to {} (mode 0600); public key above",
                out.display()
            );
            Ok(())
        }
        Command::Pubkey { key } => {
            println!("{}", SecretKey::read(&key)?.public());
            Ok(())
        }
        Command::Publish {
            config: None,
            remote,
            max_rate,
            site,
            key,
            version,
            validity_days,
            cache_ttl,
            default_document,
            out,
            mirrors,
            zone_file,
            drop_zone,
            quiet,
            dir,
        } => {
            let key = SecretKey::read(&key)?;
            if !dir.is_dir() {
                bail!("{} is not a directory", dir.display());
            }
            let days = validity_days.unwrap_or(90);
            if !(1..=3650).contains(&days) {
                bail!("--validity-days must be within 1..=3650");
            }
            let zone_text = match &zone_file {
                Some(f) => Some(
                    std::fs::read_to_string(f)
                        .with_context(|| format!("reading {}", f.display()))?,
                ),
                None => None,
            };
            let opts = crate::remote_publish::RemoteOptions {
                site,
                dir,
                version,
                validity_secs: days * 86400,
                cache_ttl,
                default_document,
                progress: !quiet,
                zone_text,
                drop_zone,
                mirrors,
                max_rate,
            };
            let report = runtime()?.block_on(async {
                let r = remote_client(&remote)?;
                Ok::<_, anyhow::Error>(crate::remote_publish::publish(&r, &key, &opts).await?)
            })?;
            print_remote(&report, remote.to.as_deref().unwrap_or("?"), out.as_deref())
        }
        Command::Resign {
            config,
            remote,
            site,
            key,
            validity_days,
        } => {
            let key = SecretKey::read(&key)?;
            match config {
                Some(config) => {
                    let mut cfg = Config::load(&config)?;
                    runtime()?.block_on(crate::owner::resolve(&mut cfg))?;
                    let days = validity_days.unwrap_or(cfg.publish_validity_days);
                    if !(1..=3650).contains(&days) {
                        bail!("--validity-days must be within 1..=3650");
                    }
                    let (version, expires) =
                        publish::resign_local(&cfg, &key, &site, days * 86400)?;
                    println!(
                        "re-signed {} as version {version}, expires {}; no blobs uploaded",
                        crate::manifest::normalize_site(&site),
                        httpdate::fmt_http_date(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs(expires)
                        )
                    );
                    Ok(())
                }
                None => {
                    let days = validity_days.unwrap_or(90);
                    if !(1..=3650).contains(&days) {
                        bail!("--validity-days must be within 1..=3650");
                    }
                    let report = runtime()?.block_on(async {
                        let r = remote_client(&remote)?;
                        Ok::<_, anyhow::Error>(
                            crate::remote_publish::resign(&r, &key, &site, days * 86400).await?,
                        )
                    })?;
                    print_remote(&report, remote.to.as_deref().unwrap_or("?"), None)
                }
            }
        }
        Command::Publish {
            config: Some(config),
            remote: _,
            max_rate: _,
            site,
            key,
            version,
            validity_days,
            cache_ttl,
            default_document,
            out,
            mirrors,
            zone_file,
            drop_zone,
            quiet,
            dir,
        } => {
            let mut cfg = Config::load(&config)?;
            runtime()?.block_on(crate::owner::resolve(&mut cfg))?;
            let host = crate::manifest::normalize_site(&site);
            for s in cfg.sites.iter_mut().filter(|s| s.hostname == host) {
                for m in &mirrors {
                    if !s.mirrors.contains(m) {
                        s.mirrors.push(*m);
                    }
                }
            }
            let key = SecretKey::read(&key)?;
            if !dir.is_dir() {
                bail!("{} is not a directory", dir.display());
            }
            let zone = match &zone_file {
                Some(f) => {
                    let text = std::fs::read_to_string(f)
                        .with_context(|| format!("reading {}", f.display()))?;
                    let origin = cfg
                        .site(&host)
                        .map(|s| s.zone.clone())
                        .with_context(|| format!("site {host} is not in the config"))?;
                    // Refuse a zone file that would not load at the mirrors.
                    crate::dns::zone::Zone::parse_untrusted(
                        &text,
                        &hickory_proto::rr::Name::from_ascii(format!("{origin}."))?,
                        f,
                    )?;
                    Some(crate::manifest::ZoneDoc { origin, text })
                }
                None => None,
            };
            let days = validity_days.unwrap_or(cfg.publish_validity_days);
            if !(1..=3650).contains(&days) {
                bail!("--validity-days must be within 1..=3650");
            }
            let report = publish::publish(
                &cfg,
                &key,
                &PublishOptions {
                    site,
                    dir,
                    version,
                    validity_secs: days * 86400,
                    cache_ttl,
                    default_document,
                    progress: !quiet,
                    now: None,
                    zone,
                    drop_zone,
                },
            )?;
            let node_key = SecretKey::read(&cfg.node.key).ok().map(|k| k.public());
            let name_of = |k: &crate::keys::PublicKey| {
                if Some(*k) == node_key {
                    format!("{} ({k})", cfg.node.name)
                } else {
                    k.to_string()
                }
            };
            let names: Vec<String> = report.mirrors.iter().map(name_of).collect();
            println!(
                "authorized mirrors ({}): {}",
                names.len(),
                if names.is_empty() {
                    "none listed: any instance pinning the owner key may serve".to_string()
                } else {
                    names.join(", ")
                }
            );
            for k in &report.dropped_mirrors {
                eprintln!(
                    "warning: {} was authorized by the previous version and is not by this one: it will stop serving {} (add --mirror {k} to keep it)",
                    name_of(k),
                    report.site
                );
            }
            match report.zone {
                crate::publish::ZoneOutcome::Carried => {
                    println!("zone: the previous version's owner-signed zone is carried forward")
                }
                crate::publish::ZoneOutcome::Dropped => eprintln!(
                    "warning: --drop-zone: this version signs no zone; instances without a local zone file for it will answer REFUSED for the whole zone"
                ),
                crate::publish::ZoneOutcome::Signed | crate::publish::ZoneOutcome::None => {}
            }
            if let Some(out) = out {
                std::fs::write(&out, &report.envelope)
                    .with_context(|| format!("writing {}", out.display()))?;
            }
            let state = match &report.imported {
                crate::sites::Imported::Complete { .. } => "complete, now served".to_string(),
                crate::sites::Imported::Pending { missing, .. } => {
                    format!("pending: {} blobs missing", missing.len())
                }
            };
            println!(
                "published {} version {}: {} files, {} bytes, {} new blobs; {state}",
                report.site, report.version, report.files, report.bytes, report.new_blobs
            );
            Ok(())
        }
        Command::Serve { config } => {
            let cfg = Config::load(&config)?;
            runtime()?.block_on(serve(cfg))
        }
        Command::Check { config } => {
            let cfg = Config::load(&config)?;
            let zones = crate::dns::zone::ZoneSet::load_dir(&cfg.zones_dir)?;
            for z in zones.zones() {
                let missing = crate::dns::zone::missing_glue(z);
                if !missing.is_empty() {
                    bail!(
                        "zone {}: in-zone name servers without an address (glue): {}; add A/AAAA records for them",
                        z.origin(),
                        missing.join(", ")
                    );
                }
                println!("zone {} ok", z.origin());
            }
            for s in &cfg.sites {
                if let Some((c, k)) = &s.tls {
                    crate::http::tls::load_certified_key(c, k)
                        .with_context(|| format!("site {}: tls_cert / tls_key", s.hostname))?;
                }
                let origin = hickory_proto::rr::LowerName::from(
                    hickory_proto::rr::Name::from_ascii(format!("{}.", s.zone))?,
                );
                if !zones.zones().iter().any(|z| *z.origin() == origin) {
                    println!(
                        "warning: site {}: its zone {} has no zone file in {}; this instance answers for it only once an owner-signed zone arrives (publish --zone-file), REFUSED until then",
                        s.hostname,
                        s.zone,
                        cfg.zones_dir.display()
                    );
                }
                println!("site {} ok (owner {})", s.hostname, s.owner_key);
            }
            if let Some((c, k)) = &cfg.https_default_cert {
                crate::http::tls::load_certified_key(c, k).context("https.cert / https.key")?;
            }
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::Status { config, json } => {
            let cfg = Config::load(&config)?;
            runtime()?.block_on(crate::status::show(&cfg, json))
        }
        Command::Doctor {
            config,
            resolver,
            timeout,
        } => {
            let cfg = Config::load(&config)?;
            let opts = crate::doctor::Options {
                resolver,
                timeout: std::time::Duration::from_secs(timeout.clamp(1, 60)),
            };
            let found =
                runtime()?.block_on(crate::doctor::run(&cfg, &opts, &mut |f| println!("{f}")))?;
            let failed = found
                .iter()
                .filter(|f| f.level == crate::doctor::findings::Level::Fail)
                .count();
            if failed > 0 {
                bail!("{failed} of {} checks failed", found.len());
            }
            Ok(())
        }
        Command::DevCert { ca_dir, out, names } => {
            let ca = crate::devca::DevCa::open_or_create(&ca_dir)?;
            let (cert, key) = ca.issue(&ca_dir, &out, &names)?;
            println!(
                "{}\n{}\nCA: {}",
                cert.display(),
                key.display(),
                ca.cert_path.display()
            );
            Ok(())
        }
        Command::Demo { dir, no_serve } => {
            let dir = demo_dir(&dir);
            let prepared = crate::demo::prepare(&dir)?;
            if no_serve {
                crate::demo::print_instructions(&prepared);
                return Ok(());
            }
            runtime()?.block_on(run_demo(prepared))
        }
    }
}

async fn run_demo(prepared: crate::demo::Prepared) -> Result<()> {
    // Listen for Ctrl-C from the start, so stopping during startup is clean too.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = || *stop_rx.borrow();
    println!(
        "Starting five instances; their logs go to {}",
        prepared.dir.join("demo.log").display()
    );
    let mut instances = vec![];
    for n in &prepared.nodes {
        let inst = Instance::start(n.config.clone()).await.with_context(|| {
            format!(
                "starting the {} instance ({})",
                n.city,
                n.config_path.display()
            )
        })?;
        instances.push(inst);
    }
    println!(
        "Published {} version {} at the origin; replicating...",
        crate::demo::SITE,
        prepared.version
    );
    let started = std::time::Instant::now();
    let mut done = vec![false; instances.len()];
    while !stopped()
        && done.iter().any(|d| !d)
        && started.elapsed() < std::time::Duration::from_secs(120)
    {
        for (i, inst) in instances.iter().enumerate() {
            let holds = inst
                .catalog
                .load()
                .versions()
                .iter()
                .any(|(_, v)| *v == prepared.version);
            if holds && !done.get(i).copied().unwrap_or(true) {
                if let Some(d) = done.get_mut(i) {
                    *d = true;
                }
                let city = prepared.nodes.get(i).map_or("?", |n| n.city);
                println!(
                    "  {city:<10} holds version {} verified ({:.1} s)",
                    prepared.version,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    if !stopped() {
        // Give health probes a moment so the first dig already sees every mirror.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        crate::demo::print_instructions(&prepared);
    }
    let mut rx = stop_rx.clone();
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            break;
        }
    }
    tracing::info!("shutting down");
    for inst in instances {
        inst.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

fn remote_client(a: &RemoteArgs) -> Result<crate::remote_publish::Remote> {
    let to =
        a.to.as_deref()
            .context("--to URL is required without --config")?;
    Ok(crate::remote_publish::Remote::new(
        to,
        a.ca_file.as_deref(),
        a.connect,
    )?)
}

/// Prints what a remote publish or resign did.
fn print_remote(
    r: &crate::remote_publish::RemoteReport,
    to: &str,
    out: Option<&std::path::Path>,
) -> Result<()> {
    if let Some(out) = out {
        std::fs::write(out, &r.envelope).with_context(|| format!("writing {}", out.display()))?;
    }
    if r.rotated {
        eprintln!(
            "note: the version the instance held is signed by another owner key (a key rotation): nothing was carried forward from it; list every mirror with --mirror and the zone with --zone-file"
        );
    }
    let mirrors: Vec<String> = r.mirrors.iter().map(|k| k.to_string()).collect();
    println!(
        "authorized mirrors ({}): {}",
        mirrors.len(),
        if mirrors.is_empty() {
            "none listed: any instance pinning the owner key may serve".to_string()
        } else {
            mirrors.join(", ")
        }
    );
    match r.zone {
        crate::publish::ZoneOutcome::Carried => {
            println!("zone: the previous version's owner-signed zone is carried forward")
        }
        crate::publish::ZoneOutcome::Dropped => eprintln!(
            "warning: --drop-zone: this version signs no zone; instances without a local zone file for it will answer REFUSED for the whole zone"
        ),
        crate::publish::ZoneOutcome::Signed | crate::publish::ZoneOutcome::None => {}
    }
    println!(
        "published {} version {} to {to}: {} files, {} bytes; uploaded {} of {} blobs ({} bytes{}), expires {}; {}",
        r.site,
        r.version,
        r.files,
        r.bytes,
        r.uploaded,
        r.blobs,
        r.uploaded_bytes,
        if r.resumed_bytes > 0 {
            format!(
                "; {} more kept by the instance from an interrupted upload",
                r.resumed_bytes
            )
        } else {
            String::new()
        },
        httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(r.expires)),
        if r.complete {
            "complete, now served"
        } else {
            "not complete yet"
        }
    );
    if !r.complete {
        bail!(
            "the instance did not complete version {}; run the same command again to continue",
            r.version
        );
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn serve(cfg: Config) -> Result<()> {
    let source = cfg.source.display().to_string();
    let inst = Instance::start(cfg)
        .await
        .with_context(|| format!("starting instance from {source}"))?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    inst.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
