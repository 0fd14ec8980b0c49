//! Reading a webhook's body within bounds before anything looks at it: one of
//! `max_inflight_bodies` slots, at most `max_body_bytes`, the whole body within `body_timeout`.
//! The handler then finds the body in memory; refusals are counted in `wa_gateway_webhooks_total`.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prometheus::IntCounterVec;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The webhook listener's body limits, shared by the requests of one listener generation.
#[derive(Clone)]
pub struct Intake {
    max_bytes: usize,
    body_timeout: Duration,
    /// How long a request waits for a free slot before it is refused.
    slot_wait: Duration,
    slots: Arc<Semaphore>,
    refused: IntCounterVec,
}

impl Intake {
    /// Limits of `max_bytes` a body read within `body_timeout`, `max_inflight` at once (a
    /// request waits up to `slot_wait` for a slot); refusals counted in `refused` by result.
    pub fn new(
        max_bytes: usize,
        body_timeout: Duration,
        max_inflight: usize,
        slot_wait: Duration,
        refused: IntCounterVec,
    ) -> Self {
        Self {
            max_bytes,
            body_timeout,
            slot_wait,
            slots: Arc::new(Semaphore::new(max_inflight.min(Semaphore::MAX_PERMITS))),
            refused,
        }
    }

    fn refuse(&self, status: StatusCode, result: &str, why: String) -> Response {
        self.refused.with_label_values(&[result]).inc();
        tracing::warn!(%status, "webhook refused: {why}");
        (status, why).into_response()
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Middleware: reads the body under the limits, then runs the handler with a slot held.
pub async fn read_body(State(intake): State<Intake>, req: Request, next: Next) -> Response {
    let max = intake.max_bytes;
    if declared_length(req.headers()).is_some_and(|n| n > max as u64) {
        return intake.refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body larger than listen.max_body_bytes ({max} bytes)"),
        );
    }
    let slot =
        match tokio::time::timeout(intake.slot_wait, intake.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            _ => {
                return intake.refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "listen.max_inflight_bodies webhooks are being read; retry later".into(),
                );
            }
        };
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(intake.body_timeout, Limited::new(body, max).collect()).await;
    let bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return intake.refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("body larger than listen.max_body_bytes ({max} bytes)"),
            );
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "webhook body not received: the client went away");
            return StatusCode::BAD_REQUEST.into_response();
        }
        Err(_) => {
            return intake.refuse(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "body not received within listen.body_timeout ({:?})",
                    intake.body_timeout
                ),
            );
        }
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    drop(slot);
    response
}
