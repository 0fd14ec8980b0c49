//! Secrets the gateway keeps itself (`{ stored: NAME }`): the pass that fills stored references
//! once storage is open, and key rotation. The encryption itself is `crate::vault`.
//! Plaintext lives only in `Secret` values in memory; storage holds ciphertext and key ids.

mod stored;

pub use stored::{
    Resolved, StoredIssue, StoredSecretError, keyring_of, load_resolved, missing_stored, put,
    resolve_stored,
};
