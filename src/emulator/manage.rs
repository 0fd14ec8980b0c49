//! The Graph management endpoints, with Meta's shapes and refusals: app subscriptions (with the
//! GET verification handshake), WABA subscribed_apps, registration and PINs, phone verification,
//! number info, `debug_token`; plus the control routes to expire and issue tokens.

use super::error::GraphError;
use super::graph::{bearer, is_version};
use super::handshake::verify_callback;
use super::number_info::number_info;
use super::setup::{AppSubscription, Caller, ExchangeError, WABA_FIELDS};
use super::state::State;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

type Params = HashMap<String, String>;

pub(crate) fn router(state: Arc<State>) -> Router {
    let edge = |name: &'static str| -> MethodRouter<Arc<State>> {
        any(
            move |st: AxState<Arc<State>>,
                  path: Path<(String, String)>,
                  method: Method,
                  headers: HeaderMap,
                  uri: Uri,
                  body: Bytes| async move {
                let AxState(st) = st;
                let Path((version, id)) = path;
                let latency = st.latency();
                if !latency.is_zero() {
                    tokio::time::sleep(latency).await;
                }
                let params = params(&uri, &headers, &body);
                let req = Req {
                    st: &st,
                    method,
                    version,
                    id,
                    headers,
                    params,
                };
                match req.edge(name).await {
                    Ok(v) => Json(v).into_response(),
                    Err(e) => e.into_response(),
                }
            },
        )
    };
    let mut r = Router::new();
    for name in [
        "subscriptions",
        "subscribed_apps",
        "phone_numbers",
        "register",
        "deregister",
        "request_code",
        "verify_code",
    ] {
        r = r.route(&format!("/{{version}}/{{id}}/{name}"), edge(name));
    }
    // Meta serves the exchange with and without a version prefix.
    r = r
        .route("/{version}/oauth/access_token", get(oauth_versioned))
        .route("/oauth/access_token", get(oauth_unversioned));
    r.merge(super::setup_control::router()).with_state(state)
}

async fn oauth_versioned(
    AxState(st): AxState<Arc<State>>,
    Path(version): Path<String>,
    uri: Uri,
) -> Response {
    if !is_version(&version) {
        return GraphError::unknown_path(&version).into_response();
    }
    oauth_unversioned(AxState(st), uri).await
}

/// `GET /oauth/access_token?client_id&client_secret&code`: the Embedded Signup code exchange.
async fn oauth_unversioned(AxState(st): AxState<Arc<State>>, uri: Uri) -> Response {
    let params = params(&uri, &HeaderMap::new(), &[]);
    let get = |name: &str| params.get(name).filter(|v| !v.is_empty());
    let answer = (|| {
        let client_id =
            get("client_id").ok_or_else(|| GraphError::missing_oauth_parameter("client_id"))?;
        if *client_id != st.cfg.app_id {
            return Err(GraphError::invalid_client_id());
        }
        let secret = get("client_secret")
            .ok_or_else(|| GraphError::missing_oauth_parameter("client_secret"))?;
        if *secret != st.cfg.app_secret {
            return Err(GraphError::invalid_client_secret());
        }
        let code = get("code").ok_or_else(|| GraphError::missing_oauth_parameter("code"))?;
        match st.manage.exchange_code(code) {
            Ok(token) => Ok(json!({ "access_token": token, "token_type": "bearer" })),
            Err(ExchangeError::Used) => Err(GraphError::authorization_code_used()),
            Err(ExchangeError::Unknown) => Err(GraphError::invalid_authorization_code()),
        }
    })();
    match answer {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /{version}/{id}` for numbers and `debug_token`; `None` leaves the id to media.
pub(crate) async fn get_object_answer(
    st: &Arc<State>,
    (version, id): &(String, String),
    headers: &HeaderMap,
    uri: &Uri,
) -> Option<Response> {
    if !is_version(version) || (id != "debug_token" && st.number(id).is_none()) {
        return None;
    }
    let latency = st.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let req = Req {
        st,
        method: Method::GET,
        version: version.clone(),
        id: id.clone(),
        headers: headers.clone(),
        params: params(uri, headers, &[]),
    };
    Some(match req.get_object()? {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    })
}

/// `POST /{version}/{PNID}`: set the PIN or the number's webhook override.
pub(crate) async fn post_object_handler(
    AxState(st): AxState<Arc<State>>,
    Path((version, id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    if !is_version(&version) {
        return GraphError::unknown_path(&version).into_response();
    }
    let params = params(&uri, &headers, &body);
    let req = Req {
        st: &st,
        method: Method::POST,
        version,
        id,
        headers,
        params,
    };
    match req.post_object().await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Query parameters merged with a form or JSON body (Meta takes either).
fn params(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Params {
    let mut out = Params::new();
    let mut pairs = |q: &str| {
        if let Ok(url) = reqwest::Url::parse(&format!("http://x/?{q}")) {
            out.extend(
                url.query_pairs()
                    .map(|(k, v)| (k.into_owned(), v.into_owned())),
            );
        }
    };
    if let Some(q) = uri.query() {
        pairs(q);
    }
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
            for (k, v) in map {
                let v = match v {
                    Value::String(s) => s,
                    Value::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                out.insert(k, v);
            }
        }
    } else if let Ok(text) = std::str::from_utf8(body) {
        pairs(text);
    }
    out
}

/// One management request.
pub(crate) struct Req<'a> {
    pub st: &'a State,
    pub method: Method,
    pub version: String,
    pub id: String,
    pub headers: HeaderMap,
    pub params: Params,
}

fn success() -> Value {
    json!({ "success": true })
}

fn required<'p>(params: &'p Params, name: &str) -> Result<&'p str, GraphError> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| GraphError::invalid_parameter(format!("The parameter {name} is required.")))
}

impl Req<'_> {
    fn token(&self) -> Option<&str> {
        bearer(&self.headers).or(self.params.get("access_token").map(String::as_str))
    }

    fn app_token(&self) -> String {
        format!("{}|{}", self.st.cfg.app_id, self.st.cfg.app_secret)
    }

    fn unsupported(&self) -> GraphError {
        GraphError::unknown_object(&self.method.as_str().to_ascii_lowercase(), &self.id)
    }

    /// The token must be valid and reach the number's WABA; an unknown number is unknown.
    fn number_caller(&self) -> Result<String, GraphError> {
        let caller = self.st.manage.caller(self.token(), &self.app_token())?;
        match (self.st.number(&self.id), caller) {
            (Some(n), Caller::Business(wabas)) if wabas.contains(&n.waba_id) => {
                Ok(n.waba_id.clone())
            }
            (Some(_), _) => Err(GraphError::invalid_token()),
            (None, _) => Err(self.unsupported()),
        }
    }

    fn waba_caller(&self) -> Result<(), GraphError> {
        match self.st.manage.caller(self.token(), &self.app_token())? {
            Caller::Business(wabas) if wabas.contains(&self.id) => Ok(()),
            _ => Err(self.unsupported()),
        }
    }

    pub async fn edge(&self, edge: &str) -> Result<Value, GraphError> {
        if !is_version(&self.version) {
            return Err(GraphError::unknown_path(&self.version));
        }
        let m = &self.method;
        match edge {
            "subscriptions" => self.subscriptions().await,
            "subscribed_apps" => self.subscribed_apps().await,
            "phone_numbers" if m == Method::GET => self.phone_numbers(),
            "register" | "deregister" | "request_code" | "verify_code" if m == Method::POST => {
                self.number_edge(edge)
            }
            _ => Err(self.unsupported()),
        }
    }

    async fn subscriptions(&self) -> Result<Value, GraphError> {
        if !matches!(
            self.st.manage.caller(self.token(), &self.app_token())?,
            Caller::App
        ) {
            // Subscriptions are the app's: a business token may not touch them.
            return Err(GraphError::invalid_token());
        }
        if self.id != self.st.cfg.app_id {
            return Err(self.unsupported());
        }
        match self.method {
            Method::GET => {
                let data: Vec<Value> = self.st.manage.app().iter().map(|s| {
                    let fields: Vec<Value> = s.fields.iter()
                        .map(|f| json!({ "name": f, "version": "v23.0" }))
                        .collect();
                    json!({ "object": "whatsapp_business_account", "callback_url": s.callback_url,
                            "active": true, "fields": fields })
                }).collect();
                Ok(json!({ "data": data }))
            }
            Method::POST => {
                let object = required(&self.params, "object")?;
                if object != "whatsapp_business_account" {
                    return Err(GraphError::invalid_parameter(format!(
                        "Param object must be 'whatsapp_business_account' for a WhatsApp app, got '{object}'."
                    )));
                }
                let callback_url = required(&self.params, "callback_url")?.to_owned();
                let verify_token = required(&self.params, "verify_token")?.to_owned();
                let mut fields = BTreeSet::new();
                for f in required(&self.params, "fields")?.split(',').map(str::trim) {
                    if !WABA_FIELDS.contains(&f) {
                        return Err(GraphError::invalid_parameter(format!(
                            "Param fields[{f}] is not a valid field of whatsapp_business_account."
                        )));
                    }
                    fields.insert(f.to_owned());
                }
                verify_callback(&self.st.callback_target(&callback_url), &verify_token).await?;
                self.st.subscribed_callback(callback_url.clone());
                self.st.manage.set_app(Some(AppSubscription {
                    callback_url,
                    verify_token,
                    fields,
                }));
                Ok(success())
            }
            Method::DELETE => {
                self.st.manage.set_app(None);
                Ok(success())
            }
            _ => Err(self.unsupported()),
        }
    }

    async fn subscribed_apps(&self) -> Result<Value, GraphError> {
        self.waba_caller()?;
        match self.method {
            Method::GET => {
                let app = &self.st.cfg.app_id;
                let data: Vec<Value> = self
                    .st
                    .manage
                    .waba(&self.id)
                    .into_iter()
                    .map(|o| {
                        let mut entry = json!({ "whatsapp_business_api_data": {
                        "id": app, "name": "Emulated App",
                        "link": format!("https://www.facebook.com/games/?app_id={app}") } });
                        if let Some(uri) = o {
                            entry["override_callback_uri"] = json!(uri);
                        }
                        entry
                    })
                    .collect();
                Ok(json!({ "data": data }))
            }
            Method::POST => {
                let uri = self
                    .params
                    .get("override_callback_uri")
                    .filter(|u| !u.is_empty());
                if let Some(uri) = uri {
                    let target = self.st.callback_target(uri);
                    verify_callback(&target, required(&self.params, "verify_token")?).await?;
                }
                self.st.manage.set_waba(&self.id, Some(uri.cloned()));
                Ok(success())
            }
            Method::DELETE => {
                self.st.manage.set_waba(&self.id, None);
                Ok(success())
            }
            _ => Err(self.unsupported()),
        }
    }

    fn phone_numbers(&self) -> Result<Value, GraphError> {
        self.waba_caller()?;
        let data: Vec<Value> = self
            .st
            .cfg
            .numbers
            .iter()
            .filter(|n| n.waba_id == self.id)
            .map(|n| number_info(self.st, &n.phone_number_id, None))
            .collect();
        Ok(json!({ "data": data, "paging": { "cursors": { "before": "QVFI", "after": "QVFI" } } }))
    }

    fn number_edge(&self, edge: &str) -> Result<Value, GraphError> {
        self.number_caller()?;
        let setup = &self.st.manage;
        match edge {
            "register" => {
                if required(&self.params, "messaging_product")? != "whatsapp" {
                    return Err(GraphError::invalid_parameter(
                        "Param messaging_product must be 'whatsapp'.",
                    ));
                }
                setup.register(&self.id, six_digits(required(&self.params, "pin")?)?)?;
            }
            "deregister" => setup.deregister(&self.id)?,
            "request_code" => {
                let method = required(&self.params, "code_method")?;
                if !matches!(method, "SMS" | "VOICE") {
                    return Err(GraphError::invalid_parameter(
                        "Param code_method must be one of {SMS, VOICE}.",
                    ));
                }
                required(&self.params, "language")?;
                setup.request_code(&self.id)?;
            }
            _ => setup.verify_code(&self.id, required(&self.params, "code")?)?,
        }
        Ok(success())
    }

    /// `GET /{id}` for a number or `debug_token`; `None` when `id` is neither (media decides).
    pub fn get_object(&self) -> Option<Result<Value, GraphError>> {
        if self.id == "debug_token" {
            return Some(self.debug_token());
        }
        self.st.number(&self.id)?;
        Some(self.number_caller().map(|_| {
            let fields = self.params.get("fields").map(String::as_str);
            number_info(self.st, &self.id, fields)
        }))
    }

    /// `POST /{PNID}` with `pin`, or `webhook_configuration` (verified like any callback).
    pub async fn post_object(&self) -> Result<Value, GraphError> {
        self.number_caller()?;
        if let Some(pin) = self.params.get("pin") {
            self.st.manage.set_pin(&self.id, six_digits(pin)?);
            return Ok(success());
        }
        let Some(conf) = self.params.get("webhook_configuration") else {
            return Err(GraphError::invalid_parameter(
                "The parameter pin or webhook_configuration is required.",
            ));
        };
        let conf: Value = serde_json::from_str(conf).unwrap_or(Value::Null);
        let uri = conf["override_callback_uri"]
            .as_str()
            .filter(|u| !u.is_empty());
        if let Some(uri) = uri {
            let Some(token) = conf["verify_token"].as_str() else {
                return Err(GraphError::invalid_parameter(
                    "The parameter webhook_configuration['verify_token'] is required.",
                ));
            };
            verify_callback(&self.st.callback_target(uri), token).await?;
        }
        self.st
            .manage
            .set_number_override(&self.id, uri.map(str::to_owned));
        Ok(success())
    }

    fn debug_token(&self) -> Result<Value, GraphError> {
        match self.st.manage.caller(self.token(), &self.app_token()) {
            Ok(Caller::App) => {}
            _ => return Err(GraphError::invalid_token()),
        }
        let input = required(&self.params, "input_token")?;
        let data = match self.st.manage.debug(input) {
            Some((valid, wabas)) => json!({
                "app_id": self.st.cfg.app_id, "type": "SYSTEM_USER", "application": "Emulated App",
                "expires_at": 0, "is_valid": valid,
                "scopes": ["whatsapp_business_management", "whatsapp_business_messaging"],
                "granular_scopes": [
                    { "scope": "whatsapp_business_management", "target_ids": wabas },
                    { "scope": "whatsapp_business_messaging", "target_ids": wabas } ] }),
            None => json!({ "is_valid": false, "error": {
                "code": 190, "message": "Invalid OAuth access token - Cannot parse access token" },
                "scopes": [] }),
        };
        Ok(json!({ "data": data }))
    }
}

fn six_digits(pin: &str) -> Result<&str, GraphError> {
    if pin.len() == 6 && pin.bytes().all(|b| b.is_ascii_digit()) {
        Ok(pin)
    } else {
        Err(GraphError::invalid_parameter(
            "Param pin must be a 6-digit number.",
        ))
    }
}
