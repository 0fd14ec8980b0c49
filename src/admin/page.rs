//! The status page at `/`: server-rendered HTML with inline CSS and a little vanilla JS, a card
//! per number. Every value is escaped here. When a token is configured and the browser is not
//! signed in, the page is a form; its script posts the token to `/api/session`, which answers
//! with an HttpOnly cookie, and fetches `/` again. The token is never read from the URL.

use super::api::{self, NumberView};
use super::auth::{self, Access};
use crate::handoff::Pause;
use crate::reconcile::NumberState;
use crate::serve::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::fmt::Write;
use std::sync::Arc;

const CSS: &str = include_str!("status.css");
const JS: &str = include_str!("status.js");

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) async fn index(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let access = auth::check(&st, &headers, auth::Scope::Admin);
    // The launcher (and the policy that lets Facebook's SDK in) only for a signed-in operator.
    let launcher = access
        .allowed()
        .then(|| super::onboard::launcher_html(&st))
        .flatten();
    let body = if access.allowed() {
        let read = async {
            let views = api::number_views(&st).await?;
            let pauses = crate::handoff::paused(&st, None).await?;
            Ok::<_, crate::store::StoreError>((views, pauses))
        };
        match read.await {
            Ok((views, pauses)) => {
                let main = cards_html(&views, &pauses) + launcher.as_deref().unwrap_or_default();
                page(&header_html(&st), &main, access)
            }
            Err(e) => {
                tracing::warn!(error = %e, "status page storage read failed");
                let msg = "Storage is not answering: check /readyz and the gateway's logs.";
                let html = page(
                    &header_html(&st),
                    &format!("<p class=\"alert\">{}</p>", escape(msg)),
                    access,
                );
                return (StatusCode::SERVICE_UNAVAILABLE, html_headers(false), html)
                    .into_response();
            }
        }
    } else {
        // Nothing about the numbers or the config before the token is shown.
        let wrong = if access == Access::Wrong {
            "<p class=\"alert\" role=\"alert\">The sign-in has expired or the token changed: sign in again.</p>"
        } else {
            ""
        };
        page(
            "<h1>wa-gateway</h1>",
            &format!(
                "{wrong}<form id=\"login\" class=\"login\">\
                 <label for=\"token\">Admin token (<code>listen.admin_token</code>)</label>\
                 <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required>\
                 <button type=\"submit\">Sign in</button>\
                 <p class=\"msg\" id=\"login-msg\" role=\"alert\"></p></form>"
            ),
            access,
        )
    };
    (html_headers(launcher.is_some()), body).into_response()
}

fn html_headers(signup: bool) -> [(header::HeaderName, HeaderValue); 4] {
    let csp = match signup {
        true => HeaderValue::from_static(super::onboard::CSP_WITH_SIGNUP),
        false => HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'",
        ),
    };
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        // Inline style and script only; no request leaves for another origin (except Facebook's
        // SDK when the signup launcher is shown).
        (header::CONTENT_SECURITY_POLICY, csp),
    ]
}

fn page(header: &str, main: &str, access: Access) -> String {
    let locked = if access.allowed() { "false" } else { "true" };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>wa-gateway status</title><style>{CSS}</style></head>\
         <body data-locked=\"{locked}\"><div id=\"app\"><header class=\"top\">{header}</header>\
         <main>{main}</main></div><script>{JS}</script></body></html>"
    )
}

fn header_html(st: &AppState) -> String {
    let cfg = api::config_view(st);
    let text = |key: &str| match &cfg[key] {
        serde_json::Value::Null => "—".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let loaded = text("loaded_at");
    let reload_error = match cfg["last_reload_error"].as_str() {
        Some(e) => format!(
            "<p class=\"alert\" role=\"alert\" id=\"reload-error\">Last reload refused: {}</p>",
            escape(e)
        ),
        None => String::new(),
    };
    format!(
        "<h1>wa-gateway</h1><dl class=\"config\">\
         <dt>Config version</dt><dd id=\"config-version\">{}</dd>\
         <dt>Loaded</dt><dd id=\"config-loaded\">{}</dd>\
         <dt>SHA-256</dt><dd id=\"config-sha\">{}</dd>\
         <dt>Last reload error</dt><dd id=\"config-reload-error\">{}</dd></dl>\
         <p class=\"summary\">{}</p>{reload_error}",
        escape(&text("version")),
        escape(&loaded),
        escape(&text("sha256")),
        escape(&text("last_reload_error")),
        escape(&text("summary")),
    )
}

fn cards_html(views: &[NumberView], pauses: &[Pause]) -> String {
    if views.is_empty() {
        return "<p>No numbers are declared: add them under <code>numbers:</code> in the config.</p>"
            .into();
    }
    let mut out = String::from("<section class=\"cards\">");
    for v in views {
        let paused: Vec<&Pause> = pauses
            .iter()
            .filter(|p| p.phone_number_id == v.phone_number_id)
            .collect();
        out.push_str(&card_html(v, &paused));
    }
    out.push_str("</section>");
    out
}

fn card_html(v: &NumberView, paused: &[&Pause]) -> String {
    let id = escape(&v.phone_number_id);
    let title = if v.display_name.is_empty() {
        &v.phone_number_id
    } else {
        &v.display_name
    };
    let status = v.status.as_str();
    // A symbol beside the word, so the status never rests on colour alone.
    let symbol = match v.status {
        NumberState::Active => "●",
        NumberState::Inactive => "○",
        NumberState::Error => "▲",
    };
    let (action, action_label) = if v.disconnected {
        ("connect", "Connect")
    } else {
        ("disconnect", "Disconnect")
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<article class=\"card\" id=\"card-{id}\" data-number=\"{id}\" data-status=\"{status}\">\
         <div class=\"card-head\"><h2>{}</h2>\
         <span class=\"badge badge-{status}\" data-status=\"{status}\" title=\"{}\">\
         <span aria-hidden=\"true\">{symbol}</span> {}</span>\
         <div class=\"menu\"><button type=\"button\" class=\"dots\" aria-haspopup=\"menu\" \
         aria-expanded=\"false\" aria-label=\"Actions for {}\" data-menu=\"{id}\">⋮</button>\
         <div class=\"menu-items\" role=\"menu\" hidden>\
         <button type=\"button\" role=\"menuitem\" data-action=\"test\" data-number=\"{id}\">Test Connection</button>\
         <button type=\"button\" role=\"menuitem\" data-action=\"{action}\" data-number=\"{id}\">{action_label}</button>\
         </div></div></div><dl>",
        escape(title),
        escape(v.status_reason.as_deref().unwrap_or(v.status.label())),
        v.status.label(),
        escape(title),
    );
    let mut row = |label: &str, class: &str, value: &str| {
        let _ = write!(
            out,
            "<dt>{label}</dt><dd class=\"{class}\">{}</dd>",
            escape(value)
        );
    };
    row(
        "Business name",
        "verified-name",
        v.verified_name.as_deref().unwrap_or("—"),
    );
    row(
        "Display number",
        "display-number",
        v.display_phone_number.as_deref().unwrap_or("—"),
    );
    row("Phone number id", "pnid", &v.phone_number_id);
    row("Agent", "agent", &v.agent);
    row(
        "Quality",
        "quality",
        v.quality_rating.as_deref().unwrap_or("—"),
    );
    row(
        &format!("{} since", v.status.label()),
        "status-since",
        v.status_since.as_deref().unwrap_or("—"),
    );
    row(
        "Last activity",
        "last-activity",
        v.last_activity.as_deref().unwrap_or("never"),
    );
    row("Queued replies", "queued", &v.queued_replies.to_string());
    if let Some(reason) = &v.status_reason {
        row("Why", "status-reason", reason);
    }
    if let Some(reason) = &v.override_reason {
        row("Disconnected because", "override-reason", reason);
    }
    if let Some(problem) = v
        .waba_problem
        .as_ref()
        .filter(|p| v.status_reason.as_ref() != Some(*p))
    {
        row("WABA", "waba-problem", problem);
    }
    out.push_str("</dl>");
    out.push_str(&paused_html(&v.phone_number_id, paused));
    out.push_str(
        "<p class=\"msg\" role=\"status\" aria-live=\"polite\"></p>\
         <ol class=\"checks\" hidden></ol></article>",
    );
    out
}

/// A number's paused conversations, each with its Resume button, and the form that pauses one.
fn paused_html(number: &str, paused: &[&Pause]) -> String {
    let id = escape(number);
    let mut out = String::from(
        "<section class=\"paused\" aria-label=\"Paused conversations\"><h3>Paused conversations</h3>",
    );
    if paused.is_empty() {
        out.push_str("<p class=\"none\">None: the agent answers every customer.</p>");
    } else {
        out.push_str("<ul class=\"paused-list\">");
        for p in paused {
            let customer = escape(&p.customer);
            let reason = p
                .reason
                .as_deref()
                .map(|r| format!(" · {}", escape(r)))
                .unwrap_or_default();
            let _ = write!(
                out,
                "<li class=\"paused-item\" data-customer=\"{customer}\">\
                 <span class=\"customer\">{customer}</span> until \
                 <time>{}</time> · by {}{reason} \
                 <button type=\"button\" data-action=\"resume\" data-number=\"{id}\" \
                 data-customer=\"{customer}\">Resume</button></li>",
                escape(&api::rfc3339(p.paused_until)),
                p.by.as_str(),
            );
        }
        out.push_str("</ul>");
    }
    let _ = write!(
        out,
        "<form class=\"pause-form\" data-number=\"{id}\">\
         <input name=\"customer\" aria-label=\"Customer to pause (wa_id or user id)\" \
         placeholder=\"customer wa_id\" required>\
         <input name=\"for\" aria-label=\"For how long\" placeholder=\"for (24h)\" size=\"8\">\
         <input name=\"reason\" aria-label=\"Reason\" placeholder=\"reason\">\
         <button type=\"submit\">Pause</button></form></section>"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_markup_is_escaped() {
        assert_eq!(
            escape(r#"<script>alert("x") & 'y'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(escape("Acme Support ✓"), "Acme Support ✓");
    }

    #[test]
    fn a_card_escapes_names_and_shows_the_status_in_words() {
        let v = NumberView {
            phone_number_id: "1065".into(),
            display_name: "<b>Acme</b>".into(),
            agent: "a\"gent".into(),
            enabled: false,
            disconnected: false,
            override_changed_at: None,
            override_reason: None,
            status: NumberState::Inactive,
            status_reason: Some("disabled in the config".into()),
            status_since: None,
            verified_name: Some("Acme <Verified>".into()),
            display_phone_number: Some("+1 555-000-1111".into()),
            quality_rating: Some("GREEN".into()),
            waba_problem: None,
            status_from_meta: None,
            last_activity: None,
            queued_replies: 0,
        };
        let pause = Pause {
            phone_number_id: "1065".into(),
            customer: "15551234567".into(),
            paused_at: 0,
            paused_until: 7_200_000,
            reason: Some("<refund>".into()),
            by: crate::handoff::PausedBy::Agent,
        };
        let html = card_html(&v, &[&pause]);
        assert!(
            html.contains(
                "data-action=\"resume\" data-number=\"1065\" data-customer=\"15551234567\""
            ),
            "{html}"
        );
        assert!(
            html.contains("&lt;refund&gt;") && html.contains("by agent"),
            "{html}"
        );
        assert!(!html.contains("<b>Acme</b>"), "{html}");
        assert!(html.contains("&lt;b&gt;Acme&lt;/b&gt;"), "{html}");
        assert!(html.contains("a&quot;gent"), "{html}");
        assert!(html.contains("</span> Inactive</span>"), "{html}");
        assert!(html.contains("data-action=\"disconnect\""), "{html}");
        assert!(html.contains("Acme &lt;Verified&gt;"), "{html}");
        assert!(
            html.contains("+1 555-000-1111") && html.contains(">GREEN<"),
            "{html}"
        );
    }
}
