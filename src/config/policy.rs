//! The `policies` section: conversation rules (24-hour window, opt-out, coalescing, system texts),
//! Meta's pacing limits, agent resilience and delivery retries, with per-number overrides.

use super::duration::Duration;
use super::secret::Secret;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Opt-out keywords matched by default (whole message; case-, accent- and width-insensitive).
/// The README lists them between `default-stop-keywords` markers; a test keeps the two equal.
pub const DEFAULT_STOP_KEYWORDS: &[&str] = &[
    // English
    "STOP",
    "STOP ALL",
    "UNSUBSCRIBE",
    "OPT OUT",
    "OPT-OUT",
    "OPTOUT",
    "QUIT",
    // Spanish
    "BAJA",
    "DETENER",
    "PARAR",
    "CANCELAR SUSCRIPCION",
    // Portuguese
    "SAIR",
    "DESCADASTRAR",
    "CANCELAR INSCRICAO",
    // French
    "ARRET",
    "DESABONNER",
    "DESINSCRIRE",
    // German
    "STOPP",
    "ABMELDEN",
    "ABBESTELLEN",
    // Hindi
    "रोकें",
    "रोको",
    "बंद करो",
    // Arabic
    "توقف",
    "إيقاف",
    // The same word as it is usually typed, without the hamza (a distinct keyword: combining
    // marks outside Latin, Greek and Cyrillic are part of the letter, see policy::optout).
    "ايقاف",
    "إلغاء الاشتراك",
    // Chinese
    "退订",
    "停止",
    "取消订阅",
    // Indonesian
    "BERHENTI",
    "BERHENTI LANGGANAN",
    // Russian
    "СТОП",
    "ОТПИСАТЬСЯ",
    "ОТПИСКА",
];

/// Resume keywords matched by default (listed in the README between `default-resume-keywords`
/// markers, kept equal by a test).
pub const DEFAULT_RESUME_KEYWORDS: &[&str] = &[
    "START",
    "UNSTOP",
    "SUBSCRIBE", // English
    "ALTA",
    "REANUDAR", // Spanish
    "VOLTAR",
    "RETOMAR", // Portuguese
    "REPRENDRE",
    "COMMENCER", // French
    "ANMELDEN",
    "FORTSETZEN", // German
    "शुरू करें",
    "शुरू", // Hindi
    "ابدأ",
    "اشتراك", // Arabic
    "开始",
    "订阅", // Chinese
    "MULAI",
    "LANJUT", // Indonesian
    "СТАРТ",
    "ПОДПИСАТЬСЯ", // Russian
];

/// A system text: one string, or one per language (ISO 639-1 code, e.g. `es`, `hi`) with `default`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum LocalizedText {
    /// The same text in every language.
    Plain(String),
    /// Texts by language code; `default` is used when the customer's language has none.
    ByLanguage(BTreeMap<String, String>),
}

impl LocalizedText {
    /// The text for `language` (a 639-1 code), else the default.
    pub fn pick(&self, language: Option<&str>) -> &str {
        match self {
            LocalizedText::Plain(s) => s,
            LocalizedText::ByLanguage(map) => language
                .and_then(|l| map.get(l))
                .or_else(|| map.get("default"))
                .or_else(|| map.values().next())
                .map(String::as_str)
                .unwrap_or(""),
        }
    }

    fn plain(s: &str) -> Self {
        LocalizedText::Plain(s.to_owned())
    }
}

/// Conversation and delivery policies.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Policies {
    /// The customer service window opened by each customer message; at most 24h (Meta's rule),
    /// shorter to be careful. A reply is never sent once the window closed.
    pub window: Duration,
    /// Mark the customer's message read when the agent starts working on it.
    pub mark_read: bool,
    /// Show the typing indicator while the agent works (needs `mark_read`).
    pub typing_indicator: bool,
    /// Send each reply as a reply to (quoting) the customer's message.
    pub quote_customer: bool,
    /// Messages one customer sends within this quiet period go to the agent as one turn (0 = off).
    pub coalesce: Duration,
    /// Whether a customer's reaction (emoji on a message) starts an agent turn.
    pub reactions_start_turn: bool,
    /// Compliance: keywords that stop and resume messages to a customer.
    pub opt_out: OptOut,
    /// Sent when the agent fails (after its retries) or its circuit is open; none when absent.
    pub fallback_reply: Option<LocalizedText>,
    /// Sent for message types the gateway cannot hand to an agent; none when absent.
    pub unsupported_reply: Option<LocalizedText>,
    /// Messages per second one number may send (Meta's default throughput is 80).
    pub throughput_per_number: u32,
    /// Pacing per customer, within Meta's pair rate limit (about 1 message per 6 s, bursts of 45).
    pub customer_pacing: CustomerPacing,
    /// Agent retries and circuit breaker.
    pub agent: AgentPolicy,
    /// How replies are retried when Meta or the network fails.
    pub delivery: Delivery,
    /// Most messages one reply is sent as, after splitting at Meta's 4,096-character limit; a
    /// longer reply is cut after the last part with an ellipsis (…) and counted in
    /// `wa_gateway_reply_truncated_total`.
    pub max_reply_parts: u32,
    /// Handing a conversation to a person: how long a pause lasts, and who hears of it.
    pub handoff: Handoff,
    /// What the gateway does with the `url` of an agent's media item.
    pub media: MediaPolicy,
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(24 * 3600),
            mark_read: true,
            typing_indicator: true,
            quote_customer: false,
            coalesce: Duration::from_secs(0),
            reactions_start_turn: false,
            opt_out: OptOut::default(),
            fallback_reply: None,
            unsupported_reply: None,
            throughput_per_number: 80,
            customer_pacing: CustomerPacing::default(),
            agent: AgentPolicy::default(),
            delivery: Delivery::default(),
            max_reply_parts: 10,
            handoff: Handoff::default(),
            media: MediaPolicy::default(),
        }
    }
}

/// Human handoff: a paused conversation gets no agent turn until it is resumed or its pause ends.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Handoff {
    /// How long a pause lasts when it names no `for` (the conversation resumes by itself after).
    pub pause_for: Duration,
    /// Where each pause is announced: a signed HTTP POST (JSON), retried like a reply.
    pub notify: Option<HandoffNotify>,
    /// How long a conversation pauses when a person answers the customer from the WhatsApp
    /// Business app on the same number (coexistence: Meta echoes the message).
    pub echo_pause: Duration,
}

impl Default for Handoff {
    fn default() -> Self {
        Self {
            pause_for: Duration::from_secs(24 * 3600),
            notify: None,
            echo_pause: Duration::from_secs(30 * 60),
        }
    }
}

/// Meta keeps an uploaded media file for 30 days; a cached upload is reused for less than that.
pub const META_MEDIA_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Outbound media by URL.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MediaPolicy {
    /// Download the file an agent names by `url` (with Meta's type and size limits), upload it
    /// to Meta and send it by id. `false` sends the `link` for Meta to fetch itself, which can
    /// fail with 131053 when Meta's fetches from the host are throttled.
    pub upload: bool,
    /// How long an upload is reused for the same bytes on the same number (cached by SHA-256,
    /// shared by replicas); under Meta's 30 days, after which its media id no longer works.
    pub cache_for: Duration,
    /// The longest a file's download, and then its upload to Meta, may take each.
    pub timeout: Duration,
    /// Also download from loopback, private, link-local and other non-public addresses (a
    /// media host inside the network). Off: an agent, or a model led astray by a customer,
    /// cannot make the gateway fetch an internal URL and send the file to a customer.
    pub private_hosts: bool,
}

impl Default for MediaPolicy {
    fn default() -> Self {
        Self {
            upload: true,
            cache_for: Duration::from_secs(29 * 24 * 3600),
            timeout: Duration::from_secs(60),
            private_hosts: false,
        }
    }
}

/// The helpdesk endpoint that hears of every pause.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoffNotify {
    /// The http(s) URL the notification is POSTed to.
    pub url: String,
    /// The key of the body's HMAC-SHA256, sent as `X-Wa-Gateway-Signature-256: sha256=<hex>`.
    pub secret: Secret,
    /// How long one attempt may take.
    #[serde(default = "notify_timeout")]
    pub timeout: Duration,
}

fn notify_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Per-number overrides of `policies.media`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NumberMediaPolicy {
    pub upload: Option<bool>,
}

/// Opt-out keywords and confirmations.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OptOut {
    /// Turn keyword handling off (not recommended: Meta requires honouring opt-outs).
    pub enabled: bool,
    /// A message equal to one of these (see the README for what "equal" means) opts out.
    pub keywords: Vec<String>,
    /// A message equal to one of these opts back in.
    pub resume_keywords: Vec<String>,
    /// Sent once when a customer opts out.
    pub confirmation: LocalizedText,
    /// Sent when a customer opts back in.
    pub resume_confirmation: LocalizedText,
}

impl Default for OptOut {
    fn default() -> Self {
        Self {
            enabled: true,
            keywords: DEFAULT_STOP_KEYWORDS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            resume_keywords: DEFAULT_RESUME_KEYWORDS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            confirmation: LocalizedText::plain(
                "You will not receive more messages from us. Reply START to resume.",
            ),
            resume_confirmation: LocalizedText::plain(
                "Welcome back: you will receive our replies again.",
            ),
        }
    }
}

/// Pacing of messages to one customer.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CustomerPacing {
    /// Sustained spacing between two messages to the same customer.
    pub interval: Duration,
    /// Messages that may go out back to back before the spacing applies.
    pub burst: u32,
}

impl Default for CustomerPacing {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(6),
            burst: 45,
        }
    }
}

/// Agent resilience.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AgentPolicy {
    /// Retries after a failed or timed-out agent call, before the fallback reply.
    pub retries: u32,
    /// Delay before the first retry (doubles).
    pub retry_backoff: Duration,
    /// Consecutive failures that open the agent's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker fails fast before letting one call probe the agent.
    pub breaker_cooldown: Duration,
    /// Most agent calls in flight at once, over all agents and conversations of this process;
    /// further turns wait for a free slot (a large backlog at start then drains at this pace
    /// instead of flooding the agents and tripping their breakers).
    pub max_concurrency: u32,
}

impl Default for AgentPolicy {
    fn default() -> Self {
        Self {
            retries: 1,
            retry_backoff: Duration::from_millis(500),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            max_concurrency: 64,
        }
    }
}

/// Retry policy of the sender.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Attempts before a retryable failure fails the reply for good.
    pub max_attempts: u32,
    /// First backoff delay; it doubles with jitter up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest delay between two attempts (Retry-After may ask for longer).
    pub max_backoff: Duration,
    /// After a crash, how long a reply left in `sending` waits for a status webhook that proves
    /// Meta took it before it is sent again.
    pub settle_grace: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(60),
            settle_grace: Duration::from_secs(30),
        }
    }
}

/// Per-number overrides of `policies`; an absent field keeps the top-level value.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NumberPolicies {
    pub window: Option<Duration>,
    pub mark_read: Option<bool>,
    pub typing_indicator: Option<bool>,
    pub quote_customer: Option<bool>,
    pub coalesce: Option<Duration>,
    pub reactions_start_turn: Option<bool>,
    pub fallback_reply: Option<LocalizedText>,
    pub unsupported_reply: Option<LocalizedText>,
    pub throughput_per_number: Option<u32>,
    pub media: NumberMediaPolicy,
}

impl NumberPolicies {
    /// Whether nothing is overridden: the number runs on the top-level policies as they are (and
    /// shares them, rather than holding a copy of its own).
    pub fn is_empty(&self) -> bool {
        // Spelled out so that a new override cannot be forgotten here.
        let Self {
            window,
            mark_read,
            typing_indicator,
            quote_customer,
            coalesce,
            reactions_start_turn,
            fallback_reply,
            unsupported_reply,
            throughput_per_number,
            media: NumberMediaPolicy { upload },
        } = self;
        window.is_none()
            && mark_read.is_none()
            && typing_indicator.is_none()
            && quote_customer.is_none()
            && coalesce.is_none()
            && reactions_start_turn.is_none()
            && fallback_reply.is_none()
            && unsupported_reply.is_none()
            && throughput_per_number.is_none()
            && upload.is_none()
    }
}

impl Policies {
    /// The policies in force for a number with `overrides`.
    pub fn with_overrides(&self, o: &NumberPolicies) -> Policies {
        let mut p = self.clone();
        if let Some(v) = o.window {
            p.window = v;
        }
        if let Some(v) = o.mark_read {
            p.mark_read = v;
        }
        if let Some(v) = o.typing_indicator {
            p.typing_indicator = v;
        }
        if let Some(v) = o.quote_customer {
            p.quote_customer = v;
        }
        if let Some(v) = o.coalesce {
            p.coalesce = v;
        }
        if let Some(v) = o.reactions_start_turn {
            p.reactions_start_turn = v;
        }
        if let Some(v) = &o.fallback_reply {
            p.fallback_reply = Some(v.clone());
        }
        if let Some(v) = &o.unsupported_reply {
            p.unsupported_reply = Some(v.clone());
        }
        if let Some(v) = o.throughput_per_number {
            p.throughput_per_number = v;
        }
        if let Some(v) = o.media.upload {
            p.media.upload = v;
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localized_text_picks_language_then_default() {
        let t: LocalizedText =
            serde_norway::from_str("{ default: Stopped., es: Detenido., hi: रोक दिया गया। }")
                .unwrap();
        assert_eq!(t.pick(Some("es")), "Detenido.");
        assert_eq!(t.pick(Some("fr")), "Stopped.");
        assert_eq!(t.pick(None), "Stopped.");
        let plain: LocalizedText = serde_norway::from_str("Stopped.").unwrap();
        assert_eq!(plain.pick(Some("es")), "Stopped.");
    }

    #[test]
    fn overrides_replace_only_what_they_name() {
        let base = Policies::default();
        let o = NumberPolicies {
            throughput_per_number: Some(5),
            ..Default::default()
        };
        let p = base.with_overrides(&o);
        assert_eq!(p.throughput_per_number, 5);
        assert_eq!(p.window, base.window);
        assert!(p.media.upload, "uploads by default");
        let off = NumberPolicies {
            media: NumberMediaPolicy {
                upload: Some(false),
            },
            ..Default::default()
        };
        let p = base.with_overrides(&off);
        assert!(!p.media.upload);
        assert_eq!(p.media.cache_for, base.media.cache_for);
    }
}
