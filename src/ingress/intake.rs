//! Reading a webhook's body within bounds before anything looks at it: one of
//! `max_inflight_bodies` slots, at most `max_body_bytes`, the whole body within `body_timeout`.
//! The handler then finds the body in memory; refusals are counted in `wa_gateway_webhooks_total`.
//! A body refused as too large is still read, and dropped, up to its limit again: a client that
//! is still writing then reads the 413 rather than a reset connection.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
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

/// How a body read under the limits ended.
enum Read {
    Whole(bytes::Bytes),
    /// Past `max_bytes`; the rest was read and dropped (up to as much again), so that the
    /// client, still writing, reads the 413 instead of a reset connection.
    TooLarge,
    ClientGone(axum::Error),
    TimedOut,
}

/// Reads `body` whole if it holds at most `max` bytes. A larger one is kept no further: its rest
/// is read and dropped up to `max` more bytes (a lingering close, as web servers do), and a body
/// larger than that is left unread.
async fn read_limited(body: Body, max: usize, timeout: Duration) -> Read {
    let mut body = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    let read = async {
        use futures::StreamExt;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return Read::ClientGone(e),
            };
            seen = seen.saturating_add(chunk.len());
            if seen <= max {
                buf.extend_from_slice(&chunk);
            } else if seen > max.saturating_mul(2) {
                return Read::TooLarge;
            }
        }
        if seen > max {
            Read::TooLarge
        } else {
            Read::Whole(std::mem::take(&mut buf).freeze())
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Read::TimedOut)
}

/// Middleware: reads the body under the limits, then runs the handler with a slot held.
pub async fn read_body(State(intake): State<Intake>, req: Request, next: Next) -> Response {
    let max = intake.max_bytes;
    let too_large = || {
        intake.refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body larger than listen.max_body_bytes ({max} bytes)"),
        )
    };
    // Far past the limit: refused before a byte of it is read.
    if declared_length(req.headers()).is_some_and(|n| n > 2 * max as u64) {
        return too_large();
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
    let bytes = match read_limited(body, max, intake.body_timeout).await {
        Read::Whole(bytes) => bytes,
        Read::TooLarge => return too_large(),
        Read::ClientGone(e) => {
            tracing::debug!(error = %e, "webhook body not received: the client went away");
            return StatusCode::BAD_REQUEST.into_response();
        }
        Read::TimedOut => {
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
