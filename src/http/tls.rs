//! rustls server configuration: per-site certificates chosen by SNI, ALPN
//! `h2` and `http/1.1`, ring crypto provider.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

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

/// Chooses a certificate by SNI, falling back to the default one.
#[derive(Debug)]
pub struct SniResolver {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|n| self.by_name.get(&n.to_ascii_lowercase()).cloned())
            .or_else(|| self.default.clone())
    }
}

/// Builds the HTTPS server config, or `None` when no certificate is configured.
pub fn server_config(cfg: &Config) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    let mut by_name = HashMap::new();
    let mut first = None;
    for s in &cfg.sites {
        if let Some((cert, key)) = &s.tls {
            let ck = Arc::new(load_certified_key(cert, key)?);
            first.get_or_insert_with(|| ck.clone());
            by_name.insert(s.hostname.clone(), ck);
        }
    }
    let default = match &cfg.https_default_cert {
        Some((c, k)) => Some(Arc::new(load_certified_key(c, k)?)),
        None => first,
    };
    if default.is_none() {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { by_name, default }));
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(sc)))
}
