//! The gateway.yaml file format: serde + JSON Schema types with their defaults.
//! Only shapes and defaults live here; cross-field rules live in `validate.rs`.

use crate::ids::{PhoneNumberId, WabaId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::duration::Duration;
use super::policy::{NumberPolicies, Policies};
use super::secret::Secret;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// File format version; only `1` exists.
    pub version: u32,
    /// Listen addresses and HTTP limits.
    #[serde(default)]
    pub listen: Listen,
    /// The URL Meta calls for webhooks (the reconciler declares it); must end in `/webhook`.
    pub public_url: String,
    /// Where the inbox, outbox and conversations are stored.
    #[serde(default)]
    pub storage: Storage,
    /// Meta app settings and the Graph API endpoint.
    pub meta: Meta,
    /// Agents by name; numbers refer to them.
    pub agents: BTreeMap<String, Agent>,
    /// The WhatsApp numbers this gateway serves.
    pub numbers: Vec<Number>,
    /// Conversation and delivery policies.
    #[serde(default)]
    pub policies: Policies,
    /// OpenTelemetry tracing; off unless `telemetry.otlp` is set.
    #[serde(default)]
    pub telemetry: super::telemetry::Telemetry,
}

/// Listen addresses and HTTP limits.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Address of the webhook listener (Meta's POSTs and the GET handshake).
    pub webhook: SocketAddr,
    /// Address of the admin listener: /metrics, /healthz, /readyz, the status page and /api.
    pub admin: SocketAddr,
    /// When set, the admin API (`/api/*`), `/config/status`, the status page's data and `/media`
    /// require `Authorization: Bearer <token>` (or the status page's sign-in cookie); /healthz,
    /// /readyz and /metrics stay open. Required when `admin` is not a loopback address.
    pub admin_token: Option<Secret>,
    /// Largest webhook body accepted, in bytes; larger bodies get 413. Meta documents webhook
    /// bodies of up to 3 MB, hence the default of 3 MiB.
    pub max_body_bytes: usize,
    /// Time a connection gets to send a request's headers: from the accept to the first
    /// request (TLS handshake and HTTP/1-or-2 detection included), and on a kept-alive HTTP/1.1
    /// connection from the next request's first byte. A connection that stays silent, or stops
    /// inside its headers, is closed after it.
    pub header_timeout: Duration,
    /// Time allowed to receive a webhook's whole body, counted once its headers are in.
    pub body_timeout: Duration,
    /// Serve the webhook listener over TLS with this certificate and key (PEM files, e.g. a
    /// cert-manager Secret mount). The files are watched: a renewed certificate is served from
    /// the next handshake on, without a restart.
    pub tls: Option<TlsFiles>,
    /// Serve the webhook listener as plain HTTP on a non-loopback address: only behind an
    /// ingress or load balancer that terminates TLS. Without `tls`, plain HTTP is otherwise
    /// accepted on loopback addresses only.
    pub plain_http: bool,
    /// On SIGTERM, how long the gateway keeps accepting and serving new connections after
    /// /readyz turned 503, while load balancers and Kubernetes endpoints stop sending to it.
    pub shutdown_delay: Duration,
    /// After that delay, how long in-flight requests and agent turns get to finish before the
    /// process stops anyway (keep it, plus `shutdown_delay`, under the pod's
    /// terminationGracePeriodSeconds).
    pub shutdown_timeout: Duration,
    /// How long a kept-alive HTTP/1.1 connection, or an HTTP/2 connection with no request in
    /// flight, stays open between requests. Keep it above the idle timeout of a proxy in front
    /// (60s for most load balancers), so that the proxy, not the gateway, closes first.
    pub idle_timeout: Duration,
    /// Most concurrent requests (streams) on one HTTP/2 connection.
    pub h2_max_streams: u32,
    /// Most connections open at once on each listener; further clients wait in the kernel's
    /// accept queue until one closes.
    pub max_connections: usize,
    /// Most webhook POSTs being read or handled at once (each may hold `max_body_bytes` in
    /// memory). A POST that finds none free waits up to `header_timeout`, then gets 503 (Meta
    /// delivers it again later).
    pub max_inflight_bodies: usize,
    /// Host names the admin listener answers to besides its own address, `localhost` and
    /// loopback addresses (and, when `admin` is 0.0.0.0 or `::`, any IP address): e.g. the
    /// admin Service's DNS name. Requests naming another host get 421 (DNS-rebinding defence).
    pub admin_hosts: Vec<String>,
    /// Serve the admin listener over TLS with this certificate and key (PEM files), reloaded
    /// like `tls`. The sign-in cookie is then marked `Secure`.
    pub admin_tls: Option<TlsFiles>,
    /// A read-only token for agents: `Authorization: Bearer <token>` with it is accepted on
    /// `/media/*` only. Needs `admin_token`.
    pub media_token: Option<Secret>,
    /// Most `/media` downloads served at once; more get 503 with Retry-After.
    pub media_concurrency: usize,
}

/// A certificate chain and its private key, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (`tls.crt` of a Kubernetes TLS Secret).
    pub cert: PathBuf,
    /// The private key, PKCS#8, PKCS#1 or SEC1 (`tls.key`).
    pub key: PathBuf,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            webhook: "127.0.0.1:8080".parse().expect("static address"),
            admin: "127.0.0.1:9090".parse().expect("static address"),
            admin_token: None,
            max_body_bytes: 3 * 1024 * 1024,
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            tls: None,
            plain_http: false,
            shutdown_delay: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(75),
            h2_max_streams: 32,
            max_connections: 4096,
            max_inflight_bodies: 256,
            admin_hosts: Vec::new(),
            admin_tls: None,
            media_token: None,
            media_concurrency: 16,
        }
    }
}

/// Storage settings.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// `sqlite://path/to/file.db` (created if missing, WAL mode) or `postgres://user@host/db`.
    pub url: String,
    /// Connection pool size.
    pub max_connections: u32,
    /// How long a write waits on a lock before the webhook is answered 503 (Meta then retries).
    pub busy_timeout: Duration,
    /// Most inbound messages committed in one group-commit transaction.
    pub batch_max: usize,
    /// Shortest time between the starts of two group commits (at most 100ms; default 10ms):
    /// what arrives meanwhile joins the next commit. Each commit costs CPU and its hot pages
    /// whatever it carries, so fewer, larger commits write less and use less CPU; each webhook's
    /// 200 may wait this much longer. `0s` commits as soon as the previous one ends.
    pub commit_interval: Duration,
    /// PostgreSQL only (several replicas): how long a replica's claim on a conversation lasts
    /// without renewal. Claims are renewed every third of it; a replica that dies has its
    /// conversations taken over by another once its claims run out.
    pub lease: Duration,
    /// What is deleted, and when: message rows after `messages`, the ids that recognise Meta's
    /// redeliveries after `dedupe`; pruning runs every `interval`. Takes effect on a reload.
    pub retention: super::retention::Retention,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            url: "sqlite://data/gateway.db".into(),
            max_connections: 8,
            busy_timeout: Duration::from_secs(5),
            batch_max: 1024,
            commit_interval: Duration::from_millis(10),
            lease: Duration::from_secs(15),
            retention: Default::default(),
        }
    }
}

/// Meta app settings.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// `https://graph.facebook.com`, another Graph-compatible base URL, or `emulator` to run the
    /// built-in Cloud API emulator inside `serve`.
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    /// Graph API version, e.g. `v23.0`.
    #[serde(default = "default_api_version")]
    #[schemars(pattern(r"^v[0-9]+\.[0-9]+$"))]
    pub api_version: String,
    /// The Meta app id (digits, quoted).
    #[schemars(pattern(r"^[0-9]+$"))]
    pub app_id: String,
    /// The app secret: the key of every webhook's X-Hub-Signature-256.
    pub app_secret: Secret,
    /// The token Meta echoes in the GET verification handshake.
    pub verify_token: Secret,
    /// Settings of the built-in emulator, used when `graph_url` is `emulator`.
    #[serde(default)]
    pub emulator: EmulatorSettings,
    /// Let `wa-gateway apply` unsubscribe the app from a WhatsApp Business Account once no
    /// declared number remains in it. Off by default: removing a number from the file then
    /// changes nothing at Meta.
    #[serde(default)]
    pub prune: bool,
    /// Per-WABA webhook override (`override_callback_uri` of the WABA's app subscription), by
    /// WABA id; Meta verifies it with `verify_token`. WABAs not listed use `public_url`.
    #[serde(default)]
    pub waba_callbacks: BTreeMap<String, String>,
    /// How `serve` keeps Meta's setup and the numbers' statuses current.
    #[serde(default)]
    pub reconcile: ReconcileSettings,
    /// The key that encrypts (AES-256-GCM) the secrets the gateway keeps in storage, such as
    /// tokens from embedded signup, referenced as `{ stored: NAME }`: 32 random bytes written
    /// as base64 (44 characters, `openssl rand -base64 32`) or as 64 hex digits
    /// (`openssl rand -hex 32`). Required when any secret is `stored:`; never itself stored.
    #[serde(default)]
    pub encryption_key: Option<Secret>,
    /// Keys used before `encryption_key`, for rotation: values still encrypted under one of them
    /// are read, and re-encrypted under `encryption_key` when `serve` starts or reloads. Remove a
    /// key once the gateway has run with the new one.
    #[serde(default)]
    pub previous_encryption_keys: Vec<Secret>,
    /// Embedded Signup (the status page's "Connect with Facebook" launcher); off when absent.
    #[serde(default)]
    pub embedded_signup: Option<EmbeddedSignup>,
    /// Hosts `/media` may download from: the download URL Meta's media info returns is fetched
    /// (with the number's token) only over HTTPS from one of these. Default: Meta's media CDN.
    /// With `graph_url: emulator` the emulator's own address is allowed as well.
    #[serde(default = "default_media_hosts")]
    pub media_hosts: Vec<String>,
}

fn default_media_hosts() -> Vec<String> {
    vec!["lookaside.fbsbx.com".into()]
}

/// The control loop inside `serve`: it reconciles at start, after each configuration reload
/// and every `interval`, backing off exponentially (up to `interval`) after errors.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileSettings {
    /// Time between two passes when nothing goes wrong.
    pub interval: Duration,
    /// Carry out the plan (`true`), or only plan and report the drift (`false`, for teams that
    /// run `wa-gateway apply` from their pipeline).
    pub apply: bool,
    /// Non-retryable send refusals in a row after which a number shows Error; 0 turns it off.
    pub failed_sends: u32,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            apply: true,
            failed_sends: 5,
        }
    }
}

/// The Facebook Login for Business configuration that runs WhatsApp Embedded Signup.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSignup {
    /// The configuration id from the app dashboard (Facebook Login for Business →
    /// Configurations), digits, quoted.
    #[schemars(pattern(r"^[0-9]+$"))]
    pub config_id: String,
}

fn default_graph_url() -> String {
    "https://graph.facebook.com".into()
}

fn default_api_version() -> String {
    "v23.0".into()
}

/// Settings of the in-process emulator.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EmulatorSettings {
    /// Where the emulator's Graph and control API listen (`wa-gateway chat` talks to it).
    pub listen: SocketAddr,
}

impl Default for EmulatorSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8089".parse().expect("static address"),
        }
    }
}

/// An agent: what answers a number's customers.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Agent {
    /// Replies with the text it got (for demos and tests).
    Echo {
        /// Text put before the echoed text.
        #[serde(default)]
        prefix: String,
        /// Time the echo "thinks" before replying.
        #[serde(default)]
        delay: Duration,
    },
    /// POSTs each turn as JSON to a URL and sends back `{"reply": "…"}`.
    Http {
        /// The agent's endpoint.
        url: String,
        /// Time allowed for one call.
        #[serde(default = "default_agent_timeout")]
        timeout: Duration,
        /// Extra request headers; values are secret references.
        #[serde(default)]
        headers: BTreeMap<String, Secret>,
        /// Previous turns of the conversation sent along as `history` (0 = none).
        #[serde(default = "default_history_turns")]
        history_turns: usize,
    },
    /// Any OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp, Ollama …).
    Openai {
        /// Base URL up to `/v1`, e.g. `http://llm:8000/v1`; the gateway POSTs `{url}/chat/completions`.
        url: String,
        /// The model name the server expects.
        model: String,
        /// Sent as `Authorization: Bearer …`; optional for local servers.
        #[serde(default)]
        api_key: Option<Secret>,
        /// The system message that starts every request.
        #[serde(default)]
        system_prompt: String,
        /// Sampling temperature; the server's default when absent.
        #[serde(default)]
        temperature: Option<f32>,
        /// Most tokens in one answer; the server's default when absent.
        #[serde(default)]
        max_tokens: Option<u32>,
        /// Time allowed for one call.
        #[serde(default = "default_agent_timeout")]
        timeout: Duration,
        /// Previous turns of the conversation (customer and agent messages) sent as history.
        #[serde(default = "default_history_turns")]
        history_turns: usize,
        /// What the model may do besides answering with text, offered as functions it can call:
        /// `buttons`, `list`, `media`, `handoff`. None by default.
        #[serde(default)]
        tools: Vec<AgentTool>,
    },
}

/// A power an `openai` agent's model may use, offered to it as a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentTool {
    /// `send_buttons`: a message with 1 to 3 reply buttons.
    Buttons,
    /// `send_list`: a list of up to 10 options.
    List,
    /// `send_media`: an image, video, audio, document or sticker from a URL.
    Media,
    /// `hand_off`: hands the conversation to a person.
    Handoff,
}

fn default_history_turns() -> usize {
    10
}

fn default_agent_timeout() -> Duration {
    Duration::from_secs(20)
}

/// A WhatsApp Business number served by the gateway.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Number {
    /// Meta's phone number id (digits, quoted).
    #[schemars(with = "String", pattern(r"^[0-9]+$"))]
    pub phone_number_id: PhoneNumberId,
    /// The WhatsApp Business Account the number belongs to (digits, quoted).
    #[schemars(with = "String", pattern(r"^[0-9]+$"))]
    pub waba_id: WabaId,
    /// A name for people: the status page and logs.
    #[serde(default)]
    pub display_name: String,
    /// The name of the agent (a key of `agents`) that answers this number.
    pub agent: String,
    /// The system-user or business token used for this number's Graph calls.
    pub access_token: Secret,
    /// The two-step verification PIN (6 digits) `wa-gateway apply` registers the number with.
    /// Without it an unregistered number cannot be registered by the gateway.
    #[serde(default)]
    pub pin: Option<Secret>,
    /// `false` stops answering this number while keeping it declared.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Overrides of the top-level `policies` for this number.
    #[serde(default)]
    pub policies: NumberPolicies,
}

fn default_true() -> bool {
    true
}

impl Config {
    /// Every secret reference in the file with its field path (`numbers[0].access_token`).
    pub fn secrets_mut(&mut self) -> Vec<(String, &mut Secret)> {
        let mut out = vec![
            ("meta.app_secret".to_owned(), &mut self.meta.app_secret),
            ("meta.verify_token".to_owned(), &mut self.meta.verify_token),
        ];
        if let Some(token) = &mut self.listen.admin_token {
            out.push(("listen.admin_token".to_owned(), token));
        }
        if let Some(token) = &mut self.listen.media_token {
            out.push(("listen.media_token".to_owned(), token));
        }
        if let Some(key) = &mut self.meta.encryption_key {
            out.push(("meta.encryption_key".to_owned(), key));
        }
        for (i, key) in self.meta.previous_encryption_keys.iter_mut().enumerate() {
            out.push((format!("meta.previous_encryption_keys[{i}]"), key));
        }
        for (name, agent) in &mut self.agents {
            match agent {
                Agent::Http { headers, .. } => {
                    for (header, secret) in headers {
                        out.push((format!("agents.{name}.headers.{header}"), secret));
                    }
                }
                Agent::Openai {
                    api_key: Some(key), ..
                } => out.push((format!("agents.{name}.api_key"), key)),
                Agent::Openai { .. } | Agent::Echo { .. } => {}
            }
        }
        if let Some(otlp) = &mut self.telemetry.otlp {
            for (header, secret) in &mut otlp.headers {
                out.push((format!("telemetry.otlp.headers.{header}"), secret));
            }
        }
        if let Some(notify) = &mut self.policies.handoff.notify {
            out.push((
                "policies.handoff.notify.secret".to_owned(),
                &mut notify.secret,
            ));
        }
        for (i, number) in self.numbers.iter_mut().enumerate() {
            out.push((
                format!("numbers[{i}].access_token"),
                &mut number.access_token,
            ));
            if let Some(pin) = &mut number.pin {
                out.push((format!("numbers[{i}].pin"), pin));
            }
        }
        out
    }

    /// Whether `meta.graph_url` selects the built-in emulator.
    pub fn uses_emulator(&self) -> bool {
        self.meta.graph_url == "emulator"
    }

    /// Where a client reaches the built-in emulator (`meta.emulator.listen`, with an unspecified
    /// address read as this host).
    pub fn emulator_addr(&self) -> std::net::SocketAddr {
        let mut addr = self.meta.emulator.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        addr
    }
}
