//! Certificate expiry for the status page: the notAfter of the first
//! certificate in a PEM file (the leaf of a chain).
//!
//! TODO(acme): when certificates are obtained by ACME and kept per site, show
//! those instead of re-reading the configured files.

use std::path::Path;

use super::CertExpiry;

/// Why a certificate's expiry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The PEM text holds no certificate.
    #[error("no PEM certificate")]
    NoCertificate,
    /// The PEM text is malformed.
    #[error("bad PEM: {0}")]
    Pem(std::io::Error),
    /// The certificate's DER is malformed.
    #[error("bad certificate: {0}")]
    Der(String),
}

/// notAfter (unix seconds) of the first certificate in `pem`.
pub fn not_after_pem(pem: &[u8]) -> Result<i64, CertError> {
    let der = rustls_pemfile::certs(&mut &pem[..])
        .next()
        .ok_or(CertError::NoCertificate)?
        .map_err(CertError::Pem)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| CertError::Der(e.to_string()))?;
    Ok(cert.validity().not_after.timestamp())
}

/// Reads `path` (blocking) and returns its certificate's expiry for the page.
pub fn expiry_of_file(path: &Path) -> CertExpiry {
    let read = std::fs::read(path).map_err(|source| CertError::Read {
        path: path.display().to_string(),
        source,
    });
    match read.and_then(|pem| not_after_pem(&pem)) {
        Ok(t) => CertExpiry::NotAfter(t),
        Err(e) => {
            tracing::debug!(error = %e, "status page: certificate expiry unreadable");
            CertExpiry::Unreadable(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_not_after_of_a_dev_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::devca::DevCa::open_or_create(&dir.path().join("ca")).unwrap();
        let (cert, _key) = ca
            .issue(&dir.path().join("out"), "leaf", &["a.example".to_string()])
            .unwrap();
        let CertExpiry::NotAfter(t) = expiry_of_file(&cert) else {
            panic!("no expiry read")
        };
        let now = i64::try_from(crate::catalog::unix_now()).unwrap();
        assert!(t > now, "dev certificate already expired: {t} <= {now}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(not_after_pem(b""), Err(CertError::NoCertificate)));
        let bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(not_after_pem(bad), Err(CertError::Der(_))));
        assert!(matches!(
            expiry_of_file(Path::new("/nonexistent/cert.pem")),
            CertExpiry::Unreadable(_)
        ));
    }
}
