//! Meta's error body (`{"error":{"message","type","code","error_data","fbtrace_id"}}`) and the
//! decision every caller needs: retry, back off, or give up (decided on `code`, per Meta).

use serde::Deserialize;
use std::time::Duration;

/// How the sender should treat an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryClass {
    /// Temporary: retry with backoff.
    Retry,
    /// A rate or throughput limit: back off (honouring Retry-After) and retry.
    Throttle,
    /// More than 24 h since the customer's last message (131047): never retried.
    OutsideWindow,
    /// Permanent for this message: fail it with the code.
    Fatal,
}

/// A failed Graph call.
#[derive(Clone, Debug, thiserror::Error)]
pub enum GraphError {
    /// The request may or may not have reached Meta (`ambiguous` when it may have).
    #[error("network error calling the Graph API: {message}")]
    Network { message: String, ambiguous: bool },
    /// Meta answered with an error body.
    #[error("Graph API error {code} (HTTP {status}): {message}")]
    Api {
        status: u16,
        code: i64,
        message: String,
        details: Option<String>,
        fbtrace_id: Option<String>,
        retry_after: Option<Duration>,
    },
    /// Meta answered 200 with a body we could not read.
    #[error("{message}")]
    Decode { message: String },
}

#[derive(Deserialize)]
struct Body {
    error: ErrorObject,
}

#[derive(Deserialize)]
struct ErrorObject {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: i64,
    #[serde(default)]
    error_data: Option<ErrorData>,
    #[serde(default)]
    fbtrace_id: Option<String>,
}

#[derive(Deserialize)]
struct ErrorData {
    #[serde(default)]
    details: Option<String>,
}

/// The Retry-After header in seconds, if any.
pub(super) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The retry class of a Meta error code (see meta-cloud-api.md, "Errors").
pub fn classify_code(code: i64) -> RetryClass {
    match code {
        4 | 80007 | 130429 | 131056 | 131057 => RetryClass::Throttle,
        1 | 2 | 131000 | 131016 | 133004 => RetryClass::Retry,
        131047 => RetryClass::OutsideWindow,
        _ => RetryClass::Fatal,
    }
}

impl GraphError {
    pub(super) fn from_transport(e: reqwest::Error) -> Self {
        // A connect error means the request never left; a timeout or a broken response may
        // mean Meta accepted it and only the answer was lost.
        let ambiguous = !e.is_connect() && !e.is_builder();
        // The URL can carry a secret (debug_token's input_token, the OAuth code exchange's
        // client_secret): it never goes into the message.
        let e = e.without_url();
        GraphError::Network {
            message: e.to_string(),
            ambiguous,
        }
    }

    pub(super) fn from_body(status: u16, body: &[u8], retry_after: Option<Duration>) -> Self {
        match serde_json::from_slice::<Body>(body) {
            Ok(b) => GraphError::Api {
                status,
                code: b.error.code,
                message: b.error.message,
                details: b.error.error_data.and_then(|d| d.details),
                fbtrace_id: b.error.fbtrace_id,
                retry_after,
            },
            // A proxy or load balancer error page: decide on the HTTP status alone.
            Err(_) => GraphError::Api {
                status,
                code: 0,
                message: format!(
                    "HTTP {status} without a Graph error body: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
                details: None,
                fbtrace_id: None,
                retry_after,
            },
        }
    }

    /// Meta's error code, when Meta gave one.
    pub fn code(&self) -> Option<i64> {
        match self {
            GraphError::Api { code, .. } if *code != 0 => Some(*code),
            _ => None,
        }
    }

    /// Whether Meta may have accepted the message although the call failed.
    pub fn is_ambiguous(&self) -> bool {
        matches!(
            self,
            GraphError::Network {
                ambiguous: true,
                ..
            }
        )
    }

    /// What the sender should do.
    pub fn class(&self) -> RetryClass {
        match self {
            GraphError::Network { .. } => RetryClass::Retry,
            GraphError::Decode { .. } => RetryClass::Fatal,
            GraphError::Api { status, code, .. } => {
                if *code != 0 {
                    let class = classify_code(*code);
                    // Code 0 is also "auth exception"; an unknown code under a 5xx is temporary.
                    if class == RetryClass::Fatal && *status >= 500 && !matches!(code, 190 | 0) {
                        return RetryClass::Retry;
                    }
                    return class;
                }
                match status {
                    429 => RetryClass::Throttle,
                    500..=599 => RetryClass::Retry,
                    _ => RetryClass::Fatal,
                }
            }
        }
    }

    /// The delay Meta asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GraphError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_classify_as_meta_documents() {
        let table = [
            (1, RetryClass::Retry),
            (2, RetryClass::Retry),
            (4, RetryClass::Throttle),
            (80007, RetryClass::Throttle),
            (130429, RetryClass::Throttle),
            (131056, RetryClass::Throttle),
            (131016, RetryClass::Retry),
            (131000, RetryClass::Retry),
            (133004, RetryClass::Retry),
            (131057, RetryClass::Throttle),
            (131047, RetryClass::OutsideWindow),
            (190, RetryClass::Fatal),
            (0, RetryClass::Fatal),
            (100, RetryClass::Fatal),
            (131026, RetryClass::Fatal),
            (131048, RetryClass::Fatal),
            (133010, RetryClass::Fatal),
            (368, RetryClass::Fatal),
        ];
        for (code, want) in table {
            assert_eq!(classify_code(code), want, "code {code}");
        }
    }

    #[test]
    fn parses_meta_error_body() {
        let body = br#"{"error":{"message":"(#131047) Re-engagement message","type":"OAuthException","code":131047,"error_data":{"messaging_product":"whatsapp","details":"Message failed to send because more than 24 hours have passed"},"fbtrace_id":"Az8or2yhqkZfEZ-_4Qn_Bam"}}"#;
        let e = GraphError::from_body(400, body, None);
        assert_eq!(e.code(), Some(131047));
        assert_eq!(e.class(), RetryClass::OutsideWindow);
        match e {
            GraphError::Api { details, .. } => assert!(details.unwrap().contains("24 hours")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_decides_without_a_body() {
        assert_eq!(
            GraphError::from_body(502, b"<html>bad gateway", None).class(),
            RetryClass::Retry
        );
        assert_eq!(
            GraphError::from_body(429, b"", None).class(),
            RetryClass::Throttle
        );
        assert_eq!(
            GraphError::from_body(404, b"", None).class(),
            RetryClass::Fatal
        );
        let token = br#"{"error":{"message":"Error validating access token","type":"OAuthException","code":190}}"#;
        assert_eq!(
            GraphError::from_body(401, token, None).class(),
            RetryClass::Fatal
        );
    }
}
