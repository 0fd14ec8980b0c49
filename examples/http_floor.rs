//! The floor under the gateway's cost per message: the HTTP work of one customer message alone,
//! with the gateway's own pieces (axum and hyper in, its signature check, serde_json, its Graph
//! client out), and nothing else: no storage, no pipeline, no policy, nothing durable. It reads
//! the gateway's config (`examples/bench.yaml`), listens where the gateway would, and answers
//! `wa-gateway bench` as the gateway does on the wire: each webhook's signature is verified and
//! its JSON parsed; each message is marked read and answered `echo: <text>` through the Graph
//! API (the bench's emulator); a status webhook gets its 200 and nothing more. `/readyz` on the
//! admin address says it is up.
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
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wa_gateway::cloudapi::signature;
use wa_gateway::graph::GraphClient;

// The gateway binary's allocator, so that the two are compared on the same footing.
#[cfg(all(not(target_env = "msvc"), feature = "jemalloc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What every webhook needs: the app secret, each number's token, and the Graph client.
struct Floor {
    app_secret: Vec<u8>,
    /// phone_number_id → access token.
    tokens: HashMap<String, String>,
    graph: GraphClient,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path: PathBuf = std::env::args_os()
        .nth(1)
        .context("usage: http_floor CONFIG (e.g. examples/bench.yaml)")?
        .into();
    let cfg = wa_gateway::config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let tokens = cfg
        .numbers
        .iter()
        .map(|n| {
            let id = n.phone_number_id.as_str().to_owned();
            (id, n.access_token.expose().to_owned())
        })
        .collect();
    let floor = Arc::new(Floor {
        app_secret: cfg.meta.app_secret.expose().as_bytes().to_vec(),
        tokens,
        graph: GraphClient::new(
            &cfg.meta.graph_url,
            &cfg.meta.api_version,
            // The gateway's own Graph timeout (`serve::state`).
            Duration::from_secs(30),
        ),
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
    let header = headers.get("x-hub-signature-256").map(|v| v.as_bytes());
    if signature::verify(&floor.app_secret, header, &body).is_err() {
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
        let Some(token) = floor.tokens.get(number) else {
            continue;
        };
        for message in value["messages"].as_array().into_iter().flatten() {
            let wamid = message["id"].as_str().unwrap_or_default().to_owned();
            let reply = json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": message["from"],
                "type": "text",
                "text": { "body": format!("echo: {}", message["text"]["body"].as_str().unwrap_or_default()) },
            });
            let (floor, number, token) = (floor.clone(), number.to_owned(), token.clone());
            tokio::spawn(async move {
                let graph = &floor.graph;
                if let Err(e) = graph.mark_read(&number, &token, &wamid, false).await {
                    eprintln!("http_floor: marking read failed: {e}");
                }
                if let Err(e) = graph.send_message(&number, &token, &reply).await {
                    eprintln!("http_floor: a send failed: {e}");
                }
            });
        }
    }
    StatusCode::OK
}
