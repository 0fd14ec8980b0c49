//! Rules a deserialized `Config` must satisfy as a whole (references, formats, limits). Every
//! broken rule is reported, not just the first; secrets are checked by kind, never read here.

use super::error::Issue;
use super::locate::{SourceMap, join_key};
use super::model::{Agent, Config};
use super::policy::LocalizedText;
use super::secret::{SecretSource, is_stored_name};
use std::collections::HashMap;

/// How far loading looks beyond the file itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reach {
    /// Every secret resolved and every certificate read, as `serve` does.
    #[default]
    Full,
    /// The file alone (`validate --offline`, for CI without the secrets): secrets from the
    /// environment and files are not resolved (inline values are, being in the file) and
    /// certificate files are not read; everything else is checked as in `Full`.
    Offline,
}

struct Issues(Vec<Issue>);

impl Issues {
    fn value(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Issue {
            path: path.into(),
            at_key: false,
            message: message.into(),
        });
    }

    fn key(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Issue {
            path: path.into(),
            at_key: true,
            message: message.into(),
        });
    }
}

/// Checks every cross-field and format rule; `map` only serves to name other lines in messages.
/// With `Reach::Offline`, certificate files are not read.
pub fn validate(config: &Config, map: &SourceMap, reach: Reach) -> Vec<Issue> {
    let mut out = Issues(Vec::new());
    if config.version != 1 {
        out.value(
            "version",
            format!(
                "version {} is not supported: this gateway reads version 1 files",
                config.version
            ),
        );
    }
    let files = reach == Reach::Full;
    check_listen_and_storage(config, files, &mut out);
    check_meta(config, &mut out);
    check_agents(config, &mut out);
    check_numbers(config, map, &mut out);
    check_inline_secrets(config, &mut out);
    check_stored_secrets(config, &mut out);
    check_waba_callbacks(config, &mut out);
    check_policies(config, &mut out);
    check_listen_limits(config, &mut out);
    check_admin(config, files, &mut out);
    out.0
        .extend(super::retention::check(&config.storage.retention));
    out.0
        .extend(super::telemetry::check(&config.telemetry, http_url));
    out.0
}

const MAX_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn check_window(path: String, window: std::time::Duration, out: &mut Issues) {
    if window > MAX_WINDOW {
        out.value(
            path,
            "the window may only be shortened: Meta's customer service window is 24h, and a reply after it is refused (131047)",
        );
    } else if window.is_zero() {
        out.value(
            path,
            "a zero window would never let a reply out; write e.g. 24h",
        );
    }
}

fn check_text(path: String, text: &LocalizedText, out: &mut Issues) {
    if let LocalizedText::ByLanguage(map) = text
        && !map.contains_key("default")
    {
        out.value(
            path,
            "texts by language need a `default` entry for customers in other languages",
        );
    }
}

fn check_policies(config: &Config, out: &mut Issues) {
    let p = &config.policies;
    check_window("policies.window".into(), p.window.get(), out);
    if p.throughput_per_number == 0 {
        out.value(
            "policies.throughput_per_number",
            "must be at least 1 message per second (Meta's default is 80)",
        );
    }
    if p.customer_pacing.burst == 0 || p.customer_pacing.interval.get().is_zero() {
        out.value(
            "policies.customer_pacing",
            "burst must be at least 1 and interval above 0 (Meta's pair rate: about 1 message per 6s, bursts of 45)",
        );
    }
    if p.agent.breaker_failures == 0 {
        out.value(
            "policies.agent.breaker_failures",
            "must be at least 1: consecutive failures that open the breaker",
        );
    }
    if p.agent.max_concurrency == 0 {
        out.value(
            "policies.agent.max_concurrency",
            "must be at least 1: agent calls in flight at once (default 64)",
        );
    }
    if p.max_reply_parts == 0 {
        out.value(
            "policies.max_reply_parts",
            "must be at least 1: messages one reply may be sent as (default 10)",
        );
    }
    for (name, text) in [
        ("opt_out.confirmation", Some(&p.opt_out.confirmation)),
        (
            "opt_out.resume_confirmation",
            Some(&p.opt_out.resume_confirmation),
        ),
        ("fallback_reply", p.fallback_reply.as_ref()),
        ("unsupported_reply", p.unsupported_reply.as_ref()),
    ] {
        if let Some(text) = text {
            check_text(format!("policies.{name}"), text, out);
        }
    }
    check_handoff(&p.handoff, out);
    check_media(&p.media, out);
    if p.opt_out.enabled && p.opt_out.keywords.iter().all(|k| k.trim().is_empty()) {
        out.value(
            "policies.opt_out.keywords",
            "opt-out is enabled with no keywords; list some or set enabled: false",
        );
    }
    for (i, n) in config.numbers.iter().enumerate() {
        let o = &n.policies;
        if let Some(w) = o.window {
            check_window(format!("numbers[{i}].policies.window"), w.get(), out);
        }
        if o.throughput_per_number == Some(0) {
            out.value(
                format!("numbers[{i}].policies.throughput_per_number"),
                "must be at least 1 message per second",
            );
        }
        for (name, text) in [
            ("fallback_reply", o.fallback_reply.as_ref()),
            ("unsupported_reply", o.unsupported_reply.as_ref()),
        ] {
            if let Some(text) = text {
                check_text(format!("numbers[{i}].policies.{name}"), text, out);
            }
        }
    }
}

/// The longest a conversation may be paused, by the setting or by one pause.
pub const MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

fn check_handoff(h: &super::policy::Handoff, out: &mut Issues) {
    let pause_for = h.pause_for.get();
    if pause_for.is_zero() || pause_for > MAX_PAUSE {
        out.value(
            "policies.handoff.pause_for",
            "must be more than 0s and at most 30d: how long a pause lasts when it names no \
             `for` (default 24h)",
        );
    }
    let echo_pause = h.echo_pause.get();
    if echo_pause.is_zero() || echo_pause > MAX_PAUSE {
        out.value(
            "policies.handoff.echo_pause",
            "must be more than 0s and at most 30d: how long an answer from the WhatsApp Business \
             app pauses the agent (default 30m)",
        );
    }
    if let Some(notify) = &h.notify {
        if let Err(why) = http_url(&notify.url) {
            out.value(
                "policies.handoff.notify.url",
                format!("{why}; handoff notifications are POSTed to an http:// or https:// URL"),
            );
        }
        if notify.timeout.get().is_zero() {
            out.value(
                "policies.handoff.notify.timeout",
                "must be more than 0s: how long one notification attempt may take (default 10s)",
            );
        }
    }
}

fn check_media(media: &super::policy::MediaPolicy, out: &mut Issues) {
    let cache_for = media.cache_for.get();
    if cache_for.is_zero() || cache_for >= super::policy::META_MEDIA_LIFETIME {
        out.value(
            "policies.media.cache_for",
            "must be more than 0s and under 30d: Meta keeps an uploaded file for 30 days, and a \
             media id reused after that is refused (default 29d)",
        );
    }
    if media.timeout.get().is_zero() {
        out.value(
            "policies.media.timeout",
            "must be more than 0s: a media file's download and upload each get this long \
             (default 60s)",
        );
    }
}

fn check_listen_and_storage(config: &Config, files: bool, out: &mut Issues) {
    if let Err(why) = http_url(&config.public_url) {
        out.value(
            "public_url",
            format!("{why}; write the URL Meta calls, e.g. https://wa.example.com/webhook"),
        );
    } else if !config
        .public_url
        .trim_end_matches('/')
        .ends_with("/webhook")
    {
        out.value(
            "public_url",
            "public_url must end in /webhook, the path the gateway serves Meta's webhooks on",
        );
    }
    check_tls(config, files, out);
    if config.listen.max_body_bytes == 0 {
        out.value(
            "listen.max_body_bytes",
            "must be at least 1: it is the largest webhook body accepted (default 3145728)",
        );
    }
    let url = &config.storage.url;
    let rest = ["sqlite://", "postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme));
    match rest {
        // The URL itself is not repeated: a PostgreSQL URL may hold a password.
        None => out.value(
            "storage.url",
            "storage URL must start with sqlite://, postgres:// or postgresql://, e.g. sqlite://data/gateway.db",
        ),
        Some("") => out.value(
            "storage.url",
            "storage URL has no location: write sqlite://path/to/file.db or postgres://user@host/db",
        ),
        Some(rest) if url.starts_with("sqlite:") && is_in_memory(rest) => out.value(
            "storage.url",
            "an in-memory SQLite database loses every message on a restart, so `serve` refuses \
             it: point it at a file, e.g. sqlite://data/gateway.db",
        ),
        Some(_) => {}
    }
    if config.storage.max_connections == 0 {
        out.value("storage.max_connections", "must be at least 1 (default 8)");
    }
    if config.storage.lease.get() < std::time::Duration::from_secs(1) {
        out.value(
            "storage.lease",
            "must be at least 1s: replicas renew their claims every third of it (default 15s)",
        );
    }
    if config.listen.shutdown_timeout.get().is_zero() {
        out.value(
            "listen.shutdown_timeout",
            "must be more than 0s: in-flight requests and turns need time to finish (default 25s)",
        );
    }
    if config.storage.batch_max == 0 {
        out.value(
            "storage.batch_max",
            "must be at least 1: it is the most messages committed in one transaction (default 1024)",
        );
    }
    if config.storage.commit_interval.get() > std::time::Duration::from_millis(100) {
        out.value(
            "storage.commit_interval",
            "must be at most 100ms: every webhook's 200 may wait this long for its commit (default 1ms)",
        );
    }
    let delivery = &config.policies.delivery;
    if delivery.max_attempts == 0 {
        out.value(
            "policies.delivery.max_attempts",
            "must be at least 1, or no reply would ever be sent (default 10)",
        );
    }
    if delivery.initial_backoff > delivery.max_backoff {
        out.value(
            "policies.delivery.initial_backoff",
            "is longer than policies.delivery.max_backoff: lower it or raise max_backoff",
        );
    }
}

/// The longest a listener timeout may be: a day already means "never" for a connection.
const MAX_LISTEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The listeners' connection and body bounds: a zero would refuse every client or disable the
/// bound, so each must be above it.
fn check_listen_limits(config: &Config, out: &mut Issues) {
    let l = &config.listen;
    for (field, value, what) in [
        (
            "header_timeout",
            l.header_timeout,
            "the time a connection gets to send its headers (default 5s)",
        ),
        (
            "body_timeout",
            l.body_timeout,
            "the time a webhook's whole body gets to arrive (default 10s)",
        ),
        (
            "idle_timeout",
            l.idle_timeout,
            "how long a connection stays open between requests (default 75s)",
        ),
    ] {
        if value.get().is_zero() {
            out.value(
                format!("listen.{field}"),
                format!("must be more than 0s: it is {what}"),
            );
        } else if value.get() > MAX_LISTEN_TIMEOUT {
            out.value(
                format!("listen.{field}"),
                format!("must be at most 24h: it is {what}"),
            );
        }
    }
    for (field, value, what) in [
        (
            "h2_max_streams",
            u64::from(l.h2_max_streams),
            "the most concurrent requests on one HTTP/2 connection (default 32)",
        ),
        (
            "max_connections",
            l.max_connections as u64,
            "the most connections open at once on each listener (default 4096)",
        ),
        (
            "max_inflight_bodies",
            l.max_inflight_bodies as u64,
            "the most webhook POSTs read or handled at once (default 256)",
        ),
    ] {
        if value == 0 {
            out.value(
                format!("listen.{field}"),
                format!("must be at least 1: it is {what}"),
            );
        }
    }
}

/// What follows `sqlite://`: an in-memory database (`:memory:` or `mode=memory`), as the store
/// sees it.
fn is_in_memory(rest: &str) -> bool {
    let (file, query) = rest.split_once('?').unwrap_or((rest, ""));
    file == ":memory:" || query.split('&').any(|kv| kv == "mode=memory")
}

/// TLS files must load as they will be served (when `files` may be read); without TLS, plain
/// HTTP must be chosen on purpose unless the listener is only reachable from the machine itself.
fn check_tls(config: &Config, files: bool, out: &mut Issues) {
    let listen = &config.listen;
    match &listen.tls {
        Some(tls) => {
            if !files {
                return;
            }
            if let Err(e) = super::cert::load_certified_key(tls) {
                let field = match e.is_key() {
                    true => "listen.tls.key",
                    false => "listen.tls.cert",
                };
                out.value(field, e.to_string());
            }
        }
        None if !listen.plain_http && !listen.webhook.ip().is_loopback() => out.value(
            "listen.webhook",
            format!(
                "the webhook listener on {} would serve plain HTTP to the network: configure \
                 listen.tls {{ cert, key }}, or set listen.plain_http: true when a \
                 TLS-terminating ingress sits in front",
                listen.webhook
            ),
        ),
        None => {}
    }
}

fn check_meta(config: &Config, out: &mut Issues) {
    let meta = &config.meta;
    if !config.uses_emulator()
        && let Err(why) = http_url(&meta.graph_url)
    {
        out.value(
            "meta.graph_url",
            format!("{why}; write `emulator` or a base URL such as https://graph.facebook.com"),
        );
    }
    if !is_api_version(&meta.api_version) {
        out.value(
            "meta.api_version",
            format!(
                "Graph API version {:?} is not like v23.0: write v, major, dot, minor",
                meta.api_version
            ),
        );
    }
    if !is_digits(&meta.app_id) {
        out.value(
            "meta.app_id",
            format!(
                "app id {:?} must be digits only, as Meta shows it in the app dashboard",
                meta.app_id
            ),
        );
    }
    if meta.reconcile.interval.get() < std::time::Duration::from_secs(1) {
        out.value(
            "meta.reconcile.interval",
            "the reconcile interval must be at least 1s (each pass costs Graph calls from the \
             WABA's management budget); write e.g. 5m",
        );
    }
}

fn check_agents(config: &Config, out: &mut Issues) {
    for (name, agent) in &config.agents {
        let path = join_key("agents", name);
        if !is_agent_name(name) {
            out.key(
                path.clone(),
                format!("agent name {name:?} may only hold lowercase letters, digits, `_` and `-`"),
            );
        }
        match agent {
            Agent::Http { url, .. } | Agent::Openai { url, .. } => {
                if let Err(why) = http_url(url) {
                    out.value(
                        format!("{path}.url"),
                        format!("{why}; an agent is called at an http:// or https:// URL"),
                    );
                }
            }
            Agent::Echo { .. } => {}
        }
        if let Agent::Openai { model, .. } = agent
            && model.trim().is_empty()
        {
            out.value(
                format!("{path}.model"),
                "name the model the server should run",
            );
        }
    }
}

fn check_numbers(config: &Config, map: &SourceMap, out: &mut Issues) {
    let declared = config.agents.keys().cloned().collect::<Vec<_>>().join(", ");
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, number) in config.numbers.iter().enumerate() {
        let base = format!("numbers[{i}]");
        let id = number.phone_number_id.as_str();
        if !config.agents.contains_key(&number.agent) {
            let hint = if declared.is_empty() {
                "no agents are declared".to_owned()
            } else {
                format!("declared: {declared}")
            };
            out.value(
                format!("{base}.agent"),
                format!(
                    "agent {:?} is not declared under `agents` ({hint})",
                    number.agent
                ),
            );
        }
        if !is_digits(id) {
            out.value(
                format!("{base}.phone_number_id"),
                format!("phone number id {id:?} must be digits only, as WhatsApp Manager shows it"),
            );
        }
        if !is_digits(number.waba_id.as_str()) {
            out.value(
                format!("{base}.waba_id"),
                format!(
                    "WhatsApp Business Account id {:?} must be digits only",
                    number.waba_id.as_str()
                ),
            );
        }
        match seen.get(id) {
            Some(&first) => {
                let line = map
                    .nearest(&format!("numbers[{first}].phone_number_id"))
                    .line;
                out.value(
                    format!("{base}.phone_number_id"),
                    format!(
                        "phone number id {id} is declared twice (also declared at line {line}): keep one entry"
                    ),
                );
            }
            None => {
                seen.insert(id, i);
            }
        }
    }
}

fn check_waba_callbacks(config: &Config, out: &mut Issues) {
    for (waba, url) in &config.meta.waba_callbacks {
        let path = format!("meta.waba_callbacks.{waba}");
        if !config.numbers.iter().any(|n| n.waba_id.as_str() == waba) {
            out.key(
                path.clone(),
                format!(
                    "no number of WhatsApp Business Account {waba} is declared under `numbers`"
                ),
            );
        }
        if let Err(why) = http_url(url) {
            out.value(
                path,
                format!("the WABA callback must be an http(s) URL: {why}"),
            );
        }
    }
}

fn check_inline_secrets(config: &Config, out: &mut Issues) {
    if config.uses_emulator() {
        return;
    }
    let mut config = config.clone();
    for (path, secret) in config.secrets_mut() {
        if matches!(secret.source(), SecretSource::Value(_)) {
            out.value(
                path,
                "inline secrets are only accepted with the built-in emulator; use { env: NAME } or { file: PATH }",
            );
        }
    }
}

/// A `stored:` reference needs the key that decrypts it, and the keys cannot be stored themselves.
fn check_stored_secrets(config: &Config, out: &mut Issues) {
    let has_key = config.meta.encryption_key.is_some();
    let mut config = config.clone();
    for (path, secret) in config.secrets_mut() {
        let Some(name) = secret.stored_name() else {
            continue;
        };
        if path.starts_with("meta.encryption_key")
            || path.starts_with("meta.previous_encryption_keys")
        {
            out.value(
                path,
                "the encryption key cannot itself be a stored secret: use { env: NAME } or { file: PATH }",
            );
        } else if !has_key {
            out.value(
                path,
                format!(
                    "stored secret {name:?} is kept encrypted, but meta.encryption_key is not set: add \
                     meta.encryption_key: {{ env: WA_ENCRYPTION_KEY }} holding {}",
                    crate::vault::KEY_FORMAT
                ),
            );
        } else if !is_stored_name(name) {
            out.value(
                path,
                format!("{name:?} is not a stored secret name: use 1 to 64 letters, digits, `_`, `-` or `.`"),
            );
        }
    }
    if let Some(signup) = &config.meta.embedded_signup
        && !is_digits(&signup.config_id)
    {
        out.value(
            "meta.embedded_signup.config_id",
            "the Embedded Signup configuration id is digits only, as the app dashboard shows it \
             (Facebook Login for Business → Configurations)",
        );
    }
}

/// The admin listener is safe by default: off the machine only with a token, TLS files that
/// load (when `files` may be read), host names that are names, and a media token only beside an
/// admin token.
fn check_admin(config: &Config, files: bool, out: &mut Issues) {
    let listen = &config.listen;
    if listen.admin_token.is_none() && !listen.admin.ip().is_loopback() {
        out.value(
            "listen.admin",
            format!(
                "the admin listener on {} is reachable from the network without a token: set \
                 listen.admin_token: {{ env: WA_ADMIN_TOKEN }} (or {{ file: PATH }}), or listen \
                 on 127.0.0.1",
                listen.admin
            ),
        );
    }
    if let Some(tls) = listen.admin_tls.as_ref().filter(|_| files)
        && let Err(e) = super::cert::load_certified_key(tls)
    {
        let field = match e.is_key() {
            true => "listen.admin_tls.key",
            false => "listen.admin_tls.cert",
        };
        out.value(field, e.to_string());
    }
    for (i, host) in listen.admin_hosts.iter().enumerate() {
        if !is_host_name(host) {
            out.value(
                format!("listen.admin_hosts[{i}]"),
                format!("{host:?} is not a host name: write a DNS name such as wa-gateway-admin.wa.svc, without scheme or port"),
            );
        }
    }
    if listen.media_token.is_some() && listen.admin_token.is_none() {
        out.value(
            "listen.media_token",
            "a media token only narrows access when listen.admin_token is set: set the admin \
             token too, or remove media_token",
        );
    }
    if listen.media_concurrency == 0 {
        out.value(
            "listen.media_concurrency",
            "must be at least 1: the most /media downloads served at once (default 16)",
        );
    }
    for (i, host) in config.meta.media_hosts.iter().enumerate() {
        if !is_host_name(host) {
            out.value(
                format!("meta.media_hosts[{i}]"),
                format!("{host:?} is not a host name: write one such as lookaside.fbsbx.com, without scheme, port or path"),
            );
        }
    }
}

/// A DNS name: dot-separated labels of letters, digits and `-`, none empty or over 63 bytes.
fn is_host_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `Ok` when `s` is an absolute http(s) URL with a host; else why not, without repeating the URL
/// (its userinfo or query may hold a credential).
fn http_url(s: &str) -> Result<(), String> {
    match reqwest::Url::parse(s) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Ok(()),
        Ok(url) => Err(format!(
            "URL scheme {:?} is not http or https",
            url.scheme()
        )),
        Err(e) => Err(format!("not an absolute URL ({e})")),
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_agent_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn is_api_version(s: &str) -> bool {
    let Some((major, minor)) = s.strip_prefix('v').and_then(|r| r.split_once('.')) else {
        return false;
    };
    is_digits(major) && is_digits(minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_helpers() {
        for (s, want) in [
            ("v23.0", true),
            ("v3.10", true),
            ("23.0", false),
            ("v23", false),
            ("v23.x", false),
            ("v.0", false),
        ] {
            assert_eq!(is_api_version(s), want, "{s}");
        }
        for (s, want) in [
            ("echo", true),
            ("orders-2_b", true),
            ("Echo", false),
            ("", false),
            ("a b", false),
        ] {
            assert_eq!(is_agent_name(s), want, "{s}");
        }
        for (s, want) in [
            ("lookaside.fbsbx.com", true),
            ("wa-gateway-admin.wa.svc.", true),
            ("localhost", true),
            ("", false),
            ("https://x.example", false),
            ("x.example:9090", false),
            ("-x.example", false),
            ("a..b", false),
        ] {
            assert_eq!(is_host_name(s), want, "{s}");
        }
        for (s, want) in [
            (":memory:", true),
            ("file.db?mode=memory&cache=shared", true),
            ("data/gateway.db", false),
            ("data/memory.db?mode=rwc", false),
        ] {
            assert_eq!(is_in_memory(s), want, "{s}");
        }
        for (s, want) in [("123", true), ("", false), ("12a", false), ("١٢", false)] {
            assert_eq!(is_digits(s), want, "{s}");
        }
        for (s, want) in [
            ("https://wa.example.com/webhook", true),
            ("http://127.0.0.1:8080", true),
            ("ftp://x", false),
            ("wa.example.com", false),
            ("http://", false),
        ] {
            assert_eq!(http_url(s).is_ok(), want, "{s}");
        }
    }
}
