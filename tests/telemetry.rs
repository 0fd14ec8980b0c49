//! OpenTelemetry tracing end to end: an OTLP/HTTP receiver on 127.0.0.1 (decoding
//! `ExportTraceServiceRequest` with the `opentelemetry-proto` types) gets one customer
//! message's spans, from its webhook to the status that settles the reply, in one trace with the
//! right parents; the http agent receives a `traceparent` of that trace; no customer id is in
//! any span; after a reload to `sample_ratio: 0` no span is sent, and with `include_customer`
//! the turn names the customer. With the `grpc` feature (on by default), a gRPC receiver
//! (tonic's generated `TraceService` server) gets a message's trace over `protocol: grpc`.
//!
//! The tracer provider and the subscriber are the process's: the tests take turns (`SERIAL`).

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const CUSTOMER: &str = "919870000001";

type Spans = Arc<Mutex<Vec<Span>>>;

/// Held by a test for its whole run: each one puts its own exporter in force.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The log lines written, in memory.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The process's subscriber, installed by the first test to ask; its JSON lines, in memory.
fn subscriber() -> Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = tracing_subscriber::fmt::writer::BoxMakeWriter::new(logs.clone());
        let filter = "warn,wa_gateway=info,wa_gateway::outbox=debug"
            .parse()
            .unwrap();
        wa_gateway::telemetry::init_subscriber_with(true, filter, writer).unwrap();
        logs
    })
    .clone()
}

/// Serves `app` on a free port of 127.0.0.1.
async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Keeps every span of an export.
fn keep(spans: &Spans, request: ExportTraceServiceRequest) {
    let mut all = spans.lock().unwrap();
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            all.extend(scope.spans);
        }
    }
}

/// An OTLP/HTTP collector: every span of every export, decoded.
async fn collector() -> (String, Spans) {
    async fn export(State(spans): State<Spans>, body: Bytes) -> &'static str {
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
        keep(&spans, request);
        ""
    }
    let spans: Spans = Arc::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(export))
        .with_state(spans.clone());
    (format!("http://{}", serve(app).await), spans)
}

/// An http agent that answers `hello back` and keeps the `traceparent` of each call.
async fn agent() -> (String, Arc<Mutex<Vec<String>>>) {
    type Seen = Arc<Mutex<Vec<String>>>;
    async fn reply(State(seen): State<Seen>, headers: HeaderMap) -> axum::Json<serde_json::Value> {
        let tp = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        seen.lock().unwrap().push(tp.to_owned());
        axum::Json(serde_json::json!({ "reply": "hello back" }))
    }
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/reply", post(reply))
        .with_state(seen.clone());
    (format!("http://{}/reply", serve(app).await), seen)
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let kv = span.attributes.iter().find(|kv| kv.key == key)?;
    match kv.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        AnyValue::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

fn named<'a>(spans: &'a [Span], name: &str, trace: &[u8]) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name && s.trace_id == trace)
        .unwrap_or_else(|| panic!("no span {name:?} in the message's trace"))
}

/// The spans of one message's trace, the turn's: webhook, commit, agent call, send, and the
/// `sent` and `delivered` statuses that settle the reply.
const TRACE: [&str; 7] = [
    "POST /webhook",
    "inbox commit",
    "turn",
    "agent call",
    "POST /messages",
    "whatsapp status sent",
    "whatsapp status delivered",
];

/// Whether every span of [`TRACE`] has arrived in the turn's trace. A span is exported when it
/// ends, and the webhook's may end after the others.
fn whole_trace(spans: &[Span]) -> bool {
    let Some(turn) = spans.iter().find(|s| s.name == "turn") else {
        return false;
    };
    let traced = |name: &str| {
        spans
            .iter()
            .any(|s| s.name == name && s.trace_id == turn.trace_id)
    };
    TRACE.iter().all(|n| traced(n))
}

/// Checks the parents, kinds and attributes of the message's trace (the first turn's); returns
/// its turn, webhook and agent call spans.
fn check_trace(all: &[Span]) -> (&Span, &Span, &Span) {
    let turn = all.iter().find(|s| s.name == "turn").expect("a turn span");
    let trace = &turn.trace_id;
    let webhook = named(all, "POST /webhook", trace);
    assert!(webhook.parent_span_id.is_empty(), "the webhook is the root");
    assert_eq!(webhook.kind, SpanKind::Server as i32);
    assert_eq!(
        attr(webhook, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        attr(webhook, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        turn.parent_span_id, webhook.span_id,
        "the turn is the webhook's child"
    );
    assert_eq!(turn.kind, SpanKind::Consumer as i32);
    assert_eq!(attr(turn, "messaging.system").as_deref(), Some("whatsapp"));
    let commit = named(all, "inbox commit", trace);
    assert_eq!(commit.parent_span_id, webhook.span_id);
    let call = named(all, "agent call", trace);
    assert_eq!(call.parent_span_id, turn.span_id);
    assert_eq!(call.kind, SpanKind::Client as i32);
    let send = named(all, "POST /messages", trace);
    assert_eq!(send.parent_span_id, turn.span_id);
    assert_eq!(send.kind, SpanKind::Client as i32);
    let status = named(all, "whatsapp status delivered", trace);
    assert_eq!(
        status.parent_span_id, send.span_id,
        "the status settles the send"
    );
    assert_eq!(
        attr(status, "messaging.message.id"),
        attr(send, "messaging.message.id")
    );
    assert!(
        status.links.iter().any(|l| &l.trace_id != trace),
        "the status span links to the webhook that brought it"
    );
    (turn, webhook, call)
}

/// Exports what the batch processor holds (it blocks: off the runtime's workers).
async fn flush() {
    tokio::task::spawn_blocking(wa_gateway::telemetry::flush)
        .await
        .unwrap();
}

/// The spans received so far, once `done` holds for them (flushing while waiting).
async fn spans_when(spans: &Spans, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
    let ok = wait_until(WAIT, || async {
        flush().await;
        done(&spans.lock().unwrap())
    })
    .await;
    let all = spans.lock().unwrap().clone();
    let hex = |b: &[u8]| {
        b.iter()
            .take(4)
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };
    let got: Vec<String> = all
        .iter()
        .map(|s| {
            format!(
                "{} trace {} span {} parent {}",
                s.name,
                hex(&s.trace_id),
                hex(&s.span_id),
                hex(&s.parent_span_id)
            )
        })
        .collect();
    assert!(
        ok,
        "the spans expected did not arrive; got\n{}",
        got.join("\n")
    );
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_one_trace_from_webhook_to_settled_status() {
    let logs = subscriber();
    let _turn = SERIAL.lock().await;
    logs.0.lock().unwrap().clear();
    let (endpoint, spans) = collector().await;
    let (agent_url, traceparents) = agent().await;
    let opts = Options {
        agents: format!("  rec: {{ kind: http, url: \"{agent_url}\", timeout: 5s }}\n"),
        extra: format!(
            "{}telemetry:\n  otlp: {{ endpoint: \"{endpoint}\", protocol: http, sample_ratio: 1.0 }}\n",
            Options::default().extra
        ),
        ..Options::default()
    };
    // Started from its file, so a reload can change the ratio.
    let Some(storage) = storage(Db::Sqlite).await else {
        return;
    };
    let path = storage.dir.path().join("gateway.yaml");
    std::fs::write(&path, config_yaml(&storage.url, &opts, "rec")).unwrap();
    let t = start_from_file(storage, path).await;
    t.emu.customer_says(PNID, CUSTOMER, "R", "hello").await;
    let delivered = "SELECT COUNT(*) FROM outbox WHERE state IN ('delivered', 'read')";
    assert!(
        t.wait_count(delivered, 1, WAIT).await,
        "the reply is delivered"
    );
    // The emulator sends `sent`, then `delivered`: both settle the reply. A span is exported
    // when it ends, and the webhook's may end after the others.
    let all = spans_when(&spans, |s| {
        whole_trace(s) && s.iter().any(|s| s.name == "group commit")
    })
    .await;
    let (turn, webhook, call) = check_trace(&all);
    let trace = turn.trace_id.clone();
    // The group commit is a span of its own, linked to the webhook of each message it holds.
    assert!(
        all.iter()
            .any(|s| s.name == "group commit"
                && s.links.iter().any(|l| l.span_id == webhook.span_id)),
        "a group commit links to the message's webhook"
    );
    // The agent got the context of its call's span.
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let sent = traceparents.lock().unwrap().clone();
    assert_eq!(
        sent,
        [format!("00-{}-{}-01", hex(&trace), hex(&call.span_id))]
    );
    // The agent calling back `/media` with that `traceparent` puts the download in the trace
    // (the media id is unknown to Meta: the span is what counts, not the answer).
    let media = t
        .http
        .get(format!("http://{}/media/{PNID}/1234", t.gw().admin_addr))
        .header("traceparent", &sent[0])
        .send()
        .await
        .unwrap();
    assert!(!media.status().is_success());
    let all = spans_when(&spans, |s| s.iter().any(|s| s.name == "GET /media")).await;
    let download = named(&all, "GET /media", &trace);
    assert_eq!(
        download.parent_span_id, call.span_id,
        "the download is the agent call's"
    );
    assert_eq!(download.kind, SpanKind::Server as i32);
    // The JSON log lines inside the trace carry its id.
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("reply accepted by Meta"))
        .unwrap_or_else(|| panic!("no log line of the send in:\n{text}"));
    let log: serde_json::Value = serde_json::from_str(line).unwrap();
    let ids: Vec<&str> = log["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["trace_id"].as_str())
        .collect();
    assert_eq!(ids, [hex(&trace)], "{line}");
    // No customer identifier without `include_customer`.
    for s in &all {
        for kv in &s.attributes {
            let v = attr(s, &kv.key).unwrap_or_default();
            assert!(
                !v.contains(CUSTOMER),
                "{} carries the customer in {}",
                s.name,
                kv.key
            );
        }
    }

    // Sampling at 0, by a reload: the next message sends no span at all.
    t.reload_with(|y| y.replace("sample_ratio: 1.0", "sample_ratio: 0"))
        .await;
    flush().await;
    spans.lock().unwrap().clear();
    t.emu.customer_says(PNID, CUSTOMER, "R", "again").await;
    assert!(
        t.wait_count(delivered, 2, WAIT).await,
        "the second reply is delivered"
    );
    assert_eq!(traceparents.lock().unwrap().len(), 2);
    flush().await;
    let names: Vec<String> = spans
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert!(names.is_empty(), "spans sent at sample_ratio 0: {names:?}");

    // `include_customer: true` (and sampling back at 1): the turn names the customer.
    t.reload_with(|y| {
        y.replace("sample_ratio: 0", "sample_ratio: 1.0")
            .replace("telemetry:\n", "telemetry:\n  include_customer: true\n")
    })
    .await;
    t.emu.customer_says(PNID, CUSTOMER, "R", "third").await;
    let all = spans_when(&spans, |s| s.iter().any(|s| s.name == "turn")).await;
    let turn = all.iter().find(|s| s.name == "turn").unwrap();
    assert_eq!(attr(turn, "whatsapp.customer").as_deref(), Some(CUSTOMER));
}

/// An OTLP/gRPC collector: tonic's generated `TraceService` server, over HTTP/2 without TLS as
/// a collector listens on 4317; it keeps every span and each export's `x-api-key` metadata.
#[cfg(feature = "grpc")]
mod grpc {
    use super::{Arc, ExportTraceServiceRequest, Mutex, Spans, keep, serve};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };

    pub type Keys = Arc<Mutex<Vec<String>>>;

    struct Receiver {
        spans: Spans,
        keys: Keys,
    }

    #[tonic::async_trait]
    impl TraceService for Receiver {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let key = request.metadata().get("x-api-key");
            let key = key.and_then(|v| v.to_str().ok()).unwrap_or("none");
            self.keys.lock().unwrap().push(key.to_owned());
            keep(&self.spans, request.into_inner());
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    pub async fn collector() -> (String, Spans, Keys) {
        let spans = Spans::default();
        let keys = Keys::default();
        let receiver = Receiver {
            spans: spans.clone(),
            keys: keys.clone(),
        };
        let app = axum::Router::new().fallback_service(TraceServiceServer::new(receiver));
        (format!("http://{}", serve(app).await), spans, keys)
    }
}

/// `protocol: grpc`: a message's spans reach a gRPC collector, one trace with the same parents
/// as over HTTP, and every export carries the configured header as gRPC metadata.
#[cfg(feature = "grpc")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_one_trace_over_grpc() {
    subscriber();
    let _turn = SERIAL.lock().await;
    let (endpoint, spans, keys) = grpc::collector().await;
    let telemetry = format!(
        "telemetry:\n  otlp: {{ endpoint: \"{endpoint}\", protocol: grpc, headers: {{ x-api-key: {{ value: k-grpc }} }} }}\n"
    );
    let opts = Options {
        extra: format!("{}{telemetry}", Options::default().extra),
        ..Options::default()
    };
    let t = spawn_gateway(Db::Sqlite, opts)
        .await
        .expect("SQLite needs no part");
    t.emu.customer_says(PNID, CUSTOMER, "R", "hello").await;
    let all = spans_when(&spans, whole_trace).await;
    check_trace(&all);
    let keys = keys.lock().unwrap().clone();
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| k == "k-grpc"), "{keys:?}");
}
