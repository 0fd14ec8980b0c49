//! The top of the gateway, which wires every part: starting it (connect storage, bind listeners,
//! resume unfinished work, start the writer, the pipeline and the servers), reloading its file,
//! and on shutdown draining them in order. Nothing below imports this module.

pub mod reload;
mod start;

pub use reload::ReloadOutcome;

use crate::config::cert::TlsError;
use crate::config::{Config, ConfigError, Loaded};
use crate::emulator::EmulatorHandle;
use crate::metrics::Metrics;
use crate::serve::listen::{BindError, Endpoints};
use crate::serve::state::{AppState, Snapshot, SnapshotError};
use crate::store::StoreError;
use reload::{ReloadHandle, Reloader};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("cannot start the built-in emulator: {0}")]
    Emulator(std::io::Error),
    #[error("cannot start the pipeline's threads: {0}")]
    PipelineRuntime(std::io::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Stored secrets missing, undecryptable or unreadable; located in the file when there is one.
    #[error("{0}")]
    StoredSecrets(String),
    #[error("telemetry.otlp: {0}")]
    Telemetry(#[from] crate::telemetry::export::ExportError),
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
    endpoints: Endpoints,
    reload: Option<ReloadHandle>,
    shutdown: CancellationToken,
    draining: CancellationToken,
    writer_stop: CancellationToken,
    writer_task: tokio::task::JoinHandle<()>,
    /// PostgreSQL: the election task; it ends once leadership is released.
    election: Option<tokio::task::JoinHandle<()>>,
    /// Declared last, so it stops last: a shutdown has drained its tasks by then.
    _pipeline_runtime: PipelineRuntime,
}

/// The pipeline's runtime ([`crate::pipeline::runtime`]). Dropped (with the gateway, possibly inside
/// another runtime) it stops at once without waiting: [`Gateway::shutdown`] has already let its
/// tasks finish, and a gateway dropped without one is being abandoned anyway.
pub(crate) struct PipelineRuntime(Option<tokio::runtime::Runtime>);

impl PipelineRuntime {
    fn enter(&self) -> Option<tokio::runtime::EnterGuard<'_>> {
        self.0.as_ref().map(tokio::runtime::Runtime::enter)
    }
}

impl Drop for PipelineRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
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
        // their values.
        let replica = crate::cluster::replica_id();
        let store = start::open_store(&mut config, &mut loaded, &replica).await?;
        let tls = start::load_tls(&config.listen)?;
        let listeners = start::bind_listeners(&config.listen).await?;
        let (webhook_addr, admin_addr) = (listeners.webhook_addr, listeners.admin_addr);
        let (graph_base, emulator) =
            start::start_emulator(&config, tls.cert.is_some(), webhook_addr, &shutdown).await?;

        let metrics = Metrics::new();
        // Draining is a child of the hard stop, so a hard stop also drains.
        let draining = shutdown.child_token();
        let (leadership, election) = start::elect(&store, &metrics, &draining, &replica);
        let listen = config.listen.clone();
        let (batch_max, commit_interval) = (
            config.storage.batch_max,
            config.storage.commit_interval.get(),
        );
        metrics.set_graph_api_version(&config.meta.api_version);
        if let Some(cert) = &tls.cert {
            metrics.register_tls();
            metrics.tls_cert_expiry.set(cert.not_after.unwrap_or(0));
        }
        metrics.zero_agents(config.agents.keys().map(String::as_str));
        crate::telemetry::prepare(&config.telemetry)?.commit();
        let snapshot = Snapshot::build(config, &graph_base)?;
        let (writer, writer_inbox) = crate::store::writer::channel(batch_max);
        let state = Arc::new(AppState::new(
            snapshot,
            store.clone(),
            writer.clone(),
            metrics.clone(),
            shutdown.clone(),
            draining.clone(),
            leadership,
        ));
        let (pipeline_runtime, dispatch) = start::start_pipeline(&state, &store).await?;
        let writer_stop = CancellationToken::new();
        let writer_task = crate::store::writer::spawn(
            store,
            batch_max,
            commit_interval,
            writer_inbox,
            dispatch,
            metrics,
            writer_stop.clone(),
        )?;
        let endpoints = start::start_endpoints(&state, writer, listeners, &listen, &tls)?;
        let webhook_tls = tls.webhook.resolver().is_some();
        let reload = loaded.map(|loaded| {
            let reloader = Reloader::new(
                state.clone(),
                &loaded,
                graph_base.clone(),
                tls.webhook,
                tls.admin,
                endpoints.clone(),
                emulator.clone(),
            );
            reload::spawn(reloader, true, draining.clone())
        });
        if emulator.is_some() {
            let scheme = if webhook_tls { "https" } else { "http" };
            state
                .reconcile
                .set_local_webhook(format!("{scheme}://{webhook_addr}/webhook"));
        }
        // After the reloader exists, so a reload during the first pass triggers another.
        start::spawn_loops(&state);
        state.set_ready(true);
        tracing::info!(webhook = %webhook_addr, admin = %admin_addr, storage = state.store.kind(), replica = %replica, "wa-gateway serving");
        Ok(Self {
            webhook_addr,
            admin_addr,
            emulator,
            state,
            tls: webhook_tls,
            endpoints,
            reload,
            shutdown,
            draining,
            writer_stop,
            writer_task,
            election,
            _pipeline_runtime: pipeline_runtime,
        })
    }

    /// The URL of the webhook endpoint as bound now (a reload may have moved it since start).
    pub fn webhook_url(&self) -> String {
        self.endpoints.webhook_url()
    }

    /// Where the webhook endpoint listens now.
    pub fn current_webhook_addr(&self) -> SocketAddr {
        self.endpoints.webhook.addr()
    }

    /// Where the admin endpoint listens now.
    pub fn current_admin_addr(&self) -> SocketAddr {
        self.endpoints.admin.addr()
    }

    /// A token cancelled when the gateway shuts down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// What SIGTERM does: /readyz turns 503 at once while the listeners keep accepting and
    /// serving for `listen.shutdown_delay` (load balancers and Kubernetes endpoints take that
    /// long to stop sending here), then [`shutdown`](Self::shutdown) with
    /// `listen.shutdown_timeout`.
    pub async fn terminate(self) {
        let listen = self.state.snapshot.load().config.listen.clone();
        self.state.set_ready(false);
        tracing::info!(
            delay = ?listen.shutdown_delay.get(),
            "shutting down: /readyz answers 503; still serving while endpoints update"
        );
        tokio::time::sleep(listen.shutdown_delay.get()).await;
        self.shutdown(listen.shutdown_timeout.get()).await;
    }

    /// Stops accepting, lets in-flight requests and turns finish (up to `deadline`), gives back
    /// this replica's conversations and leadership, closes storage.
    pub async fn shutdown(self, deadline: Duration) {
        self.state.set_ready(false);
        tracing::info!(
            ?deadline,
            "draining: listeners closed, finishing in-flight requests and turns"
        );
        self.draining.cancel();
        self.state.tracker.close();
        if tokio::time::timeout(deadline, self.state.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?deadline,
                "some tasks did not stop before the deadline; stopping them"
            );
        }
        // Past the deadline nothing more is recorded: what is still running (a send awaiting
        // Meta's answer) stays open in storage and is settled or resumed by whoever comes next.
        self.shutdown.cancel();
        if self.state.store.is_shared() {
            // Whatever this replica still held is free for the others at once, not after the
            // lease runs out.
            match self.state.store.release_all_leases().await {
                Ok(n) => tracing::info!(leases = n, "conversation leases released"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot release conversation leases; they run out by themselves")
                }
            }
        }
        if let Some(election) = self.election {
            let _ = election.await;
        }
        // The writer goes last: draining requests and turns still needed it.
        self.writer_stop.cancel();
        let _ = self.writer_task.await;
        self.state.store.close().await;
        // The last spans (the drained turns') leave before the process does; the flush blocks.
        let _ = tokio::task::spawn_blocking(crate::telemetry::flush).await;
    }
}
