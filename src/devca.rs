//! A development certificate authority (rcgen) for demos, tests and private
//! federations: one CA key and certificate, leaf certificates for given names.
//! Never used for public deployments; operators bring real certificates.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// Dev CA errors.
#[derive(Debug, thiserror::Error)]
pub enum DevCaError {
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Certificate generation.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DevCaError + '_ {
    move |source| DevCaError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn ca_params() -> Result<CertificateParams, DevCaError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "p2pcdn development CA");
    p.distinguished_name
        .push(DnType::OrganizationName, "p2pcdn (not for production)");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

fn write_private(path: &Path, data: &str) -> Result<(), DevCaError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(data.as_bytes()).map_err(io(path))
}

/// A loaded or newly created development CA.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    /// Path of the CA certificate (PEM) that clients must trust.
    pub cert_path: PathBuf,
}

impl DevCa {
    /// Loads the CA from `dir/ca.pem` + `dir/ca.key`, creating it if absent.
    pub fn open_or_create(dir: &Path) -> Result<Self, DevCaError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        let key = if cert_path.exists() && key_path.exists() {
            let pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            KeyPair::from_pem(&pem)?
        } else {
            let key = KeyPair::generate()?;
            let cert = ca_params()?.self_signed(&key)?;
            write_private(&key_path, &key.serialize_pem())?;
            std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
            key
        };
        Ok(Self {
            issuer: Issuer::new(ca_params()?, key),
            cert_path,
        })
    }

    /// Issues a leaf certificate for `names` (DNS names or IP addresses),
    /// written to `dir/<stem>.pem` and `dir/<stem>.key`.
    pub fn issue(
        &self,
        dir: &Path,
        stem: &str,
        names: &[String],
    ) -> Result<(PathBuf, PathBuf), DevCaError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut p = CertificateParams::new(names.to_vec())?;
        if let Some(first) = names.first() {
            p.distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer)?;
        let cert_path = dir.join(format!("{stem}.pem"));
        let key_path = dir.join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
        write_private(&key_path, &key.serialize_pem())?;
        Ok((cert_path, key_path))
    }
}
