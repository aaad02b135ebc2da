//! Owner-key discovery: a site's owner key may be fetched over HTTPS from the
//! owner's domain (`https://<owner_domain>/.well-known/p2pcdn/<site>.key`, one
//! line `ed25519:...`), verified by the TLS certificate of that domain.
//!
//! Trust on first use: the first key fetched is pinned in
//! `<data_dir>/owner-keys/<site>.pub` and used from then on, also when the
//! owner's domain is unreachable. A later fetch that returns a different key
//! is refused with an error log; an operator rotates a key by deleting the
//! pin (or configuring `owner_key`).

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;
use crate::keys::PublicKey;

/// Discovery errors.
#[derive(Debug, thiserror::Error)]
pub enum OwnerKeyError {
    /// Nothing pinned and the owner's domain did not give a key.
    #[error("site {site}: cannot discover the owner key from {url}: {source}")]
    Fetch {
        /// Site.
        site: String,
        /// URL tried.
        url: String,
        /// Why.
        source: FetchError,
    },
    /// The pin file could not be written or read.
    #[error("{path}: {message}")]
    Pin {
        /// File.
        path: String,
        /// Why.
        message: String,
    },
    /// HTTP client setup.
    #[error(transparent)]
    Client(#[from] crate::federation::FederationError),
}

fn pin_path(cfg: &Config, site: &str) -> PathBuf {
    cfg.data_dir.join("owner-keys").join(format!("{site}.pub"))
}

/// Why a key document could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed or the server refused it.
    #[error("{0}")]
    Request(#[from] reqwest::Error),
    /// The body broke off or is too long.
    #[error("{0}")]
    Body(String),
    /// The body is not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// The body is not a public key.
    #[error("{0}")]
    Key(#[from] crate::keys::KeyError),
}

/// Fetches a key document.
pub async fn fetch(client: &reqwest::Client, url: &str) -> Result<PublicKey, FetchError> {
    let resp = client
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .error_for_status()?;
    let body = crate::federation::agent::read_limited(resp, 4096)
        .await
        .map_err(FetchError::Body)?;
    let text = String::from_utf8(body).map_err(|_| FetchError::NotUtf8)?;
    Ok(text.trim().parse::<PublicKey>()?)
}

/// Moves every pending site into `cfg.sites` with its discovered (or pinned) key.
pub async fn resolve(cfg: &mut Config) -> Result<(), OwnerKeyError> {
    if cfg.pending_sites.is_empty() {
        return Ok(());
    }
    let (client, _) = crate::federation::http_client(cfg)?;
    for p in std::mem::take(&mut cfg.pending_sites) {
        let pin = pin_path(cfg, &p.hostname);
        let pinned = std::fs::read_to_string(&pin)
            .ok()
            .and_then(|t| t.trim().parse::<PublicKey>().ok());
        let mut fetched = fetch(&client, &p.owner_key_url).await;
        for attempt in 1..3 {
            if fetched.is_ok() || pinned.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
            fetched = fetch(&client, &p.owner_key_url).await;
        }
        let key = match (pinned, fetched) {
            (Some(pinned), Ok(k)) if k != pinned => {
                tracing::error!(site = %p.hostname, url = %p.owner_key_url, pinned = %pinned, offered = %k,
                    "owner key at the owner's domain changed; keeping the pinned key (delete the pin to accept a rotation)");
                pinned
            }
            (Some(pinned), _) => pinned,
            (None, Ok(k)) => {
                let dir = pin.parent().map(PathBuf::from).unwrap_or_default();
                std::fs::create_dir_all(&dir)
                    .and_then(|()| std::fs::write(&pin, format!("{k}\n")))
                    .map_err(|e| OwnerKeyError::Pin {
                        path: pin.display().to_string(),
                        message: e.to_string(),
                    })?;
                tracing::info!(site = %p.hostname, url = %p.owner_key_url, key = %k, "discovered and pinned the owner key");
                k
            }
            (None, Err(source)) => {
                return Err(OwnerKeyError::Fetch {
                    site: p.hostname,
                    url: p.owner_key_url,
                    source,
                })
            }
        };
        cfg.sites.push(p.with_key(key));
    }
    Ok(())
}
