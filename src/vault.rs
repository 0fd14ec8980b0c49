//! The encryption of stored secrets: 32-byte keys (base64 or hex), a key id per key, AES-256-GCM
//! with a random 96-bit nonce per value and the secret's name as associated data, so a row copied
//! under another name does not decrypt. Pure functions; no I/O, nothing logged. Below `config`
//! (which checks `meta.encryption_key` with it) and `secrets` (which resolves stored references).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::fmt;

/// How a key is written, for error messages and docs.
pub const KEY_FORMAT: &str = "32 random bytes written as base64 (44 characters, from \
`openssl rand -base64 32`) or as 64 hex digits (`openssl rand -hex 32`)";

/// Bound into every ciphertext with the name: a format change gets a new label.
const AAD_LABEL: &[u8] = b"wa-gateway stored secret v1\0";
const KEY_ID_LABEL: &[u8] = b"wa-gateway encryption key id v1\0";

/// A 256-bit key. Debug shows only its id.
#[derive(Clone)]
pub struct EncryptionKey {
    bytes: [u8; 32],
    id: String,
}

/// Why a key was refused; never holds the key.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key must be {KEY_FORMAT}; this one is neither base64 nor hex")]
    NotEncoded,
    #[error("the key must be {KEY_FORMAT}; this one decodes to {0} bytes")]
    WrongLength(usize),
}

impl EncryptionKey {
    /// Parses 64 hex digits, else standard base64 (padded or not); either must give 32 bytes.
    /// Surrounding whitespace is ignored (a key file often ends in a newline).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        // 64 hex digits are also valid base64 (of 48 bytes): hex is tried first.
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| KeyError::NotEncoded)?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
                .map_err(|_| KeyError::NotEncoded)?
        };
        let bytes: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength(bytes.len()))?;
        Ok(Self::from_bytes(bytes))
    }

    /// A key from its raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(KEY_ID_LABEL);
        h.update(bytes);
        let id = hex::encode(&h.finalize()[..8]);
        Self { bytes, id }
    }

    /// 16 hex digits naming the key (a truncated, labelled SHA-256 of it): stored beside each
    /// value so the right key is picked, and shown to people. It does not reveal the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.bytes))
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey({}, redacted)", self.id)
    }
}

/// One encrypted value as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The id of the key it is encrypted under.
    pub key_id: String,
    /// The 96-bit nonce, random per encryption.
    pub nonce: Vec<u8>,
    /// Ciphertext with the 16-byte GCM tag at its end.
    pub ciphertext: Vec<u8>,
}

/// Why a stored value could not be opened; names the secret, never its value.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error(
        "stored secret {name} is encrypted under key {key_id}, which is neither meta.encryption_key \
         ({current}) nor one of meta.previous_encryption_keys: add the key it was stored with under \
         meta.previous_encryption_keys, or store the secret again"
    )]
    UnknownKey {
        name: String,
        key_id: String,
        current: String,
    },
    #[error(
        "stored secret {name} does not decrypt under key {key_id}: the row was altered or copied \
         from another name; store the secret again"
    )]
    Corrupt { name: String, key_id: String },
}

/// The current key and the ones it replaced.
#[derive(Clone, Debug)]
pub struct Keyring {
    current: EncryptionKey,
    previous: Vec<EncryptionKey>,
}

fn aad(name: &str) -> Vec<u8> {
    [AAD_LABEL, name.as_bytes()].concat()
}

impl Keyring {
    pub fn new(current: EncryptionKey, previous: Vec<EncryptionKey>) -> Self {
        Self { current, previous }
    }

    /// The key new values are encrypted under.
    pub fn current(&self) -> &EncryptionKey {
        &self.current
    }

    /// Encrypts `plaintext` under the current key, bound to `name`.
    pub fn seal(&self, name: &str, plaintext: &str) -> Sealed {
        let nonce: [u8; 12] = rand::random();
        let ciphertext = self
            .current
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad(name),
                },
            )
            .expect("AES-GCM encrypts any message shorter than 64 GiB");
        Sealed {
            key_id: self.current.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// Decrypts a value stored under `name` with whichever known key it names.
    pub fn open(&self, name: &str, sealed: &Sealed) -> Result<String, VaultError> {
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| VaultError::UnknownKey {
                name: name.to_owned(),
                key_id: sealed.key_id.clone(),
                current: self.current.id.clone(),
            })?;
        let corrupt = || VaultError::Corrupt {
            name: name.to_owned(),
            key_id: sealed.key_id.clone(),
        };
        if sealed.nonce.len() != 12 {
            return Err(corrupt());
        }
        let plain = key
            .cipher()
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad(name),
                },
            )
            .map_err(|_| corrupt())?;
        String::from_utf8(plain).map_err(|_| corrupt())
    }

    /// Whether `sealed` should be encrypted again under the current key.
    pub fn is_stale(&self, sealed: &Sealed) -> bool {
        sealed.key_id != self.current.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn key(byte: u8) -> EncryptionKey {
        EncryptionKey::from_bytes([byte; 32])
    }

    #[test]
    fn keys_parse_from_hex_or_base64_and_nothing_else() {
        let from_hex = EncryptionKey::parse(HEX).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode((0u8..32).collect::<Vec<_>>());
        assert_eq!(b64.len(), 44);
        let from_b64 = EncryptionKey::parse(&format!("{b64}\n")).unwrap();
        assert_eq!(from_hex.id(), from_b64.id(), "same bytes, same key");
        assert_eq!(from_hex.id().len(), 16);
        assert_eq!(
            EncryptionKey::parse(b64.trim_end_matches('='))
                .unwrap()
                .id(),
            from_hex.id()
        );
        assert_eq!(
            EncryptionKey::parse(&HEX[..62]).unwrap_err(),
            KeyError::NotEncoded,
            "62 hex digits are not base64 either"
        );
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        assert_eq!(
            EncryptionKey::parse(&short).unwrap_err(),
            KeyError::WrongLength(16)
        );
        assert_eq!(
            EncryptionKey::parse("not a key!").unwrap_err(),
            KeyError::NotEncoded
        );
        let msg = KeyError::WrongLength(16).to_string();
        assert!(msg.contains("openssl rand -base64 32"), "{msg}");
        assert!(!format!("{from_hex:?}").contains(HEX));
    }

    #[test]
    fn sealing_round_trips_with_a_fresh_nonce_each_time() {
        let ring = Keyring::new(key(1), vec![]);
        let a = ring.seal("acme", "EAAG-token-value");
        let b = ring.seal("acme", "EAAG-token-value");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert_eq!(a.nonce.len(), 12);
        assert_eq!(a.ciphertext.len(), "EAAG-token-value".len() + 16);
        assert!(
            !a.ciphertext
                .windows(4)
                .any(|w| w == b"EAAG" || w == b"toke")
        );
        assert_eq!(ring.open("acme", &a).unwrap(), "EAAG-token-value");
        assert_eq!(a.key_id, key(1).id());
        assert!(!ring.is_stale(&a));
    }

    #[test]
    fn the_name_is_bound_and_tampering_is_detected() {
        let ring = Keyring::new(key(1), vec![]);
        let sealed = ring.seal("acme", "value");
        assert!(matches!(
            ring.open("other", &sealed),
            Err(VaultError::Corrupt { .. })
        ));
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(matches!(
            ring.open("acme", &flipped),
            Err(VaultError::Corrupt { .. })
        ));
        let mut short_nonce = sealed;
        short_nonce.nonce.pop();
        assert!(matches!(
            ring.open("acme", &short_nonce),
            Err(VaultError::Corrupt { .. })
        ));
    }

    #[test]
    fn rotation_reads_old_values_and_an_unknown_key_is_named() {
        let old = Keyring::new(key(1), vec![]);
        let sealed = old.seal("acme", "value");
        let rotated = Keyring::new(key(2), vec![key(1)]);
        assert!(rotated.is_stale(&sealed));
        assert_eq!(rotated.open("acme", &sealed).unwrap(), "value");
        let resealed = rotated.seal("acme", "value");
        assert_eq!(resealed.key_id, key(2).id());

        let forgot = Keyring::new(key(2), vec![]);
        let err = forgot.open("acme", &sealed).unwrap_err();
        assert_eq!(
            err,
            VaultError::UnknownKey {
                name: "acme".into(),
                key_id: key(1).id().into(),
                current: key(2).id().into(),
            }
        );
        assert!(err.to_string().contains("meta.previous_encryption_keys"));
        // A different key with no id collision still fails closed.
        let mut forged = sealed;
        forged.key_id = key(2).id().into();
        assert!(matches!(
            forgot.open("acme", &forged),
            Err(VaultError::Corrupt { .. })
        ));
    }
}
