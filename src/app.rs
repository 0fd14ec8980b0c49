//! Starting and stopping the whole gateway: bind listeners, connect storage, resume unfinished
//! work, start the writer, the pipeline and the servers; on shutdown drain them in order.

use crate::config::Listen;
use crate::config::{Config, ConfigError, Loaded};
use crate::emulator::{self, EmulatorConfig, EmulatorHandle};
use crate::ingress::server::{self as webhook, WebhookState};
use crate::listen::{BindError, Endpoint, bind};
use crate::metrics::Metrics;
use crate::pipeline;
use crate::reload::{ReloadHandle, ReloadOutcome, Reloader};
use crate::state::{AppState, Snapshot, SnapshotError};
use crate::store::{Store, StoreError};
use crate::tls::{TlsError, TlsSlot};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The running HTTP endpoints, which a reload may move or reconfigure.
#[derive(Clone)]
pub struct Endpoints {
    pub webhook: Arc<Endpoint>,
    pub admin: Arc<Endpoint>,
    /// The in-process emulator, told where the webhook endpoint moved.
    pub emulator: Option<EmulatorHandle>,
}

impl Endpoints {
    /// The webhook endpoint's URL as bound now.
    pub fn webhook_url(&self) -> String {
        let scheme = if self.webhook.tls() { "https" } else { "http" };
        format!("{scheme}://{}/webhook", self.webhook.addr())
    }
}
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

/// The pipeline's runtime ([`pipeline::runtime`]). Dropped (with the gateway, possibly inside
/// another runtime) it stops at once without waiting: [`Gateway::shutdown`] has already let its
/// tasks finish, and a gateway dropped without one is being abandoned anyway.
struct PipelineRuntime(Option<tokio::runtime::Runtime>);

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
        // their values. Values under a previous key are re-encrypted under the current one here.
        let replica = crate::cluster::replica_id();
        let store = Store::connect(&config.storage)
            .await?
            .with_replica(&replica);
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
        let webhook_tls = TlsSlot::new(cert.as_ref());
        let resolver = webhook_tls.resolver();
        let admin_cert = match &config.listen.admin_tls {
            Some(files) => Some(crate::tls::load_certified_key(files)?),
            None => None,
        };
        let admin_tls = TlsSlot::new(admin_cert.as_ref());
        let webhook_listener = bind("webhook", config.listen.webhook).await?;
        let admin_listener = bind("admin", config.listen.admin).await?;
        let local = |l: &TcpListener, what, addr| {
            l.local_addr()
                .map_err(|source| StartError::Bind(BindError { what, addr, source }))
        };
        let webhook_addr = local(&webhook_listener, "webhook", config.listen.webhook)?;
        let admin_addr = local(&admin_listener, "admin", config.listen.admin)?;

        let (graph_base, emulator) = if config.meta.graph_url == "emulator" {
            let listener = bind("emulator", config.meta.emulator.listen).await?;
            let mut emu_cfg = EmulatorConfig::from_gateway(&config);
            // In-process, the emulator calls the listener directly, whatever public_url says.
            let scheme = if cert.is_some() { "https" } else { "http" };
            emu_cfg.webhook_url = Some(format!("{scheme}://{webhook_addr}/webhook"));
            emu_cfg.pin_callbacks = true;
            // Like the test number a new Meta app comes with: usable before any PIN is set.
            emu_cfg.preregistered = true;
            let handle = emulator::start(emu_cfg, listener, shutdown.child_token())
                .await
                .map_err(StartError::Emulator)?;
            tracing::info!(url = %handle.url(), "built-in Cloud API emulator running");
            (handle.url(), Some(handle))
        } else {
            (config.meta.graph_url.clone(), None)
        };

        let metrics = Metrics::new();
        // Draining is a child of the hard stop, so a hard stop also drains.
        let draining = shutdown.child_token();
        let (leadership, election) = if store.is_shared() {
            let (leadership, task) =
                crate::cluster::spawn_election(&store, metrics.clone(), draining.clone());
            (leadership, Some(task))
        } else {
            metrics.leader.set(1);
            (crate::cluster::Leadership::always(&replica), None)
        };
        let listen = config.listen.clone();
        let batch_max = config.storage.batch_max;
        let commit_interval = config.storage.commit_interval.get();
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
            draining.clone(),
            leadership,
        ));

        state.disconnected.load(&store).await?;
        state.opted_out.load(&store).await?;
        // Old work runs first within a conversation: on one process the dispatcher hands out
        // the backlog before anything the writer commits later. With several replicas,
        // unfinished work belongs to whoever holds its conversation; the leader takes over what
        // no live replica holds.
        let pipeline_runtime = PipelineRuntime(Some(
            pipeline::runtime().map_err(StartError::PipelineRuntime)?,
        ));
        let dispatch = {
            // Everything the dispatcher starts runs on the pipeline's runtime.
            let _on_pipeline = pipeline_runtime.enter();
            pipeline::spawn(state.clone())
        };
        if !store.is_shared() {
            // The dispatcher reads this backlog itself, a page at a time (pipeline/backlog.rs).
            let open = store.counts().await?;
            if open.outbox_open > 0 || open.inbox_open > 0 {
                tracing::info!(
                    replies = open.outbox_open,
                    messages = open.inbox_open,
                    "resuming unfinished work"
                );
            }
        }

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
        let hook_state = WebhookState {
            app: state.clone(),
            writer,
        };
        // Requests already in flight when the listeners close get the shutdown timeout.
        let drain = listen.shutdown_timeout.get();
        let webhook_endpoint = Endpoint::start(
            "webhook",
            |l| l.tls.as_ref(),
            listen.webhook,
            webhook_listener,
            &listen,
            resolver.clone(),
            Box::new(move |l: &Listen| {
                let intake = crate::ingress::intake::Intake::new(
                    l.max_body_bytes,
                    l.body_timeout.get(),
                    l.max_inflight_bodies,
                    l.header_timeout.get(),
                    hook_state.app.metrics.webhooks.clone(),
                );
                webhook::router(hook_state.clone(), intake)
            }),
            crate::http::ConnMetrics::new(&state.metrics, "webhook"),
            state.tracker.clone(),
            draining.clone(),
            drain,
        )?;
        let admin_state = state.clone();
        let admin_endpoint = Endpoint::start(
            "admin",
            |l| l.admin_tls.as_ref(),
            listen.admin,
            admin_listener,
            &listen,
            admin_tls.resolver(),
            Box::new(move |_: &Listen| crate::admin::router(admin_state.clone())),
            crate::http::ConnMetrics::new(&state.metrics, "admin"),
            state.tracker.clone(),
            draining.clone(),
            drain,
        )?;
        let endpoints = Endpoints {
            webhook: webhook_endpoint,
            admin: admin_endpoint,
            emulator: emulator.clone(),
        };
        let reload = loaded.map(|loaded| {
            let reloader = Reloader::new(
                state.clone(),
                &loaded,
                graph_base.clone(),
                webhook_tls,
                admin_tls,
                endpoints.clone(),
            );
            crate::reload::spawn(reloader, true, draining.clone())
        });
        if emulator.is_some() {
            let scheme = if resolver.is_some() { "https" } else { "http" };
            state
                .reconcile
                .set_local_webhook(format!("{scheme}://{webhook_addr}/webhook"));
        }
        // After the reloader exists, so a reload during the first pass triggers another.
        crate::reconcile::runner::spawn(state.clone());
        crate::admin::spawn_store_gauges(state.clone());
        crate::retention::spawn(state.clone());
        // The in-memory pacing state forgets customers whose bucket is full again.
        let sweeper = state.clone();
        state.tracker.spawn(async move {
            let gauge = sweeper.metrics.bounds.pacing_customers.clone();
            crate::policy::limits::sweep(
                &sweeper.limiter,
                crate::policy::limits::SWEEP_EVERY,
                |n| gauge.set(i64::try_from(n).unwrap_or(i64::MAX)),
                sweeper.draining.clone(),
            )
            .await
        });
        state.set_ready(true);
        tracing::info!(webhook = %webhook_addr, admin = %admin_addr, storage = state.store.kind(), replica = %replica, "wa-gateway serving");
        Ok(Self {
            webhook_addr,
            admin_addr,
            emulator,
            state,
            tls: resolver.is_some(),
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
    }
}
