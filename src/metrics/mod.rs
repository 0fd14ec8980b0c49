//! Every Prometheus metric the gateway exports, defined in one place and registered on one
//! registry held by the app state. Labels are bounded: never a customer identifier. Knows
//! nothing of storage: the gauges storage answers are set by their reader (`admin`).

mod state_gauge;

pub use state_gauge::StateGauge;

use prometheus::core::Collector;
use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// What defines one metric: name, help, label names and (histograms) buckets.
struct Spec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    buckets: Option<Vec<f64>>,
    /// Registered with the others (false: defined, but exported only once asked to).
    registered: bool,
    /// The values each label takes, where every one is known in advance (an empty list: known
    /// only at run time, like agent names). Each combination is exported at 0 from the first
    /// scrape, as Prometheus advises: a `rate()` over a series that appears with its first
    /// event misses that event, and an alert on it has nothing to compare against.
    known: &'static [&'static [&'static str]],
}

/// A metric without labels, buckets or deferral; the builders below add them.
fn spec(name: &'static str, help: &'static str) -> Spec {
    Spec {
        name,
        help,
        labels: &[],
        buckets: None,
        registered: true,
        known: &[],
    }
}

impl Spec {
    fn labels(self, labels: &'static [&'static str]) -> Self {
        Self { labels, ..self }
    }

    fn buckets(self, buckets: Vec<f64>) -> Self {
        Self {
            buckets: Some(buckets),
            ..self
        }
    }

    fn known(self, known: &'static [&'static [&'static str]]) -> Self {
        Self { known, ..self }
    }

    /// Defined (its family is listed) but left out of the registry until registered explicitly.
    fn unregistered(self) -> Self {
        Self {
            registered: false,
            ..self
        }
    }

    fn opts(&self) -> Opts {
        Opts::new(self.name, self.help)
    }

    fn histogram_opts(&self) -> HistogramOpts {
        let opts = HistogramOpts::new(self.name, self.help);
        match &self.buckets {
            Some(b) => opts.buckets(b.clone()),
            None => opts,
        }
    }
}

/// A metric type built from a [`Spec`].
trait FromSpec: Collector + Clone + Sized + 'static {
    fn from_spec(spec: &Spec) -> prometheus::Result<Self>;

    /// Exports the series of `values` (one per label) at 0; unlabelled types have one already.
    fn zero(&self, _values: &[&str]) {}
}

/// Every combination of one value per label (none when no values are known).
fn combinations(known: &[&[&'static str]]) -> Vec<Vec<&'static str>> {
    if known.is_empty() {
        return Vec::new();
    }
    known.iter().fold(vec![Vec::new()], |acc, values| {
        acc.iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut next = prefix.clone();
                    next.push(*v);
                    next
                })
            })
            .collect()
    })
}

/// Types built from `Opts` alone (no labels).
macro_rules! from_opts {
    ($($ty:ty),*) => {$(
        impl FromSpec for $ty {
            fn from_spec(spec: &Spec) -> prometheus::Result<Self> {
                Self::with_opts(spec.opts())
            }
        }
    )*};
}
from_opts!(IntGauge, Gauge);

/// Labelled types built from `Opts` and label names.
macro_rules! from_opts_and_labels {
    ($($ty:ty),*) => {$(
        impl FromSpec for $ty {
            fn from_spec(spec: &Spec) -> prometheus::Result<Self> {
                Self::new(spec.opts(), spec.labels)
            }

            fn zero(&self, values: &[&str]) {
                self.with_label_values(values);
            }
        }
    )*};
}
from_opts_and_labels!(IntCounterVec, CounterVec, IntGaugeVec, GaugeVec);

impl FromSpec for Histogram {
    fn from_spec(spec: &Spec) -> prometheus::Result<Self> {
        Histogram::with_opts(spec.histogram_opts())
    }
}

impl FromSpec for HistogramVec {
    fn from_spec(spec: &Spec) -> prometheus::Result<Self> {
        HistogramVec::new(spec.histogram_opts(), spec.labels)
    }

    fn zero(&self, values: &[&str]) {
        self.with_label_values(values);
    }
}

/// Builds metrics, registers them and keeps the name of every family it defined.
#[derive(Default)]
struct Registrar {
    registry: Registry,
    families: Vec<String>,
}

impl Registrar {
    fn add<M: FromSpec>(&mut self, spec: Spec) -> M {
        let metric = M::from_spec(&spec).expect("valid metric");
        for values in combinations(spec.known) {
            metric.zero(&values);
        }
        self.families
            .extend(metric.desc().iter().map(|d| d.fq_name.clone()));
        if spec.registered {
            self.registry
                .register(Box::new(metric.clone()))
                .expect("each metric is registered once");
        }
        metric
    }
}

/// Declares a struct of metrics, each field once with its [`Spec`] (or, without one, a nested
/// group declared the same way), and `register`, which builds and registers them all. Private
/// fields in brackets after the name start as their `Default` and are set by the caller.
macro_rules! metrics {
    ($(#[$attr:meta])* pub struct $name:ident $([$($own:ident: $own_ty:ty),*])? {
        $($(#[$fattr:meta])* pub $field:ident: $ty:ty $(= $spec:expr)?,)*
    }) => {
        $(#[$attr])*
        #[derive(Clone)]
        pub struct $name {
            $($($own: $own_ty,)*)?
            $($(#[$fattr])* pub $field: $ty,)*
        }

        impl $name {
            fn register(r: &mut Registrar) -> Self {
                Self {
                    $($($own: Default::default(),)*)?
                    $($field: metrics!(@make r, $ty $(, $spec)?),)*
                }
            }
        }
    };
    (@make $r:ident, $ty:ty, $spec:expr) => { $r.add::<$ty>($spec) };
    (@make $r:ident, $ty:ty) => { <$ty>::register($r) };
}

/// `wa_gateway_webhooks_total`'s results.
const WEBHOOK_RESULTS: &[&str] = &[
    "ok",
    "bad_signature",
    "probe",
    "dead_letter",
    "storage_error",
    "too_large",
    "body_timeout",
    "busy",
];

/// `wa_gateway_agent_seconds`'s results: the answer's, or the failure's label.
const AGENT_RESULTS: &[&str] = &[
    "ok",
    "empty",
    "refused",
    "timeout",
    "transport",
    "status",
    "bad_answer",
    "circuit_open",
];

const OK_OR_ERROR: &[&str] = &["ok", "error"];

/// The HTTP listeners.
const ENDPOINTS: &[&str] = &["webhook", "admin"];

/// The tables retention prunes (`seen_wamids` for forgotten wamid digests).
const PRUNED_TABLES: &[&str] = &[
    "inbox",
    "outbox",
    "status_events",
    "dead_letters",
    "opt_out_events",
    "handoff_notifications",
    "seen_wamids",
    "media_uploads",
    "audit_log",
];

fn latency_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ]
}
metrics! {
    /// The gateway's metrics.
    pub struct Metrics [registry: Registry, families: Vec<String>] {
        /// Webhook POSTs by result: ok, bad_signature, dead_letter, storage_error, too_large.
        pub webhooks: IntCounterVec = spec(
            "wa_gateway_webhooks_total",
            "Webhook POSTs received, by result.",
        )
        .labels(&["result"])
        .known(&[WEBHOOK_RESULTS]),
        /// Time from the end of the request body to the 200 (includes the group commit).
        pub webhook_ack_seconds: Histogram = spec(
            "wa_gateway_webhook_ack_seconds",
            "Time to acknowledge a webhook once its body is read (includes the durable commit).",
        )
        .buckets(latency_buckets()),
        /// Inbound messages by number and message type (unrouted numbers count as `unrouted`).
        pub messages_in: IntCounterVec = spec(
            "wa_gateway_messages_in_total",
            "Inbound customer messages stored, by number and type.",
        )
        .labels(&["phone_number_id", "type"]),
        /// Replies by number and result: sent, failed, expired.
        pub messages_out: IntCounterVec = spec(
            "wa_gateway_messages_out_total",
            "Replies that ended, by number and result.",
        )
        .labels(&["phone_number_id", "result"]),
        /// Media files agents named by URL, by number and result: uploaded, cached (an earlier
        /// upload of the same bytes reused), failed (not fetched, refused or not uploaded).
        pub media_files: IntCounterVec = spec(
            "wa_gateway_media_files_total",
            "Media files named by URL and sent by upload, by number and result.",
        )
        .labels(&["phone_number_id", "result"]),
        /// Agent call latency by agent and result: ok, empty, refused, or the failure.
        pub agent_seconds: HistogramVec = spec(
            "wa_gateway_agent_seconds",
            "Agent call latency, by agent and result.",
        )
        .buckets(latency_buckets())
        .labels(&["agent", "result"])
        .known(&[&[], AGENT_RESULTS]),
        /// Errors Meta returned, by code.
        pub meta_errors: IntCounterVec = spec(
            "wa_gateway_meta_errors_total",
            "Errors returned by the Graph API, by Meta error code.",
        )
        .labels(&["code"]),
        /// Messages committed per group-commit transaction.
        pub commit_batch_messages: Histogram = spec(
            "wa_gateway_store_commit_batch_messages",
            "Inbound messages committed per group-commit transaction.",
        )
        .buckets(vec![
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
        ]),
        /// Time one group-commit transaction took.
        pub commit_seconds: Histogram = spec(
            "wa_gateway_store_commit_seconds",
            "Duration of one group-commit transaction.",
        )
        .buckets(latency_buckets()),
        /// Conversation workers alive.
        pub conversation_workers: IntGauge = spec(
            "wa_gateway_conversation_workers",
            "Conversation workers currently alive.",
        ),
        /// 1 while this replica is the leader (always on SQLite), else 0.
        pub leader: IntGauge = spec(
            "wa_gateway_leader",
            "1 while this replica is the elected leader (runs the singletons), else 0.",
        ),
        /// Conversations this replica holds a lease on (PostgreSQL).
        pub conversation_leases: IntGauge = spec(
            "wa_gateway_conversation_leases",
            "Conversations this replica holds a lease on (several replicas on PostgreSQL).",
        ),
        /// Time from a message's arrival to Meta accepting its reply.
        pub reply_seconds: Histogram = spec(
            "wa_gateway_reply_seconds",
            "Time from a customer message's arrival to Meta accepting the reply.",
        )
        .buckets(latency_buckets()),
        /// Send attempts retried, by number and reason (retry, throttle, network).
        pub send_retries: IntCounterVec = spec(
            "wa_gateway_send_retries_total",
            "Send attempts that will be retried, by number and reason.",
        )
        .labels(&["phone_number_id", "reason"]),
        /// Opt-outs and opt-ins, by number and action (stop, resume).
        pub opt_outs: IntCounterVec = spec(
            "wa_gateway_opt_outs_total",
            "Opt-outs and opt-ins, by number and action.",
        )
        .labels(&["phone_number_id", "action"]),
        /// Conversations paused for a person, by number and who paused them (operator, cli,
        /// agent, business_app, handover).
        pub handoff_pauses: IntCounterVec = spec(
            "wa_gateway_handoff_pauses_total",
            "Conversations paused for a person, by number and who paused them.",
        )
        .labels(&["phone_number_id", "by"]),
        /// Customer messages stored without an agent turn because their conversation was paused.
        pub handoff_held: IntCounterVec = spec(
            "wa_gateway_handoff_held_messages_total",
            "Customer messages stored without an agent turn because the conversation was paused.",
        )
        .labels(&["phone_number_id"]),
        /// Handoff notification attempts, by result (sent, retry, failed).
        pub handoff_notifications: IntCounterVec = spec(
            "wa_gateway_handoff_notifications_total",
            "Handoff notification delivery attempts, by result (sent, retry, failed).",
        )
        .labels(&["result"])
        .known(&[&["sent", "retry", "failed"]]),
        /// Customer messages not answered because the customer opted out, by number.
        pub opt_out_suppressed: IntCounterVec = spec(
            "wa_gateway_opt_out_suppressed_total",
            "Customer messages left unanswered because the customer opted out.",
        )
        .labels(&["phone_number_id"]),
        /// Replies not sent because the 24-hour window closed (checked at send time, or Meta's
        /// 131047).
        pub window_expired: IntCounterVec = spec(
            "wa_gateway_window_expired_total",
            "Replies not sent because the customer's 24-hour window had closed.",
        )
        .labels(&["phone_number_id"]),
        /// Times Meta throttled a number (130429, 80007, 131056, HTTP 429), by number.
        pub throttled: IntCounterVec = spec(
            "wa_gateway_throttled_total",
            "Times Meta throttled a number's sends.",
        )
        .labels(&["phone_number_id"]),
        /// 1 while an agent's circuit breaker is open or half-open, by agent.
        pub agent_breaker_open: IntGaugeVec = spec(
            "wa_gateway_agent_breaker_open",
            "1 while the agent's circuit breaker is open or half-open.",
        )
        .labels(&["agent"]),
        /// Number status: one series per number, labelled with its current status (active,
        /// inactive, error), always 1 (see [`StateGauge`] for why not a state set).
        pub number_status: StateGauge = spec(
            "wa_gateway_number_status",
            "1, labelled with the number's current status (active, inactive, error); one series per number.",
        )
        .labels(&["phone_number_id", "status"]),
        /// Control-loop passes by result: ok, error (a read failed or Meta refused a change).
        pub reconcile_runs: IntCounterVec = spec(
            "wa_gateway_reconcile_runs_total",
            "Control-loop passes by result (ok, error).",
        )
        .labels(&["result"])
        .known(&[OK_OR_ERROR]),
        /// Configuration reloads by result: ok, error (unchanged files count as neither).
        pub config_reloads: IntCounterVec = spec(
            "wa_gateway_config_reloads_total",
            "Configuration reloads attempted on a changed file, by result (ok, error).",
        )
        .labels(&["result"])
        .known(&[OK_OR_ERROR]),
        /// 1 for the SHA-256 of the configuration file in force.
        pub config_info: IntGaugeVec = spec(
            "wa_gateway_config_info",
            "1 for the SHA-256 of the configuration file in force.",
        )
        .labels(&["sha256"]),
        /// When the configuration in force was loaded, Unix seconds.
        pub config_loaded_timestamp: IntGauge = spec(
            "wa_gateway_config_loaded_timestamp_seconds",
            "When the configuration in force was loaded.",
        ),
        /// The served TLS certificate's notAfter, Unix seconds (absent without TLS: registered
        /// only once TLS is configured, see [`Metrics::register_tls`]).
        pub tls_cert_expiry: IntGauge = spec(
            "wa_gateway_tls_cert_expiry_timestamp_seconds",
            "notAfter of the certificate the webhook listener serves.",
        )
        .unregistered(),
        /// The end date Meta published for `meta.api_version`, Unix seconds (0 for a version
        /// older than the gateway's table, so long expired; absent while Meta announces none).
        pub graph_api_version_expiry: IntGaugeVec = spec(
            "wa_gateway_graph_api_version_expiry_timestamp_seconds",
            "When Meta ends the Graph API version in the configuration (0: long expired).",
        )
        .labels(&["version"]),
        /// 1, labelled with the version and source revision of this binary.
        pub build_info: IntGaugeVec = spec(
            "wa_gateway_build_info",
            "1, labelled with the version and source revision of the running binary.",
        )
        .labels(&["version", "revision"]),
        /// 1 when the last reload attempt applied (or found the file in force unchanged), 0 when
        /// it was refused; the running configuration is then older than the file.
        pub config_last_reload_successful: IntGauge = spec(
            "wa_gateway_config_last_reload_successful",
            "1 when the last configuration reload applied or found nothing to change, 0 when it was refused.",
        ),
        /// Replies queued and not yet accepted by Meta (`pending` or `sending`), by number; read
        /// from storage at scrape time, so every replica reports the cluster's backlog.
        pub outbox_depth: IntGaugeVec = spec(
            "wa_gateway_outbox_depth",
            "Replies queued and not yet accepted by Meta, by number (read from storage at scrape time).",
        )
        .labels(&["phone_number_id"]),
        /// Age of the oldest queued reply in seconds (0 when none); read at scrape time.
        pub outbox_oldest_age: Gauge = spec(
            "wa_gateway_outbox_oldest_age_seconds",
            "Age of the oldest reply queued and not yet accepted by Meta; 0 when none.",
        ),
        /// When the latest customer message to a number was stored, Unix seconds; read at
        /// scrape time (absent for a number that never had one).
        pub number_last_activity: IntGaugeVec = spec(
            "wa_gateway_number_last_activity_timestamp_seconds",
            "When the latest customer message to the number was stored.",
        )
        .labels(&["phone_number_id"]),
        /// Seconds sends waited on the per-number throughput and per-customer pacing limits, by
        /// number.
        pub throttle_wait_seconds: CounterVec = spec(
            "wa_gateway_send_throttle_wait_seconds_total",
            "Time sends waited on the per-number throughput and per-customer pacing limits.",
        )
        .labels(&["phone_number_id"]),
        /// Actions still pending after the control loop's latest pass (0: the Meta side matches
        /// the file; in plan-only mode, the whole plan).
        pub reconcile_drift: IntGauge = spec(
            "wa_gateway_reconcile_drift",
            "Actions the reconciler's last plan holds; 0 when Meta matches the configuration.",
        ),
        /// Reconciler actions, by result: ok (carried out), error (Meta refused it).
        pub reconcile_actions: IntCounterVec = spec(
            "wa_gateway_reconcile_actions_total",
            "Reconciler actions applied, by result.",
        )
        .labels(&["result"])
        .known(&[OK_OR_ERROR]),
        /// Storage retention: pruned rows, oldest rows, database size.
        pub retention: RetentionMetrics,
        /// The HTTP listeners' connections.
        pub http: HttpMetrics,
        /// Bounds on what a turn may cost: reply parts, agent calls in flight, pacing state.
        pub bounds: BoundMetrics,
    }
}

metrics! {
    /// Metrics of the limits that keep a turn's cost bounded.
    pub struct BoundMetrics {
        /// Replies cut at `policies.max_reply_parts`, by number.
        pub reply_truncated: IntCounterVec = spec(
            "wa_gateway_reply_truncated_total",
            "Replies cut at policies.max_reply_parts messages, by number.",
        )
        .labels(&["phone_number_id"]),
        /// Agent calls in flight now (at most `policies.agent.max_concurrency`).
        pub agent_calls_in_flight: IntGauge = spec(
            "wa_gateway_agent_calls_in_flight",
            "Agent calls in flight now (bounded by policies.agent.max_concurrency).",
        ),
        /// (number, customer) pairs the in-memory pacing limiter remembers, after its last sweep.
        pub pacing_customers: IntGauge = spec(
            "wa_gateway_pacing_customers",
            "Customers the per-customer pacing limiter remembers after its last sweep.",
        ),
    }
}

metrics! {
    /// Connection metrics of the HTTP listeners, by `endpoint` (webhook, admin).
    pub struct HttpMetrics {
        /// Connections open now (TLS handshakes included).
        pub connections_open: IntGaugeVec = spec(
            "wa_gateway_http_connections_open",
            "HTTP connections open now, by listener.",
        )
        .labels(&["endpoint"])
        .known(&[ENDPOINTS]),
        /// Connections the gateway closed because a deadline passed, by endpoint and reason:
        /// handshake (TLS), header (silent or stopped inside its headers), idle (no request).
        pub connection_timeouts: IntCounterVec = spec(
            "wa_gateway_http_connection_timeouts_total",
            "HTTP connections closed because a deadline passed, by listener and reason.",
        )
        .labels(&["endpoint", "reason"])
        .known(&[ENDPOINTS, &["handshake", "header", "idle"]]),
    }
}

metrics! {
    /// Storage retention's metrics (set by the pruner, on the leader).
    pub struct RetentionMetrics {
        /// Rows deleted by retention, by table (`seen_wamids` for forgotten wamid digests).
        pub pruned_rows: IntCounterVec = spec(
            "wa_gateway_store_pruned_rows_total",
            "Rows deleted by storage retention, by table.",
        )
        .labels(&["table"])
        .known(&[PRUNED_TABLES]),
        /// Age of each table's oldest row in seconds (0 when empty), after the last prune.
        pub oldest_row_age: GaugeVec = spec(
            "wa_gateway_store_oldest_row_age_seconds",
            "Age of the oldest row of a table after the last prune (0 when empty), by table.",
        )
        .labels(&["table"]),
        /// The database's size on disk, after the last prune.
        pub database_size: IntGauge = spec(
            "wa_gateway_store_database_size_bytes",
            "Size of the database on disk after the last prune (SQLite file, PostgreSQL database).",
        ),
        /// How long one prune batch held the group-commit writer.
        pub prune_batch_seconds: Histogram = spec(
            "wa_gateway_store_prune_batch_seconds",
            "Time one prune batch held the group-commit writer.",
        )
        .buckets(latency_buckets()),
    }
}

impl Metrics {
    /// Exports `wa_gateway_agent_seconds` at 0 for every result of each of `agents` (the
    /// declared agents, at start and on reload), and their breakers closed.
    pub fn zero_agents<'a>(&self, agents: impl IntoIterator<Item = &'a str>) {
        for agent in agents {
            self.agent_breaker_open.with_label_values(&[agent]);
            for result in AGENT_RESULTS {
                self.agent_seconds.with_label_values(&[agent, result]);
            }
        }
    }

    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut r = Registrar::default();
        let mut m = Self::register(&mut r);
        m.build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                option_env!("WA_GATEWAY_REVISION").unwrap_or("unknown"),
            ])
            .set(1);
        m.config_last_reload_successful.set(1);
        r.families.sort();
        (m.registry, m.families) = (r.registry, r.families);
        m
    }

    /// The name of every metric family defined here, whether or not it has a sample yet
    /// (labelled families without children are not exported until their first use).
    pub fn family_names(&self) -> &[String] {
        &self.families
    }

    /// Exports the TLS certificate expiry gauge; called once TLS is configured, so that a
    /// plain-HTTP gateway does not export a meaningless 0.
    pub fn register_tls(&self) {
        let _ = self
            .registry
            .register(Box::new(self.tls_cert_expiry.clone()));
    }

    /// Shows the end date of the Graph API `version` in force (on start and every reload).
    pub fn set_graph_api_version(&self, version: &str) {
        use crate::cloudapi::versions::{Availability, availability};
        self.graph_api_version_expiry.reset();
        let at = match availability(version) {
            Availability::Retired => 0,
            a => match a.expires_at() {
                Some(at) => at,
                None => return,
            },
        };
        self.graph_api_version_expiry
            .with_label_values(&[version])
            .set(at);
    }

    /// The text exposition format served at /metrics.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
