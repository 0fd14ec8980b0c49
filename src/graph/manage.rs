//! Typed management calls: app webhook subscriptions (app token `APP_ID|APP_SECRET`), WABA
//! subscribed_apps, registration and PINs, phone verification, number info, `debug_token`.
//! Each call is one request; deciding what to call is the reconciler's job.

use super::{GraphClient, GraphError};
use serde::{Deserialize, Serialize};

/// One of the app's webhook subscriptions (`GET /{app}/subscriptions`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSubscription {
    pub object: String,
    #[serde(default)]
    pub callback_url: String,
    #[serde(default)]
    pub active: bool,
    #[serde(default)]
    pub fields: Vec<SubscribedField>,
}

/// A subscribed webhook field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribedField {
    pub name: String,
    #[serde(default)]
    pub version: String,
}

/// An app subscribed to a WABA (`GET /{waba}/subscribed_apps`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribedApp {
    pub whatsapp_business_api_data: AppData,
    #[serde(default)]
    pub override_callback_uri: Option<String>,
}

/// The app's id, name and link as Meta shows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppData {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub link: String,
}

/// What `GET /{PNID}?fields=…` says about a number; every field but `id` may be absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberInfo {
    pub id: String,
    #[serde(default)]
    pub verified_name: Option<String>,
    #[serde(default)]
    pub display_phone_number: Option<String>,
    #[serde(default)]
    pub code_verification_status: Option<String>,
    /// GREEN, YELLOW, RED or UNKNOWN.
    #[serde(default)]
    pub quality_rating: Option<String>,
    /// CLOUD_API once registered on the Cloud API.
    #[serde(default)]
    pub platform_type: Option<String>,
    #[serde(default)]
    pub throughput: Option<serde_json::Value>,
    /// CONNECTED once registered; PENDING, DISCONNECTED, FLAGGED, RESTRICTED … otherwise.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub name_status: Option<String>,
    #[serde(default)]
    pub messaging_limit_tier: Option<String>,
    /// `{application, whatsapp_business_account?, phone_number?}`: the callback in force.
    #[serde(default)]
    pub webhook_configuration: Option<WebhookConfiguration>,
}

/// The callbacks in force for a number, by level.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookConfiguration {
    #[serde(default)]
    pub application: Option<String>,
    #[serde(default)]
    pub whatsapp_business_account: Option<String>,
    #[serde(default)]
    pub phone_number: Option<String>,
}

/// Every field the reconciler and the status page read.
pub const NUMBER_FIELDS: &str = "verified_name,display_phone_number,code_verification_status,\
quality_rating,platform_type,throughput,status,name_status,messaging_limit_tier,webhook_configuration";

/// What `debug_token` says about a token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    #[serde(default)]
    pub is_valid: bool,
    /// Unix seconds; 0 for tokens that never expire (system users).
    #[serde(default)]
    pub expires_at: i64,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub app_id: Option<String>,
}

#[derive(Deserialize)]
struct Data<T> {
    #[serde(default = "Vec::new")]
    data: Vec<T>,
}

#[derive(Deserialize)]
struct Debug {
    data: TokenInfo,
}

/// `SMS` or `VOICE`: how Meta sends the verification code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeMethod {
    Sms,
    Voice,
}

impl GraphClient {
    /// `GET /{app_id}/subscriptions` with the app token.
    pub async fn app_subscriptions(
        &self,
        app_id: &str,
        app_token: &str,
    ) -> Result<Vec<AppSubscription>, GraphError> {
        let req = self.http.get(self.url(&format!("{app_id}/subscriptions")));
        let d: Data<_> = self
            .call(req.bearer_auth(app_token), "GET subscriptions")
            .await?;
        Ok(d.data)
    }

    /// `POST /{app_id}/subscriptions` for `whatsapp_business_account`; Meta first verifies
    /// `callback_url` with the GET handshake and `verify_token` (2200 when it fails).
    pub async fn subscribe_app(
        &self,
        app_id: &str,
        app_token: &str,
        callback_url: &str,
        verify_token: &str,
        fields: &[String],
    ) -> Result<(), GraphError> {
        let fields = fields.join(",");
        let req = self
            .http
            .post(self.url(&format!("{app_id}/subscriptions")))
            .bearer_auth(app_token)
            .form(&[
                ("object", "whatsapp_business_account"),
                ("callback_url", callback_url),
                ("verify_token", verify_token),
                ("fields", fields.as_str()),
            ]);
        self.ok(req, "POST subscriptions").await
    }

    /// `DELETE /{app_id}/subscriptions?object=whatsapp_business_account`.
    pub async fn unsubscribe_app(&self, app_id: &str, app_token: &str) -> Result<(), GraphError> {
        let req = self
            .http
            .delete(self.url(&format!("{app_id}/subscriptions")))
            .bearer_auth(app_token)
            .query(&[("object", "whatsapp_business_account")]);
        self.ok(req, "DELETE subscriptions").await
    }

    /// `GET /{waba}/subscribed_apps`.
    pub async fn subscribed_apps(
        &self,
        waba_id: &str,
        token: &str,
    ) -> Result<Vec<SubscribedApp>, GraphError> {
        let req = self
            .http
            .get(self.url(&format!("{waba_id}/subscribed_apps")));
        let d: Data<_> = self
            .call(req.bearer_auth(token), "GET subscribed_apps")
            .await?;
        Ok(d.data)
    }

    /// `POST /{waba}/subscribed_apps`, with `(override_callback_uri, verify_token)` if given.
    pub async fn subscribe_waba(
        &self,
        waba_id: &str,
        token: &str,
        override_callback: Option<(&str, &str)>,
    ) -> Result<(), GraphError> {
        let mut req = self
            .http
            .post(self.url(&format!("{waba_id}/subscribed_apps")))
            .bearer_auth(token);
        if let Some((uri, verify_token)) = override_callback {
            req = req.json(&serde_json::json!({
                "override_callback_uri": uri, "verify_token": verify_token }));
        }
        self.ok(req, "POST subscribed_apps").await
    }

    /// `DELETE /{waba}/subscribed_apps`.
    pub async fn unsubscribe_waba(&self, waba_id: &str, token: &str) -> Result<(), GraphError> {
        let req = self
            .http
            .delete(self.url(&format!("{waba_id}/subscribed_apps")))
            .bearer_auth(token);
        self.ok(req, "DELETE subscribed_apps").await
    }

    /// `GET /{PNID}?fields=…` ([`NUMBER_FIELDS`] when `fields` is None).
    pub async fn number_info(
        &self,
        pnid: &str,
        token: &str,
        fields: Option<&str>,
    ) -> Result<NumberInfo, GraphError> {
        let req = self
            .http
            .get(self.url(pnid))
            .bearer_auth(token)
            .query(&[("fields", fields.unwrap_or(NUMBER_FIELDS))]);
        self.call(req, "GET phone number").await
    }

    /// `GET /{waba}/phone_numbers` (first page).
    pub async fn phone_numbers(
        &self,
        waba_id: &str,
        token: &str,
    ) -> Result<Vec<NumberInfo>, GraphError> {
        let req = self.http.get(self.url(&format!("{waba_id}/phone_numbers")));
        let d: Data<_> = self
            .call(req.bearer_auth(token), "GET phone_numbers")
            .await?;
        Ok(d.data)
    }

    fn post_json(
        &self,
        path: &str,
        token: &str,
        body: serde_json::Value,
    ) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
    }

    /// `POST /{PNID}/register` with the two-step PIN (sets it when none is set yet).
    pub async fn register(&self, pnid: &str, token: &str, pin: &str) -> Result<(), GraphError> {
        let body = serde_json::json!({ "messaging_product": "whatsapp", "pin": pin });
        self.ok(
            self.post_json(&format!("{pnid}/register"), token, body),
            "register",
        )
        .await
    }

    /// `POST /{PNID}/deregister`.
    pub async fn deregister(&self, pnid: &str, token: &str) -> Result<(), GraphError> {
        let body = serde_json::json!({});
        self.ok(
            self.post_json(&format!("{pnid}/deregister"), token, body),
            "deregister",
        )
        .await
    }

    /// `POST /{PNID}/request_code`.
    pub async fn request_code(
        &self,
        pnid: &str,
        token: &str,
        method: CodeMethod,
        language: &str,
    ) -> Result<(), GraphError> {
        let method = match method {
            CodeMethod::Sms => "SMS",
            CodeMethod::Voice => "VOICE",
        };
        let body = serde_json::json!({ "code_method": method, "language": language });
        self.ok(
            self.post_json(&format!("{pnid}/request_code"), token, body),
            "request_code",
        )
        .await
    }

    /// `POST /{PNID}/verify_code`.
    pub async fn verify_code(&self, pnid: &str, token: &str, code: &str) -> Result<(), GraphError> {
        let body = serde_json::json!({ "code": code });
        self.ok(
            self.post_json(&format!("{pnid}/verify_code"), token, body),
            "verify_code",
        )
        .await
    }

    /// `POST /{PNID}` `{pin}`: sets or changes the two-step verification PIN.
    pub async fn set_pin(&self, pnid: &str, token: &str, pin: &str) -> Result<(), GraphError> {
        let body = serde_json::json!({ "pin": pin });
        self.ok(self.post_json(pnid, token, body), "set PIN").await
    }

    /// `POST /{PNID}` `{webhook_configuration}`: the number's override callback (None clears).
    pub async fn set_number_callback(
        &self,
        pnid: &str,
        token: &str,
        callback: Option<(&str, &str)>,
    ) -> Result<(), GraphError> {
        let conf = match callback {
            Some((uri, verify)) => {
                serde_json::json!({ "override_callback_uri": uri, "verify_token": verify })
            }
            None => serde_json::json!({ "override_callback_uri": "" }),
        };
        let body = serde_json::json!({ "webhook_configuration": conf });
        self.ok(self.post_json(pnid, token, body), "set number callback")
            .await
    }

    /// `GET /debug_token?input_token=…` with the app token.
    pub async fn debug_token(&self, input: &str, app_token: &str) -> Result<TokenInfo, GraphError> {
        let req = self
            .http
            .get(self.url("debug_token"))
            .bearer_auth(app_token)
            .query(&[("input_token", input)]);
        let d: Debug = self.call(req, "debug_token").await?;
        Ok(d.data)
    }
}
