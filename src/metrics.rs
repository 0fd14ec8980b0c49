//! Every Prometheus metric the gateway exports, defined in one place and registered on one
//! registry held by the app state. Labels are bounded: never a customer identifier.

use crate::store::Store;
use prometheus::core::Collector;
use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::time::Duration;

/// The gateway's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    families: Vec<String>,
    /// Webhook POSTs by result: ok, bad_signature, dead_letter, storage_error, too_large.
    pub webhooks: IntCounterVec,
    /// Time from the end of the request body to the 200 (includes the group commit).
    pub webhook_ack_seconds: Histogram,
    /// Inbound messages by number and message type (unrouted numbers count as `unrouted`).
    pub messages_in: IntCounterVec,
    /// Replies by number and result: sent, failed, expired.
    pub messages_out: IntCounterVec,
    /// Agent call latency by agent and result: ok, empty, error.
    pub agent_seconds: HistogramVec,
    /// Errors Meta returned, by code.
    pub meta_errors: IntCounterVec,
    /// Messages committed per group-commit transaction.
    pub commit_batch_messages: Histogram,
    /// Time one group-commit transaction took.
    pub commit_seconds: Histogram,
    /// Conversation workers alive.
    pub conversation_workers: IntGauge,
    /// 1 while this replica is the leader (always on SQLite), else 0.
    pub leader: IntGauge,
    /// Conversations this replica holds a lease on (PostgreSQL).
    pub conversation_leases: IntGauge,
    /// Time from a message's arrival to Meta accepting its reply.
    pub reply_seconds: Histogram,
    /// Send attempts retried, by number and reason (retry, throttle, network).
    pub send_retries: IntCounterVec,
    /// Opt-outs and opt-ins, by number and action (stop, resume).
    pub opt_outs: IntCounterVec,
    /// Customer messages not answered because the customer opted out, by number.
    pub opt_out_suppressed: IntCounterVec,
    /// Replies not sent because the 24-hour window closed (checked at send time, or Meta's 131047).
    pub window_expired: IntCounterVec,
    /// Times Meta throttled a number (130429, 80007, 131056, HTTP 429), by number.
    pub throttled: IntCounterVec,
    /// 1 while an agent's circuit breaker is open or half-open, by agent.
    pub agent_breaker_open: IntGaugeVec,
    /// Number status as a state set: 1 for the current status (active, inactive, error), 0 for
    /// the others, by number.
    pub number_status: IntGaugeVec,
    /// Control-loop passes by result: ok, error (a read failed or Meta refused a change).
    pub reconcile_runs: IntCounterVec,
    /// Configuration reloads by result: ok, error (unchanged files count as neither).
    pub config_reloads: IntCounterVec,
    /// 1 for the SHA-256 of the configuration file in force.
    pub config_info: IntGaugeVec,
    /// When the configuration in force was loaded, Unix seconds.
    pub config_loaded_timestamp: IntGauge,
    /// The served TLS certificate's notAfter, Unix seconds (absent without TLS).
    pub tls_cert_expiry: IntGauge,
    /// 1, labelled with the version and source revision of this binary.
    pub build_info: IntGaugeVec,
    /// 1 when the last reload attempt applied (or found the file in force unchanged), 0 when it
    /// was refused; the running configuration is then older than the file.
    pub config_last_reload_successful: IntGauge,
    /// Replies queued and not yet accepted by Meta (`pending` or `sending`), by number; read
    /// from storage at scrape time, so every replica reports the cluster's backlog.
    pub outbox_depth: IntGaugeVec,
    /// Age of the oldest queued reply in seconds (0 when none); read at scrape time.
    pub outbox_oldest_age: Gauge,
    /// When the latest customer message to a number was stored, Unix seconds; read at scrape
    /// time (absent for a number that never had one).
    pub number_last_activity: IntGaugeVec,
    /// Seconds sends waited on the per-number throughput and per-customer pacing limits, by
    /// number.
    pub throttle_wait_seconds: CounterVec,
    /// Actions still pending after the control loop's latest pass (0: the Meta side matches the
    /// file; in plan-only mode, the whole plan).
    pub reconcile_drift: IntGauge,
    /// Reconciler actions, by result: ok (carried out), error (Meta refused it).
    pub reconcile_actions: IntCounterVec,
    /// The HTTP listeners' connections.
    pub http: HttpMetrics,
    /// Storage retention: pruned rows, oldest rows, database size.
    pub retention: RetentionMetrics,
    /// Bounds on what a turn may cost: reply parts, agent calls in flight, pacing state.
    pub bounds: BoundMetrics,
}

/// Metrics of the limits that keep a turn's cost bounded.
#[derive(Clone)]
pub struct BoundMetrics {
    /// Replies cut at `policies.max_reply_parts`, by number.
    pub reply_truncated: IntCounterVec,
    /// Agent calls in flight now (at most `policies.agent.max_concurrency`).
    pub agent_calls_in_flight: IntGauge,
    /// (number, customer) pairs the in-memory pacing limiter remembers, after its last sweep.
    pub pacing_customers: IntGauge,
}

impl BoundMetrics {
    fn new(registry: &Registry, families: &mut Vec<String>) -> Self {
        let reply_truncated = IntCounterVec::new(
            Opts::new(
                "wa_gateway_reply_truncated_total",
                "Replies cut at policies.max_reply_parts messages, by number.",
            ),
            &["phone_number_id"],
        )
        .expect("valid metric");
        let agent_calls_in_flight = IntGauge::new(
            "wa_gateway_agent_calls_in_flight",
            "Agent calls in flight now (bounded by policies.agent.max_concurrency).",
        )
        .expect("valid metric");
        let pacing_customers = IntGauge::new(
            "wa_gateway_pacing_customers",
            "Customers the per-customer pacing limiter remembers after its last sweep.",
        )
        .expect("valid metric");
        for c in [
            Box::new(reply_truncated.clone()) as Box<dyn Collector>,
            Box::new(agent_calls_in_flight.clone()),
            Box::new(pacing_customers.clone()),
        ] {
            families.extend(c.desc().iter().map(|d| d.fq_name.clone()));
            registry
                .register(c)
                .expect("each metric is registered once");
        }
        Self {
            reply_truncated,
            agent_calls_in_flight,
            pacing_customers,
        }
    }
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ]
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let webhooks = IntCounterVec::new(
            Opts::new(
                "wa_gateway_webhooks_total",
                "Webhook POSTs received, by result.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let webhook_ack_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "wa_gateway_webhook_ack_seconds",
                "Time to acknowledge a webhook once its body is read (includes the durable commit).",
            )
            .buckets(latency_buckets()),
        )
        .expect("valid metric");
        let messages_in = IntCounterVec::new(
            Opts::new(
                "wa_gateway_messages_in_total",
                "Inbound customer messages stored, by number and type.",
            ),
            &["phone_number_id", "type"],
        )
        .expect("valid metric");
        let messages_out = IntCounterVec::new(
            Opts::new(
                "wa_gateway_messages_out_total",
                "Replies that ended, by number and result.",
            ),
            &["phone_number_id", "result"],
        )
        .expect("valid metric");
        let agent_seconds = HistogramVec::new(
            HistogramOpts::new(
                "wa_gateway_agent_seconds",
                "Agent call latency, by agent and result.",
            )
            .buckets(latency_buckets()),
            &["agent", "result"],
        )
        .expect("valid metric");
        let meta_errors = IntCounterVec::new(
            Opts::new(
                "wa_gateway_meta_errors_total",
                "Errors returned by the Graph API, by Meta error code.",
            ),
            &["code"],
        )
        .expect("valid metric");
        let commit_batch_messages = Histogram::with_opts(
            HistogramOpts::new(
                "wa_gateway_store_commit_batch_messages",
                "Inbound messages committed per group-commit transaction.",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ]),
        )
        .expect("valid metric");
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "wa_gateway_store_commit_seconds",
                "Duration of one group-commit transaction.",
            )
            .buckets(latency_buckets()),
        )
        .expect("valid metric");
        let conversation_workers = IntGauge::new(
            "wa_gateway_conversation_workers",
            "Conversation workers currently alive.",
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "wa_gateway_leader",
            "1 while this replica is the elected leader (runs the singletons), else 0.",
        )
        .expect("valid metric");
        let conversation_leases = IntGauge::new(
            "wa_gateway_conversation_leases",
            "Conversations this replica holds a lease on (several replicas on PostgreSQL).",
        )
        .expect("valid metric");
        let reply_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "wa_gateway_reply_seconds",
                "Time from a customer message's arrival to Meta accepting the reply.",
            )
            .buckets(latency_buckets()),
        )
        .expect("valid metric");
        let send_retries = IntCounterVec::new(
            Opts::new(
                "wa_gateway_send_retries_total",
                "Send attempts that will be retried, by number and reason.",
            ),
            &["phone_number_id", "reason"],
        )
        .expect("valid metric");
        let opt_outs = IntCounterVec::new(
            Opts::new(
                "wa_gateway_opt_outs_total",
                "Opt-outs and opt-ins, by number and action.",
            ),
            &["phone_number_id", "action"],
        )
        .expect("valid metric");
        let opt_out_suppressed = IntCounterVec::new(
            Opts::new(
                "wa_gateway_opt_out_suppressed_total",
                "Customer messages left unanswered because the customer opted out.",
            ),
            &["phone_number_id"],
        )
        .expect("valid metric");
        let window_expired = IntCounterVec::new(
            Opts::new(
                "wa_gateway_window_expired_total",
                "Replies not sent because the customer's 24-hour window had closed.",
            ),
            &["phone_number_id"],
        )
        .expect("valid metric");
        let throttled = IntCounterVec::new(
            Opts::new(
                "wa_gateway_throttled_total",
                "Times Meta throttled a number's sends.",
            ),
            &["phone_number_id"],
        )
        .expect("valid metric");
        let agent_breaker_open = IntGaugeVec::new(
            Opts::new(
                "wa_gateway_agent_breaker_open",
                "1 while the agent's circuit breaker is open or half-open.",
            ),
            &["agent"],
        )
        .expect("valid metric");
        let number_status = IntGaugeVec::new(
            Opts::new(
                "wa_gateway_number_status",
                "1 for the number's current status (active, inactive, error), 0 for the others.",
            ),
            &["phone_number_id", "status"],
        )
        .expect("valid metric");
        let reconcile_runs = IntCounterVec::new(
            Opts::new(
                "wa_gateway_reconcile_runs_total",
                "Control-loop passes by result (ok, error).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "wa_gateway_config_reloads_total",
                "Configuration reloads attempted on a changed file, by result (ok, error).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let config_info = IntGaugeVec::new(
            Opts::new(
                "wa_gateway_config_info",
                "1 for the SHA-256 of the configuration file in force.",
            ),
            &["sha256"],
        )
        .expect("valid metric");
        let config_loaded_timestamp = IntGauge::new(
            "wa_gateway_config_loaded_timestamp_seconds",
            "When the configuration in force was loaded.",
        )
        .expect("valid metric");
        let tls_cert_expiry = IntGauge::new(
            "wa_gateway_tls_cert_expiry_timestamp_seconds",
            "notAfter of the certificate the webhook listener serves.",
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "wa_gateway_build_info",
                "1, labelled with the version and source revision of the running binary.",
            ),
            &["version", "revision"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                option_env!("WA_GATEWAY_REVISION").unwrap_or("unknown"),
            ])
            .set(1);
        let config_last_reload_successful = IntGauge::new(
            "wa_gateway_config_last_reload_successful",
            "1 when the last configuration reload applied or found nothing to change, 0 when it was refused.",
        )
        .expect("valid metric");
        config_last_reload_successful.set(1);
        let outbox_depth = IntGaugeVec::new(
            Opts::new(
                "wa_gateway_outbox_depth",
                "Replies queued and not yet accepted by Meta, by number (read from storage at scrape time).",
            ),
            &["phone_number_id"],
        )
        .expect("valid metric");
        let outbox_oldest_age = Gauge::new(
            "wa_gateway_outbox_oldest_age_seconds",
            "Age of the oldest reply queued and not yet accepted by Meta; 0 when none.",
        )
        .expect("valid metric");
        let number_last_activity = IntGaugeVec::new(
            Opts::new(
                "wa_gateway_number_last_activity_timestamp_seconds",
                "When the latest customer message to the number was stored.",
            ),
            &["phone_number_id"],
        )
        .expect("valid metric");
        let throttle_wait_seconds = CounterVec::new(
            Opts::new(
                "wa_gateway_send_throttle_wait_seconds_total",
                "Time sends waited on the per-number throughput and per-customer pacing limits.",
            ),
            &["phone_number_id"],
        )
        .expect("valid metric");
        let reconcile_drift = IntGauge::new(
            "wa_gateway_reconcile_drift",
            "Actions the reconciler's last plan holds; 0 when Meta matches the configuration.",
        )
        .expect("valid metric");
        let reconcile_actions = IntCounterVec::new(
            Opts::new(
                "wa_gateway_reconcile_actions_total",
                "Reconciler actions applied, by result.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let retention = RetentionMetrics::new();
        // The TLS gauge is registered only once TLS is configured, but it is defined all the same.
        let mut families = vec![tls_cert_expiry.desc()[0].fq_name.clone()];
        for c in [
            Box::new(webhooks.clone()) as Box<dyn Collector>,
            Box::new(webhook_ack_seconds.clone()),
            Box::new(messages_in.clone()),
            Box::new(messages_out.clone()),
            Box::new(agent_seconds.clone()),
            Box::new(meta_errors.clone()),
            Box::new(commit_batch_messages.clone()),
            Box::new(commit_seconds.clone()),
            Box::new(conversation_workers.clone()),
            Box::new(leader.clone()),
            Box::new(conversation_leases.clone()),
            Box::new(reply_seconds.clone()),
            Box::new(send_retries.clone()),
            Box::new(opt_outs.clone()),
            Box::new(opt_out_suppressed.clone()),
            Box::new(window_expired.clone()),
            Box::new(throttled.clone()),
            Box::new(agent_breaker_open.clone()),
            Box::new(number_status.clone()),
            Box::new(reconcile_runs.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_info.clone()),
            Box::new(config_loaded_timestamp.clone()),
            Box::new(build_info.clone()),
            Box::new(config_last_reload_successful.clone()),
            Box::new(outbox_depth.clone()),
            Box::new(outbox_oldest_age.clone()),
            Box::new(number_last_activity.clone()),
            Box::new(throttle_wait_seconds.clone()),
            Box::new(reconcile_drift.clone()),
            Box::new(reconcile_actions.clone()),
        ]
        .into_iter()
        .chain(retention.collectors())
        {
            families.extend(c.desc().iter().map(|d| d.fq_name.clone()));
            registry
                .register(c)
                .expect("each metric is registered once");
        }
        let http = HttpMetrics::new();
        for c in http.collectors() {
            families.extend(c.desc().iter().map(|d| d.fq_name.clone()));
            registry
                .register(c)
                .expect("each metric is registered once");
        }
        let bounds = BoundMetrics::new(&registry, &mut families);
        families.sort();
        Self {
            registry,
            families,
            webhooks,
            webhook_ack_seconds,
            messages_in,
            messages_out,
            agent_seconds,
            meta_errors,
            commit_batch_messages,
            commit_seconds,
            conversation_workers,
            leader,
            conversation_leases,
            reply_seconds,
            send_retries,
            opt_outs,
            opt_out_suppressed,
            window_expired,
            throttled,
            agent_breaker_open,
            number_status,
            reconcile_runs,
            config_reloads,
            config_info,
            config_loaded_timestamp,
            tls_cert_expiry,
            build_info,
            config_last_reload_successful,
            outbox_depth,
            outbox_oldest_age,
            number_last_activity,
            throttle_wait_seconds,
            reconcile_drift,
            reconcile_actions,
            http,
            retention,
            bounds,
        }
    }

    /// Sets the gauges that storage answers (outbox backlog, last activity per number) for the
    /// declared `numbers`; called at scrape time. On a storage error or after `timeout` the
    /// previous values stay and a warning is logged: /readyz reports storage trouble.
    pub async fn refresh_from_store(&self, store: &Store, numbers: &[String], timeout: Duration) {
        let read = async {
            let queued = store.queued_replies().await?;
            let oldest = store.oldest_queued_reply_at().await?;
            let mut last = Vec::with_capacity(numbers.len());
            for n in numbers {
                last.push((n, store.last_received_at(n).await?));
            }
            Ok::<_, crate::store::StoreError>((queued, oldest, last))
        };
        let (queued, oldest, last) = match tokio::time::timeout(timeout, read).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "metrics: storage gauges not refreshed");
                return;
            }
            Err(_) => {
                tracing::warn!(?timeout, "metrics: storage gauges not refreshed in time");
                return;
            }
        };
        // Reset so that numbers removed from the file stop being reported.
        self.outbox_depth.reset();
        for n in numbers {
            let depth = queued.get(n).copied().unwrap_or(0);
            self.outbox_depth.with_label_values(&[n]).set(depth);
        }
        let now_ms = crate::store::now_ms();
        self.outbox_oldest_age
            .set(oldest.map_or(0.0, |at| (now_ms - at).max(0) as f64 / 1000.0));
        self.number_last_activity.reset();
        for (n, at) in last {
            if let Some(at) = at {
                self.number_last_activity
                    .with_label_values(&[n])
                    .set(at / 1000);
            }
        }
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

/// Connection metrics of the HTTP listeners, by `endpoint` (webhook, admin).
#[derive(Clone)]
pub struct HttpMetrics {
    /// Connections open now (TLS handshakes included).
    pub connections_open: IntGaugeVec,
    /// Connections the gateway closed because a deadline passed, by endpoint and reason:
    /// handshake (TLS), header (silent or stopped inside its headers), idle (no request).
    pub connection_timeouts: IntCounterVec,
}

impl HttpMetrics {
    fn new() -> Self {
        Self {
            connections_open: IntGaugeVec::new(
                Opts::new(
                    "wa_gateway_http_connections_open",
                    "HTTP connections open now, by listener.",
                ),
                &["endpoint"],
            )
            .expect("valid metric"),
            connection_timeouts: IntCounterVec::new(
                Opts::new(
                    "wa_gateway_http_connection_timeouts_total",
                    "HTTP connections closed because a deadline passed, by listener and reason.",
                ),
                &["endpoint", "reason"],
            )
            .expect("valid metric"),
        }
    }

    fn collectors(&self) -> [Box<dyn Collector>; 2] {
        [
            Box::new(self.connections_open.clone()),
            Box::new(self.connection_timeouts.clone()),
        ]
    }
}

/// Storage retention's metrics (set by the pruner, on the leader).
#[derive(Clone)]
pub struct RetentionMetrics {
    /// Rows deleted by retention, by table (`seen_wamids` for forgotten wamid digests).
    pub pruned_rows: IntCounterVec,
    /// Age of each table's oldest row in seconds (0 when empty), after the last prune.
    pub oldest_row_age: GaugeVec,
    /// The database's size on disk, after the last prune.
    pub database_size: IntGauge,
    /// How long one prune batch held the group-commit writer.
    pub prune_batch_seconds: Histogram,
}

impl RetentionMetrics {
    fn new() -> Self {
        Self {
            pruned_rows: IntCounterVec::new(
                Opts::new(
                    "wa_gateway_store_pruned_rows_total",
                    "Rows deleted by storage retention, by table.",
                ),
                &["table"],
            )
            .expect("valid metric"),
            oldest_row_age: GaugeVec::new(
                Opts::new(
                    "wa_gateway_store_oldest_row_age_seconds",
                    "Age of the oldest row of a table after the last prune (0 when empty), by table.",
                ),
                &["table"],
            )
            .expect("valid metric"),
            database_size: IntGauge::new(
                "wa_gateway_store_database_size_bytes",
                "Size of the database on disk after the last prune (SQLite file, PostgreSQL database).",
            )
            .expect("valid metric"),
            prune_batch_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "wa_gateway_store_prune_batch_seconds",
                    "Time one prune batch held the group-commit writer.",
                )
                .buckets(latency_buckets()),
            )
            .expect("valid metric"),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.pruned_rows.clone()),
            Box::new(self.oldest_row_age.clone()),
            Box::new(self.database_size.clone()),
            Box::new(self.prune_batch_seconds.clone()),
        ]
    }
}
