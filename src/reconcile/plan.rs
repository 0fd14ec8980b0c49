//! The pure step: from desired and observed state to the actions that close the gap, in the
//! order they must run (app subscription, WABAs, registrations), each with a reason for people.
//! Nothing here does I/O; what cannot be observed is not planned.

use super::desired::Desired;
use super::observe::{Observed, is_registered};
use crate::ids::{PhoneNumberId, WabaId};
use serde::Serialize;
use std::fmt;

/// One change to make at Meta.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// `POST /{app}/subscriptions` (Meta verifies the callback first).
    SubscribeApp {
        callback_url: String,
        fields: Vec<String>,
    },
    /// `POST /{waba}/subscribed_apps`, with the WABA override when declared.
    SubscribeWaba {
        waba_id: WabaId,
        override_callback: Option<String>,
    },
    /// `DELETE /{waba}/subscribed_apps` (only with `meta.prune`).
    UnsubscribeWaba { waba_id: WabaId },
    /// `POST /{PNID}/register` with the number's PIN.
    Register { phone_number_id: PhoneNumberId },
}

/// An operation and why it is needed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Action {
    #[serde(flatten)]
    pub op: Op,
    pub reason: String,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::SubscribeApp {
                callback_url,
                fields,
            } => write!(
                f,
                "subscribe the app to whatsapp_business_account webhooks at {callback_url} (fields: {})",
                fields.join(", ")
            ),
            Op::SubscribeWaba {
                waba_id,
                override_callback: Some(uri),
            } => write!(
                f,
                "subscribe WABA {waba_id} to the app with override callback {uri}"
            ),
            Op::SubscribeWaba { waba_id, .. } => write!(f, "subscribe WABA {waba_id} to the app"),
            Op::UnsubscribeWaba { waba_id } => write!(f, "unsubscribe WABA {waba_id} from the app"),
            Op::Register { phone_number_id } => {
                write!(f, "register number {phone_number_id} with its two-step PIN")
            }
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, self.reason)
    }
}

fn act(op: Op, reason: String) -> Action {
    Action { op, reason }
}

/// The actions that bring `observed` to `desired`; empty when nothing is to do. Items whose
/// observation failed are left out (the caller reports the failures).
pub fn plan(desired: &Desired, observed: &Observed) -> Vec<Action> {
    let mut out = Vec::new();
    if let Ok(app) = &observed.app {
        let fields_for = |have: &std::collections::BTreeSet<String>| {
            have.union(&desired.fields).cloned().collect::<Vec<_>>()
        };
        let callback_url = desired.callback_url.clone();
        match app {
            None => out.push(act(
                Op::SubscribeApp {
                    callback_url,
                    fields: fields_for(&Default::default()),
                },
                "the app has no whatsapp_business_account webhook subscription: Meta sends the gateway nothing".into(),
            )),
            Some(a) => {
                let missing: Vec<&str> =
                    desired.fields.difference(&a.fields).map(String::as_str).collect();
                let reason = if a.callback_url != desired.callback_url {
                    Some(format!(
                        "Meta calls {} but public_url is {}",
                        a.callback_url, desired.callback_url
                    ))
                } else if !missing.is_empty() {
                    Some(format!(
                        "the subscription lacks the field(s) {}: those webhooks never come",
                        missing.join(", ")
                    ))
                } else if !a.active {
                    Some("the subscription is inactive".into())
                } else {
                    None
                };
                if let Some(reason) = reason {
                    out.push(act(
                        Op::SubscribeApp {
                            callback_url,
                            fields: fields_for(&a.fields),
                        },
                        reason,
                    ));
                }
            }
        }
    }
    for (waba, d) in &desired.wabas {
        let Some(Ok(o)) = observed.wabas.get(waba) else {
            continue;
        };
        let op = Op::SubscribeWaba {
            waba_id: waba.clone(),
            override_callback: d.override_callback.clone(),
        };
        if !o.subscribed {
            out.push(act(
                op,
                format!("WABA {waba} is not subscribed to the app: its numbers' messages never reach the gateway"),
            ));
        } else if o.override_callback != d.override_callback {
            let show = |o: &Option<String>| o.clone().unwrap_or_else(|| "none".into());
            out.push(act(
                op,
                format!(
                    "WABA {waba}'s override callback is {}, the file declares {}",
                    show(&o.override_callback),
                    show(&d.override_callback)
                ),
            ));
        }
    }
    for (waba, o) in &observed.wabas {
        if desired.wabas.contains_key(waba) || !desired.prune {
            continue;
        }
        if matches!(o, Ok(o) if o.subscribed) {
            out.push(act(
                Op::UnsubscribeWaba {
                    waba_id: waba.clone(),
                },
                format!("no declared number remains in WABA {waba} and meta.prune is on"),
            ));
        }
    }
    for n in desired.numbers.iter().filter(|n| n.enabled) {
        let Some(Ok(info)) = observed.numbers.get(&n.phone_number_id) else {
            continue;
        };
        if !is_registered(info) {
            let status = info.status.as_deref().unwrap_or("unknown");
            out.push(act(
                Op::Register {
                    phone_number_id: n.phone_number_id.clone(),
                },
                format!(
                    "number {} is not registered with the Cloud API (status {status}): sends fail with 133010",
                    n.phone_number_id
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
