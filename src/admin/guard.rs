//! The admin listener's defences against other sites, in force with or without a token: every
//! request must name this gateway in `Host` (against DNS rebinding), and every state-changing
//! request must come from the gateway's own origin with a JSON body (against cross-site request
//! forgery). Two middleware layers over pure decisions; neither reads storage.

use super::api::error;
use crate::serve::state::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::Response;
use std::net::IpAddr;
use std::sync::Arc;

/// The host part of a `Host` value or URI authority, lowercased, without port, brackets or a
/// trailing dot; `None` when it does not parse.
fn host_and_port(authority: &str) -> Option<(String, Option<u16>)> {
    let parsed: axum::http::uri::Authority = authority.trim().parse().ok()?;
    let host = parsed
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    (!host.is_empty()).then_some((host, parsed.port_u16()))
}

/// Whether a request naming `host` is meant for an admin listener configured on `listen` with
/// the extra names `names`. `localhost` and loopback addresses always are; so is the listener's
/// own address, and, when it listens on every interface (`0.0.0.0`, `::`), any IP literal: a
/// DNS-rebinding page always presents its own domain name, never an address, and the kubelet's
/// probes and Prometheus name the pod by its IP. Ports are not compared (port-forwards).
pub fn host_allowed(host: &str, listen: IpAddr, names: &[String]) -> bool {
    let Some((host, _)) = host_and_port(host) else {
        return false;
    };
    if host == "localhost" {
        return true;
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return ip.is_loopback() || ip == listen || listen.is_unspecified();
    }
    names
        .iter()
        .any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(&host))
}

/// The name a request was sent to: `Host`, else the URI's authority (HTTP/2's `:authority`).
fn requested_host(request: &Request) -> Option<String> {
    match request.headers().get(header::HOST) {
        Some(v) => v.to_str().ok().map(str::to_owned),
        None => request.uri().authority().map(|a| a.as_str().to_owned()),
    }
}

/// Layer on every admin route: refuses a request for a name this gateway is not known by
/// (421), before anything else runs.
pub async fn require_known_host(
    State(st): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let known = {
        let snapshot = st.snapshot.load();
        let listen = &snapshot.config.listen;
        requested_host(&request)
            .is_some_and(|h| host_allowed(&h, listen.admin.ip(), &listen.admin_hosts))
    };
    if !known {
        tracing::info!(path = %request.uri().path(), host = ?requested_host(&request), "admin request for an unknown host refused");
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "this admin listener does not answer to that Host: use its address, localhost, or \
             a name listed in listen.admin_hosts",
        );
    }
    next.run(request).await
}

/// Why a state-changing request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrossSite {
    /// `Origin` names another site (or is `null`).
    ForeignOrigin,
    /// The browser says the request comes from another site (`Sec-Fetch-Site`).
    FetchSite,
    /// The body is not declared `application/json`.
    NotJson,
}

impl CrossSite {
    fn response(self) -> Response {
        match self {
            CrossSite::ForeignOrigin | CrossSite::FetchSite => error(
                StatusCode::FORBIDDEN,
                "cross-site requests are refused: the admin API only takes changes from the \
                 status page's own origin or from clients that send no Origin",
            ),
            CrossSite::NotJson => error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with `Content-Type: application/json` (`{}` when the \
                 route takes no arguments)",
            ),
        }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// Whether `origin` (a serialized origin such as `https://host:9090`) is the site `host` names.
fn same_origin(origin: &str, host: &str) -> bool {
    let Ok(uri) = origin.parse::<Uri>() else {
        return false;
    };
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return false;
    };
    let (Some((o_host, o_port)), Some((h_host, h_port))) =
        (host_and_port(authority.as_str()), host_and_port(host))
    else {
        return false;
    };
    let dflt = default_port(scheme);
    o_host == h_host && o_port.or(dflt) == h_port.or(dflt)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The cross-site rule for one request: reads leave it alone; a change needs no foreign
/// `Origin`, no `Sec-Fetch-Site` other than `same-origin` or `none` (typed by a person), and a
/// JSON body, which no HTML form can send and which a script on another site can send only
/// after a CORS preflight that this listener never grants.
pub fn cross_site(method: &Method, headers: &HeaderMap, host: &str) -> Option<CrossSite> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ok = origin.to_str().is_ok_and(|o| same_origin(o, host));
        if !ok {
            return Some(CrossSite::ForeignOrigin);
        }
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        let ok = matches!(site.to_str(), Ok("same-origin" | "none"));
        if !ok {
            return Some(CrossSite::FetchSite);
        }
    }
    (!is_json(headers)).then_some(CrossSite::NotJson)
}

/// Layer on every admin route: applies [`cross_site`].
pub async fn refuse_cross_site(request: Request, next: Next) -> Response {
    let host = requested_host(&request).unwrap_or_default();
    if let Some(why) = cross_site(request.method(), request.headers(), &host) {
        tracing::info!(path = %request.uri().path(), ?why, "cross-site admin request refused");
        return why.response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn hosts_are_this_listener_localhost_ip_literals_or_listed_names() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let own: IpAddr = "10.1.2.3".parse().unwrap();
        let names = vec!["admin.example.com".to_owned()];
        for (host, listen, want) in [
            ("127.0.0.1:9090", lo, true),
            ("localhost:8080", lo, true),
            ("LOCALHOST", lo, true),
            ("[::1]:9090", lo, true),
            ("evil.example", lo, false),
            ("evil.example:9090", any, false),
            ("10.0.0.7:9090", any, true),
            ("[fd00::7]:9090", any, true),
            ("10.0.0.7:9090", own, false),
            ("10.1.2.3:9090", own, true),
            ("admin.example.com:9090", own, true),
            ("Admin.Example.com.", own, true),
            ("sub.admin.example.com", own, false),
            ("", any, false),
            ("a b", any, false),
        ] {
            assert_eq!(
                host_allowed(host, listen, &names),
                want,
                "{host} on {listen}"
            );
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn changes_need_the_same_origin_and_a_json_body() {
        let json = ("content-type", "application/json; charset=utf-8");
        let host = "127.0.0.1:9090";
        for (method, pairs, want) in [
            (Method::GET, vec![("origin", "https://evil.example")], None),
            (Method::POST, vec![json], None),
            (
                Method::POST,
                vec![json, ("origin", "http://127.0.0.1:9090")],
                None,
            ),
            (
                Method::POST,
                vec![json, ("sec-fetch-site", "same-origin")],
                None,
            ),
            (Method::POST, vec![json, ("sec-fetch-site", "none")], None),
            (
                Method::POST,
                vec![json, ("origin", "https://evil.example")],
                Some(CrossSite::ForeignOrigin),
            ),
            (
                Method::POST,
                vec![json, ("origin", "http://127.0.0.1:9091")],
                Some(CrossSite::ForeignOrigin),
            ),
            (
                Method::POST,
                vec![json, ("origin", "null")],
                Some(CrossSite::ForeignOrigin),
            ),
            (
                Method::POST,
                vec![json, ("sec-fetch-site", "cross-site")],
                Some(CrossSite::FetchSite),
            ),
            (
                Method::DELETE,
                vec![json, ("sec-fetch-site", "same-site")],
                Some(CrossSite::FetchSite),
            ),
            (Method::POST, vec![], Some(CrossSite::NotJson)),
            (
                Method::POST,
                vec![("content-type", "text/plain")],
                Some(CrossSite::NotJson),
            ),
            (
                Method::POST,
                vec![("content-type", "application/x-www-form-urlencoded")],
                Some(CrossSite::NotJson),
            ),
        ] {
            let h = headers(&pairs);
            assert_eq!(cross_site(&method, &h, host), want, "{method} {pairs:?}");
        }
        // Default ports are the same origin whether written or not.
        assert!(same_origin("http://gw.example", "gw.example:80"));
        assert!(same_origin("https://gw.example:443", "gw.example"));
        assert!(!same_origin("https://gw.example", "gw.example:80"));
    }
}
