//! The steps of [`Gateway`](super::Gateway) start that stand on their own, in the order
//! `start_inner` runs them: storage and stored secrets, TLS, listeners, the emulator,
//! leadership, the pipeline, the endpoints, then the background loops.

use super::{PipelineRuntime, StartError};
use crate::config::cert::{LoadedCert, load_certified_key};
use crate::config::{Config, Listen, Loaded};
use crate::emulator::{self, EmulatorConfig, EmulatorHandle};
use crate::ingress::server::{self as webhook, WebhookState};
use crate::metrics::Metrics;
use crate::pipeline;
use crate::serve::listen::{BindError, Endpoint, Endpoints, bind};
use crate::serve::state::AppState;
use crate::serve::tls::TlsSlot;
use crate::store::Store;
use crate::store::writer::WriterHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Connects storage and fills `stored:` secrets from it; values under a previous key are
/// re-encrypted under the current one here. `loaded` (when started from a file) gets the
/// resolved config, so the reloader compares against what runs.
pub(super) async fn open_store(
    config: &mut Config,
    loaded: &mut Option<Loaded>,
    replica: &str,
) -> Result<Store, StartError> {
    let store = Store::connect(&config.storage).await?.with_replica(replica);
    match crate::secrets::resolve_stored(config, &store, true).await {
        Ok(done) if !done.rotated.is_empty() => tracing::info!(
            rotated = done.rotated.len(),
            "stored secrets re-encrypted under meta.encryption_key"
        ),
        Ok(_) => {}
        Err(e) => {
            store.close().await;
            return Err(StartError::StoredSecrets(match loaded {
                Some(l) => e.located(&l.path),
                None => e.to_string(),
            }));
        }
    }
    if let Some(loaded) = loaded {
        loaded.config = config.clone();
    }
    Ok(store)
}

/// The listeners' certificates, in the slots that serve them and that a reload refreshes.
pub(super) struct Tls {
    /// The webhook listener's certificate (its expiry is exported).
    pub cert: Option<LoadedCert>,
    pub webhook: TlsSlot,
    pub admin: TlsSlot,
}

/// Loads `listen.tls` and `listen.admin_tls`, when set.
pub(super) fn load_tls(listen: &Listen) -> Result<Tls, StartError> {
    let cert = listen.tls.as_ref().map(load_certified_key).transpose()?;
    let webhook = TlsSlot::new(cert.as_ref());
    let admin_cert = listen
        .admin_tls
        .as_ref()
        .map(load_certified_key)
        .transpose()?;
    let admin = TlsSlot::new(admin_cert.as_ref());
    Ok(Tls {
        cert,
        webhook,
        admin,
    })
}

/// The webhook and admin sockets, bound, with the addresses they got (port 0 picks one).
pub(super) struct Listeners {
    webhook: TcpListener,
    admin: TcpListener,
    pub webhook_addr: SocketAddr,
    pub admin_addr: SocketAddr,
}

/// Binds both listeners before anything serves, so a port in use stops the start.
pub(super) async fn bind_listeners(listen: &Listen) -> Result<Listeners, StartError> {
    let webhook = bind("webhook", listen.webhook).await?;
    let admin = bind("admin", listen.admin).await?;
    let local = |l: &TcpListener, what, addr| {
        l.local_addr()
            .map_err(|source| StartError::Bind(BindError { what, addr, source }))
    };
    let webhook_addr = local(&webhook, "webhook", listen.webhook)?;
    let admin_addr = local(&admin, "admin", listen.admin)?;
    Ok(Listeners {
        webhook,
        admin,
        webhook_addr,
        admin_addr,
    })
}

/// The Graph URL to call, and the in-process emulator when `meta.graph_url` is `emulator`.
pub(super) async fn start_emulator(
    config: &Config,
    tls: bool,
    webhook_addr: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<(String, Option<EmulatorHandle>), StartError> {
    if config.meta.graph_url != "emulator" {
        return Ok((config.meta.graph_url.clone(), None));
    }
    let listener = bind("emulator", config.meta.emulator.listen).await?;
    let mut emu_cfg = EmulatorConfig::from_gateway(config);
    // In-process, the emulator calls the listener directly, whatever public_url says.
    let scheme = if tls { "https" } else { "http" };
    emu_cfg.webhook_url = Some(format!("{scheme}://{webhook_addr}/webhook"));
    emu_cfg.pin_callbacks = true;
    // Like the test number a new Meta app comes with: usable before any PIN is set.
    emu_cfg.preregistered = true;
    let handle = emulator::start(emu_cfg, listener, shutdown.child_token())
        .await
        .map_err(StartError::Emulator)?;
    tracing::info!(url = %handle.url(), "built-in Cloud API emulator running");
    Ok((handle.url(), Some(handle)))
}

/// Leadership: elected among the replicas on PostgreSQL (the task ends once it is released),
/// always this process on SQLite.
pub(super) fn elect(
    store: &Store,
    metrics: &Metrics,
    draining: &CancellationToken,
    replica: &str,
) -> (crate::cluster::Leadership, Option<JoinHandle<()>>) {
    if store.is_shared() {
        let (leadership, task) =
            crate::cluster::spawn_election(store, metrics.clone(), draining.clone());
        (leadership, Some(task))
    } else {
        metrics.leader.set(1);
        (crate::cluster::Leadership::always(replica), None)
    }
}

/// Loads the disconnected numbers, opt-outs and paused conversations, then starts the pipeline's dispatcher on a
/// runtime of its own. Old work runs first within a conversation: on one process the
/// dispatcher hands out the backlog before anything the writer commits later. With several
/// replicas, unfinished work belongs to whoever holds its conversation; the leader takes over
/// what no live replica holds.
pub(super) async fn start_pipeline(
    state: &Arc<AppState>,
    store: &Store,
) -> Result<(PipelineRuntime, pipeline::Dispatch), StartError> {
    state.disconnected.load(store).await?;
    state.opted_out.load(store).await?;
    state.paused.load(store).await?;
    if store.is_shared() {
        // Live before the first commit claims a conversation for it: its leases hold from the
        // start, and its sends pass their lease check.
        store
            .renew_leases(state.snapshot.load().config.storage.lease.get())
            .await?;
    }
    let pipeline_runtime = PipelineRuntime(Some(
        pipeline::runtime().map_err(StartError::PipelineRuntime)?,
    ));
    let dispatch = {
        // Everything the dispatcher starts runs on the pipeline's runtime.
        let _on_pipeline = pipeline_runtime.enter();
        pipeline::spawn(state.clone())
    };
    let to_pipeline = dispatch.clone();
    state
        .requeued
        .connect(move |row| to_pipeline.send(pipeline::Work::Resume(row)));
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
    Ok((pipeline_runtime, dispatch))
}

/// Starts serving the webhook and the admin listener on their bound sockets.
pub(super) fn start_endpoints(
    state: &Arc<AppState>,
    writer: WriterHandle,
    listeners: Listeners,
    listen: &Listen,
    tls: &Tls,
) -> Result<Endpoints, StartError> {
    let hook_state = WebhookState {
        app: state.clone(),
        writer,
    };
    // Requests already in flight when the listeners close get the shutdown timeout.
    let drain = listen.shutdown_timeout.get();
    let start = |what, tls_of, configured, listener, tls, make_router| {
        Endpoint::start(
            what,
            tls_of,
            configured,
            listener,
            listen,
            tls,
            make_router,
            crate::serve::http::ConnMetrics::new(&state.metrics, what),
            state.tracker.clone(),
            state.draining.clone(),
            drain,
        )
    };
    let webhook = start(
        "webhook",
        |l| l.tls.as_ref(),
        listen.webhook,
        listeners.webhook,
        tls.webhook.resolver(),
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
    )?;
    let admin_state = state.clone();
    let admin = start(
        "admin",
        |l| l.admin_tls.as_ref(),
        listen.admin,
        listeners.admin,
        tls.admin.resolver(),
        Box::new(move |_: &Listen| crate::admin::router(admin_state.clone())),
    )?;
    Ok(Endpoints { webhook, admin })
}

/// The loops that run beside the servers: the reconciler, the store gauges, retention, the
/// handoff notifier, and the pacing sweeper.
pub(super) fn spawn_loops(state: &Arc<AppState>) {
    crate::reconcile::runner::spawn(reconcile_parts(state));
    crate::admin::spawn_store_gauges(state.clone());
    crate::retention::spawn(state.clone());
    crate::handoff::spawn(state.clone());
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
}

/// What the reconciler needs of the running gateway: the config in force, its own state, and
/// the shared services; stopping when the gateway drains.
fn reconcile_parts(state: &Arc<AppState>) -> crate::reconcile::Parts {
    let snapshots = state.clone();
    crate::reconcile::Parts {
        current: Arc::new(move || {
            let snapshot = snapshots.snapshot.load();
            (snapshot.config.clone(), snapshot.graph.clone())
        }),
        state: state.reconcile.clone(),
        metrics: state.metrics.clone(),
        store: state.store.clone(),
        leadership: state.leadership.clone(),
        stop: state.draining.clone(),
        tracker: state.tracker.clone(),
    }
}
