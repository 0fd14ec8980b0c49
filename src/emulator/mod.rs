//! A local stand-in for Meta's Cloud API: the Graph endpoints the gateway calls, signed webhook
//! delivery with Meta's retries, a control API under `/_emulator/`, and fault injection.
//! It refuses what Meta refuses, with Meta's error bodies; it never talks to Meta.

mod clock;
mod envelope;
mod error;
mod faults;
mod graph;
mod handshake;
mod llm;
mod manage;
mod media;
mod media_store;
mod number_info;
mod setup;
mod setup_control;
mod state;
mod webhook_queue;
mod webhooks;

pub mod chat;
pub mod cli;
pub mod client;
pub mod control;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use client::ControlClient;
pub use faults::{Fault, FaultKind};
pub use media_store::UploadedMedia;
pub use setup_control::{IssueToken, SignupCode, SignupCodeRequest, TokenBody, VerificationCode};
pub use state::SentMessage;
pub use webhook_queue::WebhookStats;

use state::State;

/// What the emulator serves: the app, its numbers and how webhooks are delivered.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// The Meta app id.
    pub app_id: String,
    /// Key of every webhook's X-Hub-Signature-256.
    pub app_secret: String,
    /// The token echoed in the GET verification handshake.
    pub verify_token: String,
    /// Where signed webhooks go (the gateway's `/webhook`); deliveries wait until it is set.
    pub webhook_url: Option<String>,
    /// When not empty, deliveries go to these URLs in turn instead of `webhook_url`: several
    /// gateway replicas with no load balancer in front (the bench). As behind Meta's load
    /// balancer, any replica may get any webhook, a redelivery too.
    pub webhook_spread: Vec<String>,
    /// The numbers the emulated WhatsApp Business Accounts own.
    pub numbers: Vec<EmulatorNumber>,
    /// Send `sent` and `delivered` status webhooks after each accepted message.
    pub statuses: bool,
    /// First webhook redelivery delay; it doubles with jitter up to `retry_max`.
    pub retry_initial: Duration,
    /// Longest delay between two redeliveries (Meta keeps retrying for up to 7 days).
    pub retry_max: Duration,
    /// Refuse sends from unregistered numbers (133010), as Meta does. Off by default so a
    /// fresh emulator serves sends before anyone runs `wa-gateway apply`.
    pub strict_registration: bool,
    /// In-process with the gateway: every call Meta makes to a callback (deliveries and GET
    /// handshakes) goes to `webhook_url`, the gateway's own listener, whatever URL the app or a
    /// WABA subscribed; `public_url` then names a place the emulator never calls.
    pub pin_callbacks: bool,
    /// The numbers start registered on the Cloud API, like the test number Meta's app
    /// dashboard hands a new app (no PIN is needed to use them).
    pub preregistered: bool,
}

/// One emulated business phone number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmulatorNumber {
    /// Meta's phone number id.
    pub phone_number_id: String,
    /// The WhatsApp Business Account that owns the number (`entry[].id` in webhooks).
    pub waba_id: String,
    /// The number as Meta shows it in `metadata.display_phone_number` (digits, no `+`).
    pub display_phone_number: String,
    /// The bearer token Graph calls for this number must carry.
    pub access_token: String,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            app_id: "1234567890".into(),
            app_secret: "emulator-app-secret".into(),
            verify_token: "emulator-verify-token".into(),
            webhook_url: None,
            webhook_spread: Vec::new(),
            numbers: Vec::new(),
            statuses: true,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            strict_registration: false,
            pin_callbacks: false,
            preregistered: false,
        }
    }
}

impl EmulatorConfig {
    /// The emulator a loaded gateway config expects: its numbers, tokens and secrets; webhooks go
    /// to `public_url`.
    pub fn from_gateway(cfg: &crate::config::Config) -> Self {
        let numbers = cfg
            .numbers
            .iter()
            .map(|n| EmulatorNumber {
                phone_number_id: n.phone_number_id.to_string(),
                waba_id: n.waba_id.to_string(),
                display_phone_number: display_number_for(n.phone_number_id.as_str()),
                access_token: n.access_token.expose().to_owned(),
            })
            .collect();
        Self {
            app_id: cfg.meta.app_id.clone(),
            app_secret: cfg.meta.app_secret.expose().to_owned(),
            verify_token: cfg.meta.verify_token.expose().to_owned(),
            webhook_url: Some(cfg.public_url.clone()),
            numbers,
            ..Self::default()
        }
    }
}

/// The config names no phone number, only its id: make up a stable US test number from the id's
/// last digits, as Meta's test numbers look (`1555…`).
fn display_number_for(phone_number_id: &str) -> String {
    let digits: String = phone_number_id
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let tail = &digits[digits.len().saturating_sub(7)..];
    format!("1555{tail:0>7}")
}

/// Starts the emulator on `listener`; it stops (and abandons pending webhooks) when `shutdown`
/// is cancelled.
pub async fn start(
    cfg: EmulatorConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<EmulatorHandle> {
    let addr = listener.local_addr()?;
    let tasks = TaskTracker::new();
    let (state, deliveries) = State::new(cfg);
    let state = Arc::new(state);
    tasks.spawn(webhooks::run_queue(
        state.clone(),
        deliveries,
        shutdown.clone(),
        tasks.clone(),
    ));
    let llm = Arc::new(llm::LlmState::default());
    let app = graph::router(state.clone())
        .merge(media::router(state.clone()))
        .merge(manage::router(state.clone()))
        .merge(control::router(state.clone()))
        .merge(llm::router(llm.clone()));
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(err) = served {
            tracing::error!(%err, "emulator listener failed");
        }
    });
    tasks.close();
    tracing::info!(%addr, "Cloud API emulator listening");
    Ok(EmulatorHandle {
        state,
        url: format!("http://{addr}"),
        tasks,
        llm,
    })
}

/// A running emulator: drive it (customers, faults, latency) and inspect what the gateway did.
#[derive(Clone)]
pub struct EmulatorHandle {
    state: Arc<State>,
    url: String,
    tasks: TaskTracker,
    llm: Arc<llm::LlmState>,
}

impl EmulatorHandle {
    /// The Graph base URL to give the gateway (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Points webhook delivery somewhere else; pending deliveries go there from now on.
    pub fn set_webhook_url(&self, url: String) {
        self.state.set_webhook_url(url);
    }

    /// A customer writes `text` to number `pnid`: a signed `messages` webhook is queued.
    /// Returns the new message's wamid.
    pub async fn customer_says(
        &self,
        pnid: &str,
        from_wa_id: &str,
        name: &str,
        text: &str,
    ) -> String {
        self.state.customer_says(pnid, from_wa_id, name, text)
    }

    /// A customer sends `message`, any message object (`{"type":"image","image":{"id":…}}`):
    /// the emulator fills `from`, `id` and `timestamp` (and a stored blob's `mime_type` and
    /// `sha256` when the caller left them out), opens the 24h window and queues the webhook.
    /// Returns the new message's wamid.
    pub fn customer_sends(
        &self,
        pnid: &str,
        from_wa_id: &str,
        name: &str,
        message: serde_json::Value,
    ) -> String {
        self.state.customer_sends(pnid, from_wa_id, name, message)
    }

    /// Customer `from` writes `text` while another app is in control of the conversation (Meta's
    /// conversation routing): the gateway gets a copy on the `standby` field. Returns the wamid.
    pub fn customer_says_on_standby(
        &self,
        pnid: &str,
        from: &str,
        name: &str,
        text: &str,
    ) -> String {
        self.state.customer_says_on_standby(pnid, from, name, text)
    }

    /// A person writes `text` to customer `to` from the WhatsApp Business app on number `pnid`
    /// (coexistence); the gateway gets its echo on `smb_message_echoes`. Returns the wamid.
    pub fn business_app_says(&self, pnid: &str, to: &str, text: &str) -> String {
        let message = serde_json::json!({ "type": "text", "text": { "body": text } });
        self.state.business_app_sends(pnid, to, message)
    }

    /// Echoes the gateway's own message `wamid` on `smb_message_echoes`, as a coexistence
    /// number may; false if the gateway sent no such message.
    pub fn echo_sent(&self, wamid: &str) -> bool {
        self.state.echo_sent(wamid)
    }

    /// Stores a media blob served at `GET /{version}/{media-id}`; returns the new media id.
    pub fn add_media(&self, mime: &str, bytes: Vec<u8>) -> String {
        self.state.media.add(mime, bytes)
    }

    /// Every file the numbers uploaded with `POST /{version}/{phone-number-id}/media`, in
    /// order (refused and forgotten uploads are not here).
    pub fn uploads(&self) -> Vec<UploadedMedia> {
        self.state.media.uploads()
    }

    /// Forgets media `id` (an upload Meta no longer keeps); sends naming it are refused from now
    /// on. False if it was not known.
    pub fn forget_media(&self, id: &str) -> bool {
        self.state.media.forget(id)
    }

    /// Queues any envelope for signed delivery; inbound messages in it open the 24h window.
    pub fn deliver_envelope(&self, envelope: serde_json::Value) {
        self.state.deliver_envelope(envelope);
    }

    /// Records a customer message that reached the gateway without the emulator (the bench posts
    /// webhooks itself): opens the 24h window and lets the gateway mark `wamid` read. No webhook.
    pub fn record_inbound(&self, pnid: &str, customer: &str, wamid: &str, unix_secs: i64) {
        self.state.record_inbound(pnid, customer, wamid, unix_secs);
    }

    /// Waits up to `wait` for messages accepted after seq `after`; returns them in order (empty
    /// when none came). Cheaper than `sent()` for a reader that keeps up as they arrive.
    pub async fn wait_sent_after(&self, after: u64, wait: Duration) -> Vec<SentMessage> {
        self.state.wait_sent_after(None, None, after, wait).await
    }

    /// Every message the gateway sent that was accepted, in order.
    pub fn sent(&self) -> Vec<SentMessage> {
        self.state.sent()
    }

    /// How many messages the gateway sent that were accepted: what `sent().len()` says, without
    /// copying them (a test polling a large backlog would spend its time in that copy).
    pub fn sent_count(&self) -> usize {
        self.state.sent_count()
    }

    /// The wamids the gateway marked read, in order.
    pub fn read_receipts(&self) -> Vec<String> {
        self.state.read_receipts()
    }

    /// The next matching send calls fail as `f` says.
    pub fn push_fault(&self, f: Fault) {
        self.state.push_fault(f);
    }

    /// Adds `d` to the handling time of every Graph call.
    pub fn set_latency(&self, d: Duration) {
        self.state.set_latency(d);
    }

    /// Webhook delivery counters.
    pub fn webhook_stats(&self) -> WebhookStats {
        self.state.webhook_stats()
    }

    /// Waits until at least `n` send requests have reached the emulator (accepted, refused or
    /// still in its latency), or `timeout` passes; true if they did.
    pub async fn wait_received(&self, n: u64, timeout: Duration) -> bool {
        self.state.wait_received(n, timeout).await
    }

    /// Waits until `pred` holds for the sent messages, or `timeout` passes; true if it held.
    pub async fn wait_sent(
        &self,
        pred: impl Fn(&[SentMessage]) -> bool,
        timeout: Duration,
    ) -> bool {
        self.state.wait_sent(pred, timeout).await
    }

    /// Expires `token`: every call carrying it answers 190 from now on. False if unknown.
    pub fn expire_token(&self, token: &str) -> bool {
        self.state.manage.expire(token)
    }

    /// Issues a new, valid token for the WABA of number `pnid` (a regenerated system-user token).
    pub fn issue_token(&self, pnid: &str) -> Option<String> {
        let waba = self.state.number(pnid)?.waba_id.clone();
        Some(self.state.manage.issue(&waba))
    }

    /// The verification code the last `request_code` "sent" to number `pnid`, until verified.
    pub fn verification_code(&self, pnid: &str) -> Option<String> {
        self.state.manage.pending_code(pnid)
    }

    /// An Embedded Signup authorization code for WABA `waba` (what the popup gives the
    /// browser); `None` when no emulated number belongs to that WABA.
    pub fn signup_code(&self, waba: &str) -> Option<String> {
        self.state
            .cfg
            .numbers
            .iter()
            .any(|n| n.waba_id == waba)
            .then(|| self.state.manage.mint_signup_code(waba))
    }

    /// Whether number `pnid` is registered with the (emulated) Cloud API.
    pub fn is_registered(&self, pnid: &str) -> bool {
        self.state.manage.is_registered(pnid)
    }

    /// The app's webhook callback URL, once `POST /{app}/subscriptions` set it.
    pub fn app_callback_url(&self) -> Option<String> {
        self.state.manage.app().map(|a| a.callback_url)
    }

    /// The webhook fields of the app's subscription, sorted (empty without one).
    pub fn app_fields(&self) -> Vec<String> {
        self.state
            .manage
            .app()
            .map(|a| a.fields.into_iter().collect())
            .unwrap_or_default()
    }

    /// Whether WABA `waba` is subscribed to the app.
    pub fn waba_subscribed(&self, waba: &str) -> bool {
        self.state.manage.waba(waba).is_some()
    }

    /// Resolves when the listener and every delivery task have stopped (after shutdown).
    pub async fn stopped(&self) {
        self.tasks.wait().await;
    }
}
