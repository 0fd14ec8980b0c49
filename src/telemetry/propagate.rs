//! The W3C trace context across the message's path: a `traceparent` string carried with an
//! inbound message from the webhook's commit to its turn, sent to http agents and read back
//! from their `/media` calls, and the span of each send kept (by the callback data it carried)
//! for the status webhooks that settle it. Everything here is a no-op while tracing is off.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::{HashMap, VecDeque};
use std::sync::{LazyLock, Mutex};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// How many sends' spans are kept for their status webhooks; the oldest go first (a status
/// usually comes within seconds).
const BOOK_CAPACITY: usize = 65_536;

/// Recent entries by key, the oldest forgotten first; for the sends: the span of each, by the
/// callback data (`biz_opaque_callback_data`) each carried:
/// it is known before Meta answers, and Meta's `sent` status may come back before its answer.
struct Book<K, V> {
    by_key: HashMap<K, V>,
    order: VecDeque<K>,
}

impl<K, V> Default for Book<K, V> {
    fn default() -> Self {
        Self {
            by_key: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, V> Book<K, V> {
    /// Keeps `value` under `key`, forgetting the oldest beyond [`BOOK_CAPACITY`].
    fn keep(&mut self, key: K, value: V) {
        if self.by_key.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > BOOK_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.by_key.remove(&old);
            }
        }
    }

    /// The value kept under `key`, taken (its place in the order is forgotten when it comes
    /// up for eviction).
    fn take<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.by_key.remove(key)
    }
}

static SENT: LazyLock<Mutex<Book<String, SpanContext>>> = LazyLock::new(Mutex::default);

/// The `traceparent` of committed inbound rows by id, until their turn takes it: a row can
/// reach its turn read back from storage (the backlog at start), which does not keep it.
static INBOUND: LazyLock<Mutex<Book<i64, String>>> = LazyLock::new(Mutex::default);

/// Whether spans may name the customer (`telemetry.include_customer`).
pub fn customer_allowed() -> bool {
    super::INCLUDE_CUSTOMER.load(std::sync::atomic::Ordering::Relaxed)
}

/// The sampled OpenTelemetry context of `span`, if it has one.
fn sampled(span: &tracing::Span) -> Option<SpanContext> {
    if !super::enabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled()).then_some(sc)
}

/// The current span's W3C `traceparent` (`00-<trace id>-<span id>-01`) when it is sampled.
pub fn traceparent() -> Option<String> {
    let span = tracing::Span::current();
    sampled(&span)?;
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
}

/// The remote context a `traceparent` names.
fn remote(traceparent: &str) -> opentelemetry::Context {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// Makes the span that `traceparent` names the parent of `span` (which must not have been
/// entered yet), and records the trace id on it for the log lines.
pub fn set_parent_from(span: &tracing::Span, traceparent: Option<&str>) {
    if !super::enabled() {
        return;
    }
    if let Some(tp) = traceparent {
        let _ = span.set_parent(remote(tp));
    }
    record_trace_id(span);
}

/// Makes the caller's span, named by the request's `traceparent` header, the parent of `span`.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &reqwest::header::HeaderMap) {
    if !super::enabled() {
        return;
    }
    if headers.contains_key("traceparent") {
        let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let _ = span.set_parent(cx);
    }
    record_trace_id(span);
}

/// Adds the current span's `traceparent` to an outgoing request's headers.
pub fn inject(headers: &mut reqwest::header::HeaderMap) {
    if !super::enabled() {
        return;
    }
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}

/// Links `span` (not entered yet) to the span `traceparent` names: the group commit links to
/// each message it commits.
pub fn link_to(span: &tracing::Span, traceparent: &str) {
    if !super::enabled() {
        return;
    }
    span.add_link(remote(traceparent).span().span_context().clone());
}

/// Records `trace_id` (declared `Empty` on the span) when the span is sampled, so the log
/// lines inside it carry it.
pub fn record_trace_id(span: &tracing::Span) {
    if let Some(sc) = sampled(span) {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
    }
}

/// Keeps `span` as the one sending the message with callback data `callback`, for its status
/// webhooks.
pub fn remember_send(span: &tracing::Span, callback: &str) {
    let Some(sc) = sampled(span) else {
        return;
    };
    let mut book = SENT.lock().unwrap_or_else(|e| e.into_inner());
    book.keep(callback.to_owned(), sc);
}

/// Records a status webhook for `wamid` (committed; its send carried `callback`) as a span of
/// the trace of the send it settles, a child of that send's span, linked to the webhook's own
/// span (the current one).
pub fn settled(callback: &str, wamid: &str, status: &str) {
    let Some(sent) = sent_context(callback) else {
        return;
    };
    let webhook = sampled(&tracing::Span::current());
    let span = tracing::info_span!(
        parent: None,
        "status",
        otel.name = %format_args!("whatsapp status {status}"),
        otel.kind = "consumer",
        messaging.system = "whatsapp",
        messaging.operation.type = "receive",
        messaging.operation.name = "status",
        messaging.message.id = wamid,
        whatsapp.status = status,
        trace_id = tracing::field::Empty,
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sent));
    if let Some(webhook) = webhook {
        span.add_link(webhook);
    }
    record_trace_id(&span);
    if matches!(status, "read" | "failed") {
        // Nothing settles it further.
        let mut book = SENT.lock().unwrap_or_else(|e| e.into_inner());
        book.take(callback);
    }
}

/// The span that sent the message with callback data `callback`, if it is still known.
pub fn sent_context(callback: &str) -> Option<SpanContext> {
    if !super::enabled() {
        return None;
    }
    let book = SENT.lock().unwrap_or_else(|e| e.into_inner());
    book.by_key.get(callback).cloned()
}

/// Keeps the `traceparent` of committed inbound row `id` for its turn.
pub fn keep_inbound(id: i64, traceparent: &str) {
    let mut book = INBOUND.lock().unwrap_or_else(|e| e.into_inner());
    book.keep(id, traceparent.to_owned());
}

/// The `traceparent` kept for inbound row `id`, taken.
pub fn take_inbound(id: i64) -> Option<String> {
    if !super::enabled() {
        return None;
    }
    let mut book = INBOUND.lock().unwrap_or_else(|e| e.into_inner());
    book.take(&id)
}
