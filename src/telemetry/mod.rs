//! OpenTelemetry tracing: the process's `tracing` subscriber (log lines, and the layer that
//! turns the gateway's spans into OpenTelemetry spans), the one tracer provider whose exporter
//! and sampler `telemetry.otlp` sets and a reload swaps (`export.rs`), and the W3C trace
//! context carried across the writer, the pipeline, agents and status webhooks (`propagate.rs`).
//!
//! Only spans of this crate at `info` or above are exported, and only while `telemetry.otlp` is
//! set: with it absent the layer sees no span at all.

use crate::config::telemetry::Telemetry;
use export::{ExportError, Ratio, Swap};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::DynFilterFn;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub mod export;
pub mod propagate;

pub use propagate::{
    customer_allowed, inject, keep_inbound, link_to, record_trace_id, remember_send, sent_context,
    set_parent_from, set_parent_from_headers, take_inbound, traceparent,
};

/// The target prefix of the spans exported: the gateway's own.
const TARGET: &str = "wa_gateway";

/// Tracing is on (`telemetry.otlp` set): the layer sees the gateway's spans.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// `telemetry.include_customer`.
static INCLUDE_CUSTOMER: AtomicBool = AtomicBool::new(false);

/// The one tracer provider and the parts of it a reload swaps.
struct Tracing {
    provider: SdkTracerProvider,
    swap: Swap,
    ratio: Ratio,
    resource: Resource,
    /// The settings in force, to tell a reload that changes them from one that does not.
    current: Mutex<Telemetry>,
}

static TRACING: LazyLock<Tracing> = LazyLock::new(|| {
    let swap = Swap::default();
    let ratio = Ratio::default();
    let resource = Resource::builder()
        .with_service_name("wa-gateway")
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(swap.clone())
        .with_sampler(ratio.clone())
        .with_resource(resource.clone())
        .build();
    Tracing {
        provider,
        swap,
        ratio,
        resource,
        current: Mutex::new(Telemetry::default()),
    }
});

/// Whether tracing is on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The span `make` builds while tracing is on, else none: the spans made only for tracing (a
/// commit's wait, an agent call, a send) cost nothing on the message path while it is off.
pub fn span_if_on(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if enabled() {
        make()
    } else {
        tracing::Span::none()
    }
}

/// Installs the process's subscriber: log lines on stderr filtered by `filter` (JSON lines
/// unless `json` is false) and the OpenTelemetry layer, which sees spans only while tracing is
/// on. Fails when a subscriber is installed already.
pub fn init_subscriber(
    json: bool,
    filter: EnvFilter,
) -> Result<(), tracing_subscriber::util::TryInitError> {
    init_subscriber_with(json, filter, BoxMakeWriter::new(std::io::stderr))
}

/// As [`init_subscriber`], the log lines written to `writer` (a test reads them back).
pub fn init_subscriber_with(
    json: bool,
    filter: EnvFilter,
    writer: BoxMakeWriter,
) -> Result<(), tracing_subscriber::util::TryInitError> {
    let tracer = TRACING.provider.tracer("wa-gateway");
    let exported = DynFilterFn::new(|meta, _| {
        enabled() && meta.target().starts_with(TARGET) && *meta.level() <= tracing::Level::INFO
    })
    .with_callsite_filter(|meta| {
        // Decided once per callsite: other crates' spans and debug events never reach it.
        if meta.target().starts_with(TARGET) && *meta.level() <= tracing::Level::INFO {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    })
    .with_max_level_hint(LevelFilter::INFO);
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_filter(exported);
    let lines = if json {
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_filter(filter)
            .boxed()
    };
    tracing_subscriber::registry()
        .with(otel)
        .with(lines)
        .try_init()
}

/// New telemetry settings, built and ready to put in force (`commit`); building them is what
/// can fail, so a reload that cannot build them changes nothing.
pub struct Prepared {
    settings: Telemetry,
    /// `None` when the settings are those in force.
    exporter: Option<Option<opentelemetry_otlp::SpanExporter>>,
}

/// Builds the exporter `settings` name if they differ from those in force. Runs inside the
/// Tokio runtime, whose handle the HTTP exporter keeps.
pub fn prepare(settings: &Telemetry) -> Result<Prepared, ExportError> {
    let same = TRACING
        .current
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .same_as(settings);
    let exporter = if same {
        None
    } else {
        Some(settings.otlp.as_ref().map(export::exporter).transpose()?)
    };
    Ok(Prepared {
        settings: settings.clone(),
        exporter,
    })
}

impl Prepared {
    /// Puts the settings in force; the exporter they replace sends what it holds and stops,
    /// off the caller's thread.
    pub fn commit(self) {
        INCLUDE_CUSTOMER.store(self.settings.include_customer, Ordering::Relaxed);
        let Some(exporter) = self.exporter else {
            return;
        };
        let t = &*TRACING;
        let ratio = self.settings.otlp.as_ref().map_or(0.0, |o| o.sample_ratio);
        t.ratio.set(ratio);
        let on = exporter.is_some();
        if let Some(old) = t.swap.replace(exporter, &t.resource) {
            retire(old);
        }
        ENABLED.store(on, Ordering::Relaxed);
        if let Some(otlp) = &self.settings.otlp {
            tracing::info!(
                endpoint = %export::traces_url(&otlp.endpoint),
                protocol = otlp.protocol.as_str(),
                sample_ratio = otlp.sample_ratio,
                "OpenTelemetry tracing on"
            );
        }
        *t.current.lock().unwrap_or_else(|e| e.into_inner()) = self.settings;
    }
}

/// Flushes and stops a replaced batch processor on a thread of its own: its shutdown waits
/// for the last export.
fn retire(old: Arc<BatchSpanProcessor>) {
    let _ = std::thread::Builder::new()
        .name("otel-retire".into())
        .spawn(move || {
            use opentelemetry_sdk::trace::SpanProcessor;
            if let Err(e) = old.shutdown() {
                tracing::debug!(error = %e, "the replaced OTLP exporter did not stop cleanly");
            }
        });
}

/// Exports the spans still held (at shutdown). Blocks up to the export timeout.
pub fn flush() {
    use opentelemetry_sdk::trace::SpanProcessor;
    if enabled() {
        let _ = TRACING.swap.force_flush();
    }
}
