//! The TLS files a configuration names: reading a PEM chain and key and checking they match, so
//! validation proves a certificate serves before it is accepted. No listener, no resolver here:
//! serving the loaded certificate is `serve::tls`.

use super::model::TlsFiles;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::Arc;

/// Why a certificate or key could not be loaded. Names files, never key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("the TLS certificate file {path} holds no PEM CERTIFICATE block")]
    NoCert { path: PathBuf },
    #[error("cannot read the TLS private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the TLS private key {key} does not belong to the certificate {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

impl TlsError {
    /// Whether the key file (rather than the certificate) is at fault.
    pub fn is_key(&self) -> bool {
        matches!(self, TlsError::Key { .. } | TlsError::Mismatch { .. })
    }
}

/// A certificate and key ready to serve, with the leaf's expiry.
#[derive(Clone, Debug)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// The leaf certificate's notAfter, in Unix seconds (None if it cannot be parsed).
    pub not_after: Option<i64>,
}

/// The rustls crypto provider every TLS piece uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks `files`: the chain parses, the key parses and matches the leaf.
pub fn load_certified_key(files: &TlsFiles) -> Result<LoadedCert, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: files.cert.clone(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    let not_after = not_after(&chain[0]);
    let key = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })?;
    Ok(LoadedCert {
        key: Arc::new(key),
        not_after,
    })
}

fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

/// Writes a self-signed pair for `name` into `dir` (tests of the loader and of the resolver).
#[cfg(test)]
pub(crate) fn write_pair(dir: &std::path::Path, name: &str) -> TlsFiles {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let files = TlsFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_pair_and_refuses_what_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_pair(dir.path(), "a.test");
        let b = write_pair(dir.path(), "b.test");
        let loaded = load_certified_key(&a).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(loaded.not_after.unwrap() > now);

        let mixed = TlsFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let err = load_certified_key(&mixed).unwrap_err();
        assert!(
            err.is_key() && matches!(err, TlsError::Mismatch { .. }),
            "{err}"
        );

        std::fs::write(dir.path().join("junk.crt"), "not pem\n").unwrap();
        let junk = TlsFiles {
            cert: dir.path().join("junk.crt"),
            key: a.key.clone(),
        };
        assert!(matches!(
            load_certified_key(&junk),
            Err(TlsError::NoCert { .. })
        ));
        let missing = TlsFiles {
            cert: a.cert.clone(),
            key: dir.path().join("missing.key"),
        };
        let err = load_certified_key(&missing).unwrap_err();
        assert!(
            err.is_key() && err.to_string().contains("missing.key"),
            "{err}"
        );
    }
}
