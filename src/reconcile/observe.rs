//! Observed Meta-side state, read with Graph GETs: the app's subscription, each WABA's
//! subscribed apps, each declared number's info. A failed read is kept as a `Failure`, not
//! raised: the status of the other numbers still stands.

use super::desired::Desired;
use crate::graph::{GraphClient, GraphError, NumberInfo};
use crate::ids::{PhoneNumberId, WabaId};
use futures::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

/// Graph reads of each kind (WABAs, numbers) one pass keeps in flight. All at once, 10,000 numbers meant 10,000 connections:
/// hundreds of MiB at the peak (kept by the allocator afterwards), reads failing as the sockets
/// ran out, and a burst no Graph rate limit tolerates. A few dozen keep a pass over 10,000
/// numbers to seconds on a fast link and the connections to what the client pools.
pub const OBSERVE_CONCURRENCY: usize = 32;

/// Runs `reads` with at most [`OBSERVE_CONCURRENCY`] in flight; the results in any order (they
/// are keyed). A `Vec`, not an iterator: a closure in the stream's type would keep the
/// reconciler's task from being `Send` (rust-lang/rust#102211).
async fn bounded<T>(reads: Vec<impl Future<Output = T>>) -> Vec<T> {
    futures::stream::iter(reads)
        .buffer_unordered(OBSERVE_CONCURRENCY)
        .collect()
        .await
}

/// A Graph read that failed: Meta's code when it gave one, and what it said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub code: Option<i64>,
    pub message: String,
}

impl From<GraphError> for Failure {
    fn from(e: GraphError) -> Self {
        Self {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

/// The app's `whatsapp_business_account` subscription as Meta reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObservedApp {
    pub callback_url: String,
    pub active: bool,
    pub fields: BTreeSet<String>,
}

/// Whether a WABA is subscribed to this app, and with which override.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ObservedWaba {
    pub subscribed: bool,
    pub override_callback: Option<String>,
}

/// Everything observed in one pass.
#[derive(Clone, Debug, Serialize)]
pub struct Observed {
    /// `Ok(None)`: the app has no `whatsapp_business_account` subscription.
    pub app: Result<Option<ObservedApp>, Failure>,
    pub wabas: BTreeMap<WabaId, Result<ObservedWaba, Failure>>,
    pub numbers: BTreeMap<PhoneNumberId, Result<NumberInfo, Failure>>,
}

/// Whether Meta refused the call for its token: invalid or expired (190), without the permission
/// (10, 200–299), or unable to see the object with it (100). Another token may do.
fn token_refused(e: &GraphError) -> bool {
    matches!(e.code(), Some(190 | 10 | 100 | 200..=299))
}

/// Runs `call` with the WABA's tokens in turn (`Desired::waba_tokens`) until Meta accepts one;
/// the last refusal when none does. Only the token's refusals move on: any other answer is the
/// WABA's, whichever token asked.
pub async fn with_waba_token<'a, T, Fut>(
    desired: &'a Desired,
    waba: &WabaId,
    call: impl Fn(&'a str) -> Fut,
) -> Result<T, GraphError>
where
    Fut: Future<Output = Result<T, GraphError>>,
{
    let mut refused = None;
    for token in desired.waba_tokens(waba) {
        match call(token.expose()).await {
            Err(e) if token_refused(&e) => refused = Some(e),
            answer => return answer,
        }
    }
    match refused {
        Some(e) => Err(e),
        None => call("").await,
    }
}

/// Whether Meta reports the number registered on the Cloud API.
pub fn is_registered(info: &NumberInfo) -> bool {
    match info.platform_type.as_deref() {
        Some(p) => p == "CLOUD_API",
        None => info.status.as_deref() == Some("CONNECTED"),
    }
}

impl Observed {
    /// Every failed read, named for people (`app subscription`, `WABA 1022…`, `number 1065…`).
    pub fn failures(&self) -> Vec<(String, &Failure)> {
        let mut out = Vec::new();
        if let Err(f) = &self.app {
            out.push(("app subscription".to_owned(), f));
        }
        for (waba, r) in &self.wabas {
            if let Err(f) = r {
                out.push((format!("WABA {waba}"), f));
            }
        }
        for (pnid, r) in &self.numbers {
            if let Err(f) = r {
                out.push((format!("number {pnid}"), f));
            }
        }
        out
    }
}

/// Reads the state `desired` concerns (declared and retired WABAs, every declared number).
pub async fn observe(client: &GraphClient, desired: &Desired) -> Observed {
    let app_token = desired.app_token();
    let app = async {
        let subs = client
            .app_subscriptions(&desired.app_id, &app_token)
            .await?;
        Ok(subs
            .into_iter()
            .find(|s| s.object == "whatsapp_business_account")
            .map(|s| ObservedApp {
                callback_url: s.callback_url,
                active: s.active,
                fields: s.fields.into_iter().map(|f| f.name).collect(),
            }))
    };
    let waba_ids: BTreeSet<&WabaId> = desired.wabas.keys().chain(desired.retired.keys()).collect();
    let wabas = bounded(
        waba_ids
            .into_iter()
            .map(|waba| async move {
                let r = with_waba_token(desired, waba, |token| {
                    client.subscribed_apps(waba.as_str(), token)
                })
                .await
                .map(|apps| {
                    let ours = apps
                        .into_iter()
                        .find(|a| a.whatsapp_business_api_data.id == desired.app_id);
                    ObservedWaba {
                        subscribed: ours.is_some(),
                        override_callback: ours.and_then(|a| a.override_callback_uri),
                    }
                })
                .map_err(Failure::from);
                (waba.clone(), r)
            })
            .collect(),
    );
    let numbers = bounded(
        desired
            .numbers
            .iter()
            .map(|n| async move {
                let r = client
                    .number_info(n.phone_number_id.as_str(), n.token.expose(), None)
                    .await
                    .map_err(Failure::from);
                (n.phone_number_id.clone(), r)
            })
            .collect(),
    );
    let (app, wabas, numbers) = tokio::join!(app, wabas, numbers);
    Observed {
        app: app.map_err(|e: GraphError| Failure::from(e)),
        wabas: wabas.into_iter().collect(),
        numbers: numbers.into_iter().collect(),
    }
}
