//! Meta's webhook verification handshake, as the emulator performs it before accepting a
//! callback URL: `GET <url>?hub.mode=subscribe&hub.verify_token=…&hub.challenge=<random>`.

use super::error::GraphError;
use std::time::Duration;

/// How long Meta waits for the callback to answer the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Meta's GET handshake: the callback must answer 200 with the challenge as its body.
pub(crate) async fn verify_callback(url: &str, verify_token: &str) -> Result<(), GraphError> {
    let challenge = rand::random::<u64>().to_string();
    let client = reqwest::Client::builder()
        .timeout(HANDSHAKE_TIMEOUT)
        .build()
        .map_err(|e| GraphError::callback_verification(e.to_string()))?;
    let answer = client
        .get(url)
        .query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", verify_token),
            ("hub.challenge", challenge.as_str()),
        ])
        .send()
        .await
        .map_err(|e| {
            let what = if e.is_timeout() {
                "Operation timed out"
            } else {
                "Couldn't connect to server"
            };
            GraphError::callback_verification(format!("curl_errno = 7; curl_error = {what}"))
        })?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    if status == reqwest::StatusCode::OK && body.trim() == challenge {
        return Ok(());
    }
    let reason = status.canonical_reason().unwrap_or("");
    let mut errors = format!(
        "HTTP Status Code = {}; HTTP Message = {reason}",
        status.as_u16()
    );
    if status.is_success() {
        errors.push_str("; The response did not match the challenge");
    }
    Err(GraphError::callback_verification(errors))
}
