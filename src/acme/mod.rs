//! The ACME client of a mirror: orders a certificate for every site
//! hostname the site's current signed manifest authorizes this node for, and
//! for its own node name, answering DNS-01 through the federation's
//! authorities ([`dns01`]), and renews them ([`schedule`]).
//!
//! - One certificate per name, each with its own key, generated here
//!   (rcgen, ECDSA P-256) and stored with mode 0600 ([`files`]); a stored,
//!   still valid certificate is served at start and not ordered again.
//! - A site whose operator configured a PEM (`tls_cert`) is left alone.
//! - New and renewed certificates are swapped into the
//!   [`CertStore`](crate::http::tls::CertStore): open connections keep theirs.
//! - Failures back off exponentially and honour the CA's `Retry-After`;
//!   "not ready" (an authority not bound yet) is retried every 2 s.
//!
//! Uses `instant-acme` for the protocol, over our reqwest client (so the
//! directory's TLS is verified with the system roots and `[acme] ca_file`,
//! and `Retry-After` of error responses can be read).

pub mod dns01;
pub mod files;
pub mod schedule;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    ExternalAccountKey, HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::catalog::unix_now;
use crate::challenge::Action;
use crate::config::AcmeConfig;
use crate::federation::Federation;
use crate::http::tls::{CertSource, CertStore, Served};

/// ACME client errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeError {
    /// A file in the ACME directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A stored or issued certificate is unusable.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The CA refused or failed a request.
    #[error("ACME CA: {message}")]
    Ca {
        /// What happened.
        message: String,
        /// The CA's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// Something this node needs first is missing (zone data, a binding).
    #[error("not ready: {0}")]
    NotReady(String),
    /// An authority refused or could not take the challenge request.
    #[error("challenge request: {0}")]
    Challenge(String),
    /// An authority did not serve the value in time.
    #[error("challenge value not served by every authority: {0}")]
    Propagation(String),
    /// Key or CSR generation.
    #[error("key generation: {0}")]
    Key(String),
}

/// instant-acme's HTTP client: our reqwest client, remembering the newest
/// `Retry-After` of an error response.
struct AcmeHttp {
    client: reqwest::Client,
    retry_after: Arc<Mutex<Option<SystemTime>>>,
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.client.clone();
        let ra = self.retry_after.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = http_body_util::BodyExt::collect(body)
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            let resp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(bytes)
                .send()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            if !resp.status().is_success() {
                let after = resp
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                if let (Some(a), Ok(mut g)) = (after, ra.lock()) {
                    *g = Some(a);
                }
            }
            Ok(BytesResponse::from(http::Response::<reqwest::Body>::from(
                resp,
            )))
        })
    }
}

/// `Retry-After`: delay-seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<SystemTime> {
    let v = v.trim();
    match v.parse::<u64>() {
        Ok(s) => Some(SystemTime::now() + Duration::from_secs(s)),
        Err(_) => httpdate::parse_http_date(v).ok(),
    }
}

#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Per-name progress of the run loop.
#[derive(Debug, Clone, Copy)]
struct NameState {
    /// Unix second of the next attempt.
    due: u64,
    /// Failures in a row.
    failures: u32,
    /// An order is running.
    busy: bool,
}

/// The ACME client of this node.
pub struct AcmeClient {
    fed: Arc<Federation>,
    cfg: AcmeConfig,
    dir: PathBuf,
    certs: Arc<CertStore>,
    http: reqwest::Client,
    retry_after: Arc<Mutex<Option<SystemTime>>>,
    account: tokio::sync::Mutex<Option<Account>>,
}

impl AcmeClient {
    /// A client for `cfg`, keeping its files under `<data_dir>/acme/`.
    pub fn new(
        fed: Arc<Federation>,
        cfg: AcmeConfig,
        certs: Arc<CertStore>,
    ) -> Result<Self, AcmeError> {
        let dir = files::dir(&fed.config().data_dir);
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("p2pcdn/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca).map_err(|source| AcmeError::Io {
                path: ca.display().to_string(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| AcmeError::Certificate(format!("{}: {e}", ca.display())))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b
            .build()
            .map_err(|e| AcmeError::Certificate(format!("HTTP client: {e}")))?;
        Ok(Self {
            fed,
            cfg,
            dir,
            certs,
            http,
            retry_after: Arc::new(Mutex::new(None)),
            account: tokio::sync::Mutex::new(None),
        })
    }

    fn http_client(&self) -> Box<dyn HttpClient> {
        Box::new(AcmeHttp {
            client: self.http.clone(),
            retry_after: self.retry_after.clone(),
        })
    }

    /// A CA error, with the `Retry-After` seen last (if still in the future).
    fn ca(&self, e: instant_acme::Error) -> AcmeError {
        let retry_after = self
            .retry_after
            .lock()
            .ok()
            .and_then(|mut g| g.take())
            .and_then(|t| t.duration_since(SystemTime::now()).ok());
        AcmeError::Ca {
            message: e.to_string(),
            retry_after,
        }
    }

    /// The ACME account: loaded from `account.json` when it is for the
    /// configured directory, else created (and stored, mode 0600).
    async fn account(&self) -> Result<Account, AcmeError> {
        let mut guard = self.account.lock().await;
        if let Some(a) = guard.as_ref() {
            return Ok(a.clone());
        }
        let path = self.dir.join("account.json");
        let stored: Option<StoredAccount> = files::read_private(&path)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|s: &StoredAccount| s.directory == self.cfg.directory);
        let account = match stored {
            Some(s) => Account::builder_with_http(self.http_client())
                .from_credentials(s.credentials)
                .await
                .map_err(|e| self.ca(e))?,
            None => {
                let contact: Vec<&str> = self.cfg.contact.iter().map(String::as_str).collect();
                let eab = match &self.cfg.eab {
                    Some((kid, key)) => {
                        use base64::Engine;
                        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .decode(key.trim_end_matches('='))
                            .map_err(|e| AcmeError::Key(format!("acme.eab_hmac_key: {e}")))?;
                        Some(ExternalAccountKey::new(kid.clone(), &raw))
                    }
                    None => None,
                };
                let (account, credentials) = Account::builder_with_http(self.http_client())
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.cfg.directory.clone(),
                        eab.as_ref(),
                    )
                    .await
                    .map_err(|e| self.ca(e))?;
                let doc = StoredAccount {
                    directory: self.cfg.directory.clone(),
                    credentials,
                };
                let json = serde_json::to_vec(&doc)
                    .map_err(|e| AcmeError::Key(format!("account: {e}")))?;
                files::write_private(&path, &json)?;
                tracing::info!(directory = %self.cfg.directory, id = account.id(), "created ACME account");
                account
            }
        };
        *guard = Some(account.clone());
        Ok(account)
    }

    /// The names this node should hold certificates for now: its node name
    /// (when it lies in a zone this node answers for) and every configured
    /// site it mirrors without an operator PEM whose current manifest lists
    /// this node.
    pub fn wanted(&self) -> Vec<String> {
        let cfg = self.fed.config();
        let mut names = vec![];
        if !self.fed.zone_authorities(&cfg.node.name).is_empty() {
            names.push(cfg.node.name.clone());
        }
        let cat = self.fed.catalog();
        for s in &cfg.sites {
            if !s.mirror || s.tls.is_some() || names.contains(&s.hostname) {
                continue;
            }
            let listed = cat
                .site(&s.hostname)
                .and_then(|l| l.newest.as_ref())
                .is_some_and(|m| m.manifest.mirrors.contains(&self.fed.me));
            if listed {
                names.push(s.hostname.clone());
            }
        }
        names
    }

    /// Installs the stored certificates that are still valid; returns the
    /// names installed.
    pub fn load_stored(&self) -> Vec<String> {
        let now = unix_now();
        let mut out = vec![];
        for name in self.wanted() {
            match files::load_cert(&self.dir, &name) {
                Ok(Some(ck)) => match Served::new(ck, CertSource::Acme) {
                    Ok(s) if s.not_after > now && s.covers(&name) => {
                        tracing::info!(%name, not_after = s.not_after, "serving the stored ACME certificate");
                        self.certs.install_acme(&name, s);
                        out.push(name);
                    }
                    Ok(_) => {
                        tracing::info!(%name, "stored ACME certificate expired: ordering a new one")
                    }
                    Err(e) => tracing::warn!(%name, error = %e, "stored ACME certificate unusable"),
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(%name, error = %e, "stored ACME certificate unusable"),
            }
        }
        out
    }

    /// Orders, validates and installs a certificate for `name`.
    pub async fn obtain(&self, name: &str) -> Result<Served, AcmeError> {
        let started = std::time::Instant::now();
        let auths = dns01::authorities(&self.fed, name)?;
        let account = self.account().await?;
        let ids = [Identifier::Dns(name.to_string())];
        let mut order = match account.new_order(&NewOrder::new(&ids)).await {
            Ok(o) => o,
            Err(e) => {
                if account_gone(&e) {
                    // The CA forgot the account (a test CA restarted, or it
                    // was deactivated): make a new one next time.
                    tracing::warn!("the ACME account is unknown to the CA: creating a new one");
                    *self.account.lock().await = None;
                    let _ = std::fs::remove_file(self.dir.join("account.json"));
                }
                return Err(self.ca(e));
            }
        };
        let mut published: Vec<String> = vec![];
        let validated = self
            .validate(&mut order, name, &auths, &mut published)
            .await;
        for value in &published {
            if let Err(e) = dns01::send_all(&self.fed, &auths, Action::Withdraw, name, value).await
            {
                tracing::debug!(%name, error = %e, "withdrawing a challenge value failed (it expires anyway)");
            }
        }
        validated?;
        let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::Key(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()])
            .map_err(|e| AcmeError::Key(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| AcmeError::Key(e.to_string()))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| self.ca(e))?;
        let chain = order
            .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(60)))
            .await
            .map_err(|e| self.ca(e))?;
        files::store_cert(&self.dir, name, &key.serialize_pem(), &chain)?;
        let ck = files::load_cert(&self.dir, name)?
            .ok_or_else(|| AcmeError::Certificate("stored certificate vanished".into()))?;
        let served =
            Served::new(ck, CertSource::Acme).map_err(|e| AcmeError::Certificate(e.to_string()))?;
        tracing::info!(
            %name, not_after = served.not_after, secs = started.elapsed().as_secs_f64(),
            "obtained a certificate through ACME"
        );
        Ok(served)
    }

    /// Answers the order's DNS-01 challenges through the federation and
    /// waits for the CA to mark the order ready. Values published are
    /// pushed to `published` (withdrawn by the caller, whatever happens).
    async fn validate(
        &self,
        order: &mut instant_acme::Order,
        name: &str,
        auths: &[crate::federation::challenge::ZoneAuthority],
        published: &mut Vec<String>,
    ) -> Result<(), AcmeError> {
        let timeout = Duration::from_secs(self.cfg.propagation_timeout_secs);
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut a = a.map_err(|e| self.ca(e))?;
            match a.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                s => {
                    return Err(AcmeError::Ca {
                        message: format!("authorization for {name} is {s:?}"),
                        retry_after: None,
                    })
                }
            }
            let mut ch = a.challenge(ChallengeType::Dns01).ok_or(AcmeError::Ca {
                message: "the CA offers no dns-01 challenge".into(),
                retry_after: None,
            })?;
            let value = ch.key_authorization().dns_value();
            published.push(value.clone());
            dns01::send_all(&self.fed, auths, Action::Publish, name, &value).await?;
            dns01::await_everywhere(auths, name, &value, self.cfg.dns_port, timeout).await?;
            ch.set_ready().await.map_err(|e| self.ca(e))?;
        }
        let status = order
            .poll_ready(&RetryPolicy::new().timeout(Duration::from_secs(90)))
            .await
            .map_err(|e| self.ca(e))?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Ca {
                message: format!("order for {name} is {status:?}"),
                retry_after: None,
            });
        }
        Ok(())
    }

    /// Keeps every wanted name's certificate obtained and renewed until
    /// shutdown (call [`AcmeClient::load_stored`] first).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut state: HashMap<String, NameState> = HashMap::new();
        let mut tasks: JoinSet<(String, Result<Served, AcmeError>)> = JoinSet::new();
        loop {
            let now = unix_now();
            for name in self.wanted() {
                let st = state.entry(name.clone()).or_insert_with(|| NameState {
                    due: self.certs.acme(&name).map_or(now, |s| due_for(&s)),
                    failures: 0,
                    busy: false,
                });
                if !st.busy && now >= st.due {
                    st.busy = true;
                    let me = self.clone();
                    tasks.spawn(async move {
                        let r = me.obtain(&name).await;
                        (name, r)
                    });
                }
            }
            tokio::select! {
                Some(Ok((name, result))) = tasks.join_next(), if !tasks.is_empty() => {
                    let now = unix_now();
                    let Some(st) = state.get_mut(&name) else { continue };
                    st.busy = false;
                    match result {
                        Ok(served) => {
                            st.due = due_for(&served);
                            st.failures = 0;
                            self.certs.install_acme(&name, served);
                        }
                        Err(AcmeError::NotReady(why)) => {
                            tracing::debug!(%name, %why, "ACME order waits");
                            st.due = now + 2;
                        }
                        Err(e) => {
                            st.failures += 1;
                            let retry_after = match &e {
                                AcmeError::Ca { retry_after, .. } => *retry_after,
                                _ => None,
                            };
                            let wait = schedule::backoff(st.failures, retry_after);
                            tracing::warn!(%name, error = %e, failures = st.failures, retry_in_s = wait.as_secs(), "ACME order failed");
                            st.due = now + wait.as_secs().max(1);
                        }
                    }
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => break,
            }
        }
        tasks.shutdown().await;
    }
}

/// True for the CA's "no such account" problem.
fn account_gone(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(p)
        if p.r#type.as_deref().is_some_and(|t| t.ends_with(":accountDoesNotExist")))
}

/// When a held certificate is due for renewal (jittered).
fn due_for(s: &Served) -> u64 {
    schedule::renew_at(s.not_before, s.not_after, rand::random::<f64>())
}
