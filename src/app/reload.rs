//! Applying a changed gateway.yaml while serving: read, validate, resolve secrets and build the
//! new snapshot off to the side, then swap it in one step; a failed attempt changes nothing.
//! File changes, SIGHUP and `Gateway::reload_now` all funnel into the one task that owns this.

use crate::config::TlsFiles;
use crate::config::cert::{LoadedCert, load_certified_key};
use crate::config::watch::DirWatcher;
use crate::config::{Config, Loaded};
use crate::emulator::EmulatorHandle;
use crate::serve::listen::{Endpoints, Prepared};
use crate::serve::state::{AppState, Snapshot};
use crate::serve::tls::{CertResolver, TlsSlot};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How long changes must go quiet before a reload: editors and kubelet write in bursts.
pub const DEBOUNCE: Duration = Duration::from_millis(300);
/// How long to wait before recreating a watcher that failed to start.
const REARM_DELAY: Duration = Duration::from_secs(2);

/// What one reload attempt did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new configuration is in force; `sha256` is its file's hash.
    Applied { sha256: String },
    /// Neither the file nor its secrets changed; nothing was swapped.
    Unchanged,
    /// The new configuration was refused and the running one kept; why, file:line:column.
    Failed(String),
}

/// Owns what a reload needs: the file, the running config's fingerprint, the TLS resolvers.
pub struct Reloader {
    state: Arc<AppState>,
    path: PathBuf,
    graph_base: String,
    fingerprint: String,
    tls: TlsSlot,
    admin_tls: TlsSlot,
    endpoints: Endpoints,
    /// The in-process emulator, told where the webhook endpoint moved.
    emulator: Option<EmulatorHandle>,
}

/// A new configuration built off to the side, ready to swap in whole.
struct Staged {
    sha256: String,
    snapshot: Snapshot,
    cert: Option<LoadedCert>,
    admin_cert: Option<LoadedCert>,
    resolver: Option<Arc<CertResolver>>,
    admin_resolver: Option<Arc<CertResolver>>,
    webhook: Option<Prepared>,
    admin: Option<Prepared>,
    /// The exporter and sampler of `telemetry`, built when it changed.
    telemetry: crate::telemetry::Prepared,
}

/// Loads `files` when set; the error names the config file.
fn load_cert(
    path: &std::path::Path,
    files: Option<&TlsFiles>,
) -> Result<Option<LoadedCert>, String> {
    files
        .map(load_certified_key)
        .transpose()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// SHA-256 over the file's hash and every resolved secret: a rotated `file:` secret changes it
/// though the file does not. Kept in memory only, never exported: it digests secrets.
fn fingerprint(loaded: &Loaded) -> String {
    let mut hasher = Sha256::new();
    hasher.update(loaded.sha256.as_bytes());
    let mut config = loaded.config.clone();
    for (path, secret) in config.secrets_mut() {
        hasher.update([0]);
        hasher.update(path.as_bytes());
        hasher.update([0]);
        hasher.update(secret.expose().as_bytes());
    }
    hex::encode(hasher.finalize())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Settings bound into the store or the emulator: changing them takes a restart, so a file
/// changing them is refused whole rather than applied in part. (The listeners are not among
/// them: a reload rebinds or reconfigures those.)
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    // Retention is read by the pruner at each cycle: it applies on reload like a policy.
    let json = |v: &crate::config::Storage| {
        serde_json::to_value(crate::config::Storage {
            retention: Default::default(),
            ..v.clone()
        })
        .ok()
    };
    [
        ("storage", json(&old.storage) != json(&new.storage)),
        ("meta.graph_url", old.meta.graph_url != new.meta.graph_url),
        (
            "meta.emulator.listen",
            old.meta.emulator.listen != new.meta.emulator.listen,
        ),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

impl Reloader {
    /// A reloader for the gateway serving `loaded` from `state`.
    pub fn new(
        state: Arc<AppState>,
        loaded: &Loaded,
        graph_base: String,
        tls: TlsSlot,
        admin_tls: TlsSlot,
        endpoints: Endpoints,
        emulator: Option<EmulatorHandle>,
    ) -> Self {
        let reloader = Self {
            state,
            path: loaded.path.clone(),
            graph_base,
            fingerprint: fingerprint(loaded),
            tls,
            admin_tls,
            endpoints,
            emulator,
        };
        reloader.record_in_force(&loaded.sha256);
        reloader
    }

    fn record_in_force(&self, sha256: &str) {
        let metrics = &self.state.metrics;
        metrics.config_info.reset();
        metrics.config_info.with_label_values(&[sha256]).set(1);
        let now = unix_now();
        metrics.config_loaded_timestamp.set(now as i64);
        self.state.update_config_status(|s| {
            s.sha256 = Some(sha256.to_owned());
            s.loaded_at = Some(now);
            s.last_reload_error = None;
        });
    }

    /// The files to watch (through their directories): the config file and the TLS files.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.path.clone()];
        let listen = &self.state.snapshot.load().config.listen;
        for tls in [&listen.tls, &listen.admin_tls].into_iter().flatten() {
            files.push(tls.cert.clone());
            files.push(tls.key.clone());
        }
        files
    }

    /// One attempt: apply the file if it changed and is valid; then re-read the TLS files.
    pub async fn reload(&mut self) -> ReloadOutcome {
        let outcome = self.reload_config().await;
        self.state
            .metrics
            .config_last_reload_successful
            .set(i64::from(!matches!(outcome, ReloadOutcome::Failed(_))));
        if let ReloadOutcome::Failed(why) = &outcome {
            tracing::error!(file = %self.path.display(), "configuration refused, the running one stays in force:\n{why}");
            self.state
                .metrics
                .config_reloads
                .with_label_values(&["error"])
                .inc();
            self.state
                .update_config_status(|s| s.last_reload_error = Some(why.clone()));
        }
        self.audit(&outcome).await;
        self.refresh_tls();
        outcome
    }

    /// Records a reload that changed something or was refused (one that found nothing new is
    /// not an action). The gateway reloads by itself (a file change, SIGHUP).
    async fn audit(&self, outcome: &ReloadOutcome) {
        use crate::audit::{self, AuditAction, AuditOutcome};
        let (result, detail) = match outcome {
            ReloadOutcome::Unchanged => return,
            ReloadOutcome::Applied { sha256 } => {
                (AuditOutcome::Ok, format!("in force: sha256 {sha256}"))
            }
            ReloadOutcome::Failed(why) => (AuditOutcome::Refused, why.clone()),
        };
        let path = self.path.display().to_string();
        let entry = audit::entry(audit::GATEWAY, AuditAction::ConfigReload, Some(&path));
        audit::record(&self.state.store, audit::ended(entry, result, detail)).await;
    }

    async fn reload_config(&mut self) -> ReloadOutcome {
        let started = std::time::Instant::now();
        let loaded = match self.read().await {
            Ok(loaded) => loaded,
            Err(why) => return ReloadOutcome::Failed(why),
        };
        let fingerprint = fingerprint(&loaded);
        if fingerprint == self.fingerprint {
            // The file in force was read again (e.g. a bad edit reverted): nothing is wrong now.
            self.state
                .update_config_status(|s| s.last_reload_error = None);
            return ReloadOutcome::Unchanged;
        }
        let old = self.state.snapshot.load_full();
        let restart = needs_restart(&old.config, &loaded.config);
        if !restart.is_empty() {
            return ReloadOutcome::Failed(format!(
                "{}: {} changed; storage and the built-in emulator take such changes only on restart (listeners, agents and policies reload): restart the gateway, or revert them to apply the rest",
                self.path.display(),
                restart.join(", ")
            ));
        }
        let staged = match self.stage(loaded).await {
            Ok(staged) => staged,
            Err(why) => return ReloadOutcome::Failed(why),
        };
        // Everything is built: from here on nothing can fail, so the change applies whole.
        let sha256 = staged.sha256.clone();
        self.swap(staged, &old);
        self.fingerprint = fingerprint;
        self.record_in_force(&sha256);
        self.state
            .metrics
            .config_reloads
            .with_label_values(&["ok"])
            .inc();
        // From reading the file to the new snapshot in force (the watcher's debounce before it).
        let took_ms = started.elapsed().as_millis();
        tracing::info!(file = %self.path.display(), %sha256, took_ms, "configuration reloaded");
        // Meta's side and the statuses follow the new file.
        self.state.reconcile.trigger();
        ReloadOutcome::Applied { sha256 }
    }

    /// Reads the file and its secrets. Stored secrets are read (and moved to a new key) before
    /// anything is compared or built, so a rotated stored value counts as a change and a
    /// missing one refuses the file.
    async fn read(&self) -> Result<Loaded, String> {
        let path = self.path.clone();
        // Reading files and secrets blocks; keep it off the runtime's workers.
        let mut loaded = match tokio::task::spawn_blocking(move || Loaded::from_path(&path)).await {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(e) => return Err(format!("the loader panicked: {e}")),
        };
        match crate::secrets::resolve_stored(&mut loaded.config, &self.state.store, true).await {
            Ok(done) if !done.rotated.is_empty() => tracing::info!(
                rotated = done.rotated.len(),
                "stored secrets re-encrypted under meta.encryption_key"
            ),
            Ok(_) => {}
            Err(e) => return Err(e.located(&self.path)),
        }
        Ok(loaded)
    }

    /// Builds everything the new file needs off to the side: certificates, the snapshot, TLS
    /// resolvers and the endpoints' new generations. Nothing serving changes here.
    async fn stage(&self, loaded: Loaded) -> Result<Staged, String> {
        let located = |e: &dyn std::fmt::Display| format!("{}: {e}", self.path.display());
        let cert = load_cert(&self.path, loaded.config.listen.tls.as_ref())?;
        let admin_cert = load_cert(&self.path, loaded.config.listen.admin_tls.as_ref())?;
        let sha256 = loaded.sha256.clone();
        let listen = loaded.config.listen.clone();
        let telemetry = crate::telemetry::prepare(&loaded.config.telemetry)
            .map_err(|e| format!("{}: telemetry.otlp: {e}", self.path.display()))?;
        let snapshot = Snapshot::build(loaded.config, &self.graph_base).map_err(|e| located(&e))?;
        // TLS turned on by this file gets a resolver of its own; turned off, none is served.
        let resolver = self.tls.prepare(cert.as_ref());
        let admin_resolver = self.admin_tls.prepare(admin_cert.as_ref());
        // New addresses are bound before anything changes, so a port in use refuses the file.
        let webhook = self
            .endpoints
            .webhook
            .prepare(&listen, listen.webhook, resolver.clone())
            .await
            .map_err(|e| located(&e))?;
        let admin = self
            .endpoints
            .admin
            .prepare(&listen, listen.admin, admin_resolver.clone())
            .await
            .map_err(|e| located(&e))?;
        Ok(Staged {
            sha256,
            snapshot,
            cert,
            admin_cert,
            resolver,
            admin_resolver,
            webhook,
            admin,
            telemetry,
        })
    }

    /// Puts a staged configuration in force: limiter, agent slots, snapshot, certificates,
    /// endpoints, and tells the emulator when the webhook moved.
    fn swap(&mut self, staged: Staged, old: &Snapshot) {
        let snapshot = staged.snapshot;
        if snapshot.limiter_spec() != old.limiter_spec() {
            let limiter = self.state.limiter_for(&snapshot);
            limiter.carry_pauses_from(&self.state.limiter.load());
            self.state.limiter.store(Arc::new(limiter));
        }
        self.state
            .agent_slots
            .resize(snapshot.config.policies.agent.max_concurrency);
        self.state
            .metrics
            .zero_agents(snapshot.config.agents.keys().map(String::as_str));
        self.state
            .metrics
            .set_graph_api_version(&snapshot.config.meta.api_version);
        self.state.snapshot.store(Arc::new(snapshot));
        staged.telemetry.commit();
        if let Some(cert) = &staged.cert {
            self.state.metrics.register_tls();
            self.state
                .metrics
                .tls_cert_expiry
                .set(cert.not_after.unwrap_or(0));
        }
        self.tls.commit(staged.resolver, staged.cert.as_ref());
        self.admin_tls
            .commit(staged.admin_resolver, staged.admin_cert.as_ref());
        let webhook_url = self.endpoints.webhook_url();
        if let Some(p) = staged.webhook {
            self.endpoints.webhook.commit(p);
        }
        if let Some(p) = staged.admin {
            self.endpoints.admin.commit(p);
        }
        if self.endpoints.webhook_url() != webhook_url
            && let Some(emulator) = &self.emulator
        {
            emulator.set_webhook_url(self.endpoints.webhook_url());
        }
    }

    /// Serves the certificates now on disk if they changed (cert-manager renewals change no
    /// config). The expiry gauge follows the webhook's certificate.
    fn refresh_tls(&self) {
        let listen = self.state.snapshot.load().config.listen.clone();
        if let Some(cert) = self.tls.refresh(listen.tls.as_ref()) {
            self.state
                .metrics
                .tls_cert_expiry
                .set(cert.not_after.unwrap_or(0));
        }
        self.admin_tls.refresh(listen.admin_tls.as_ref());
    }
}

/// Asks the reload task for a reload; cheap to clone.
#[derive(Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<oneshot::Sender<ReloadOutcome>>,
}

impl ReloadHandle {
    /// Reloads now (SIGHUP, tests) and returns what happened.
    pub async fn reload(&self) -> ReloadOutcome {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(tx).await.is_err() {
            return ReloadOutcome::Failed("the gateway is shutting down".into());
        }
        rx.await
            .unwrap_or_else(|_| ReloadOutcome::Failed("the gateway is shutting down".into()))
    }
}

/// Starts the reload task; with `watch`, it also reloads when the watched directories change.
pub fn spawn(mut reloader: Reloader, watch: bool, shutdown: CancellationToken) -> ReloadHandle {
    let (tx, mut rx) = mpsc::channel::<oneshot::Sender<ReloadOutcome>>(8);
    let tracker = reloader.state.tracker.clone();
    // Armed before returning, so a change made right after start is seen.
    let initial = watch.then(|| DirWatcher::new(&reloader.watched_files(), DEBOUNCE));
    tracker.spawn(async move {
        // When to (re)create the watcher, and whether to reload then: after a failure something
        // may have changed while nothing watched.
        let mut rearm = match &initial {
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot watch the configuration; retrying");
                Some((tokio::time::Instant::now() + REARM_DELAY, true))
            }
            Some(Ok(_)) | None => None,
        };
        let mut watcher = initial.and_then(Result::ok);
        loop {
            if let Some((at, reload_after)) = rearm {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = shutdown.cancelled() => break,
                    Some(reply) = rx.recv() => {
                        let _ = reply.send(reloader.reload().await);
                        continue;
                    }
                }
                match DirWatcher::new(&reloader.watched_files(), DEBOUNCE) {
                    Ok(w) => {
                        tracing::debug!(dirs = ?w.dirs(), "watching for configuration changes");
                        watcher = Some(w);
                        rearm = None;
                        if reload_after {
                            reloader.reload().await;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot watch the configuration; retrying");
                        rearm = Some((tokio::time::Instant::now() + REARM_DELAY, true));
                        continue;
                    }
                }
            }
            let changed = async {
                match watcher.as_mut() {
                    Some(w) => w.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                reply = rx.recv() => match reply {
                    Some(reply) => { let _ = reply.send(reloader.reload().await); }
                    None => break,
                },
                r = changed => match r {
                    Ok(()) => { reloader.reload().await; }
                    Err(e) => {
                        tracing::warn!(error = %e, "configuration watcher failed; recreating it");
                        watcher = None;
                        rearm = Some((tokio::time::Instant::now(), true));
                        continue;
                    }
                },
            }
            // A reload may have moved the TLS files to other directories.
            if watcher
                .as_ref()
                .is_some_and(|w| w.files() != reloader.watched_files())
            {
                watcher = None;
                rearm = Some((tokio::time::Instant::now(), false));
            }
        }
    });
    ReloadHandle { tx }
}
