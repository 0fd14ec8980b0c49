//! The Embedded Signup backend: exchange the code for a business token, store it encrypted under
//! a name, list the WABA's phone numbers with it, and write the `numbers:` entries to add to the
//! file (`access_token: { stored: NAME }`). Subscribing the app and registering stay with apply.

use super::messages::{Step, Subject};
use super::{OnboardError, Onboarding};
use crate::graph::NumberInfo;
use serde::{Deserialize, Serialize};

/// What the browser (or the operator) hands over after Embedded Signup.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// The authorization code from `FB.login` (single-use, short-lived).
    pub code: String,
    /// `waba_id` from the `WA_EMBEDDED_SIGNUP` message event.
    pub waba_id: String,
    /// `phone_number_id` from the same event: only this number goes into the YAML.
    #[serde(default)]
    pub phone_number_id: Option<String>,
    /// The stored secret's name; `waba-<WABA id>` when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Overwrite a stored secret of that name; without it an existing one is kept and the
    /// signup refused (before the code is spent).
    #[serde(default)]
    pub replace: bool,
}

/// One number of the WABA as the YAML lists it.
#[derive(Clone, Debug, Serialize)]
pub struct SignupNumber {
    pub phone_number_id: String,
    pub display_phone_number: Option<String>,
    pub verified_name: Option<String>,
    pub code_verification_status: Option<String>,
    pub status: Option<String>,
}

/// The result: where the token went and the YAML to add. Never holds the token.
#[derive(Clone, Debug, Serialize)]
pub struct SignupOutcome {
    /// The stored secret's name.
    pub name: String,
    /// The id of the key it is encrypted under.
    pub key_id: String,
    pub waba_id: String,
    pub numbers: Vec<SignupNumber>,
    /// `numbers:` entries to add to the config file.
    pub yaml: String,
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl Onboarding<'_> {
    /// Runs the exchange and stores the token; see the module doc.
    pub async fn signup(&self, req: &SignupRequest) -> Result<SignupOutcome, OnboardError> {
        let waba = req.waba_id.trim();
        if !digits(waba) {
            return Err(OnboardError::Invalid(format!(
                "waba_id {waba:?} must be digits only, as the WA_EMBEDDED_SIGNUP event gives it"
            )));
        }
        if let Some(p) = &req.phone_number_id
            && !digits(p)
        {
            return Err(OnboardError::Invalid(format!(
                "phone_number_id {p:?} must be digits only"
            )));
        }
        if req.code.trim().is_empty() {
            return Err(OnboardError::Invalid(
                "code is empty: pass the authorization code FB.login returned".into(),
            ));
        }
        let name = req.name.clone().unwrap_or_else(|| format!("waba-{waba}"));
        if !crate::config::secret::is_stored_name(&name) {
            return Err(OnboardError::Invalid(format!(
                "{name:?} is not a stored secret name: use 1 to 64 letters, digits, `_`, `-` or `.`"
            )));
        }
        // Fail before spending the single-use code if nothing could be stored.
        if crate::secrets::keyring_of(self.config)
            .map_err(crate::secrets::StoredSecretError::Issues)?
            .is_none()
        {
            return Err(OnboardError::Invalid(format!(
                "meta.encryption_key is not set, so the token could not be stored encrypted: add \
                 meta.encryption_key: {{ env: WA_ENCRYPTION_KEY }} holding {}, then run signup \
                 again with a new code",
                crate::vault::KEY_FORMAT
            )));
        }
        if !req.replace
            && self
                .store
                .stored_secrets()
                .await?
                .iter()
                .any(|s| s.name == name)
        {
            return Err(OnboardError::Exists(name));
        }
        let meta = &self.config.meta;
        let who = Subject {
            phone_number_id: req.phone_number_id.as_deref().unwrap_or("(new)"),
            field: "",
        };
        let token = self
            .graph
            .exchange_code(&meta.app_id, meta.app_secret.expose(), req.code.trim())
            .await
            .map_err(|e| OnboardError::meta(Step::Exchange, who, &e))?;
        let key_id =
            crate::secrets::put(self.config, self.store, &name, &token.access_token).await?;
        tracing::info!(waba_id = %waba, %name, "embedded signup: token stored encrypted");
        let listed = self
            .graph
            .phone_numbers(waba, &token.access_token)
            .await
            .map_err(|e| OnboardError::meta(Step::ListNumbers, who, &e))?;
        let listed: Vec<NumberInfo> = match &req.phone_number_id {
            Some(p) => {
                let one: Vec<_> = listed.into_iter().filter(|n| &n.id == p).collect();
                if one.is_empty() {
                    return Err(OnboardError::Invalid(format!(
                        "the token is stored as {name}, but WhatsApp Business Account {waba} has no \
                         phone number {p}: check the ids from the signup event, then run \
                         `wa-gateway signup` without --phone-number-id to list its numbers"
                    )));
                }
                one
            }
            None => listed,
        };
        let numbers: Vec<SignupNumber> = listed
            .into_iter()
            .map(|n| SignupNumber {
                phone_number_id: n.id,
                display_phone_number: n.display_phone_number,
                verified_name: n.verified_name,
                code_verification_status: n.code_verification_status,
                status: n.status,
            })
            .collect();
        let agent = self
            .config
            .agents
            .keys()
            .next()
            .map_or("echo", String::as_str);
        Ok(SignupOutcome {
            yaml: yaml(&name, waba, agent, &numbers),
            name,
            key_id,
            waba_id: waba.to_owned(),
            numbers,
        })
    }
}

/// The `numbers:` entries, indented to paste under `numbers:`. Strings are JSON-quoted, which
/// YAML reads as double-quoted scalars.
pub fn yaml(name: &str, waba: &str, agent: &str, numbers: &[SignupNumber]) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut out = format!(
        "# Add under `numbers:` in the config. The token is stored encrypted as `{name}`.\n"
    );
    if numbers.is_empty() {
        out.push_str(&format!(
            "# WhatsApp Business Account {waba} has no phone numbers yet: add one in WhatsApp Manager.\n"
        ));
    }
    for n in numbers {
        let display = match (&n.verified_name, &n.display_phone_number) {
            (Some(v), Some(d)) => format!("{v} ({d})"),
            (Some(v), None) => v.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => String::new(),
        };
        out.push_str(&format!(
            "  - phone_number_id: {}\n    waba_id: {}\n    display_name: {}\n    agent: {}\n    \
             access_token: {{ stored: {} }}\n    # pin: {{ env: WA_PIN_{} }}  # the two-step PIN, \
             for `wa-gateway number register` and `apply`\n",
            q(&n.phone_number_id),
            q(waba),
            q(&display),
            q(agent),
            q(name),
            n.phone_number_id,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_yaml_parses_as_numbers_with_a_stored_token() {
        let n = SignupNumber {
            phone_number_id: "106540352242922".into(),
            display_phone_number: Some("+1 555-000-1111".into()),
            verified_name: Some("Acme \"Support\": 24/7".into()),
            code_verification_status: None,
            status: None,
        };
        let text = yaml("waba-1022", "1022", "support", &[n]);
        let doc = format!("numbers:\n{text}");
        let parsed: serde_norway::Value = serde_norway::from_str(&doc).unwrap();
        let first = &parsed["numbers"][0];
        assert_eq!(first["phone_number_id"].as_str(), Some("106540352242922"));
        assert_eq!(first["waba_id"].as_str(), Some("1022"));
        assert_eq!(
            first["display_name"].as_str(),
            Some("Acme \"Support\": 24/7 (+1 555-000-1111)")
        );
        assert_eq!(first["access_token"]["stored"].as_str(), Some("waba-1022"));
        assert!(text.contains("# pin: { env: WA_PIN_106540352242922 }"));
    }
}
