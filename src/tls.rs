//! TLS for the webhook and admin listeners: loading a PEM certificate chain and key, the rustls
//! server config (TLS 1.2 and 1.3, ALPN h2 and http/1.1), and a certificate resolver whose key is
//! swapped in place when the files change, so the next handshake serves the renewed certificate.

use crate::config::TlsFiles;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
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

fn provider() -> Arc<CryptoProvider> {
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

/// Serves whichever certificate was stored last; rustls asks it on every handshake.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    /// A resolver serving `cert`.
    pub fn new(cert: &LoadedCert) -> Self {
        Self {
            current: ArcSwap::new(cert.key.clone()),
        }
    }

    /// Serves `cert` from the next handshake on; returns whether the chain differs from before.
    pub fn store(&self, cert: &LoadedCert) -> bool {
        let changed = self.current.load().cert != cert.key.cert;
        if changed {
            self.current.store(cert.key.clone());
        }
        changed
    }

    /// The chain served now (leaf first).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.load().cert.clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// One listener's TLS as reloads see it: the resolver serving its certificate while TLS is on.
#[derive(Default)]
pub struct TlsSlot {
    resolver: Option<Arc<CertResolver>>,
}

impl TlsSlot {
    /// A slot serving `cert`, or plain when `None`.
    pub fn new(cert: Option<&LoadedCert>) -> Self {
        Self {
            resolver: cert.map(|c| Arc::new(CertResolver::new(c))),
        }
    }

    /// The resolver in force.
    pub fn resolver(&self) -> Option<Arc<CertResolver>> {
        self.resolver.clone()
    }

    /// The resolver a new configuration serving `cert` needs: the one in force (swapped in
    /// place at [`commit`](Self::commit)), a new one when TLS turns on, none when it turns off.
    pub fn prepare(&self, cert: Option<&LoadedCert>) -> Option<Arc<CertResolver>> {
        match (cert, &self.resolver) {
            (Some(_), Some(r)) => Some(r.clone()),
            (Some(c), None) => Some(Arc::new(CertResolver::new(c))),
            (None, _) => None,
        }
    }

    /// Puts a prepared resolver in force, serving `cert` from the next handshake on.
    pub fn commit(&mut self, resolver: Option<Arc<CertResolver>>, cert: Option<&LoadedCert>) {
        if let (Some(r), Some(c)) = (&resolver, cert) {
            r.store(c);
        }
        self.resolver = resolver;
    }

    /// Serves the certificate now in `files` if it changed (renewals change no config); the
    /// loaded certificate, or `None` when TLS is off or the files do not load yet.
    pub fn refresh(&self, files: Option<&TlsFiles>) -> Option<LoadedCert> {
        let (resolver, files) = (self.resolver.as_ref()?, files?);
        match load_certified_key(files) {
            Ok(cert) => {
                if resolver.store(&cert) {
                    tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
                }
                Some(cert)
            }
            // Mid-rotation the key may not match the certificate yet; the next write retries.
            Err(e) => {
                tracing::warn!(error = %e, "TLS files not reloaded; serving the previous certificate");
                None
            }
        }
    }
}

/// The rustls server config of a listener: TLS 1.3 and 1.2 only (rustls has no older
/// versions), ALPN h2 then http/1.1, no client certificates.
pub fn server_config(resolver: Arc<CertResolver>) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &std::path::Path, name: &str) -> TlsFiles {
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

    #[test]
    fn the_resolver_swaps_only_on_a_new_chain() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_certified_key(&write_pair(dir.path(), "a.test")).unwrap();
        let b = load_certified_key(&write_pair(dir.path(), "b.test")).unwrap();
        let resolver = CertResolver::new(&a);
        assert!(!resolver.store(&a));
        assert!(resolver.store(&b));
        assert_eq!(resolver.chain(), b.key.cert);
    }
}
