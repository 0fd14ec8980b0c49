//! Phone verification (request a code by SMS or voice call, submit it) and registration with the
//! two-step PIN from the file. The resend cooldown is kept in storage, so it holds across the CLI,
//! the admin API and replicas; Meta enforces its own limit behind it.

use super::messages::{Step, Subject};
use super::{OnboardError, Onboarding};
use crate::config::Number;
use crate::graph::CodeMethod;
use std::time::Duration;

/// Least time between two code requests for one number (Meta refuses sooner ones).
pub const CODE_COOLDOWN: Duration = Duration::from_secs(60);

/// How long to wait before the next code request, given the last one (ms since the epoch).
pub fn cooldown_left(last_ms: Option<i64>, now_ms: i64, cooldown: Duration) -> Option<Duration> {
    let last = last_ms?;
    let elapsed = now_ms.saturating_sub(last).max(0) as u128;
    let cooldown_ms = cooldown.as_millis();
    (elapsed < cooldown_ms).then(|| Duration::from_millis((cooldown_ms - elapsed) as u64))
}

/// Parses `sms` / `voice` (any case).
pub fn parse_method(s: &str) -> Result<CodeMethod, OnboardError> {
    match s.to_ascii_lowercase().as_str() {
        "sms" => Ok(CodeMethod::Sms),
        "voice" => Ok(CodeMethod::Voice),
        _ => Err(OnboardError::Invalid(format!(
            "code method {s:?} is not sms or voice"
        ))),
    }
}

/// Meta's language codes: `en`, `en_US`, `pt_BR`, `zh_CN` …
fn check_language(language: &str) -> Result<(), OnboardError> {
    let ok = match language.split_once('_') {
        Some((lang, region)) => {
            (2..=3).contains(&lang.len())
                && lang.bytes().all(|b| b.is_ascii_lowercase())
                && region.len() == 2
                && region.bytes().all(|b| b.is_ascii_uppercase())
        }
        None => {
            (2..=3).contains(&language.len()) && language.bytes().all(|b| b.is_ascii_lowercase())
        }
    };
    match ok {
        true => Ok(()),
        false => Err(OnboardError::Invalid(format!(
            "language {language:?} is not a language code like en_US, es or pt_BR"
        ))),
    }
}

impl Onboarding<'_> {
    /// The declared number and its field path (`numbers[i]`).
    fn number(&self, id: &str) -> Result<(&Number, String), OnboardError> {
        self.config
            .numbers
            .iter()
            .enumerate()
            .find(|(_, n)| n.phone_number_id.as_str() == id)
            .map(|(i, n)| (n, format!("numbers[{i}]")))
            .ok_or_else(|| OnboardError::UnknownNumber(id.to_owned()))
    }

    /// Asks Meta to send a verification code, unless one was requested within the cooldown.
    pub async fn request_code(
        &self,
        id: &str,
        method: CodeMethod,
        language: &str,
    ) -> Result<(), OnboardError> {
        let (number, field) = self.number(id)?;
        check_language(language)?;
        let method_name = match method {
            CodeMethod::Sms => "SMS",
            CodeMethod::Voice => "VOICE",
        };
        let now = crate::store::now_ms();
        let cooldown_ms = CODE_COOLDOWN.as_millis() as i64;
        if let Some(last) = self
            .store
            .claim_code_request(id, method_name, language, now, cooldown_ms)
            .await?
        {
            return Err(OnboardError::Cooldown {
                phone_number_id: id.to_owned(),
                ago: (now.saturating_sub(last).max(0) / 1000) as u64,
                wait: cooldown_left(Some(last), now, CODE_COOLDOWN).unwrap_or(Duration::ZERO),
            });
        }
        let token = number.access_token.expose();
        if let Err(e) = self.graph.request_code(id, token, method, language).await {
            // Meta sent nothing, so the next attempt need not wait.
            self.store.release_code_request(id, now).await?;
            let who = Subject {
                phone_number_id: id,
                field: &field,
            };
            return Err(OnboardError::meta(Step::RequestCode, who, &e));
        }
        tracing::info!(phone_number_id = %id, method = method_name, %language, "verification code requested");
        Ok(())
    }

    /// Submits the code Meta sent.
    pub async fn verify_code(&self, id: &str, code: &str) -> Result<(), OnboardError> {
        let (number, field) = self.number(id)?;
        let code = code.trim();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(OnboardError::Invalid(
                "the verification code is the 6 digits Meta sent by SMS or voice call".into(),
            ));
        }
        self.graph
            .verify_code(id, number.access_token.expose(), code)
            .await
            .map_err(|e| {
                let who = Subject {
                    phone_number_id: id,
                    field: &field,
                };
                OnboardError::meta(Step::VerifyCode, who, &e)
            })?;
        tracing::info!(phone_number_id = %id, "phone number verified");
        Ok(())
    }

    /// Registers the number with the Cloud API using the file's two-step PIN.
    pub async fn register(&self, id: &str) -> Result<(), OnboardError> {
        let (number, field) = self.number(id)?;
        let Some(pin) = &number.pin else {
            return Err(OnboardError::NoPin {
                phone_number_id: id.to_owned(),
                field,
            });
        };
        let pin = pin.expose();
        if pin.len() != 6 || !pin.bytes().all(|b| b.is_ascii_digit()) {
            return Err(OnboardError::Invalid(format!(
                "the PIN in {field}.pin must be 6 digits, as Meta's two-step verification takes"
            )));
        }
        self.graph
            .register(id, number.access_token.expose(), pin)
            .await
            .map_err(|e| {
                let who = Subject {
                    phone_number_id: id,
                    field: &field,
                };
                OnboardError::meta(Step::Register, who, &e)
            })?;
        tracing::info!(phone_number_id = %id, "number registered with the Cloud API");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cooldown_counts_from_the_last_request() {
        let c = Duration::from_secs(60);
        let cases = [
            (None, 1_000_000, None),
            (Some(1_000_000), 1_000_000, Some(60_000)),
            (Some(1_000_000), 1_001_500, Some(58_500)),
            (Some(1_000_000), 1_059_999, Some(1)),
            (Some(1_000_000), 1_060_000, None),
            (Some(1_000_000), 2_000_000, None),
            // A clock that went back never waits longer than the cooldown.
            (Some(1_000_000), 900_000, Some(60_000)),
        ];
        for (last, now, want) in cases {
            assert_eq!(
                cooldown_left(last, now, c),
                want.map(Duration::from_millis),
                "{last:?} {now}"
            );
        }
    }

    #[test]
    fn methods_and_languages() {
        assert_eq!(parse_method("SMS").unwrap(), CodeMethod::Sms);
        assert_eq!(parse_method("voice").unwrap(), CodeMethod::Voice);
        assert!(parse_method("email").is_err());
        for ok in ["en_US", "es", "pt_BR", "fil"] {
            assert!(check_language(ok).is_ok(), "{ok}");
        }
        for bad in ["EN", "en-US", "en_us", "english", ""] {
            assert!(check_language(bad).is_err(), "{bad}");
        }
    }
}
