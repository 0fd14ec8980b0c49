//! The OTLP exporter and the parts of the one tracer provider that a reload swaps: the span
//! processor (which exporter the spans go to) and the sampler (which share of traces is kept).
//! HTTP/protobuf goes through the gateway's own reqwest client, run on the Tokio runtime, since
//! the SDK's batch processor exports from a thread of its own.

use crate::config::telemetry::{Otlp, OtlpProtocol};
use arc_swap::ArcSwapOption;
use opentelemetry::Context;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SamplingDecision, SamplingResult, ShouldSample, Span, SpanData,
    SpanProcessor,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long one export may take, connection included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an exporter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("OTLP exporter: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("OTLP exporter: {0}")]
    Client(String),
    #[error("telemetry.otlp.protocol: grpc needs a binary built with the `grpc` feature")]
    NoGrpc,
}

/// The OTLP/HTTP client: the gateway's reqwest, each request run on the Tokio runtime.
#[derive(Debug)]
struct TokioReqwest {
    http: reqwest::Client,
    rt: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for TokioReqwest {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let http = self.http.clone();
        let request = reqwest::Request::try_from(request)?;
        let task = self.rt.spawn(async move {
            let answer = http.execute(request).await?;
            let mut response = Response::builder().status(answer.status());
            if let Some(headers) = response.headers_mut() {
                *headers = answer.headers().clone();
            }
            Ok::<_, HttpError>(response.body(answer.bytes().await?)?)
        });
        task.await?
    }
}

/// The traces URL for `endpoint`: `/v1/traces` is added to a URL with no path, as the OTLP
/// specification does for a base endpoint.
pub fn traces_url(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(url) if url.path() == "/" || url.path().is_empty() => {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        }
        _ => endpoint.to_owned(),
    }
}

/// Builds the exporter `otlp` describes; must run inside the Tokio runtime.
pub fn exporter(otlp: &Otlp) -> Result<SpanExporter, ExportError> {
    let headers: HashMap<String, String> = otlp
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_owned()))
        .collect();
    match otlp.protocol {
        OtlpProtocol::Http => {
            let http = reqwest::Client::builder()
                .timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|e| ExportError::Client(e.to_string()))?;
            let client = TokioReqwest {
                http,
                rt: tokio::runtime::Handle::current(),
            };
            Ok(SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_endpoint(traces_url(&otlp.endpoint))
                .with_headers(headers)
                .with_timeout(EXPORT_TIMEOUT)
                .build()?)
        }
        OtlpProtocol::Grpc => grpc(otlp, headers),
    }
}

#[cfg(feature = "grpc")]
fn grpc(otlp: &Otlp, headers: HashMap<String, String>) -> Result<SpanExporter, ExportError> {
    use opentelemetry_otlp::WithTonicConfig;
    use opentelemetry_otlp::tonic_types::{metadata::MetadataMap, transport::ClientTlsConfig};
    let mut map = reqwest::header::HeaderMap::new();
    for (k, v) in headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| ExportError::Client(e.to_string()))?;
        let value = reqwest::header::HeaderValue::from_str(&v)
            .map_err(|e| ExportError::Client(format!("header {k}: {e}")))?;
        map.insert(name, value);
    }
    let mut builder = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(otlp.endpoint.clone())
        .with_metadata(MetadataMap::from_headers(map))
        .with_timeout(EXPORT_TIMEOUT);
    if otlp.endpoint.starts_with("https:") {
        builder = builder.with_tls_config(ClientTlsConfig::new().with_webpki_roots());
    }
    Ok(builder.build()?)
}

#[cfg(not(feature = "grpc"))]
fn grpc(_: &Otlp, _: HashMap<String, String>) -> Result<SpanExporter, ExportError> {
    Err(ExportError::NoGrpc)
}

/// The provider's one span processor: hands ended spans to the batch processor of the exporter
/// in force, or drops them when tracing is off.
#[derive(Debug, Clone, Default)]
pub struct Swap {
    inner: Arc<ArcSwapOption<BatchSpanProcessor>>,
}

impl Swap {
    /// Puts a batch processor over `exporter` in force (or none), and returns the one it
    /// replaces, for the caller to flush and shut down.
    pub fn replace(
        &self,
        exporter: Option<SpanExporter>,
        resource: &Resource,
    ) -> Option<Arc<BatchSpanProcessor>> {
        let next = exporter.map(|e| {
            let mut processor = BatchSpanProcessor::builder(e).build();
            processor.set_resource(resource);
            Arc::new(processor)
        });
        self.inner.swap(next)
    }
}

impl SpanProcessor for Swap {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if let Some(p) = self.inner.load().as_ref() {
            p.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        match self.inner.load().as_ref() {
            Some(p) => p.force_flush(),
            None => Ok(()),
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        match self.inner.swap(None) {
            Some(p) => p.shutdown_with_timeout(timeout),
            None => Ok(()),
        }
    }
}

/// The sampler: a trace is kept or dropped at its root, by its id, with the ratio in force;
/// a span with a parent follows the parent's decision (W3C `sampled` flag).
#[derive(Debug, Clone, Default)]
pub struct Ratio {
    bits: Arc<AtomicU64>,
}

impl Ratio {
    /// Sets the share of traces kept, 0 to 1.
    pub fn set(&self, ratio: f64) {
        self.bits.store(ratio.to_bits(), Ordering::Relaxed);
    }
}

impl ShouldSample for Ratio {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        if let Some(parent) = parent_context.filter(|cx| cx.has_active_span()) {
            let span = parent.span();
            let sc = span.span_context();
            if sc.is_valid() {
                return SamplingResult {
                    decision: if sc.is_sampled() {
                        SamplingDecision::RecordAndSample
                    } else {
                        SamplingDecision::Drop
                    },
                    attributes: Vec::new(),
                    trace_state: sc.trace_state().clone(),
                };
            }
        }
        let ratio = f64::from_bits(self.bits.load(Ordering::Relaxed));
        Sampler::TraceIdRatioBased(ratio).should_sample(
            parent_context,
            trace_id,
            name,
            span_kind,
            attributes,
            links,
        )
    }
}
