//! `telemetry`: OpenTelemetry tracing settings (the OTLP exporter, its sampling, whether spans
//! may name the customer) and their checks. Off when `telemetry.otlp` is absent; `app::reload`
//! swaps the exporter and sampler when they change.

use super::error::Issue;
use super::secret::Secret;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Tracing with OpenTelemetry.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    /// Where spans are exported over OTLP; no traces are made without it.
    pub otlp: Option<Otlp>,
    /// Spans carry the customer's WhatsApp id (`messaging.destination.name` … see the README's
    /// Tracing section) only when true: a tracing backend is seldom meant for personal data.
    pub include_customer: bool,
}

/// The OTLP exporter.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Otlp {
    /// The collector's URL. For `http`, the traces path is added when the URL has none
    /// (`http://collector:4318` posts to `/v1/traces`); for `grpc`, e.g. `http://collector:4317`.
    pub endpoint: String,
    /// The OTLP transport: `http` (protobuf over HTTP) or `grpc`.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Extra request headers (an API key for a hosted backend); values are secret references.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// The share of messages traced, from 0 to 1 (a trace is kept or dropped whole, at its
    /// root).
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
}

/// The OTLP transport.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// Protobuf over HTTP (`/v1/traces`), the default.
    #[default]
    Http,
    /// gRPC (the `grpc` cargo feature, on by default).
    Grpc,
}

impl OtlpProtocol {
    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
        }
    }
}

impl Telemetry {
    /// Whether `other` exports as these settings do: the same endpoint, protocol, ratio, headers
    /// and header values (a rotated secret counts as a change), and customer setting.
    pub fn same_as(&self, other: &Telemetry) -> bool {
        let key = |o: &Otlp| {
            let headers: Vec<(&String, &str)> =
                o.headers.iter().map(|(k, v)| (k, v.expose())).collect();
            (
                o.endpoint.clone(),
                o.protocol,
                o.sample_ratio.to_bits(),
                format!("{headers:?}"),
            )
        };
        self.include_customer == other.include_customer
            && self.otlp.as_ref().map(key) == other.otlp.as_ref().map(key)
    }
}

fn default_sample_ratio() -> f64 {
    1.0
}

/// The rules `telemetry` must satisfy; `http_url` checks a URL as the neighbours' URLs are.
pub fn check(t: &Telemetry, http_url: fn(&str) -> Result<(), String>) -> Vec<Issue> {
    let mut out = Vec::new();
    let Some(otlp) = &t.otlp else {
        return out;
    };
    let mut issue = |path: &str, message: String| {
        out.push(Issue {
            path: format!("telemetry.otlp.{path}"),
            at_key: false,
            message,
        })
    };
    if let Err(why) = http_url(&otlp.endpoint) {
        issue(
            "endpoint",
            format!("{why}; the OTLP collector is reached at an http:// or https:// URL"),
        );
    }
    if !(0.0..=1.0).contains(&otlp.sample_ratio) {
        issue(
            "sample_ratio",
            format!(
                "{} is not between 0 and 1 (the share of messages traced; default 1.0)",
                otlp.sample_ratio
            ),
        );
    }
    for name in otlp.headers.keys() {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            issue(
                &format!("headers.{name}"),
                "is not a valid HTTP header name".to_owned(),
            );
        }
    }
    if otlp.protocol == OtlpProtocol::Grpc && !cfg!(feature = "grpc") {
        issue(
            "protocol",
            "grpc needs a binary built with the `grpc` feature; use http".to_owned(),
        );
    }
    out
}
