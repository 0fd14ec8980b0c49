//! Starting and stopping the whole gateway: bind listeners, connect storage, resume unfinished
//! work, start the writer, the pipeline and the servers; on shutdown drain them in order.

use crate::config::{Config, ConfigError, Loaded};
use crate::emulator::{self, EmulatorConfig, EmulatorHandle};
use crate::ingress::server::{self as webhook, WebhookState};
use crate::metrics::Metrics;
use crate::pipeline::{self, Work};
use crate::reload::{ReloadHandle, ReloadOutcome, Reloader};
use crate::state::{AppState, Snapshot, SnapshotError};
use crate::store::{Store, StoreError};
use crate::tls::{CertResolver, TlsError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}; is another process using it?")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("cannot start the built-in emulator: {0}")]
    Emulator(std::io::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Stored secrets missing, undecryptable or unreadable; located in the file when there is one.
    #[error("{0}")]
    StoredSecrets(String),
}

/// A running gateway.
pub struct Gateway {
    /// Where the webhook listener is bound.
    pub webhook_addr: SocketAddr,
    /// Where the admin listener is bound.
    pub admin_addr: SocketAddr,
    /// The in-process emulator, when `meta.graph_url` is `emulator`.
    pub emulator: Option<EmulatorHandle>,
    /// The shared state (store, metrics, snapshot).
    pub state: Arc<AppState>,
    /// Whether the webhook listener speaks TLS.
    pub tls: bool,
    reload: Option<ReloadHandle>,
    shutdown: CancellationToken,
    writer_stop: CancellationToken,
    writer_task: tokio::task::JoinHandle<()>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

impl Gateway {
    /// Starts every part of the gateway for `config` (validated, secrets resolved). Nothing
    /// watches for changes: with no file to read again, `reload_now` has nothing to do.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        Self::start_inner(config, None).await
    }

    /// Loads the file at `path` and starts the gateway on it, with a watcher that reloads the
    /// configuration (and the TLS certificate) when their directories change.
    pub async fn start_from(path: &std::path::Path) -> Result<Self, StartError> {
        let owned = path.to_owned();
        let loaded = tokio::task::spawn_blocking(move || Loaded::from_path(&owned))
            .await
            .expect("loading the config does not panic")?;
        Self::start_inner(loaded.config.clone(), Some(loaded)).await
    }

    /// Reloads the configuration file now (SIGHUP does this) and says what happened.
    pub async fn reload_now(&self) -> ReloadOutcome {
        match &self.reload {
            Some(handle) => handle.reload().await,
            None => ReloadOutcome::Failed(
                "the gateway was started from a Config value, not a file: nothing to reload".into(),
            ),
        }
    }

    async fn start_inner(
        mut config: Config,
        mut loaded: Option<Loaded>,
    ) -> Result<Self, StartError> {
        let shutdown = CancellationToken::new();
        // Storage first: `stored:` secrets come from it, and the emulator and the snapshot need
        // their values. Values under a previous key are re-encrypted under the current one here.
        let store = Store::connect(&config.storage).await?;
        match crate::secrets::resolve_stored(&mut config, &store, true).await {
            Ok(done) if !done.rotated.is_empty() => tracing::info!(
                rotated = done.rotated.len(),
                "stored secrets re-encrypted under meta.encryption_key"
            ),
            Ok(_) => {}
            Err(e) => {
                store.close().await;
                return Err(StartError::StoredSecrets(match &loaded {
                    Some(l) => e.located(&l.path),
                    None => e.to_string(),
                }));
            }
        }
        if let Some(loaded) = &mut loaded {
            loaded.config = config.clone();
        }
        let cert = match &config.listen.tls {
            Some(files) => Some(crate::tls::load_certified_key(files)?),
            None => None,
        };
        let resolver = cert.as_ref().map(|c| Arc::new(CertResolver::new(c)));
        let webhook_listener = bind("webhook", config.listen.webhook).await?;
        let admin_listener = bind("admin", config.listen.admin).await?;
        let webhook_addr = webhook_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                what: "webhook",
                addr: config.listen.webhook,
                source,
            })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                what: "admin",
                addr: config.listen.admin,
                source,
            })?;

        let (graph_base, emulator) = if config.meta.graph_url == "emulator" {
            let listener = bind("emulator", config.meta.emulator.listen).await?;
            let mut emu_cfg = EmulatorConfig::from_gateway(&config);
            // In-process, the emulator calls the listener directly, whatever public_url says.
            let scheme = if cert.is_some() { "https" } else { "http" };
            emu_cfg.webhook_url = Some(format!("{scheme}://{webhook_addr}/webhook"));
            let handle = emulator::start(emu_cfg, listener, shutdown.child_token())
                .await
                .map_err(StartError::Emulator)?;
            tracing::info!(url = %handle.url(), "built-in Cloud API emulator running");
            (handle.url(), Some(handle))
        } else {
            (config.meta.graph_url.clone(), None)
        };

        let metrics = Metrics::new();
        let listen = config.listen.clone();
        let batch_max = config.storage.batch_max;
        if let Some(cert) = &cert {
            metrics.register_tls();
            metrics.tls_cert_expiry.set(cert.not_after.unwrap_or(0));
        }
        let snapshot = Snapshot::build(config, &graph_base)?;
        let (writer, writer_inbox) = crate::store::writer::channel(batch_max);
        let state = Arc::new(AppState::new(
            snapshot,
            store.clone(),
            writer.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));

        state.disconnected.load(&store).await?;
        state.opted_out.load(&store).await?;
        // Resume before accepting anything new, so within a conversation old work runs first.
        let dispatch = pipeline::spawn(state.clone());
        let open_out = store.open_outbox().await?;
        let open_in = store.open_inbox().await?;
        if !open_out.is_empty() || !open_in.is_empty() {
            tracing::info!(
                replies = open_out.len(),
                messages = open_in.len(),
                "resuming unfinished work"
            );
        }
        for row in open_out {
            dispatch.send(Work::Resume(row));
        }
        for row in open_in {
            dispatch.send(Work::Inbound(row));
        }

        let writer_stop = CancellationToken::new();
        let writer_task = crate::store::writer::spawn(
            store,
            batch_max,
            writer_inbox,
            dispatch,
            metrics,
            writer_stop.clone(),
        );
        let router = webhook::router(
            WebhookState {
                app: state.clone(),
                writer,
            },
            listen.max_body_bytes,
            listen.body_timeout.get(),
        );
        let drain = Duration::from_secs(10);
        state.tracker.spawn(crate::http::serve(
            webhook_listener,
            router,
            resolver.clone().map(crate::tls::server_config),
            listen.header_timeout.get(),
            shutdown.clone(),
            drain,
        ));
        state.tracker.spawn(crate::http::serve(
            admin_listener,
            crate::admin::router(state.clone()),
            None,
            listen.header_timeout.get(),
            shutdown.clone(),
            drain,
        ));
        let reload = loaded.map(|loaded| {
            let reloader =
                Reloader::new(state.clone(), &loaded, graph_base.clone(), resolver.clone());
            crate::reload::spawn(reloader, true, shutdown.clone())
        });
        state.set_ready(true);
        tracing::info!(webhook = %webhook_addr, admin = %admin_addr, storage = state.store.kind(), "wa-gateway serving");
        Ok(Self {
            webhook_addr,
            admin_addr,
            emulator,
            state,
            tls: resolver.is_some(),
            reload,
            shutdown,
            writer_stop,
            writer_task,
        })
    }

    /// The URL of the webhook endpoint as bound.
    pub fn webhook_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/webhook", self.webhook_addr)
    }

    /// A token cancelled when the gateway shuts down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, lets in-flight requests and turns finish (up to `deadline`), closes storage.
    pub async fn shutdown(self, deadline: Duration) {
        self.state.set_ready(false);
        self.shutdown.cancel();
        self.state.tracker.close();
        if tokio::time::timeout(deadline, self.state.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(?deadline, "some tasks did not stop before the deadline");
        }
        // The writer goes last: draining requests and turns still needed it.
        self.writer_stop.cancel();
        let _ = self.writer_task.await;
        self.state.store.close().await;
    }
}
