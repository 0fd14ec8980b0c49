//! The emulator's shared state: numbers, what was sent and read, the customers' 24h windows,
//! pending faults. Plain mutexes, never held across an await; waiters use a watch of the last seq.

use super::clock::{WINDOW_SECS, now_ms};
use super::envelope;
use super::faults::{Fault, FaultKind, Faults};
use super::media_store::{MediaStore, SentFile};
use super::setup::MetaSetup;
use super::webhook_queue::{Delivery, WebhookCounters, WebhookStats};
use super::{EmulatorConfig, EmulatorNumber};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A message the gateway sent and the emulator accepted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SentMessage {
    /// Order of acceptance, from 1.
    pub seq: u64,
    pub phone_number_id: String,
    /// `to`, or `recipient` (a BSUID) when the gateway addressed the customer that way.
    pub to: String,
    /// The wamid the emulator answered with.
    pub wamid: String,
    /// `text.body` for text messages.
    pub text: Option<String>,
    /// The request body as sent.
    pub body: serde_json::Value,
    pub biz_opaque_callback_data: Option<String>,
    /// `context.message_id`: the message quoted.
    pub context_message_id: Option<String>,
    /// Unix milliseconds at acceptance.
    pub received_at_ms: i64,
    /// The file a media message sent by id carries (the number's upload), for the chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<SentFile>,
}

#[derive(Default)]
struct Inner {
    sent: Vec<SentMessage>,
    read_receipts: Vec<String>,
    /// (phone_number_id, wa_id or BSUID) → unix seconds of the customer's last message.
    last_inbound: HashMap<(String, String), i64>,
    /// (phone_number_id, wamid) of every customer message delivered to the number.
    inbound_ids: HashSet<(String, String)>,
    faults: Faults,
}

pub(crate) struct State {
    pub cfg: EmulatorConfig,
    numbers: HashMap<String, EmulatorNumber>,
    inner: Mutex<Inner>,
    last_seq: watch::Sender<u64>,
    /// How many send requests (`POST /{phone_number_id}/messages`) reached the emulator, answered
    /// or not yet: a request counts here before its latency and its checks.
    received: watch::Sender<u64>,
    webhook_url: watch::Sender<Option<String>>,
    latency_ms: AtomicU64,
    pub counters: WebhookCounters,
    /// Media blobs served by `GET /{version}/{media-id}`.
    pub media: MediaStore,
    /// Subscriptions, registrations, PINs and tokens (the management endpoints).
    pub manage: MetaSetup,
    deliveries: mpsc::UnboundedSender<Delivery>,
}

impl State {
    pub fn new(cfg: EmulatorConfig) -> (Self, mpsc::UnboundedReceiver<Delivery>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let numbers = cfg
            .numbers
            .iter()
            .map(|n| (n.phone_number_id.clone(), n.clone()))
            .collect();
        let state = Self {
            numbers,
            inner: Mutex::new(Inner::default()),
            last_seq: watch::Sender::new(0),
            received: watch::Sender::new(0),
            webhook_url: watch::Sender::new(cfg.webhook_url.clone()),
            latency_ms: AtomicU64::new(0),
            counters: WebhookCounters::default(),
            media: MediaStore::default(),
            manage: MetaSetup::new(&cfg.numbers, cfg.preregistered),
            deliveries: tx,
            cfg,
        };
        (state, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn number(&self, phone_number_id: &str) -> Option<&EmulatorNumber> {
        self.numbers.get(phone_number_id)
    }

    /// Whether `token` is a valid, unexpired business token of one of the emulated WABAs.
    pub fn token_is_known(&self, token: &str) -> bool {
        self.manage.token_is_valid(token)
    }

    pub fn webhook_url(&self) -> watch::Receiver<Option<String>> {
        self.webhook_url.subscribe()
    }

    pub fn set_webhook_url(&self, url: String) {
        self.webhook_url.send_replace(Some(url));
    }

    /// Where Meta's call to `callback` (a handshake) goes: in-process, the gateway's listener.
    pub fn callback_target(&self, callback: &str) -> String {
        if self.cfg.pin_callbacks
            && let Some(url) = self.webhook_url.borrow().clone()
        {
            return url;
        }
        callback.to_owned()
    }

    /// A new app callback was verified: webhooks go there from now on (unless pinned).
    pub fn subscribed_callback(&self, url: String) {
        if !self.cfg.pin_callbacks {
            self.set_webhook_url(url);
        }
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms.load(Ordering::Relaxed))
    }

    pub fn set_latency(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.latency_ms.store(ms, Ordering::Relaxed);
    }

    pub fn push_fault(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    pub fn take_fault(&self, phone_number_id: &str) -> Option<FaultKind> {
        self.lock().faults.take(phone_number_id)
    }

    /// Whether `customer` wrote to the number less than 24 hours before `now_secs`.
    pub fn window_open(&self, phone_number_id: &str, customer: &str, now_secs: i64) -> bool {
        let key = (phone_number_id.to_owned(), customer.to_owned());
        self.lock()
            .last_inbound
            .get(&key)
            .is_some_and(|&last| now_secs - last < WINDOW_SECS)
    }

    pub fn is_inbound_message(&self, phone_number_id: &str, wamid: &str) -> bool {
        let key = (phone_number_id.to_owned(), wamid.to_owned());
        self.lock().inbound_ids.contains(&key)
    }

    /// Records an accepted send under the next seq and wakes waiters.
    pub fn record_sent(&self, mut message: SentMessage) -> SentMessage {
        let seq = {
            let mut inner = self.lock();
            message.seq = inner.sent.len() as u64 + 1;
            inner.sent.push(message.clone());
            message.seq
        };
        // Two sends may reach this line out of order; the watch only moves forward.
        self.last_seq.send_modify(|last| *last = (*last).max(seq));
        message
    }

    pub fn record_read(&self, wamid: &str) {
        self.lock().read_receipts.push(wamid.to_owned());
    }

    pub fn sent(&self) -> Vec<SentMessage> {
        self.lock().sent.clone()
    }

    pub fn sent_count(&self) -> usize {
        self.lock().sent.len()
    }

    pub fn last_seq(&self) -> u64 {
        *self.last_seq.borrow()
    }

    pub fn read_receipts(&self) -> Vec<String> {
        self.lock().read_receipts.clone()
    }

    pub fn webhook_stats(&self) -> WebhookStats {
        self.counters.snapshot()
    }

    /// Sent messages with seq > `after` (for `pnid` and `to` when given).
    pub fn sent_after(&self, pnid: Option<&str>, to: Option<&str>, after: u64) -> Vec<SentMessage> {
        let inner = self.lock();
        // seq n sits at index n-1.
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(inner.sent.len());
        inner.sent[start..]
            .iter()
            .filter(|m| pnid.is_none_or(|p| m.phone_number_id == p))
            .filter(|m| to.is_none_or(|t| m.to == t))
            .cloned()
            .collect()
    }

    /// Waits for sent messages with seq > `after` matching the filters, up to `wait`.
    pub async fn wait_sent_after(
        &self,
        pnid: Option<&str>,
        to: Option<&str>,
        after: u64,
        wait: Duration,
    ) -> Vec<SentMessage> {
        let mut rx = self.last_seq.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            rx.borrow_and_update();
            let found = self.sent_after(pnid, to, after);
            if !found.is_empty() {
                return found;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return Vec::new(),
            }
        }
    }

    /// Counts a send request that reached the emulator.
    pub fn request_received(&self) {
        self.received.send_modify(|n| *n += 1);
    }

    /// Waits until at least `n` send requests have reached the emulator, or `timeout` passes.
    pub async fn wait_received(&self, n: u64, timeout: Duration) -> bool {
        let mut rx = self.received.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|got| *got >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub async fn wait_sent(
        &self,
        pred: impl Fn(&[SentMessage]) -> bool,
        timeout: Duration,
    ) -> bool {
        let mut rx = self.last_seq.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            if pred(&self.lock().sent) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    /// A customer writes text: the envelope is recorded and queued; returns its wamid.
    pub fn customer_says(&self, pnid: &str, from: &str, name: &str, text: &str) -> String {
        let wamid = envelope::new_wamid();
        let number = self.number_or_stray(pnid);
        let secs = now_ms() / 1000;
        let env = envelope::customer_text(&number, from, name, &wamid, secs, text);
        self.deliver_envelope(env);
        wamid
    }

    /// Records a customer message delivered by someone else (a load generator posting straight
    /// to the gateway): it opens the customer's window and makes the wamid markable as read.
    pub fn record_inbound(&self, pnid: &str, customer: &str, wamid: &str, unix_secs: i64) {
        let mut inner = self.lock();
        let last = inner
            .last_inbound
            .entry((pnid.to_owned(), customer.to_owned()))
            .or_insert(unix_secs);
        *last = (*last).max(unix_secs);
        inner
            .inbound_ids
            .insert((pnid.to_owned(), wamid.to_owned()));
    }

    /// A customer sends any message object (`{type, <type>: {…}}`); `from`, `id` and
    /// `timestamp` are filled in, and media fields from a stored blob with that id. Returns the
    /// wamid.
    pub fn customer_sends(&self, pnid: &str, from: &str, name: &str, message: Value) -> String {
        let wamid = envelope::new_wamid();
        let mut message = match message {
            Value::Object(_) => message,
            // Not a message object: deliver it typeless, as a stray Meta might send.
            _ => Value::Object(Map::new()),
        };
        self.media.complete_message(&mut message);
        message["from"] = Value::from(from);
        message["id"] = Value::from(wamid.as_str());
        message["timestamp"] = Value::from((now_ms() / 1000).to_string());
        let env = envelope::customer_message(&self.number_or_stray(pnid), from, name, message);
        self.deliver_envelope(env);
        wamid
    }

    /// Customer `from` writes `text` to number `pnid` while another app (Meta's conversation
    /// routing) is in control: this app gets a copy on the `standby` field. Returns the wamid.
    pub fn customer_says_on_standby(
        &self,
        pnid: &str,
        from: &str,
        name: &str,
        text: &str,
    ) -> String {
        let wamid = envelope::new_wamid();
        let number = self.number_or_stray(pnid);
        let mut env = envelope::customer_text(&number, from, name, &wamid, now_ms() / 1000, text);
        env["entry"][0]["changes"][0]["field"] = Value::from("standby");
        self.enqueue(format!("{pnid}/{from}"), env);
        wamid
    }

    /// A person sends `message` (a message object) to customer `to` from the WhatsApp Business
    /// app on number `pnid` (coexistence): Meta echoes it on `smb_message_echoes`. Returns its
    /// wamid.
    pub fn business_app_sends(&self, pnid: &str, to: &str, message: Value) -> String {
        let wamid = envelope::new_wamid();
        let mut message = match message {
            Value::Object(_) => message,
            _ => Value::Object(Map::new()),
        };
        message["id"] = Value::from(wamid.as_str());
        message["timestamp"] = Value::from((now_ms() / 1000).to_string());
        let env = envelope::business_echo(&self.number_or_stray(pnid), to, message);
        self.enqueue(envelope::order_key(&env), env);
        wamid
    }

    /// Echoes a message the gateway sent (`wamid`) on `smb_message_echoes`, as a coexistence
    /// number may; false if no such message was sent.
    pub fn echo_sent(&self, wamid: &str) -> bool {
        let Some(sent) = self.lock().sent.iter().find(|m| m.wamid == wamid).cloned() else {
            return false;
        };
        let mut message = sent.body.clone();
        if let Some(o) = message.as_object_mut() {
            for envelope_key in [
                "messaging_product",
                "recipient_type",
                "to",
                "recipient",
                "biz_opaque_callback_data",
                "context",
            ] {
                o.remove(envelope_key);
            }
        }
        message["id"] = Value::from(wamid);
        message["timestamp"] = Value::from((sent.received_at_ms / 1000).to_string());
        let env = envelope::business_echo(
            &self.number_or_stray(&sent.phone_number_id),
            &sent.to,
            message,
        );
        self.enqueue(envelope::order_key(&env), env);
        true
    }

    /// The number `pnid`, or a bare stand-in: an unknown number still gets its webhook, since
    /// the gateway must cope with strays.
    fn number_or_stray(&self, pnid: &str) -> EmulatorNumber {
        self.number(pnid)
            .cloned()
            .unwrap_or_else(|| EmulatorNumber {
                phone_number_id: pnid.to_owned(),
                waba_id: String::new(),
                display_phone_number: String::new(),
                access_token: String::new(),
            })
    }

    /// Records the customer messages in `env` (windows, known ids) and queues it for delivery.
    pub fn deliver_envelope(&self, env: serde_json::Value) {
        let inbound = envelope::inbound_messages(&env);
        {
            let mut inner = self.lock();
            for m in &inbound {
                for customer in &m.customers {
                    let key = (m.phone_number_id.clone(), customer.clone());
                    let last = inner.last_inbound.entry(key).or_insert(m.timestamp);
                    *last = (*last).max(m.timestamp);
                }
                inner
                    .inbound_ids
                    .insert((m.phone_number_id.clone(), m.wamid.clone()));
            }
        }
        self.enqueue(envelope::order_key(&env), env);
    }

    /// Queues an envelope for signed delivery; `key` orders first attempts.
    pub fn enqueue(&self, key: String, env: serde_json::Value) {
        let body = bytes::Bytes::from(serde_json::to_vec(&env).unwrap_or_default());
        self.counters.pending.fetch_add(1, Ordering::Relaxed);
        if self.deliveries.send(Delivery { key, body }).is_err() {
            // The queue stopped (shutdown): nothing will deliver it.
            self.counters.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
