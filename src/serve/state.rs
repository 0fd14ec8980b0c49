//! Shared application state: the current config snapshot (swapped whole on reload), the store,
//! the metrics and the shutdown signal. Passed as `Arc<AppState>`; nothing here is global.

use crate::agent::{Agent, AgentSlots, ResilientAgent};
use crate::cluster::Leadership;
use crate::config::{self, Config, CustomerPacing, Policies};
use crate::graph::GraphClient;
use crate::ids::PhoneNumberId;
use crate::metrics::Metrics;
use crate::policy::{KeywordMatcher, SendLimiter};
use crate::store::writer::WriterHandle;
use crate::store::{Disconnected, EraseOp, ErasureKey, OptedOut, Paused, Store};
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A declared number, ready to serve.
#[derive(Debug)]
pub struct NumberRuntime {
    pub cfg: config::Number,
    pub agent_name: String,
    pub agent: Arc<ResilientAgent>,
    /// The top-level policies with this number's overrides applied: shared by every number
    /// that overrides nothing, so a number costs no copy of them.
    pub policies: Arc<Policies>,
}

/// Everything derived from one config file; immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    /// The declared numbers by their id.
    pub numbers: HashMap<PhoneNumberId, Arc<NumberRuntime>>,
    pub graph: GraphClient,
    /// Downloads the files agents name by `url` (`policies.media.timeout` each).
    pub media_http: reqwest::Client,
    /// The opt-out and resume keywords, normalised once.
    pub keywords: KeywordMatcher,
    /// The key of erased customers' opt-out digests (from `meta.app_secret`).
    pub erasure_key: ErasureKey,
}

/// Why a snapshot could not be built from a (validated) config.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("agent {name}: {source}")]
    Agent {
        name: String,
        #[source]
        source: crate::agent::AgentBuildError,
    },
    #[error("number {number} refers to agent {agent}, which is not declared")]
    MissingAgent { number: String, agent: String },
}

impl Snapshot {
    /// Builds the runtime view of `config`; `graph_base` is the Graph URL to call (the emulator's
    /// address when `meta.graph_url` is `emulator`).
    pub fn build(config: Config, graph_base: &str) -> Result<Self, SnapshotError> {
        let mut agents = HashMap::new();
        for (name, cfg) in &config.agents {
            let agent = Agent::from_config(cfg).map_err(|source| SnapshotError::Agent {
                name: name.clone(),
                source,
            })?;
            let resilient = ResilientAgent::new(name.clone(), agent, config.policies.agent.clone());
            agents.insert(name.clone(), Arc::new(resilient));
        }
        let shared = Arc::new(config.policies.clone());
        let mut numbers = HashMap::with_capacity(config.numbers.len());
        for n in &config.numbers {
            let agent =
                agents
                    .get(&n.agent)
                    .cloned()
                    .ok_or_else(|| SnapshotError::MissingAgent {
                        number: n.phone_number_id.to_string(),
                        agent: n.agent.clone(),
                    })?;
            numbers.insert(
                n.phone_number_id.clone(),
                Arc::new(NumberRuntime {
                    cfg: n.clone(),
                    agent_name: n.agent.clone(),
                    agent,
                    policies: if n.policies.is_empty() {
                        shared.clone()
                    } else {
                        Arc::new(config.policies.with_overrides(&n.policies))
                    },
                }),
            );
        }
        let graph = GraphClient::new(
            graph_base,
            &config.meta.api_version,
            std::time::Duration::from_secs(30),
        );
        let media = &config.policies.media;
        let media_http = crate::net::media_client(media.timeout.get(), media.private_hosts);
        let keywords = KeywordMatcher::new(&config.policies.opt_out);
        let erasure_key = ErasureKey::derive(config.meta.app_secret.expose().as_bytes());
        Ok(Self {
            config: Arc::new(config),
            numbers,
            graph,
            media_http,
            keywords,
            erasure_key,
        })
    }

    /// What the send limiter is built from: the default rate, the rate of each number whose
    /// rate differs from it, the pacing. The other numbers share the default's keyed buckets, so
    /// a number at the default rate costs no limiter of its own.
    pub fn limiter_spec(&self) -> (u32, BTreeMap<String, u32>, CustomerPacing) {
        let default_rate = self.config.policies.throughput_per_number;
        let per_number = self
            .numbers
            .iter()
            .filter(|(_, n)| n.policies.throughput_per_number != default_rate)
            .map(|(id, n)| (id.to_string(), n.policies.throughput_per_number))
            .collect();
        (
            default_rate,
            per_number,
            self.config.policies.customer_pacing.clone(),
        )
    }

    /// A send limiter sized for this snapshot's numbers.
    pub fn limiter(&self) -> SendLimiter {
        let (default_rate, per_number, pacing) = self.limiter_spec();
        SendLimiter::new(default_rate, per_number.into_iter().collect(), &pacing)
    }
}

fn limiter_for(snapshot: &Snapshot, store: &Store) -> SendLimiter {
    let limiter = snapshot.limiter();
    if store.is_shared() {
        limiter.shared(store.clone())
    } else {
        limiter
    }
}

/// What the admin API tells about the configuration in force and the last reload.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ConfigStatus {
    /// SHA-256 of the configuration file in force (None when started from a `Config` value).
    pub sha256: Option<String>,
    /// When the configuration in force was loaded, Unix seconds (served as RFC 3339, like
    /// every time of the admin API).
    #[serde(serialize_with = "rfc3339_seconds")]
    pub loaded_at: Option<u64>,
    /// Why the last reload was refused; cleared when the file in force is read again.
    pub last_reload_error: Option<String>,
}

fn rfc3339_seconds<S: serde::Serializer>(at: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(secs) => s.collect_str(&humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(*secs),
        )),
        None => s.serialize_none(),
    }
}

/// Where a reply put back to `pending` by an operator goes: the pipeline's dispatcher, which
/// `app` plugs in once it has started (the pipeline sits above this module, so this is a hook,
/// not its type). Before that, nothing is lost: the row is open in storage, found at start.
#[derive(Default)]
pub struct RequeuedReplies(std::sync::OnceLock<Box<dyn Fn(crate::store::OutboxRow) + Send + Sync>>);

impl RequeuedReplies {
    /// Plugs in the pipeline; the first call wins.
    pub fn connect(&self, to: impl Fn(crate::store::OutboxRow) + Send + Sync + 'static) {
        let _ = self.0.set(Box::new(to));
    }

    /// Hands `row` to the pipeline; false when it has not started.
    pub fn send(&self, row: crate::store::OutboxRow) -> bool {
        self.0.get().map(|f| f(row)).is_some()
    }
}

/// The state every task shares.
pub struct AppState {
    pub snapshot: ArcSwap<Snapshot>,
    /// Meta's pacing limits: per-number throughput and per-customer pacing; replaced when a
    /// reload changes the rates. Senders take `load_full()` so a wait holds no guard.
    pub limiter: ArcSwap<SendLimiter>,
    /// The configuration in force and the last reload's error, for the admin API.
    config_status: Mutex<ConfigStatus>,
    /// Every write goes through the group-commit writer.
    pub writer: WriterHandle,
    pub store: Store,
    /// Numbers an operator disconnected from the admin API (loaded at start).
    pub disconnected: Disconnected,
    /// Customers who opted out (loaded at start; the writer records each change at commit).
    pub opted_out: OptedOut,
    /// Conversations paused for a person (loaded at start; `handoff` records each change once
    /// committed). One process decides on it; several replicas read storage at each turn.
    pub paused: Paused,
    /// Wakes the handoff notifier when a pause queued a notification.
    pub handoff_queued: tokio::sync::Notify,
    /// Hands a reply an operator requeued to the pipeline (set once it has started).
    pub requeued: RequeuedReplies,
    /// Slots for agent calls in flight (`policies.agent.max_concurrency`), resized on reload.
    pub agent_slots: AgentSlots,
    pub metrics: Metrics,
    /// The control loop's latest statuses and report, and the sender's send health.
    pub reconcile: Arc<crate::reconcile::ReconcileState>,
    /// Stop now: in-flight agent calls and sends are abandoned (their work stays open in
    /// storage). Cancelled after `draining`, once the shutdown deadline has passed.
    pub shutdown: CancellationToken,
    /// Stop taking new work: listeners close, conversation workers finish the turn they are
    /// in and give their conversations back, waits between retries end.
    pub draining: CancellationToken,
    /// Whether this replica is the leader (always, on SQLite); leader-only loops wait on it.
    pub leadership: Leadership,
    pub tracker: TaskTracker,
    ready: AtomicBool,
}

impl AppState {
    /// New state serving `snapshot`.
    pub fn new(
        snapshot: Snapshot,
        store: Store,
        writer: WriterHandle,
        metrics: Metrics,
        shutdown: CancellationToken,
        draining: CancellationToken,
        leadership: Leadership,
    ) -> Self {
        let agent_slots = AgentSlots::new(
            snapshot.config.policies.agent.max_concurrency,
            metrics.bounds.agent_calls_in_flight.clone(),
        );
        Self {
            writer,
            agent_slots,
            limiter: ArcSwap::from_pointee(limiter_for(&snapshot, &store)),
            config_status: Mutex::new(ConfigStatus::default()),
            snapshot: ArcSwap::from_pointee(snapshot),
            store,
            disconnected: Disconnected::default(),
            opted_out: OptedOut::default(),
            paused: Paused::default(),
            handoff_queued: tokio::sync::Notify::new(),
            requeued: RequeuedReplies::default(),
            metrics,
            draining,
            reconcile: Default::default(),
            shutdown,
            leadership,
            tracker: TaskTracker::new(),
            ready: AtomicBool::new(false),
        }
    }

    /// Retries a storage call until it succeeds or the gateway shuts down (`None`): the work it
    /// belongs to stays open in storage and is resumed at the next start, so nothing is lost.
    pub async fn persist<T, F, Fut>(&self, what: &str, mut f: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::store::StoreError>>,
    {
        let mut delay = std::time::Duration::from_millis(50);
        loop {
            match f().await {
                Ok(v) => return Some(v),
                Err(e) => {
                    tracing::warn!(error = %e, what, "storage call failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.shutdown.cancelled() => return None,
                    }
                    delay = (delay * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
    }

    /// Whether /readyz says yes.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.is_cancelled()
    }

    /// A send limiter for `snapshot`'s rates; shared by the cluster on PostgreSQL.
    pub fn limiter_for(&self, snapshot: &Snapshot) -> SendLimiter {
        limiter_for(snapshot, &self.store)
    }

    /// Whether `customer` has opted out of `phone_number_id` now. With several replicas the
    /// answer comes from storage, since another replica may have recorded the change; `None`
    /// when shutting down.
    /// A customer erased while opted out stays opted out: their opt-out is found under its keyed
    /// digest and becomes theirs again (so STOP and START work as before).
    pub async fn opted_out_now(&self, phone_number_id: &str, customer: &str) -> Option<bool> {
        let digest = self.customer_digest(customer);
        let stored = if self.store.is_shared() {
            self.persist("opt-out read", || {
                self.store.opt_out_state(phone_number_id, customer, &digest)
            })
            .await?
        } else if self.opted_out.contains(phone_number_id, customer) {
            (true, false)
        } else {
            let erased = self.opted_out.contains(phone_number_id, &digest);
            (erased, erased)
        };
        self.opted_out_as(phone_number_id, customer, &digest, stored)
            .await
    }

    /// The digest an erased customer's opt-out is kept under.
    pub fn customer_digest(&self, customer: &str) -> String {
        self.snapshot.load().erasure_key.customer_digest(customer)
    }

    /// As [`opted_out_now`](Self::opted_out_now), from the stored `(opted_out, erased)` as a
    /// read just returned it (with several replicas, the turn's read of its conversation).
    pub async fn opted_out_as(
        &self,
        phone_number_id: &str,
        customer: &str,
        digest: &str,
        (opted_out, erased): (bool, bool),
    ) -> Option<bool> {
        if erased {
            let restore = || {
                self.writer.erase(EraseOp::RestoreOptOut {
                    phone_number_id: phone_number_id.to_owned(),
                    customer: customer.to_owned(),
                    digest: digest.to_owned(),
                })
            };
            self.persist("opt-out restore", restore).await?;
            // Erasure deleted every reply queued for them, so no queue time needs holding back.
            self.opted_out.set(phone_number_id, customer, true, 0);
            self.opted_out.set(phone_number_id, digest, false, 0);
        }
        Some(opted_out)
    }

    /// Whether `row` may be sent now: the opt-out confirmation always; anything else only if
    /// the customer is not opted out and did not opt out after it was queued. One process
    /// answers from memory (changed at each commit); several replicas read storage (one
    /// primary-key read). `None` when shutting down.
    pub async fn reply_allowed(&self, row: &crate::store::OutboxRow) -> Option<bool> {
        if row.kind == crate::store::OutboxKind::OptOutConfirmation {
            return Some(true);
        }
        let (pnid, customer) = (row.phone_number_id.as_str(), row.customer.as_str());
        if !self.store.is_shared() {
            return Some(self.opted_out.allows(pnid, customer, row.created_at));
        }
        self.persist("opt-out read", || {
            self.store.reply_allowed(pnid, customer, row.created_at)
        })
        .await
    }

    /// The configuration in force and the last reload's error.
    pub fn config_status(&self) -> ConfigStatus {
        self.config_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes the config status; never held across an await.
    pub fn update_config_status(&self, f: impl FnOnce(&mut ConfigStatus)) {
        f(&mut self.config_status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Sets readiness.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}
