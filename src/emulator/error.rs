//! Graph API error responses with Meta's body shape, and the ones the emulator gives.
//! `{"error":{"message","type","code",error_data:{messaging_product,details},"fbtrace_id"}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};

/// One Graph error as Meta returns it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GraphError {
    pub status: StatusCode,
    pub code: u32,
    pub subcode: Option<u32>,
    /// Meta's exception class: `OAuthException` for almost everything a client does wrong.
    pub kind: &'static str,
    pub message: String,
    /// `error_data.details`; Meta omits `error_data` on token and object errors.
    pub details: Option<String>,
    pub retry_after_secs: Option<u64>,
}

impl GraphError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            subcode: None,
            kind: "OAuthException",
            message: message.into(),
            details: None,
            retry_after_secs: None,
        }
    }

    fn details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    /// 190: the bearer token is missing, malformed or not this number's.
    pub fn invalid_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            190,
            "Invalid OAuth access token - Cannot parse access token",
        )
    }

    /// 190 subcode 463: the token was valid once and has expired.
    pub fn token_expired() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            190,
            "Error validating access token: Session has expired on Friday, 02-Jan-26 10:00:00 PST. \
             The current time is Saturday, 03-Jan-26 10:00:00 PST.",
        );
        e.subcode = Some(463);
        e
    }

    /// 100 subcode 33: no such object (or the token may not see it). Meta classes it as a
    /// `GraphMethodException`, not an `OAuthException`.
    pub fn unknown_object(method: &str, id: &str) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            100,
            format!(
                "Unsupported {method} request. Object with ID '{id}' does not exist, cannot be \
                 loaded due to missing permissions, or does not support this operation. Please \
                 read the Graph API documentation at https://developers.facebook.com/docs/graph-api"
            ),
        );
        e.subcode = Some(33);
        e.kind = "GraphMethodException";
        e
    }

    /// 2500: a path Graph does not know (e.g. a malformed version segment).
    pub fn unknown_path(component: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            2500,
            format!("Unknown path components: /{component}"),
        )
    }

    /// 100: a parameter is missing or invalid; `details` says which, as Meta's do.
    pub fn invalid_parameter(details: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, 100, "(#100) Invalid parameter").details(details)
    }

    /// 131009: a parameter breaks one of Meta's limits (too many buttons, a title too long).
    pub fn invalid_value(details: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            131009,
            "(#131009) Parameter value is not valid",
        )
        .details(details)
    }

    /// 100: a media message names an id that is not one of the number's uploads. Meta gives
    /// it without `error_data`.
    pub fn unknown_media(kind: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            100,
            format!(
                "(#100) Param {kind}['id'] is not a valid whatsapp business account media \
                 attachment ID"
            ),
        )
    }

    /// 100: an upload's file is of a type no kind of media takes; Meta lists the types it
    /// takes and names the one received, without `error_data`.
    pub fn upload_type(received: &str, accepted: &[&str]) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            100,
            format!(
                "(#100) Param file must be a file with one of the following types: {}. \
                 Received file of type '{received}'.",
                accepted.join(", ")
            ),
        )
    }

    /// 100: a required parameter is missing, as the upload endpoint says it (without
    /// `error_data`).
    pub fn param_required(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            100,
            format!("(#100) The parameter {name} is required."),
        )
    }

    /// 131053: Meta could not take the media (too large for its type, or not the format its
    /// type says).
    pub fn media_upload(details: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            131053,
            "(#131053) Media upload error",
        )
        .details(details)
    }

    /// 131047: more than 24 hours since the customer last wrote (or never).
    pub fn re_engagement() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            131047,
            "(#131047) Re-engagement message",
        )
        .details(
            "Message failed to send because more than 24 hours have passed since the customer \
             last replied to this number.",
        )
    }

    /// 1: a transient server-side failure (retry).
    pub fn unknown_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            1,
            "An unknown error has occurred.",
        )
        .details("An unknown error has occurred.")
    }

    /// 80007: the WABA's call rate limit, answered 429 with an optional Retry-After.
    pub fn rate_limited(retry_after_secs: Option<u64>) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            80007,
            "(#80007) Rate limit hit for WhatsApp Business Account",
        )
        .details("The WhatsApp Business Account has reached its rate limit.");
        e.retry_after_secs = retry_after_secs;
        e
    }

    /// 130429: the number's message throughput is exceeded; Meta answers it with HTTP 400.
    pub fn throughput() -> Self {
        Self::new(StatusCode::BAD_REQUEST, 130429, "(#130429) Rate limit hit")
            .details("Cloud API message throughput has been reached.")
    }

    /// The JSON body Meta sends for this error.
    pub fn body(&self) -> Value {
        let mut error = json!({
            "message": self.message,
            "type": self.kind,
            "code": self.code,
        });
        if let Some(subcode) = self.subcode {
            error["error_subcode"] = json!(subcode);
        }
        if let Some(details) = &self.details {
            error["error_data"] = json!({ "messaging_product": "whatsapp", "details": details });
        }
        error["fbtrace_id"] = json!(fbtrace_id());
        json!({ "error": error })
    }
}

/// The management errors (registration, verification, subscriptions).
impl GraphError {
    /// 2200: Meta's GET handshake against the callback URL did not return the challenge.
    pub fn callback_verification(errors: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            2200,
            format!(
                "(#2200) Callback verification failed with the following errors: {}",
                errors.into()
            ),
        )
    }

    /// 133005: the two-step verification PIN does not match the one set.
    pub fn pin_mismatch() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            133005,
            "(#133005) Two step verification PIN Mismatch",
        )
        .details("Two step verification PIN incorrect.")
    }

    /// 133008: too many wrong PINs; registration is locked for a while.
    pub fn too_many_pin_guesses() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            133008,
            "(#133008) Too many two step verification PIN guesses for this phone number",
        )
        .details("Too many PIN guesses. Try again after the time Meta names has passed.")
    }

    /// 133006: the number's code was requested and not verified (or it is in use elsewhere).
    pub fn reverification_needed() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            133006,
            "(#133006) Phone number re-verification needed",
        )
        .details("Phone number needs to be verified before registering.")
    }

    /// 133016: more than 10 registrations or deregistrations of one number in 72 hours.
    pub fn register_rate_limited() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            133016,
            "(#133016) Account register deregister rate limit exceeded",
        )
        .details(
            "Registration or Deregistration failed because there were too many attempts for this \
             phone number in a short period of time.",
        )
    }

    /// 133010: the number is not registered with the Cloud API.
    pub fn not_registered() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            133010,
            "(#133010) Account not registered",
        )
        .details("Account not registered.")
    }

    /// 136024: a verification code was requested again too soon.
    pub fn code_request_too_soon() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            136024,
            "(#136024) Verification code request rate limited",
        )
        .details("A code was requested for this number less than a minute ago; wait, then request again.")
    }

    /// 136025: the verification code is wrong (or none was requested).
    pub fn verification_code() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            136025,
            "(#136025) Verification code error",
        )
        .details("Please try again with the correct code.")
    }
}

/// The OAuth errors of `GET /oauth/access_token` (the Embedded Signup code exchange). Meta gives
/// them without `error_data`.
impl GraphError {
    /// 1: the client secret is not the app's.
    pub fn invalid_client_secret() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            1,
            "Error validating client secret.",
        )
    }

    /// 101: the client id is not an app Meta knows.
    pub fn invalid_client_id() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            101,
            "Error validating application. Invalid application ID.",
        )
    }

    /// 100: a required OAuth parameter is missing.
    pub fn missing_oauth_parameter(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            100,
            format!("Missing {name} parameter."),
        )
    }

    /// 100: the code is not one Meta issued.
    pub fn invalid_authorization_code() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            100,
            "Invalid verification code format.",
        )
    }

    /// 100 subcode 36009: the code was exchanged already (codes are single-use).
    pub fn authorization_code_used() -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            100,
            "This authorization code has been used.",
        );
        e.subcode = Some(36009);
        e
    }
}

/// Meta's trace ids are 20-odd base64-ish characters, different on every response.
fn fbtrace_id() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(23)
        .map(char::from)
        .collect()
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
