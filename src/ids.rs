//! Identifier newtypes for the things Meta names: numbers, accounts, customers and messages.
//! They carry no validation beyond "non-empty" here; config validation checks formats.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_newtype {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The identifier as Meta spells it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    )*};
}

id_newtype!(
    /// A WhatsApp phone number id (`metadata.phone_number_id`), which routes to a declared number.
    PhoneNumberId,
    /// A WhatsApp Business Account id (`entry[].id`).
    WabaId,
    /// A WhatsApp message id (`wamid.…`), unique per message; the deduplication key.
    Wamid,
    /// A customer's phone-based WhatsApp id (`wa_id` / `from`), present only while the phone is shared.
    WaId,
    /// A business-scoped user id (BSUID, e.g. `US.1349…`), present on every 2026 webhook.
    UserId,
);

// The declared numbers are keyed by their id; lookups from a stored row's `&str` need no copy.
// (Same hash as the string's: the derived `Hash` hashes the one field.)
impl std::borrow::Borrow<str> for PhoneNumberId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// The key a conversation is identified by: the BSUID when Meta sent one, else the wa_id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomerKey(pub String);

impl CustomerKey {
    /// Prefer the business-scoped user id, as Meta asks every 2026 integration to.
    pub fn from_ids(user_id: Option<&str>, wa_id: Option<&str>) -> Option<Self> {
        user_id
            .filter(|s| !s.is_empty())
            .or(wa_id.filter(|s| !s.is_empty()))
            .map(|s| Self(s.to_owned()))
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CustomerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_key_prefers_bsuid() {
        let cases = [
            (Some("US.1"), Some("15550001"), Some("US.1")),
            (None, Some("15550001"), Some("15550001")),
            (Some(""), Some("15550001"), Some("15550001")),
            (Some("US.1"), None, Some("US.1")),
            (None, None, None),
        ];
        for (user, wa, want) in cases {
            assert_eq!(
                CustomerKey::from_ids(user, wa).map(|k| k.0),
                want.map(str::to_owned),
                "user={user:?} wa={wa:?}"
            );
        }
    }
}
