//! The Embedded Signup code exchange: `GET /oauth/access_token?client_id&client_secret&code`.
//! Its URL carries the app secret and the code, so transport errors are stripped of the URL.

use super::{GraphClient, GraphError};
use serde::Deserialize;
use std::fmt;

/// The business token Meta gives for a signup code. Debug never shows it.
#[derive(Clone, Deserialize)]
pub struct ExchangedToken {
    pub access_token: String,
    #[serde(default)]
    pub token_type: String,
}

impl fmt::Debug for ExchangedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExchangedToken({}, redacted)", self.token_type)
    }
}

impl GraphClient {
    /// Exchanges an Embedded Signup authorization code for a business token.
    pub async fn exchange_code(
        &self,
        app_id: &str,
        app_secret: &str,
        code: &str,
    ) -> Result<ExchangedToken, GraphError> {
        let resp = self
            .http
            .get(self.url("oauth/access_token"))
            .query(&[
                ("client_id", app_id),
                ("client_secret", app_secret),
                ("code", code),
            ])
            .send()
            .await
            .map_err(|e| GraphError::from_transport(e.without_url()))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| GraphError::from_transport(e.without_url()))?;
        if !status.is_success() {
            return Err(GraphError::from_body(status.as_u16(), &bytes, None));
        }
        let token: ExchangedToken =
            serde_json::from_slice(&bytes).map_err(|_| GraphError::Decode {
                // serde's message could quote the body, which holds the token.
                message: "unexpected answer to the code exchange: no access_token".into(),
            })?;
        if token.access_token.is_empty() {
            return Err(GraphError::Decode {
                message: "the code exchange answered an empty access_token".into(),
            });
        }
        Ok(token)
    }
}
