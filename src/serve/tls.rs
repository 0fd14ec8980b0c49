//! TLS for the webhook and admin listeners: the rustls server config (TLS 1.2 and 1.3, ALPN h2
//! and http/1.1), and a certificate resolver whose key is swapped in place when the files change,
//! so the next handshake serves the renewed certificate. Loading the files is `config::cert`.

use crate::config::TlsFiles;
use crate::config::cert::{LoadedCert, load_certified_key, provider};
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;
use std::sync::Arc;

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
    use crate::config::cert::write_pair;

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
