//! The Meta-side setup the emulator keeps (app and WABA subscriptions, registrations and PINs,
//! tokens and their expiry). A fresh emulator is a fresh Meta app: nothing subscribed, nothing
//! registered (unless its numbers are `preregistered`, like the test number of a new app). No I/O
//! here, and no look at the rest of the state (`number_info.rs` joins the two).

use super::EmulatorNumber;
use super::error::GraphError;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong PINs after which registration is locked (Meta answers 133008 from then on).
const MAX_PIN_FAILURES: u32 = 5;
/// Registrations and deregistrations Meta allows one number in `REGISTER_WINDOW` (then 133016).
const MAX_REGISTER_CALLS: usize = 10;
const REGISTER_WINDOW: Duration = Duration::from_secs(72 * 3600);
/// Least time between two verification code requests for one number.
const CODE_COOLDOWN: Duration = Duration::from_secs(60);
/// Fields a `whatsapp_business_account` app subscription may carry.
pub(crate) const WABA_FIELDS: &[&str] = &[
    "messages",
    "account_update",
    "account_alerts",
    "account_review_update",
    "business_capability_update",
    "message_template_status_update",
    "message_template_quality_update",
    "phone_number_name_update",
    "phone_number_quality_update",
    "security",
    "smb_message_echoes",
    "user_preferences",
    "calls",
    "template_category_update",
];

/// The app's `whatsapp_business_account` subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AppSubscription {
    pub callback_url: String,
    pub verify_token: String,
    pub fields: BTreeSet<String>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct NumberSetup {
    pub registered: bool,
    pub ever_registered: bool,
    pub pin: Option<String>,
    pub pin_failures: u32,
    pub code_requested_at: Option<Instant>,
    /// The code sent by the last request, until it is verified.
    pub code: Option<String>,
    pub verified: bool,
    /// When register and deregister were called, for Meta's 10-in-72-hours limit.
    pub register_calls: Vec<Instant>,
    pub override_callback: Option<String>,
}

#[derive(Clone, Debug)]
struct Token {
    wabas: HashSet<String>,
    expired: bool,
}

#[derive(Default)]
struct Inner {
    app: Option<AppSubscription>,
    /// WABA id → its override callback, for every WABA subscribed to the app.
    wabas: HashMap<String, Option<String>>,
    numbers: HashMap<String, NumberSetup>,
    tokens: HashMap<String, Token>,
    /// Embedded-signup codes → (WABA, already exchanged).
    signup_codes: HashMap<String, (String, bool)>,
}

/// Shared Meta-side setup; plain mutex, never held across an await.
pub(crate) struct MetaSetup {
    inner: Mutex<Inner>,
}

/// Who a bearer token is.
pub(crate) enum Caller {
    /// `APP_ID|APP_SECRET`.
    App,
    /// A system-user or business token with access to these WABAs.
    Business(HashSet<String>),
}

/// A fresh 6-digit code, as Meta sends by SMS or voice call; tests and people read it back from
/// `GET /_emulator/numbers/{id}/verification_code`.
fn new_code() -> String {
    format!("{:06}", rand::random_range(0..1_000_000u32))
}

/// Why an authorization code exchange failed (mapped to Meta's OAuth errors by the caller).
pub(crate) enum ExchangeError {
    Unknown,
    Used,
}
impl MetaSetup {
    pub fn new(numbers: &[EmulatorNumber], preregistered: bool) -> Self {
        let mut inner = Inner::default();
        for n in numbers {
            inner
                .tokens
                .entry(n.access_token.clone())
                .or_insert_with(|| Token {
                    wabas: HashSet::new(),
                    expired: false,
                })
                .wabas
                .insert(n.waba_id.clone());
            inner.numbers.insert(
                n.phone_number_id.clone(),
                NumberSetup {
                    verified: true,
                    registered: preregistered,
                    ever_registered: preregistered,
                    ..NumberSetup::default()
                },
            );
        }
        Self {
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Who `token` is: 190 when it is unknown, 190/463 when it expired.
    pub fn caller(&self, token: Option<&str>, app_token: &str) -> Result<Caller, GraphError> {
        let Some(token) = token else {
            return Err(GraphError::invalid_token());
        };
        if token == app_token {
            return Ok(Caller::App);
        }
        match self.lock().tokens.get(token) {
            Some(t) if t.expired => Err(GraphError::token_expired()),
            Some(t) => Ok(Caller::Business(t.wabas.clone())),
            None => Err(GraphError::invalid_token()),
        }
    }

    /// Whether `token` is valid (not expired) and may act on `waba`.
    pub fn token_error(&self, token: Option<&str>, waba: &str) -> Option<GraphError> {
        let inner = self.lock();
        match token.and_then(|t| inner.tokens.get(t)) {
            None => Some(GraphError::invalid_token()),
            Some(t) if t.expired => Some(GraphError::token_expired()),
            Some(t) if !t.wabas.contains(waba) => Some(GraphError::invalid_token()),
            Some(_) => None,
        }
    }

    /// Whether `token` is a valid business token of any WABA.
    pub fn token_is_valid(&self, token: &str) -> bool {
        self.lock().tokens.get(token).is_some_and(|t| !t.expired)
    }

    /// `(is_valid, wabas)` of a token, for `debug_token`.
    pub fn debug(&self, token: &str) -> Option<(bool, Vec<String>)> {
        self.lock().tokens.get(token).map(|t| {
            let mut wabas: Vec<String> = t.wabas.iter().cloned().collect();
            wabas.sort();
            (!t.expired, wabas)
        })
    }

    /// Expires `token`; false when the emulator does not know it.
    pub fn expire(&self, token: &str) -> bool {
        match self.lock().tokens.get_mut(token) {
            Some(t) => {
                t.expired = true;
                true
            }
            None => false,
        }
    }

    /// Issues a new token with access to `waba` (a regenerated system-user token).
    pub fn issue(&self, waba: &str) -> String {
        let token = format!(
            "EAAemu{}",
            super::envelope::new_wamid().replace("wamid.", "")
        );
        self.lock().tokens.insert(
            token.clone(),
            Token {
                wabas: HashSet::from([waba.to_owned()]),
                expired: false,
            },
        );
        token
    }

    pub fn app(&self) -> Option<AppSubscription> {
        self.lock().app.clone()
    }

    pub fn set_app(&self, sub: Option<AppSubscription>) {
        self.lock().app = sub;
    }

    /// The WABA's override callback: `None` when not subscribed, `Some(None)` without override.
    pub fn waba(&self, waba: &str) -> Option<Option<String>> {
        self.lock().wabas.get(waba).cloned()
    }

    pub fn set_waba(&self, waba: &str, sub: Option<Option<String>>) {
        let mut inner = self.lock();
        match sub {
            Some(o) => inner.wabas.insert(waba.to_owned(), o),
            None => inner.wabas.remove(waba),
        };
    }

    pub fn number(&self, pnid: &str) -> NumberSetup {
        self.lock().numbers.get(pnid).cloned().unwrap_or_default()
    }

    pub fn is_registered(&self, pnid: &str) -> bool {
        self.lock().numbers.get(pnid).is_some_and(|n| n.registered)
    }

    fn with_number<T>(&self, pnid: &str, f: impl FnOnce(&mut NumberSetup) -> T) -> T {
        f(self.lock().numbers.entry(pnid.to_owned()).or_default())
    }

    /// An Embedded Signup authorization code for `waba`, as the popup hands to the browser.
    pub fn mint_signup_code(&self, waba: &str) -> String {
        let code = format!("AQ{}", super::envelope::new_wamid().replace("wamid.", ""));
        self.lock()
            .signup_codes
            .insert(code.clone(), (waba.to_owned(), false));
        code
    }

    /// Exchanges a signup code (once) for a new business token with access to its WABA.
    pub fn exchange_code(&self, code: &str) -> Result<String, ExchangeError> {
        let waba = {
            let mut inner = self.lock();
            match inner.signup_codes.get_mut(code) {
                None => return Err(ExchangeError::Unknown),
                Some((_, true)) => return Err(ExchangeError::Used),
                Some((waba, used)) => {
                    *used = true;
                    waba.clone()
                }
            }
        };
        Ok(self.issue(&waba))
    }

    /// `POST /{PNID}/register`: a first PIN is set; a set PIN must match. Meta refuses a number
    /// whose code was requested and not verified (133006), and more than 10 registrations or
    /// deregistrations in 72 hours (133016).
    pub fn register(&self, pnid: &str, pin: &str) -> Result<(), GraphError> {
        self.with_number(pnid, |n| {
            count_register_call(n)?;
            if n.pin_failures >= MAX_PIN_FAILURES {
                return Err(GraphError::too_many_pin_guesses());
            }
            if !n.verified {
                return Err(GraphError::reverification_needed());
            }
            match &n.pin {
                Some(set) if set != pin => {
                    n.pin_failures += 1;
                    Err(GraphError::pin_mismatch())
                }
                _ => {
                    n.pin = Some(pin.to_owned());
                    n.pin_failures = 0;
                    n.registered = true;
                    n.ever_registered = true;
                    Ok(())
                }
            }
        })
    }

    /// `POST /{PNID}/deregister`; the PIN stays set, as at Meta.
    pub fn deregister(&self, pnid: &str) -> Result<(), GraphError> {
        self.with_number(pnid, |n| {
            count_register_call(n)?;
            n.registered = false;
            Ok(())
        })
    }

    /// `POST /{PNID}` `{pin}`.
    pub fn set_pin(&self, pnid: &str, pin: &str) {
        self.with_number(pnid, |n| {
            n.pin = Some(pin.to_owned());
            n.pin_failures = 0;
        });
    }

    pub fn set_number_override(&self, pnid: &str, uri: Option<String>) {
        self.with_number(pnid, |n| n.override_callback = uri);
    }

    /// `POST /{PNID}/request_code`, refused while the previous code is fresh.
    pub fn request_code(&self, pnid: &str) -> Result<(), GraphError> {
        self.with_number(pnid, |n| {
            let now = Instant::now();
            if n.code_requested_at
                .is_some_and(|at| now.duration_since(at) < CODE_COOLDOWN)
            {
                return Err(GraphError::code_request_too_soon());
            }
            n.code_requested_at = Some(now);
            n.code = Some(new_code());
            n.verified = false;
            Ok(())
        })
    }

    /// The code the last request sent to `pnid`, until it is verified.
    pub fn pending_code(&self, pnid: &str) -> Option<String> {
        self.lock().numbers.get(pnid).and_then(|n| n.code.clone())
    }

    /// `POST /{PNID}/verify_code`: the code of the last request.
    pub fn verify_code(&self, pnid: &str, code: &str) -> Result<(), GraphError> {
        self.with_number(pnid, |n| {
            if n.code.as_deref() != Some(code) {
                return Err(GraphError::verification_code());
            }
            n.code = None;
            n.verified = true;
            Ok(())
        })
    }
}

/// Counts a register or deregister call against Meta's limit; refused calls count too.
fn count_register_call(n: &mut NumberSetup) -> Result<(), GraphError> {
    let now = Instant::now();
    n.register_calls
        .retain(|at| now.duration_since(*at) < REGISTER_WINDOW);
    if n.register_calls.len() >= MAX_REGISTER_CALLS {
        return Err(GraphError::register_rate_limited());
    }
    n.register_calls.push(now);
    Ok(())
}
