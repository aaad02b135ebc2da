//! The doctor's HTTPS I/O: TLS handshakes that report the leaf certificate's
//! expiry, and a peer's clock read from its `Date` header. Trust is the
//! federation's: `federation.ca_file` plus the WebPKI roots unless
//! `federation.webpki_roots = false`.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::FederationConfig;

/// An HTTPS probe failed (or the client could not be set up).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// `federation.ca_file` could not be read or holds no certificate.
    #[error("federation.ca_file {path}: {message}")]
    CaFile {
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The HTTPS client could not be built.
    #[error("{0}")]
    Client(String),
    /// The request failed (connection, TLS, timeout), with its causes.
    #[error("{0}")]
    Request(String),
    /// The TLS handshake yielded no certificate.
    #[error("the server sent no certificate")]
    NoCertificate,
    /// The leaf certificate is not parsable X.509.
    #[error("unparsable certificate: {0}")]
    BadCertificate(String),
    /// The response has no `Date` header.
    #[error("the response has no Date header")]
    NoDate,
    /// The `Date` header is not an HTTP date.
    #[error("Date {date:?}: {message}")]
    BadDate {
        /// The header's value.
        date: String,
        /// Why it does not parse.
        message: String,
    },
}

/// HTTPS probes with the federation's trust anchors.
pub struct Https {
    roots: Vec<reqwest::Certificate>,
    webpki: bool,
    timeout: Duration,
}

/// An error and its causes, `a: b: c`, without repeating a cause its parent quotes.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cur = c.source();
    }
    msg
}

impl Https {
    /// Reads the CA file, if any.
    pub fn new(fed: &FederationConfig, timeout: Duration) -> Result<Self, NetError> {
        let mut roots = vec![];
        if let Some(ca) = &fed.ca_file {
            let err = |message: String| NetError::CaFile {
                path: ca.display().to_string(),
                message,
            };
            let pem = std::fs::read(ca).map_err(|e| err(e.to_string()))?;
            roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(chain(&e)))?;
        }
        Ok(Self {
            roots,
            webpki: fed.webpki_roots,
            timeout,
        })
    }

    fn client(&self, host: &str, addr: Option<SocketAddr>) -> Result<reqwest::Client, NetError> {
        let mut b = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .use_rustls_tls()
            .tls_built_in_root_certs(self.webpki)
            .tls_info(true)
            .redirect(reqwest::redirect::Policy::none());
        for c in &self.roots {
            b = b.add_root_certificate(c.clone());
        }
        if let Some(a) = addr {
            b = b.resolve(host, a);
        }
        b.build().map_err(|e| NetError::Client(chain(&e)))
    }

    /// Connects to `addr` with SNI `host`, verifies the chain, the name and
    /// the validity period, and returns the leaf's notAfter (unix seconds).
    pub async fn cert_expiry(&self, host: &str, addr: SocketAddr) -> Result<i64, NetError> {
        let client = self.client(host, Some(addr))?;
        let url = format!("https://{host}:{}/", addr.port());
        let resp = client
            .head(&url)
            .send()
            .await
            .map_err(|e| NetError::Request(chain(&e)))?;
        let der = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .ok_or(NetError::NoCertificate)?;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| NetError::BadCertificate(e.to_string()))?;
        Ok(cert.validity().not_after.timestamp())
    }

    /// The peer's clock minus ours (seconds), from the `Date` header of its
    /// health endpoint, against the middle of the request's round trip.
    pub async fn skew(
        &self,
        base_url: &str,
        host: &str,
        addr: Option<SocketAddr>,
    ) -> Result<f64, NetError> {
        let client = self.client(host, addr)?;
        let url = format!("{base_url}/.well-known/p2pcdn/v1/health");
        let t0 = SystemTime::now();
        let resp = client
            .get(&url)
            .send()
            .await
            .map_err(|e| NetError::Request(chain(&e)))?;
        let t1 = SystemTime::now();
        let date = resp
            .headers()
            .get(http::header::DATE)
            .and_then(|d| d.to_str().ok())
            .ok_or(NetError::NoDate)?;
        let peer = httpdate::parse_http_date(date).map_err(|e| NetError::BadDate {
            date: date.to_string(),
            message: e.to_string(),
        })?;
        let secs = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        };
        // Date has whole seconds: the peer's clock was within [Date, Date + 1).
        let mid = (secs(t0) + secs(t1)) / 2.0;
        Ok(secs(peer) + 0.5 - mid)
    }
}
