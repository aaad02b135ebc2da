//! What the ACME client keeps in `<data_dir>/acme/`:
//!
//! - `account.json`: the ACME account (directory URL, key, id), mode 0600;
//! - `certs/<name>.key`: a certificate's private key (PKCS#8 PEM), mode 0600;
//! - `certs/<name>.pem`: its chain (PEM), leaf first.
//!
//! Every file is written to a temporary name (mode 0600 from creation),
//! fsync'd and renamed, so a crash leaves the old or the new file, never a
//! torn one. A key and chain that do not match (a crash between the two
//! renames) are ignored at load, and the name is ordered again. Private keys
//! are generated here and never leave this directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::AcmeError;

/// The ACME state directory of a data directory.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("acme")
}

/// Paths of a name's key and chain.
pub fn cert_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let certs = dir.join("certs");
    (
        certs.join(format!("{name}.key")),
        certs.join(format!("{name}.pem")),
    )
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AcmeError + '_ {
    move |source| AcmeError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `data` to `path` atomically with mode 0600.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), AcmeError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io(&tmp))?;
    f.write_all(data).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a private file, refusing one that group or others can read.
pub fn read_private(path: &Path) -> Result<Option<Vec<u8>>, AcmeError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(io(path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(AcmeError::Io {
                path: path.display().to_string(),
                source: std::io::Error::other(format!(
                    "mode {:o}: must not be readable by others (chmod 600)",
                    mode & 0o777
                )),
            });
        }
    }
    Ok(Some(data))
}

/// Stores a name's key and chain (key first).
pub fn store_cert(dir: &Path, name: &str, key_pem: &str, chain_pem: &str) -> Result<(), AcmeError> {
    let (k, c) = cert_paths(dir, name);
    write_private(&k, key_pem.as_bytes())?;
    write_private(&c, chain_pem.as_bytes())
}

/// A name's stored key and chain, if both exist and parse and match.
pub fn load_cert(dir: &Path, name: &str) -> Result<Option<rustls::sign::CertifiedKey>, AcmeError> {
    let (k, c) = cert_paths(dir, name);
    if read_private(&k)?.is_none() || !c.exists() {
        return Ok(None);
    }
    let ck = crate::http::tls::load_certified_key(&c, &k)
        .map_err(|e| AcmeError::Certificate(e.to_string()))?;
    if ck.keys_match().is_err() {
        return Err(AcmeError::Certificate(format!(
            "{}: key and certificate do not match",
            c.display()
        )));
    }
    Ok(Some(ck))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_and_refused_when_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b.key");
        write_private(&p, b"secret").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_private(&p).unwrap().unwrap(), b"secret");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_private(&p).is_err());
        assert!(read_private(&d.path().join("none")).unwrap().is_none());
    }
}
