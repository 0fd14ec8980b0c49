//! What the file declares at Meta: the app's `whatsapp_business_account` subscription at
//! `public_url`, each declared WABA subscribed to the app, each enabled number registered.

use crate::config::{Config, Secret};
use crate::ids::{PhoneNumberId, WabaId};
use std::collections::{BTreeMap, BTreeSet};

/// Webhook fields the gateway needs; others already subscribed are kept. `smb_message_echoes`
/// carries what a person sends from the WhatsApp Business app on a coexistence number: the
/// gateway pauses the agent for that conversation.
pub const REQUIRED_FIELDS: &[&str] = &["messages", "smb_message_echoes"];

/// The Meta-side state the configuration asks for, with the secrets `apply` needs.
#[derive(Clone, Debug)]
pub struct Desired {
    pub app_id: String,
    pub app_secret: Secret,
    /// The app's callback URL: `public_url`.
    pub callback_url: String,
    pub verify_token: Secret,
    /// Fields the app subscription must include.
    pub fields: BTreeSet<String>,
    pub wabas: BTreeMap<WabaId, DesiredWaba>,
    pub numbers: Vec<DesiredNumber>,
    /// WABAs no longer declared (from the previous config) with a token that reaches them:
    /// observed so that `meta.prune` can unsubscribe them.
    pub retired: BTreeMap<WabaId, Secret>,
    /// `meta.prune`.
    pub prune: bool,
}

/// A declared WABA.
#[derive(Clone, Debug)]
pub struct DesiredWaba {
    /// `meta.waba_callbacks[waba]`, the WABA-level override callback.
    pub override_callback: Option<String>,
    /// Every distinct token of the WABA's declared numbers, enabled numbers' first, in the
    /// file's order: WABA-level calls use the first that Meta accepts, so one number's expired
    /// token does not blind the gateway to the WABA.
    pub tokens: Vec<Secret>,
}

/// A declared number.
#[derive(Clone, Debug)]
pub struct DesiredNumber {
    /// Its index under `numbers`, to name fields in messages (`numbers[0].pin`).
    pub index: usize,
    pub phone_number_id: PhoneNumberId,
    pub waba_id: WabaId,
    pub display_name: String,
    pub enabled: bool,
    pub token: Secret,
    pub pin: Option<Secret>,
}

impl Desired {
    /// The desired state of a loaded (validated, secrets resolved) configuration.
    pub fn from_config(cfg: &Config) -> Self {
        let mut wabas = BTreeMap::<WabaId, DesiredWaba>::new();
        let (enabled, disabled): (Vec<_>, Vec<_>) = cfg.numbers.iter().partition(|n| n.enabled);
        for n in enabled.into_iter().chain(disabled) {
            let waba = wabas
                .entry(n.waba_id.clone())
                .or_insert_with(|| DesiredWaba {
                    override_callback: cfg.meta.waba_callbacks.get(n.waba_id.as_str()).cloned(),
                    tokens: Vec::new(),
                });
            if !waba
                .tokens
                .iter()
                .any(|t| t.expose() == n.access_token.expose())
            {
                waba.tokens.push(n.access_token.clone());
            }
        }
        let numbers = cfg
            .numbers
            .iter()
            .enumerate()
            .map(|(index, n)| DesiredNumber {
                index,
                phone_number_id: n.phone_number_id.clone(),
                waba_id: n.waba_id.clone(),
                display_name: n.display_name.clone(),
                enabled: n.enabled,
                token: n.access_token.clone(),
                pin: n.pin.clone(),
            })
            .collect();
        Self {
            app_id: cfg.meta.app_id.clone(),
            app_secret: cfg.meta.app_secret.clone(),
            callback_url: cfg.public_url.clone(),
            verify_token: cfg.meta.verify_token.clone(),
            fields: REQUIRED_FIELDS.iter().map(|f| (*f).to_owned()).collect(),
            wabas,
            numbers,
            retired: BTreeMap::new(),
            prune: cfg.meta.prune,
        }
    }

    /// Adds the WABAs `previous` declared and this config does not, so a reload that removes
    /// a WABA's last number can prune its subscription.
    pub fn with_previous(mut self, previous: &Config) -> Self {
        for n in &previous.numbers {
            if !self.wabas.contains_key(&n.waba_id) {
                self.retired
                    .entry(n.waba_id.clone())
                    .or_insert_with(|| n.access_token.clone());
            }
        }
        self
    }

    /// The app access token, `APP_ID|APP_SECRET`.
    pub fn app_token(&self) -> String {
        format!("{}|{}", self.app_id, self.app_secret.expose())
    }

    /// The declared number `pnid`.
    pub fn number(&self, pnid: &PhoneNumberId) -> Option<&DesiredNumber> {
        self.numbers.iter().find(|n| &n.phone_number_id == pnid)
    }

    /// The tokens for WABA calls, in the order to try them: a declared WABA's numbers' tokens,
    /// or the one a retired WABA was reached with.
    pub fn waba_tokens(&self, waba: &WabaId) -> Vec<&Secret> {
        match self.wabas.get(waba) {
            Some(w) => w.tokens.iter().collect(),
            None => self.retired.get(waba).into_iter().collect(),
        }
    }
}
