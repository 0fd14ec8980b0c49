//! Carrying out a plan: one Graph call per action, in order, stopping at the first refusal with
//! a sentence that says what happened and what to do (Meta's codes translated for people).

use super::desired::Desired;
use super::observe::with_waba_token;
use super::plan::{Action, Op};
use crate::graph::{GraphClient, GraphError};

/// An action Meta (or the network) refused; the ones before it were done.
#[derive(Debug, thiserror::Error)]
#[error("{action}: {advice}")]
pub struct ApplyError {
    /// What was being done.
    pub action: String,
    /// What happened and what to do.
    pub advice: String,
    /// Meta's error code, when it gave one.
    pub code: Option<i64>,
    /// Whether the change was asked of Meta; false when the file lacks what it needs (a PIN).
    pub asked_meta: bool,
    /// The actions carried out before the failure.
    pub done: Vec<Action>,
}

/// Runs `actions` in order; returns them once all succeeded.
pub async fn apply(
    client: &GraphClient,
    desired: &Desired,
    actions: Vec<Action>,
) -> Result<Vec<Action>, ApplyError> {
    let mut done = Vec::with_capacity(actions.len());
    for action in actions {
        let result = run(client, desired, &action.op).await;
        if let Err(advice) = result {
            return Err(ApplyError {
                action: action.op.to_string(),
                code: advice.code,
                asked_meta: advice.asked_meta,
                advice: advice.text,
                done,
            });
        }
        tracing::info!(action = %action.op, reason = %action.reason, "applied");
        done.push(action);
    }
    Ok(done)
}

/// Why one action failed.
struct Refusal {
    text: String,
    code: Option<i64>,
    asked_meta: bool,
}

impl Refusal {
    /// Refused before asking Meta: the file lacks what the change needs.
    fn by_file(text: String) -> Self {
        Self {
            text,
            code: None,
            asked_meta: false,
        }
    }
}

async fn run(client: &GraphClient, desired: &Desired, op: &Op) -> Result<(), Refusal> {
    let fail = |e: GraphError| Refusal {
        text: explain(&e, op, desired),
        code: e.code(),
        asked_meta: true,
    };
    match op {
        Op::SubscribeApp {
            callback_url,
            fields,
        } => client
            .subscribe_app(
                &desired.app_id,
                &desired.app_token(),
                callback_url,
                desired.verify_token.expose(),
                fields,
            )
            .await
            .map_err(fail),
        Op::SubscribeWaba {
            waba_id,
            override_callback,
        } => {
            let over = override_callback
                .as_deref()
                .map(|u| (u, desired.verify_token.expose()));
            with_waba_token(desired, waba_id, |token| {
                client.subscribe_waba(waba_id.as_str(), token, over)
            })
            .await
            .map_err(fail)
        }
        Op::UnsubscribeWaba { waba_id } => with_waba_token(desired, waba_id, |token| {
            client.unsubscribe_waba(waba_id.as_str(), token)
        })
        .await
        .map_err(fail),
        Op::Register { phone_number_id } => {
            let Some(n) = desired.number(phone_number_id) else {
                return Err(Refusal::by_file(format!(
                    "number {phone_number_id} is not declared"
                )));
            };
            let Some(pin) = &n.pin else {
                return Err(Refusal::by_file(format!(
                    "numbers[{}].pin is not set: add the number's 6-digit two-step verification PIN (e.g. {{ env: WA_PIN }}) so the gateway can register it",
                    n.index
                )));
            };
            client
                .register(phone_number_id.as_str(), n.token.expose(), pin.expose())
                .await
                .map_err(fail)
        }
    }
}

/// What a Graph error means for `op`, and what to do about it. Never contains a secret.
pub fn explain(e: &GraphError, op: &Op, desired: &Desired) -> String {
    let number = match op {
        Op::Register { phone_number_id } => desired.number(phone_number_id),
        _ => None,
    };
    let num = |what: &str| match number {
        Some(n) => format!("numbers[{}].{what}", n.index),
        None => format!("numbers[].{what}"),
    };
    let pnid = number.map_or_else(String::new, |n| n.phone_number_id.to_string());
    let meta = e.to_string();
    match e.code() {
        Some(190) if matches!(op, Op::SubscribeApp { .. }) => format!(
            "Meta refused the app access token (190): check meta.app_id and meta.app_secret ({meta})"
        ),
        Some(190) => format!(
            "Meta refused the access token as invalid or expired (190): put a valid system-user token with access to the WABA in {} ({meta})",
            num("access_token")
        ),
        Some(2200) => {
            let url = match op {
                Op::SubscribeApp { callback_url, .. } => callback_url.clone(),
                Op::SubscribeWaba {
                    override_callback: Some(u),
                    ..
                } => u.clone(),
                _ => desired.callback_url.clone(),
            };
            format!(
                "Meta could not verify {url}: check that the gateway is reachable there and meta.verify_token matches ({meta})"
            )
        }
        Some(133005) => format!(
            "the two-step verification PIN of number {pnid} does not match the one set at Meta (133005): put the right PIN in {}, or reset it in WhatsApp Manager",
            num("pin")
        ),
        Some(133008 | 133009) => format!(
            "too many PIN attempts for number {pnid} ({}): Meta locks registration for a while; wait, check {} and apply again — do not retry in a loop",
            e.code().unwrap_or_default(),
            num("pin")
        ),
        Some(133010) => format!(
            "number {pnid} is not registered (133010): run `wa-gateway apply` or register it with its PIN"
        ),
        Some(133006) => format!(
            "number {pnid} must be verified again (133006): request a code (SMS or VOICE) and verify it, then apply"
        ),
        Some(133015) => format!(
            "number {pnid} was deregistered moments ago (133015): wait a few minutes, then apply again"
        ),
        Some(136025) => format!(
            "the verification code for number {pnid} is wrong (136025): request a new code and enter the one Meta sent"
        ),
        Some(200..=299 | 10 | 3) => format!(
            "the token lacks a permission (whatsapp_business_management / whatsapp_business_messaging) for this call: grant it to the system user ({meta})"
        ),
        Some(4 | 80007) => format!(
            "Meta's management call budget is spent: wait several minutes before applying again ({meta})"
        ),
        _ => match e {
            GraphError::Network { .. } => {
                format!("cannot reach the Graph API: check meta.graph_url and the network ({meta})")
            }
            _ => format!("Meta refused it: {meta}"),
        },
    }
}
