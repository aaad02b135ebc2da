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

/// The CA's common name before it carried a key id (CAs made by older
/// versions keep it, so their certificates still chain).
const LEGACY_CN: &str = "p2pcdn development CA";

/// The CA's common name: unique per CA key, so two operators' CAs can sit
/// in one trust bundle (OpenSSL picks the issuer by subject, then key id).
fn ca_common_name(key: &KeyPair) -> String {
    let id = blake3::hash(key.public_key_raw()).to_hex();
    format!("{LEGACY_CN} {}", &id.as_str()[..16])
}

fn ca_params(common_name: &str) -> Result<CertificateParams, DevCaError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, common_name);
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

/// Whether a PEM certificate's DER contains `text` (a subject's bytes).
fn pem_has_text(pem: &[u8], text: &str) -> bool {
    use base64::Engine;
    let s = String::from_utf8_lossy(pem);
    let b64: String = s
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .is_ok_and(|der| der.windows(text.len()).any(|w| w == text.as_bytes()))
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
        let (key, cn) = if cert_path.exists() && key_path.exists() {
            let pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let key = KeyPair::from_pem(&pem)?;
            let cert = std::fs::read(&cert_path).map_err(io(&cert_path))?;
            let cn = ca_common_name(&key);
            // The subject our certificates name as issuer must be the CA's.
            let cn = if pem_has_text(&cert, &cn) {
                cn
            } else {
                LEGACY_CN.to_string()
            };
            (key, cn)
        } else {
            let key = KeyPair::generate()?;
            let cn = ca_common_name(&key);
            let cert = ca_params(&cn)?.self_signed(&key)?;
            write_private(&key_path, &key.serialize_pem())?;
            std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
            (key, cn)
        };
        Ok(Self {
            issuer: Issuer::new(ca_params(&cn)?, key),
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
        // Authority Key Identifier: OpenSSL (curl) needs it to pick the
        // right CA from a bundle.
        p.use_authority_key_identifier_extension = true;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn der(pem_path: &Path) -> Vec<u8> {
        use base64::Engine;
        let s = std::fs::read_to_string(pem_path).unwrap();
        let b64: String = s.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }

    #[test]
    fn each_ca_has_its_own_subject_and_leaves_carry_the_key_id() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ca_a = DevCa::open_or_create(a.path()).unwrap();
        let ca_b = DevCa::open_or_create(b.path()).unwrap();
        let (da, db) = (der(&ca_a.cert_path), der(&ca_b.cert_path));
        assert_ne!(da, db);
        // Different common names (each carries its key id).
        let cn = |d: &[u8]| {
            let at = d
                .windows(LEGACY_CN.len())
                .position(|w| w == LEGACY_CN.as_bytes())
                .unwrap();
            String::from_utf8_lossy(&d[at..at + LEGACY_CN.len() + 17]).to_string()
        };
        assert_ne!(cn(&da), cn(&db));
        // Leaves carry an Authority Key Identifier (OID 2.5.29.35).
        let (leaf, _) = ca_a
            .issue(a.path(), "leaf", &["www.t.test".into()])
            .unwrap();
        assert!(der(&leaf).windows(3).any(|w| w == [0x55, 0x1d, 0x23]));
        // Reopened, the CA still issues under the same subject.
        let again = DevCa::open_or_create(a.path()).unwrap();
        let (leaf2, _) = again
            .issue(a.path(), "leaf2", &["www.t.test".into()])
            .unwrap();
        assert!(der(&leaf2)
            .windows(cn(&da).len())
            .any(|w| w == cn(&da).as_bytes()));
        // With OpenSSL (what curl uses): a bundle of both CAs verifies
        // leaves of each.
        if std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_ok()
        {
            let bundle = a.path().join("bundle.pem");
            let text = std::fs::read_to_string(&ca_a.cert_path).unwrap()
                + &std::fs::read_to_string(&ca_b.cert_path).unwrap();
            std::fs::write(&bundle, text).unwrap();
            let (leaf_b, _) = ca_b
                .issue(b.path(), "leafb", &["www.t.test".into()])
                .unwrap();
            for l in [&leaf, &leaf_b] {
                let out = std::process::Command::new("openssl")
                    .arg("verify")
                    .arg("-CAfile")
                    .arg(&bundle)
                    .arg(l)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
    }
}
