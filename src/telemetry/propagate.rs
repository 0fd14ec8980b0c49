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
const SENT_CAPACITY: usize = 65_536;

/// The span of recent sends, by the callback data (`biz_opaque_callback_data`) each carried:
/// it is known before Meta answers, and Meta's `sent` status may come back before its answer.
#[derive(Default)]
struct SentBook {
    by_callback: HashMap<String, SpanContext>,
    order: VecDeque<String>,
}

static SENT: LazyLock<Mutex<SentBook>> = LazyLock::new(Mutex::default);

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
    let sc = sampled(&tracing::Span::current())?;
    Some(format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    ))
}

/// Makes the span that `traceparent` names the parent of `span` (which must not have been
/// entered yet), and records the trace id on it for the log lines.
pub fn set_parent_from(span: &tracing::Span, traceparent: Option<&str>) {
    if !super::enabled() {
        return;
    }
    if let Some(tp) = traceparent {
        let carrier = HashMap::from([("traceparent".to_owned(), tp.to_owned())]);
        let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
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
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    span.add_link(cx.span().span_context().clone());
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
    if book.by_callback.insert(callback.to_owned(), sc).is_none() {
        book.order.push_back(callback.to_owned());
    }
    while book.order.len() > SENT_CAPACITY {
        if let Some(old) = book.order.pop_front() {
            book.by_callback.remove(&old);
        }
    }
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
        book.by_callback.remove(callback);
    }
}

/// The span that sent the message with callback data `callback`, if it is still known.
pub fn sent_context(callback: &str) -> Option<SpanContext> {
    if !super::enabled() {
        return None;
    }
    let book = SENT.lock().unwrap_or_else(|e| e.into_inner());
    book.by_callback.get(callback).cloned()
}
