//! Secrets the gateway keeps itself (`{ stored: NAME }`): AES-256-GCM under `meta.encryption_key`,
//! the pass that fills stored references once storage is open, and key rotation.
//! Plaintext lives only in `Secret` values in memory; storage holds ciphertext and key ids.

mod crypto;
mod stored;

pub use crypto::{EncryptionKey, KEY_FORMAT, KeyError, Keyring, Sealed, VaultError};
pub use stored::{
    Resolved, StoredIssue, StoredSecretError, keyring_of, load_resolved, put, resolve_stored,
};
