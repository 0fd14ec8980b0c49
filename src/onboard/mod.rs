//! Onboarding a number: the Embedded Signup code exchange (token stored encrypted, YAML to add),
//! phone verification with a resend cooldown, and registration with the two-step PIN from the
//! file. Shared by the CLI (`wa-gateway signup`, `wa-gateway number …`) and the admin API.

pub mod cli;
pub mod messages;
pub mod signup;
pub mod verify;

use crate::config::Config;
use crate::graph::{GraphClient, GraphError};
use crate::store::{Store, StoreError};
use std::time::Duration;

pub use signup::{SignupOutcome, SignupRequest};
pub use verify::{CODE_COOLDOWN, cooldown_left};

/// What onboarding works with: the resolved config, the Graph client, storage.
#[derive(Clone, Copy)]
pub struct Onboarding<'a> {
    pub config: &'a Config,
    pub graph: &'a GraphClient,
    pub store: &'a Store,
}

/// Why an onboarding step did not happen; every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum OnboardError {
    #[error(
        "phone number id {0} is not declared under `numbers` in the config: add it (for a new \
         number, `wa-gateway signup` prints the entry), then try again"
    )]
    UnknownNumber(String),
    #[error(
        "a verification code was requested for number {phone_number_id} {ago}s ago: wait {}s before \
         requesting another (Meta limits resends); the code already sent stays valid",
        wait.as_secs().max(1)
    )]
    Cooldown {
        phone_number_id: String,
        ago: u64,
        wait: Duration,
    },
    #[error(
        "number {phone_number_id} has no two-step verification PIN in the config: add \
         {field}.pin: {{ env: NAME }} (6 digits), then register"
    )]
    NoPin {
        phone_number_id: String,
        field: String,
    },
    /// Input refused before calling Meta.
    #[error("{0}")]
    Invalid(String),
    /// A stored secret already has the name a signup would store under.
    #[error(
        "a secret named {0:?} is already stored, and it may be the token numbers use now: nothing \
         was changed and the code was not spent. Choose another name, or replace it on purpose \
         (`wa-gateway signup --replace`, or \"replace\": true)"
    )]
    Exists(String),
    /// Meta refused; `sentence` comes from `messages::refusal`.
    #[error("{sentence}")]
    Meta {
        sentence: String,
        code: Option<i64>,
        /// Meta could not be reached or failed on its side (not a refusal of the request).
        unavailable: bool,
    },
    #[error("storage failed, so nothing was recorded: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Secret(#[from] crate::secrets::StoredSecretError),
}

impl OnboardError {
    fn meta(step: messages::Step, who: messages::Subject<'_>, e: &GraphError) -> Self {
        let unavailable = match e {
            GraphError::Network { .. } => true,
            GraphError::Api { status, .. } => *status >= 500,
            GraphError::Decode { .. } => false,
        };
        OnboardError::Meta {
            sentence: messages::refusal(step, who, e),
            code: e.code(),
            unavailable,
        }
    }
}
