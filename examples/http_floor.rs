//! The floor under the gateway's cost per message: the HTTP work of one customer message alone,
//! with the gateway's own stacks (axum and hyper in, reqwest out, serde_json, HMAC-SHA256), and
//! nothing else: no storage, no pipeline, no policy, nothing durable. It reads the gateway's
//! config (`examples/bench.yaml`), listens where the gateway would, and answers `wa-gateway
//! bench` as the gateway does on the wire: each webhook's signature is verified and its JSON
//! parsed; each message is marked read and answered `echo: <text>` through the Graph API (the
//! bench's emulator); a status webhook gets its 200 and nothing more. `/readyz` on the admin
//! address says it is up.
//!
//! `FLOOR=1 examples/bench.sh` runs the bench against it. What the gateway spends a message
//! beyond this floor is what storage, the pipeline and exactly-once cost; the README's
//! Performance section compares the two.

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

// The gateway binary's allocator, so that the two are compared on the same footing.
#[cfg(all(not(target_env = "msvc"), feature = "jemalloc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What every webhook needs: the app secret, and per number where its calls go and its token.
struct Floor {
    app_secret: Vec<u8>,
    /// phone_number_id → (`{graph_url}/{version}/{id}/messages`, access token).
    numbers: HashMap<String, (String, String)>,
    http: reqwest::Client,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path: PathBuf = std::env::args_os()
        .nth(1)
        .context("usage: http_floor CONFIG (e.g. examples/bench.yaml)")?
        .into();
    let cfg = wa_gateway::config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let base = cfg.meta.graph_url.trim_end_matches('/');
    let numbers = cfg
        .numbers
        .iter()
        .map(|n| {
            let id = n.phone_number_id.as_str();
            let url = format!("{base}/{}/{id}/messages", cfg.meta.api_version);
            (id.to_owned(), (url, n.access_token.expose().to_owned()))
        })
        .collect();
    let floor = Arc::new(Floor {
        app_secret: cfg.meta.app_secret.expose().as_bytes().to_vec(),
        numbers,
        // As the gateway's Graph client keeps them: up to 256 idle connections per host.
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?,
    });
    let webhook = tokio::net::TcpListener::bind(cfg.listen.webhook).await?;
    let admin = tokio::net::TcpListener::bind(cfg.listen.admin).await?;
    let hooks = Router::new().fallback(webhook_post).with_state(floor);
    let ready = Router::new().route("/readyz", get(|| async { "ready" }));
    tokio::try_join!(axum::serve(webhook, hooks), axum::serve(admin, ready))?;
    Ok(())
}

/// One webhook: 401 unless signed with the app secret, 400 unless JSON; each message answered
/// in a task of its own after the 200, as the gateway answers after its durable ack.
async fn webhook_post(
    State(floor): State<Arc<Floor>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if !signed(&floor.app_secret, &headers, &body) {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(envelope) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let values = envelope["entry"].as_array().into_iter().flatten();
    let values = values.flat_map(|e| e["changes"].as_array().into_iter().flatten());
    for value in values.map(|c| &c["value"]) {
        let number = value["metadata"]["phone_number_id"]
            .as_str()
            .unwrap_or_default();
        let Some((url, token)) = floor.numbers.get(number) else {
            continue;
        };
        for message in value["messages"].as_array().into_iter().flatten() {
            let read = json!({
                "messaging_product": "whatsapp",
                "status": "read",
                "message_id": message["id"],
            });
            let reply = json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": message["from"],
                "type": "text",
                "text": { "body": format!("echo: {}", message["text"]["body"].as_str().unwrap_or_default()) },
            });
            let (floor, url, token) = (floor.clone(), url.clone(), token.clone());
            tokio::spawn(async move {
                for body in [read, reply] {
                    let sent = floor.http.post(&url).bearer_auth(&token).json(&body).send();
                    if let Err(e) = sent.await.and_then(|r| r.error_for_status()) {
                        eprintln!("http_floor: a Graph call failed: {e}");
                    }
                }
            });
        }
    }
    StatusCode::OK
}

/// `X-Hub-Signature-256: sha256=<hex>` is the HMAC-SHA256 of the body (compared in constant
/// time, as the gateway does).
fn signed(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let header = headers.get("x-hub-signature-256").map(|v| v.as_bytes());
    let Some(hex_digest) = header.and_then(|h| h.strip_prefix(b"sha256=")) else {
        return false;
    };
    let mut expected = [0u8; 32];
    if hex::decode_to_slice(hex_digest, &mut expected).is_err() {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}
