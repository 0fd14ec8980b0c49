//! Number status for people and Prometheus: Active, Inactive (disabled or disconnected) or
//! Error with a reason and since when, plus what Meta says of the number (name, display number,
//! quality). `derive_statuses` and `effective` are pure; `statuses` observes then derives.

use super::desired::{Desired, DesiredNumber};
use super::health::Failing;
use super::observe::{Failure, Observed, is_registered, observe};
use crate::graph::GraphClient;
use crate::ids::PhoneNumberId;
use crate::metrics::Metrics;
use serde::Serialize;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// A number's state, stored and exported as a stable lowercase string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberState {
    /// Declared, enabled, and set up at Meta as declared.
    Active,
    /// Declared with `enabled: false`, or disconnected by an operator.
    Inactive,
    /// Something keeps the number from working; `reason` says what.
    Error,
}

impl NumberState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Error => "error",
        }
    }

    /// The state stored as `s`; `None` for a string this version does not know.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Active, Self::Inactive, Self::Error]
            .into_iter()
            .find(|state| state.as_str() == s)
    }

    /// `Active`, `Inactive`, `Error`, for people.
    pub fn label(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::Inactive => "Inactive",
            Self::Error => "Error",
        }
    }
}

/// Why a disabled number is Inactive.
pub const DISABLED: &str = "disabled in the config";
/// Why a disconnected number is Inactive.
pub const DISCONNECTED: &str = "disconnected";

/// The latest statuses, one map keyed by number: looked up at every scrape and page view.
pub type Statuses = HashMap<PhoneNumberId, NumberStatus>;

/// One number's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NumberStatus {
    pub phone_number_id: PhoneNumberId,
    /// `display_name` from the file (empty in a status read from storage).
    pub display_name: String,
    pub status: NumberState,
    /// Why, for Inactive and Error.
    pub reason: Option<String>,
    /// Unix seconds since the number has been in this status (kept in storage, so a restart
    /// or a new leader carries it over).
    pub since: u64,
    /// A problem of the number's WABA that does not stop the number receiving messages (its
    /// subscriptions could not be read with any of its numbers' tokens): shown, not charged.
    pub waba_problem: Option<String>,
    pub verified_name: Option<String>,
    pub display_phone_number: Option<String>,
    /// GREEN, YELLOW, RED or UNKNOWN.
    pub quality_rating: Option<String>,
    /// Unix seconds of the observation this status comes from.
    pub checked_at: u64,
    /// Its place in the order of stored writes (`number_status.seq`); 0 before it is stored.
    #[serde(skip)]
    pub seq: i64,
}

/// Why a number whose own token Meta refused (190) is in Error.
pub fn token_refused_reason(token_field: &str) -> String {
    format!("access token invalid or expired (190): put a valid token in {token_field}")
}

fn token_or_read(what: &str, f: &Failure, token_field: &str) -> String {
    match f.code {
        Some(190) => token_refused_reason(token_field),
        _ => format!("cannot read {what} from Meta: {}", f.message),
    }
}

/// A problem of the number's WABA, whether or not it stops the number receiving messages.
fn waba_problem(desired: &Desired, observed: &Observed, n: &DesiredNumber) -> Option<String> {
    let waba = desired.wabas.get(&n.waba_id);
    match observed.wabas.get(&n.waba_id)? {
        Err(f) => Some(format!(
            "cannot read WABA {}'s subscriptions with any of its numbers' tokens: {}",
            n.waba_id, f.message
        )),
        Ok(w) if !w.subscribed => Some(format!(
            "WABA {} is not subscribed to the app: no webhooks come; run `wa-gateway apply`",
            n.waba_id
        )),
        Ok(w) if waba.is_some_and(|d| d.override_callback != w.override_callback) => Some(format!(
            "callback mismatch: WABA {} override is {}, the file declares {}",
            n.waba_id,
            w.override_callback.as_deref().unwrap_or("none"),
            waba.and_then(|d| d.override_callback.as_deref())
                .unwrap_or("none")
        )),
        Ok(_) => None,
    }
}

/// Why a declared, enabled number is not working, or None when it is. Its own read decides
/// first (its own token); a WABA-level problem counts only when it stops the number receiving
/// messages (not subscribed, webhooks sent elsewhere), never a WABA read that failed.
fn error_reason(desired: &Desired, observed: &Observed, n: &DesiredNumber) -> Option<String> {
    let pnid = &n.phone_number_id;
    let token_field = format!("numbers[{}].access_token", n.index);
    match observed.numbers.get(pnid) {
        Some(Err(f)) => return Some(token_or_read("the number", f, &token_field)),
        Some(Ok(info)) if !is_registered(info) => {
            return Some(
                "not registered with the Cloud API: run `wa-gateway apply` or register it with its PIN"
                    .to_owned(),
            );
        }
        Some(Ok(_)) => {}
        None => return Some("not observed yet".into()),
    }
    // A WABA that could be read and is not set up as declared keeps webhooks from coming.
    if let Some(Ok(_)) = observed.wabas.get(&n.waba_id)
        && let Some(problem) = waba_problem(desired, observed, n)
    {
        return Some(problem);
    }
    let overridden = desired
        .wabas
        .get(&n.waba_id)
        .is_some_and(|d| d.override_callback.is_some());
    match &observed.app {
        Err(f) if f.code == Some(190) => Some(
            "the app access token is refused (190): check meta.app_id and meta.app_secret".into(),
        ),
        Err(f) => Some(format!(
            "cannot read the app's subscriptions: {}",
            f.message
        )),
        Ok(None) => Some("the app has no webhook subscription: run `wa-gateway apply`".into()),
        Ok(Some(a)) if !a.fields.contains("messages") => {
            Some("the app is not subscribed to the `messages` field: run `wa-gateway apply`".into())
        }
        Ok(Some(a)) if !overridden && a.callback_url != desired.callback_url => Some(format!(
            "callback mismatch: Meta calls {}, public_url is {}",
            a.callback_url, desired.callback_url
        )),
        Ok(Some(_)) => None,
    }
}

/// Each declared number's status from one observation, in the file's order; `since` carries
/// over from `previous` while a number's status is unchanged.
pub fn derive_statuses(
    desired: &Desired,
    observed: &Observed,
    previous: &Statuses,
    now_unix: u64,
) -> Vec<NumberStatus> {
    desired
        .numbers
        .iter()
        .map(|n| {
            let (status, reason) = if !n.enabled {
                (NumberState::Inactive, Some(DISABLED.to_owned()))
            } else {
                match error_reason(desired, observed, n) {
                    Some(r) => (NumberState::Error, Some(r)),
                    None => (NumberState::Active, None),
                }
            };
            let since = previous
                .get(&n.phone_number_id)
                .filter(|p| p.status == status)
                .map_or(now_unix, |p| p.since);
            let info = observed
                .numbers
                .get(&n.phone_number_id)
                .and_then(|r| r.as_ref().ok());
            NumberStatus {
                phone_number_id: n.phone_number_id.clone(),
                display_name: n.display_name.clone(),
                status,
                reason,
                since,
                verified_name: info.and_then(|i| i.verified_name.clone()),
                display_phone_number: info.and_then(|i| i.display_phone_number.clone()),
                quality_rating: info.and_then(|i| i.quality_rating.clone()),
                waba_problem: waba_problem(desired, observed, n),
                checked_at: now_unix,
                seq: 0,
            }
        })
        .collect()
}

/// A number's status once the operator and the sender are heard beside Meta.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Effective {
    pub status: NumberState,
    /// Why, for Inactive and Error.
    pub reason: Option<String>,
    /// Unix seconds since it has been so, when known.
    pub since: Option<u64>,
}

/// The status shown everywhere (`/api/numbers`, the page, the gauge): the file's `enabled`,
/// then an operator's disconnect (`disconnected_since`), then Meta's view, then the sender's
/// run of refused sends. `meta` is `None` until the control loop has observed the number.
pub fn effective(
    enabled: bool,
    disconnected_since: Option<Option<u64>>,
    meta: Option<&NumberStatus>,
    failing: Option<&Failing>,
) -> Effective {
    let meta_since = |state: NumberState| meta.filter(|m| m.status == state).map(|m| m.since);
    if !enabled {
        return Effective {
            status: NumberState::Inactive,
            reason: Some(DISABLED.into()),
            since: meta_since(NumberState::Inactive),
        };
    }
    if let Some(since) = disconnected_since {
        return Effective {
            status: NumberState::Inactive,
            reason: Some(DISCONNECTED.into()),
            since,
        };
    }
    if let Some(m) = meta.filter(|m| m.status == NumberState::Error) {
        return Effective {
            status: NumberState::Error,
            reason: m.reason.clone(),
            since: Some(m.since),
        };
    }
    if let Some(f) = failing {
        return Effective {
            status: NumberState::Error,
            reason: Some(f.reason.clone()),
            since: Some(f.since),
        };
    }
    Effective {
        status: NumberState::Active,
        reason: None,
        since: meta_since(NumberState::Active),
    }
}

/// Observes Meta and derives every declared number's status (`previous` as a one-off caller
/// holds them: a list).
pub async fn statuses(
    client: &GraphClient,
    desired: &Desired,
    previous: &[NumberStatus],
) -> Vec<NumberStatus> {
    let previous: Statuses = previous
        .iter()
        .map(|s| (s.phone_number_id.clone(), s.clone()))
        .collect();
    let observed = observe(client, desired).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    derive_statuses(desired, &observed, &previous, now)
}

/// Sets `wa_gateway_number_status{phone_number_id, status}`: one series per listed number,
/// labelled with its current status; numbers not listed lose theirs.
pub fn record_metrics<'a>(
    metrics: &Metrics,
    statuses: impl IntoIterator<Item = (&'a str, NumberState)>,
) {
    metrics
        .number_status
        .set_all(statuses.into_iter().map(|(id, s)| (id, s.as_str())));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(status: NumberState, reason: Option<&str>, since: u64) -> NumberStatus {
        NumberStatus {
            phone_number_id: "1".into(),
            display_name: "One".into(),
            status,
            reason: reason.map(str::to_owned),
            since,
            verified_name: None,
            display_phone_number: None,
            quality_rating: None,
            waba_problem: None,
            checked_at: since,
            seq: 0,
        }
    }

    #[test]
    fn the_file_then_the_operator_then_meta_then_the_sender_decide() {
        let active = meta(NumberState::Active, None, 10);
        let expired = meta(NumberState::Error, Some("token (190)"), 20);
        let failing = Failing {
            reason: "the last 5 sends were refused".into(),
            since: 30,
        };
        let e = |status, reason: Option<&str>, since| Effective {
            status,
            reason: reason.map(str::to_owned),
            since,
        };
        use NumberState::*;
        let cases = [
            (true, None, None, None, e(Active, None, None)),
            (true, None, Some(&active), None, e(Active, None, Some(10))),
            (
                false,
                None,
                Some(&active),
                None,
                e(Inactive, Some(DISABLED), None),
            ),
            (
                false,
                Some(Some(5)),
                Some(&expired),
                Some(&failing),
                e(Inactive, Some(DISABLED), None),
            ),
            (
                true,
                Some(Some(5)),
                Some(&expired),
                None,
                e(Inactive, Some(DISCONNECTED), Some(5)),
            ),
            (
                true,
                None,
                Some(&expired),
                Some(&failing),
                e(Error, Some("token (190)"), Some(20)),
            ),
            (
                true,
                None,
                Some(&active),
                Some(&failing),
                e(Error, Some("the last 5 sends were refused"), Some(30)),
            ),
            (
                true,
                None,
                None,
                Some(&failing),
                e(Error, Some("the last 5 sends were refused"), Some(30)),
            ),
        ];
        for (i, (enabled, disc, m, f, want)) in cases.into_iter().enumerate() {
            assert_eq!(effective(enabled, disc, m, f), want, "case {i}");
        }
    }

    #[test]
    fn the_gauge_has_one_series_per_number_and_forgets_removed_numbers() {
        let metrics = Metrics::new();
        record_metrics(
            &metrics,
            [("1", NumberState::Error), ("2", NumberState::Active)],
        );
        record_metrics(&metrics, [("1", NumberState::Active)]);
        let text = metrics.render();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("wa_gateway_number_status{"))
            .collect();
        assert_eq!(
            series,
            [r#"wa_gateway_number_status{phone_number_id="1",status="active"} 1"#],
            "{text}"
        );
    }
}
