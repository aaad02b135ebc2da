//! rustls server configuration: per-site certificates chosen by SNI from a
//! swappable [`CertStore`] (operator PEMs, reloadable, and ACME
//! certificates), ALPN `h2` and `http/1.1`, ring crypto provider.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config::Config;

/// TLS setup errors.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Loads a PEM certificate chain and private key into a [`CertifiedKey`].
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let ferr = |p: &Path, m: String| TlsError::File {
        path: p.display().to_string(),
        message: m,
    };
    let f = File::open(cert).map_err(|e| ferr(cert, e.to_string()))?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(f))
        .collect::<Result<_, _>>()
        .map_err(|e| ferr(cert, format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(ferr(cert, "no CERTIFICATE found in PEM file".into()));
    }
    let f = File::open(key).map_err(|e| ferr(key, e.to_string()))?;
    let der = rustls_pemfile::private_key(&mut BufReader::new(f))
        .map_err(|e| ferr(key, format!("bad PEM: {e}")))?
        .ok_or_else(|| ferr(key, "no PRIVATE KEY found in PEM file".into()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| ferr(key, format!("unsupported private key: {e}")))?;
    let ck = CertifiedKey::new(chain, signing);
    // A key that is not the certificate's makes every handshake fail.
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(e) => Err(ferr(
            key,
            format!("does not match the certificate in {}: {e}", cert.display()),
        )),
    }
}

pub use crate::report::CertSource;

/// A certificate ready to serve, with the facts steering and status need.
#[derive(Debug, Clone)]
pub struct Served {
    /// Chain and signing key.
    pub key: Arc<CertifiedKey>,
    /// Unix seconds after which the certificate is invalid.
    pub not_after: u64,
    /// Unix seconds from which it is valid.
    pub not_before: u64,
    /// DNS names it is valid for (lowercase; may hold `*.` wildcards).
    pub names: Vec<String>,
    /// Where it came from.
    pub source: CertSource,
}

impl Served {
    /// Reads validity and names from the leaf certificate.
    pub fn new(key: CertifiedKey, source: CertSource) -> Result<Self, CertError> {
        let leaf = key.cert.first().ok_or(CertError::EmptyChain)?;
        let (not_before, not_after, names) = leaf_facts(leaf.as_ref())?;
        Ok(Self {
            key: Arc::new(key),
            not_after,
            not_before,
            names,
            source,
        })
    }

    /// True when the certificate names `host` (exactly or by a wildcard
    /// for one label).
    pub fn covers(&self, host: &str) -> bool {
        self.names.iter().any(|n| {
            n == host
                || n.strip_prefix("*.").is_some_and(|parent| {
                    host.split_once('.')
                        .is_some_and(|(l, rest)| !l.is_empty() && rest == parent)
                })
        })
    }
}

/// A certificate chain that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The chain holds no certificate.
    #[error("empty certificate chain")]
    EmptyChain,
    /// The leaf is not parsable X.509.
    #[error("bad certificate: {0}")]
    Parse(String),
}

/// (not before, not after, DNS names) of a DER certificate.
pub fn leaf_facts(der: &[u8]) -> Result<(u64, u64, Vec<String>), CertError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CertError::Parse(e.to_string()))?;
    let v = cert.validity();
    let ts = |t: i64| u64::try_from(t).unwrap_or(0);
    let mut names = vec![];
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for g in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = g {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    Ok((
        ts(v.not_before.timestamp()),
        ts(v.not_after.timestamp()),
        names,
    ))
}

/// The operator's certificates, as loaded from the configured PEM files.
#[derive(Debug, Default)]
struct OperatorCerts {
    by_name: HashMap<String, Served>,
    default: Option<Served>,
}

/// Every certificate this node serves, chosen by SNI; swapped in place, so
/// connections already open keep the certificate they were handshaken with
/// and new ones get the newest. Sources: the operator's PEM files (reloaded
/// on request) and certificates obtained through ACME.
///
/// SNI `host` gets, in order: the operator's certificate for the site
/// `host`; the ACME certificate for `host`; the operator's default
/// (`[https] cert`, else the first site certificate); the ACME certificate
/// of the node name.
#[derive(Debug)]
pub struct CertStore {
    node_name: String,
    operator: ArcSwap<OperatorCerts>,
    acme: ArcSwap<HashMap<String, Served>>,
}

impl CertStore {
    /// Loads the operator's PEM files named in `cfg`.
    pub fn new(cfg: &Config) -> Result<Self, TlsError> {
        Ok(Self {
            node_name: cfg.node.name.clone(),
            operator: ArcSwap::from_pointee(load_operator(cfg)?),
            acme: ArcSwap::from_pointee(HashMap::new()),
        })
    }

    /// Re-reads the operator's PEM files; on an error the old ones stay.
    pub fn reload_operator(&self, cfg: &Config) -> Result<(), TlsError> {
        self.operator.store(Arc::new(load_operator(cfg)?));
        Ok(())
    }

    /// Serves `served` for `name` from now on (new connections).
    pub fn install_acme(&self, name: &str, served: Served) {
        self.acme.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(name.to_string(), served.clone());
            m
        });
    }

    /// The ACME certificate held for `name`.
    pub fn acme(&self, name: &str) -> Option<Served> {
        self.acme.load().get(name).cloned()
    }

    /// The certificate a client asking for `host` (SNI) gets.
    pub fn for_host(&self, host: &str) -> Option<Served> {
        let op = self.operator.load();
        let acme = self.acme.load();
        op.by_name
            .get(host)
            .or_else(|| acme.get(host))
            .or(op.default.as_ref())
            .or_else(|| acme.get(&self.node_name))
            .cloned()
    }

    /// The certificate served for `host`, if it is valid for that name.
    pub fn valid_for(&self, host: &str, now: u64) -> Option<Served> {
        self.for_host(host)
            .filter(|s| s.covers(host) && s.not_before <= now && now < s.not_after)
    }

    /// True when some certificate can be served.
    pub fn any(&self) -> bool {
        let op = self.operator.load();
        op.default.is_some() || !op.by_name.is_empty() || !self.acme.load().is_empty()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let host = hello.server_name().map(str::to_ascii_lowercase);
        match host {
            Some(h) => self.for_host(&h),
            None => {
                let op = self.operator.load();
                op.default
                    .clone()
                    .or_else(|| self.acme.load().get(&self.node_name).cloned())
            }
        }
        .map(|s| s.key)
    }
}

/// The operator's PEM files named in `cfg` (sites' and the default).
pub fn operator_files(cfg: &Config) -> Vec<std::path::PathBuf> {
    cfg.sites
        .iter()
        .filter_map(|s| s.tls.clone())
        .chain(cfg.https_default_cert.clone())
        .flat_map(|(c, k)| [c, k])
        .collect()
}

fn load_operator(cfg: &Config) -> Result<OperatorCerts, TlsError> {
    let served = |c: &Path, k: &Path| -> Result<Served, TlsError> {
        // load_certified_key refuses a key that is not the certificate's
        // (e.g. a reload between replacing the certificate and its key).
        let ck = load_certified_key(c, k)?;
        Served::new(ck, CertSource::Operator).map_err(|e| TlsError::File {
            path: c.display().to_string(),
            message: e.to_string(),
        })
    };
    let mut by_name = HashMap::new();
    let mut first = None;
    for s in &cfg.sites {
        if let Some((cert, key)) = &s.tls {
            let ck = served(cert, key)?;
            first.get_or_insert_with(|| ck.clone());
            by_name.insert(s.hostname.clone(), ck);
        }
    }
    let default = match &cfg.https_default_cert {
        Some((c, k)) => Some(served(c, k)?),
        None => first,
    };
    Ok(OperatorCerts { by_name, default })
}

/// The HTTPS server config and the certificate store it resolves from.
pub type Https = (Arc<ServerConfig>, Arc<CertStore>);

/// Builds the HTTPS server config around a [`CertStore`]. `None` when no
/// certificate is configured and none is expected from ACME.
pub fn server_config(cfg: &Config) -> Result<Option<Https>, TlsError> {
    let store = Arc::new(CertStore::new(cfg)?);
    if !store.any() && cfg.acme.is_none() {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(store.clone());
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some((Arc::new(sc), store)))
}
