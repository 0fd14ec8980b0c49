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
/// The log lines' filter lets `info` through for some target, so an `info` span may show in
/// them (as the current span of a line); set when the subscriber is installed.
static LINES_SHOW_INFO: AtomicBool = AtomicBool::new(true);

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

/// The span `make` builds while anything could see it (tracing is on, or the log lines show
/// `info` spans), else none: the spans that frame a message's path (a webhook, a turn) cost
/// nothing with tracing off and the log at `warn`, as in production at load.
pub fn span_if_seen(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if enabled() || LINES_SHOW_INFO.load(Ordering::Relaxed) {
        make()
    } else {
        tracing::Span::none()
    }
}

/// Whether log lines filtered by `filter` may show an `info` span.
fn shows_info(filter: &EnvFilter) -> bool {
    filter
        .max_level_hint()
        .is_none_or(|most| most >= LevelFilter::INFO)
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
    let shows_info = shows_info(&filter);
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
        .try_init()?;
    LINES_SHOW_INFO.store(shows_info, Ordering::Relaxed);
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_that_frames_the_path_is_made_only_when_something_could_see_it() {
        let shows = |directives: &str| shows_info(&EnvFilter::new(directives));
        assert!(!shows("warn"));
        assert!(!shows("error,hyper=warn"));
        assert!(!shows("off"));
        assert!(shows("info"));
        assert!(shows("warn,wa_gateway::pipeline=debug"));
        assert!(shows("trace"));

        let made = || span_if_seen(|| tracing::info_span!("turn"));
        LINES_SHOW_INFO.store(false, Ordering::Relaxed);
        assert!(!enabled());
        assert!(made().is_none(), "tracing off and the log at warn");
        ENABLED.store(true, Ordering::Relaxed);
        assert!(!made().is_none(), "tracing on");
        ENABLED.store(false, Ordering::Relaxed);
        LINES_SHOW_INFO.store(true, Ordering::Relaxed);
        assert!(!made().is_none(), "the log lines show info spans");
    }
}
