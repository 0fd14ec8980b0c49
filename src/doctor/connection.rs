//! Test Connection: six checks of one number, in order, each passing or failing with the fix:
//! the token, registration and verification, the WABA's app subscription, the callback and
//! fields in force, a signed probe webhook through `public_url`, and a probe turn to the agent.
//! A check whose prerequisite failed is skipped. Reads only: nothing changes at Meta, nothing
//! is stored, nothing reaches a customer.

use crate::agent::{Agent, AgentError, Turn, TurnCustomer, TurnMessage, TurnNumber};
use crate::cloudapi::signature;
use crate::graph::{GraphClient, GraphError, NumberInfo};
use crate::ingress::probe;
use crate::reconcile::desired::{Desired, DesiredNumber, REQUIRED_FIELDS};
use crate::reconcile::observe::is_registered;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How long the probe webhook and the agent probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The checks, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckId {
    Token,
    Registered,
    WabaSubscribed,
    Callback,
    WebhookRoundTrip,
    AgentProbe,
}

impl CheckId {
    /// Every check, in order.
    pub const ALL: [CheckId; 6] = [
        Self::Token,
        Self::Registered,
        Self::WabaSubscribed,
        Self::Callback,
        Self::WebhookRoundTrip,
        Self::AgentProbe,
    ];

    /// What the check verifies, for people.
    pub fn title(self) -> &'static str {
        match self {
            Self::Token => "Access token valid",
            Self::Registered => "Number registered and verified",
            Self::WabaSubscribed => "WABA subscribed to the app",
            Self::Callback => "Callback URL and fields",
            Self::WebhookRoundTrip => "Signed test event comes back",
            Self::AgentProbe => "Agent answers a probe",
        }
    }

    /// The checks that must pass for this one to mean anything. Every check needs the token:
    /// a number whose token Meta refuses cannot work, whatever else holds.
    fn requires(self) -> &'static [CheckId] {
        match self {
            Self::Token => &[],
            Self::Registered | Self::WabaSubscribed | Self::AgentProbe => &[Self::Token],
            Self::Callback => &[Self::Token, Self::WabaSubscribed],
            Self::WebhookRoundTrip => &[Self::Token, Self::Callback],
        }
    }
}

/// How a check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
}

impl Outcome {
    /// `PASS`, `FAIL`, `SKIP`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Skip => "SKIP",
        }
    }
}

/// One check's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Check {
    pub id: CheckId,
    pub title: String,
    pub outcome: Outcome,
    /// What was found.
    pub detail: String,
    /// What to do, when it failed.
    pub fix: Option<String>,
}

/// Every check of one number.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub phone_number_id: String,
    pub display_name: String,
    /// Whether every check passed.
    pub ok: bool,
    pub checks: Vec<Check>,
}

/// What the checks need about one number.
pub struct Target<'a> {
    pub client: &'a GraphClient,
    pub desired: &'a Desired,
    pub number: &'a DesiredNumber,
    /// The agent's name in the file, and the agent.
    pub agent_name: &'a str,
    pub agent: &'a Agent,
    /// Where the probe webhook goes: `public_url`, or the listener itself when the built-in
    /// emulator stands in for Meta (it calls the listener whatever `public_url` says).
    pub probe_url: String,
    /// The key the probe is signed with: `meta.app_secret`.
    pub app_secret: &'a str,
}

type Found = Result<String, (String, String)>;

fn pass(detail: impl Into<String>) -> Found {
    Ok(detail.into())
}

fn fail(detail: impl Into<String>, fix: impl Into<String>) -> Found {
    Err((detail.into(), fix.into()))
}

/// What the checks learnt so far, for the later ones.
#[derive(Default)]
struct Learnt {
    info: Option<NumberInfo>,
    waba_override: Option<Option<String>>,
}

/// Runs the checks of `t` in order and reports each.
pub async fn test_connection(t: &Target<'_>) -> Report {
    let mut checks: Vec<Check> = Vec::with_capacity(CheckId::ALL.len());
    let mut learnt = Learnt::default();
    for id in CheckId::ALL {
        let blocked = id.requires().iter().find(|r| {
            checks
                .iter()
                .any(|c| c.id == **r && c.outcome != Outcome::Pass)
        });
        let (outcome, detail, fix) = match blocked {
            Some(r) => (
                Outcome::Skip,
                format!("skipped: needs \"{}\" to pass first", r.title()),
                None,
            ),
            None => match run(id, t, &mut learnt).await {
                Ok(d) => (Outcome::Pass, d, None),
                Err((d, f)) => (Outcome::Fail, d, Some(f)),
            },
        };
        checks.push(Check {
            id,
            title: id.title().to_owned(),
            outcome,
            detail,
            fix,
        });
    }
    Report {
        phone_number_id: t.number.phone_number_id.to_string(),
        display_name: t.number.display_name.clone(),
        ok: checks.iter().all(|c| c.outcome == Outcome::Pass),
        checks,
    }
}

async fn run(id: CheckId, t: &Target<'_>, learnt: &mut Learnt) -> Found {
    match id {
        CheckId::Token => token(t).await,
        CheckId::Registered => registered(t, learnt).await,
        CheckId::WabaSubscribed => waba_subscribed(t, learnt).await,
        CheckId::Callback => callback(t, learnt).await,
        CheckId::WebhookRoundTrip => round_trip(t, learnt).await,
        CheckId::AgentProbe => agent_probe(t).await,
    }
}

fn token_field(t: &Target<'_>) -> String {
    format!("numbers[{}].access_token", t.number.index)
}

/// A Graph read failed: what it means and what to do.
fn graph_failure(t: &Target<'_>, what: &str, e: &GraphError) -> (String, String) {
    let fix = match e.code() {
        Some(190) => format!(
            "put a valid system-user token with access to WABA {} in {}, then let the gateway reload",
            t.number.waba_id,
            token_field(t)
        ),
        Some(100 | 10 | 3 | 200..=299) => format!(
            "give the system user of {} access to WABA {} with whatsapp_business_management and whatsapp_business_messaging",
            token_field(t),
            t.number.waba_id
        ),
        _ => match e {
            GraphError::Network { .. } => {
                "check meta.graph_url and that the gateway reaches it".to_owned()
            }
            _ => "try again; if it persists, check Meta's status page".to_owned(),
        },
    };
    (format!("cannot read {what}: {e}"), fix)
}

async fn token(t: &Target<'_>) -> Found {
    let d = t.desired;
    match t
        .client
        .debug_token(t.number.token.expose(), &d.app_token())
        .await
    {
        Ok(info) if info.is_valid => match info.app_id.as_deref() {
            Some(app) if app != d.app_id => fail(
                format!(
                    "the token belongs to app {app}, not meta.app_id {}",
                    d.app_id
                ),
                format!(
                    "put a token of a system user of app {} in {}",
                    d.app_id,
                    token_field(t)
                ),
            ),
            _ => pass(if info.expires_at == 0 {
                "valid, never expires".to_owned()
            } else {
                let at = std::time::UNIX_EPOCH
                    + Duration::from_secs(u64::try_from(info.expires_at).unwrap_or(0));
                format!("valid until {}", humantime::format_rfc3339_seconds(at))
            }),
        },
        Ok(_) => fail(
            "Meta says the access token is invalid or expired",
            format!(
                "generate a new system-user token for WABA {} and put it in {}, then let the gateway reload",
                t.number.waba_id,
                token_field(t)
            ),
        ),
        Err(e) if e.code() == Some(190) => fail(
            format!("Meta refused the app access token (190): {e}"),
            "check meta.app_id and meta.app_secret: they must be the app's id and secret",
        ),
        Err(e) => Err(graph_failure(t, "the token's validity (debug_token)", &e)),
    }
}

async fn registered(t: &Target<'_>, learnt: &mut Learnt) -> Found {
    let pnid = t.number.phone_number_id.as_str();
    let info = t
        .client
        .number_info(pnid, t.number.token.expose(), None)
        .await
        .map_err(|e| graph_failure(t, &format!("number {pnid}"), &e))?;
    let verification = info.code_verification_status.clone();
    let status = info.status.clone().unwrap_or_else(|| "unknown".into());
    let registered = is_registered(&info);
    let described = format!(
        "{} {}, status {status}, code verification {}, quality {}",
        info.verified_name
            .as_deref()
            .unwrap_or("(no verified name)"),
        info.display_phone_number.as_deref().unwrap_or(""),
        verification.as_deref().unwrap_or("unknown"),
        info.quality_rating.as_deref().unwrap_or("unknown"),
    );
    learnt.info = Some(info);
    if !registered {
        return fail(
            format!("not registered with the Cloud API: {described}"),
            format!(
                "run `wa-gateway apply` (or keep meta.reconcile.apply on): it registers the number with numbers[{}].pin",
                t.number.index
            ),
        );
    }
    if matches!(verification.as_deref(), Some("NOT_VERIFIED" | "EXPIRED")) {
        return fail(
            format!("the phone number is not verified: {described}"),
            "request a verification code (SMS or VOICE), enter it, then apply again",
        );
    }
    pass(format!("registered: {described}"))
}

async fn waba_subscribed(t: &Target<'_>, learnt: &mut Learnt) -> Found {
    let waba = t.number.waba_id.as_str();
    let apps = t
        .client
        .subscribed_apps(waba, t.number.token.expose())
        .await
        .map_err(|e| graph_failure(t, &format!("WABA {waba}'s subscribed apps"), &e))?;
    match apps
        .into_iter()
        .find(|a| a.whatsapp_business_api_data.id == t.desired.app_id)
    {
        Some(app) => {
            let detail = match &app.override_callback_uri {
                Some(uri) => format!(
                    "WABA {waba} is subscribed to app {} with override callback {uri}",
                    t.desired.app_id
                ),
                None => format!("WABA {waba} is subscribed to app {}", t.desired.app_id),
            };
            learnt.waba_override = Some(app.override_callback_uri);
            pass(detail)
        }
        None => fail(
            format!(
                "WABA {waba} is not subscribed to app {}: Meta sends this number's messages nowhere",
                t.desired.app_id
            ),
            "run `wa-gateway apply` (or keep meta.reconcile.apply on): it subscribes the WABA to the app",
        ),
    }
}

async fn callback(t: &Target<'_>, learnt: &mut Learnt) -> Found {
    let d = t.desired;
    let subs = t
        .client
        .app_subscriptions(&d.app_id, &d.app_token())
        .await
        .map_err(|e| graph_failure(t, "the app's webhook subscriptions", &e))?;
    let apply = "run `wa-gateway apply` (or keep meta.reconcile.apply on)";
    let Some(app) = subs
        .into_iter()
        .find(|s| s.object == "whatsapp_business_account")
    else {
        return fail(
            format!(
                "app {} has no whatsapp_business_account webhook subscription",
                d.app_id
            ),
            format!("{apply}: it subscribes the app at {}", d.callback_url),
        );
    };
    let fields: Vec<&str> = app.fields.iter().map(|f| f.name.as_str()).collect();
    let missing: Vec<&str> = REQUIRED_FIELDS
        .iter()
        .copied()
        .filter(|f| !fields.contains(f))
        .collect();
    if !missing.is_empty() {
        return fail(
            format!(
                "the app's subscription lacks the field(s) {} (it has {})",
                missing.join(", "),
                fields.join(", ")
            ),
            format!("{apply}: it adds them"),
        );
    }
    if !app.active {
        return fail(
            "the app's webhook subscription is inactive",
            format!("{apply}, then check the app's webhook settings in the Meta dashboard"),
        );
    }
    // Meta's precedence: the number's override, then the WABA's, then the app's URL.
    let number_override = learnt
        .info
        .as_ref()
        .and_then(|i| i.webhook_configuration.as_ref())
        .and_then(|w| w.phone_number.clone());
    let declared = d
        .wabas
        .get(&t.number.waba_id)
        .and_then(|w| w.override_callback.clone());
    let waba_override = learnt.waba_override.clone().flatten();
    let expected = declared.clone().unwrap_or_else(|| d.callback_url.clone());
    let (in_force, level) = match (&number_override, &waba_override) {
        (Some(u), _) => (u.clone(), "the number's override"),
        (None, Some(u)) => (u.clone(), "the WABA's override"),
        (None, None) => (app.callback_url.clone(), "the app's callback"),
    };
    if in_force != expected {
        let fix = if number_override.is_some() {
            format!(
                "clear the number's override callback (POST /{} with an empty webhook_configuration) or set it to {expected}",
                t.number.phone_number_id
            )
        } else {
            format!("{apply}: it sets the callback to {expected}")
        };
        return fail(
            format!(
                "Meta calls {in_force} ({level}) for this number, the file declares {expected}"
            ),
            fix,
        );
    }
    pass(format!(
        "Meta calls {in_force} ({level}) with fields {}",
        fields.join(", ")
    ))
}

async fn round_trip(t: &Target<'_>, learnt: &Learnt) -> Found {
    let id = probe::new_id();
    let display = learnt
        .info
        .as_ref()
        .and_then(|i| i.display_phone_number.as_deref())
        .map(|d| d.chars().filter(char::is_ascii_digit).collect::<String>())
        .unwrap_or_default();
    let body = probe::envelope(
        t.number.waba_id.as_str(),
        t.number.phone_number_id.as_str(),
        &display,
        &id,
    );
    let sig = signature::sign(t.app_secret.as_bytes(), &body);
    let http = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .build()
        .expect("the TLS backend is compiled in");
    let url = &t.probe_url;
    let started = Instant::now();
    let res = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await;
    let res = match res {
        Ok(r) => r,
        Err(e) => {
            return fail(
                format!("cannot deliver a test event to {url}: {}", e.without_url()),
                "check that public_url resolves and routes to the gateway's webhook listener (DNS, ingress, TLS certificate)",
            );
        }
    };
    let status = res.status().as_u16();
    let echoed = res
        .headers()
        .get(probe::ECHO_HEADER)
        .and_then(|v| v.to_str().ok())
        == Some(id.as_str());
    match (status, echoed) {
        (200, true) => pass(format!(
            "a signed test event sent to {url} was verified and seen by the gateway in {} ms",
            started.elapsed().as_millis()
        )),
        (401, _) => fail(
            format!("{url} refused the test event's signature (HTTP 401)"),
            "the gateway behind public_url holds another meta.app_secret: make them the same",
        ),
        _ => fail(
            format!("{url} answered HTTP {status} without recognising the test event"),
            "public_url does not lead to this gateway's /webhook: check the ingress route and the path",
        ),
    }
}

async fn agent_probe(t: &Target<'_>) -> Found {
    let turn = Turn {
        number: TurnNumber {
            phone_number_id: t.number.phone_number_id.to_string(),
            display_name: t.number.display_name.clone(),
        },
        customer: TurnCustomer {
            wa_id: None,
            user_id: None,
            name: Some("wa-gateway Test Connection".into()),
        },
        message: TurnMessage {
            id: format!("{}{}", probe::WAMID_PREFIX, probe::new_id()),
            kind: "text".into(),
            text: Some("Test Connection: this is a probe from wa-gateway; answer anything.".into()),
            timestamp: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
            content: serde_json::json!({ "type": "text", "text": { "body": "probe" } }),
            structured: serde_json::Value::Null,
        },
        language: None,
        history: Vec::new(),
    };
    let name = t.agent_name;
    let started = Instant::now();
    let answer = tokio::time::timeout(PROBE_TIMEOUT, t.agent.reply(&turn))
        .await
        .unwrap_or(Err(AgentError::Timeout(PROBE_TIMEOUT)));
    let ms = started.elapsed().as_millis();
    match answer {
        Ok(answer) => match answer.replies.first() {
            None => pass(format!(
                "agent {name} ({}) answered in {ms} ms, with no reply",
                t.agent.kind()
            )),
            Some(first) => {
                let shown: String = match first {
                    crate::agent::ReplyItem::Text(t) => t.text.chars().take(80).collect(),
                    other => format!("[{}]", other.kind()),
                };
                pass(format!(
                    "agent {name} ({}) answered in {ms} ms with {} message(s): {shown:?}",
                    t.agent.kind(),
                    answer.replies.len()
                ))
            }
        },
        Err(e) => {
            let fix = match &e {
                AgentError::Timeout(_) => format!(
                    "agent {name} did not answer in time: make it faster or raise agents.{name}.timeout"
                ),
                AgentError::Transport(_) => {
                    format!("check that agents.{name}.url is right and reachable from the gateway")
                }
                AgentError::Status { .. } => {
                    format!("agent {name} refused the turn: check its logs and its credentials")
                }
                AgentError::BadAnswer(_) => format!(
                    "agent {name} answered in a shape its kind does not allow: see the agent contract in the README"
                ),
            };
            fail(format!("agent {name} failed: {e}"), fix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prerequisite_runs_before_the_check_that_needs_it() {
        for (i, id) in CheckId::ALL.iter().enumerate() {
            for r in id.requires() {
                let at = CheckId::ALL.iter().position(|c| c == r).unwrap();
                assert!(at < i, "{id:?} needs {r:?}, which runs later");
            }
        }
        assert!(
            CheckId::ALL[1..]
                .iter()
                .all(|c| c.requires().contains(&CheckId::Token)),
            "a refused token skips every other check"
        );
    }
}
