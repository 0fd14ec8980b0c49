//! Every Prometheus metric the gateway exports, defined in one place and registered on one
//! registry held by the app state. Labels are bounded: never a customer identifier.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The gateway's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
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
    /// Changes the control loop made at Meta.
    pub reconcile_applied: IntCounter,
    /// Changes still pending after the latest pass (the drift from the file).
    pub reconcile_pending: IntGauge,
    /// Configuration reloads by result: ok, error (unchanged files count as neither).
    pub config_reloads: IntCounterVec,
    /// 1 for the SHA-256 of the configuration file in force.
    pub config_info: IntGaugeVec,
    /// When the configuration in force was loaded, Unix seconds.
    pub config_loaded_timestamp: IntGauge,
    /// The served TLS certificate's notAfter, Unix seconds (absent without TLS).
    pub tls_cert_expiry: IntGauge,
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
        let reconcile_applied = IntCounter::new(
            "wa_gateway_reconcile_applied_total",
            "Changes the control loop made at Meta.",
        )
        .expect("valid metric");
        let reconcile_pending = IntGauge::new(
            "wa_gateway_reconcile_pending_actions",
            "Changes still pending after the latest control-loop pass (drift from the file).",
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
        for c in [
            Box::new(webhooks.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(webhook_ack_seconds.clone()),
            Box::new(messages_in.clone()),
            Box::new(messages_out.clone()),
            Box::new(agent_seconds.clone()),
            Box::new(meta_errors.clone()),
            Box::new(commit_batch_messages.clone()),
            Box::new(commit_seconds.clone()),
            Box::new(conversation_workers.clone()),
            Box::new(reply_seconds.clone()),
            Box::new(send_retries.clone()),
            Box::new(opt_outs.clone()),
            Box::new(opt_out_suppressed.clone()),
            Box::new(window_expired.clone()),
            Box::new(throttled.clone()),
            Box::new(agent_breaker_open.clone()),
            Box::new(number_status.clone()),
            Box::new(reconcile_runs.clone()),
            Box::new(reconcile_applied.clone()),
            Box::new(reconcile_pending.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_info.clone()),
            Box::new(config_loaded_timestamp.clone()),
        ] {
            registry
                .register(c)
                .expect("each metric is registered once");
        }
        Self {
            registry,
            webhooks,
            webhook_ack_seconds,
            messages_in,
            messages_out,
            agent_seconds,
            meta_errors,
            commit_batch_messages,
            commit_seconds,
            conversation_workers,
            reply_seconds,
            send_retries,
            opt_outs,
            opt_out_suppressed,
            window_expired,
            throttled,
            agent_breaker_open,
            number_status,
            reconcile_runs,
            reconcile_applied,
            reconcile_pending,
            config_reloads,
            config_info,
            config_loaded_timestamp,
            tls_cert_expiry,
        }
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
