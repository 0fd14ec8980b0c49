//! Meta's refusals during onboarding, as one plain sentence that says what happened and what to
//! do (after Meta's troubleshooting guide). The one place these sentences live; the CLI and the
//! admin API both print them. Pure; Meta's own text is kept only where no sentence fits.

use crate::graph::GraphError;

/// The onboarding call Meta refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    RequestCode,
    VerifyCode,
    Register,
    /// The Embedded Signup code exchange.
    Exchange,
    /// Listing a WABA's phone numbers after signup.
    ListNumbers,
}

/// What the sentence may name: the number and the config field of its PIN / token.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub phone_number_id: &'a str,
    /// e.g. `numbers[0]`; empty when the number is not in the file (signup).
    pub field: &'a str,
}

impl Subject<'_> {
    fn field(&self, name: &str) -> String {
        match self.field {
            "" => format!("numbers[].{name}"),
            f => format!("{f}.{name}"),
        }
    }
}

/// The sentence for Meta's refusal `e` of `step`.
pub fn refusal(step: Step, who: Subject<'_>, e: &GraphError) -> String {
    let id = who.phone_number_id;
    let meta = e.to_string();
    let request_again =
        format!("request a new code with `wa-gateway number request-code {id} --method sms`");
    match (step, e.code()) {
        (_, Some(136025)) => format!(
            "The verification code for number {id} is wrong or has expired (Meta error 136025): enter \
             the 6-digit code from the latest SMS or voice call exactly, or {request_again} once \
             the cooldown has passed."
        ),
        (_, Some(136024)) => format!(
            "Meta will not send another code to number {id} yet (Meta error 136024): wait a minute \
             after the last request, then request again; the last code sent stays valid meanwhile."
        ),
        (_, Some(133005)) => format!(
            "The two-step verification PIN for number {id} does not match the one set at Meta (Meta \
             error 133005): put the right 6-digit PIN in {}, or reset it in WhatsApp Manager (phone \
             number → Settings → Two-step verification), then register again.",
            who.field("pin")
        ),
        (_, Some(133008)) => format!(
            "Too many wrong PINs for number {id} (Meta error 133008): Meta has locked registration for \
             a while; wait as long as Meta's details say, check {}, then try once — do not retry \
             in a loop.",
            who.field("pin")
        ),
        (_, Some(133009)) => format!(
            "PINs for number {id} were tried too quickly (Meta error 133009): wait a few minutes before \
             registering again."
        ),
        (_, Some(133016)) => format!(
            "Number {id} was registered or deregistered too many times (Meta error 133016): Meta allows \
             10 in 72 hours; wait until the oldest attempt is 72 hours old, then register once."
        ),
        (_, Some(133006)) => format!(
            "Number {id} must be verified again before it can be registered, or it is still in use on \
             another WhatsApp account or API (Meta error 133006): delete it from the WhatsApp app if \
             it is there, {request_again}, submit the code with `wa-gateway number verify-code {id} \
             CODE`, then register."
        ),
        (_, Some(133015)) => format!(
            "Number {id} was deleted or deregistered moments ago (Meta error 133015): wait 5 minutes, \
             then register it again."
        ),
        (_, Some(133000)) => format!(
            "A previous deregistration of number {id} did not complete (Meta error 133000): \
             deregister it again, then register."
        ),
        (_, Some(133010)) => format!(
            "Number {id} is not registered with the Cloud API (Meta error 133010): register it with \
             `wa-gateway number register {id}` (PIN from {}).",
            who.field("pin")
        ),
        (_, Some(133004)) => "Meta's registration service is unavailable for the moment (Meta \
             error 133004): try again in a few minutes."
            .to_owned(),
        (Step::Exchange, Some(1)) if meta.contains("client secret") => format!(
            "Meta refused the app's credentials for the signup code exchange ({meta}): \
             meta.app_secret is not the secret of app meta.app_id; copy it from the app dashboard \
             (App settings → Basic)."
        ),
        (Step::Exchange, Some(101)) => format!(
            "Meta does not know meta.app_id as an app ({meta}): copy the app id from the app \
             dashboard."
        ),
        (Step::Exchange, Some(100)) => format!(
            "Meta refused the signup code ({meta}): a code works once and for a few minutes only; run \
             Embedded Signup again (Connect with Facebook) and use the new code at once."
        ),
        (_, Some(190)) => {
            let fix = match step {
                Step::Exchange => "check meta.app_id and meta.app_secret".to_owned(),
                _ => format!(
                    "put a valid system-user token with access to the number's WhatsApp Business \
                     Account in {}, or connect it again through signup",
                    who.field("access_token")
                ),
            };
            format!("Meta refused the access token as invalid or expired (Meta error 190): {fix}.")
        }
        (_, Some(3 | 10 | 200..=299)) => format!(
            "The token lacks a permission this call needs (Meta error {}): grant \
             whatsapp_business_management and whatsapp_business_messaging to the system user for \
             this WhatsApp Business Account.",
            e.code().unwrap_or_default()
        ),
        (_, Some(4 | 80007)) => format!(
            "Meta's call budget for this app or account is spent (Meta error {}): wait several \
             minutes, then try again.",
            e.code().unwrap_or_default()
        ),
        _ => match e {
            GraphError::Network { .. } => format!(
                "The Graph API did not answer: check meta.graph_url and the network, then try again \
                 ({meta})."
            ),
            _ => format!("Meta refused it: {meta}."),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: i64, message: &str) -> GraphError {
        GraphError::Api {
            status: 400,
            code,
            message: message.into(),
            details: None,
            fbtrace_id: None,
            retry_after: None,
        }
    }

    #[test]
    fn each_refusal_says_what_to_do() {
        let who = Subject {
            phone_number_id: "1065",
            field: "numbers[2]",
        };
        let cases: &[(Step, i64, &str, &[&str])] = &[
            (
                Step::VerifyCode,
                136025,
                "",
                &["code for number 1065 is wrong", "request-code 1065"],
            ),
            (Step::RequestCode, 136024, "", &["wait a minute"]),
            (
                Step::Register,
                133005,
                "",
                &[
                    "PIN for number 1065 does not match",
                    "numbers[2].pin",
                    "WhatsApp Manager",
                ],
            ),
            (
                Step::Register,
                133008,
                "",
                &["Too many wrong PINs", "do not retry"],
            ),
            (Step::Register, 133009, "", &["too quickly"]),
            (Step::Register, 133016, "", &["10 in 72 hours"]),
            (
                Step::Register,
                133006,
                "",
                &["verified again", "in use", "verify-code 1065 CODE"],
            ),
            (Step::Register, 133015, "", &["wait 5 minutes"]),
            (Step::Register, 190, "", &["numbers[2].access_token"]),
            (
                Step::Exchange,
                1,
                "Error validating client secret.",
                &["meta.app_secret"],
            ),
            (
                Step::Exchange,
                100,
                "This authorization code has been used.",
                &["run Embedded Signup again", "has been used"],
            ),
            (Step::Exchange, 101, "", &["meta.app_id"]),
            (Step::Register, 131999, "odd", &["Meta refused it", "odd"]),
        ];
        for (step, code, message, want) in cases {
            let got = refusal(*step, who, &api(*code, message));
            for w in *want {
                assert!(got.contains(w), "{step:?} {code}: {got:?} lacks {w:?}");
            }
            assert!(got.ends_with('.') || got.ends_with(")."), "{got}");
        }
        // Without a file entry the field is described generically.
        let signup = Subject {
            phone_number_id: "1065",
            field: "",
        };
        assert!(refusal(Step::Register, signup, &api(133005, "")).contains("numbers[].pin"));
        let net = GraphError::Network {
            message: "connection refused".into(),
            ambiguous: false,
        };
        assert!(refusal(Step::RequestCode, who, &net).contains("meta.graph_url"));
    }
}
