//! The media blobs the emulator holds, by id and by download key: the part of media the state
//! owns, kept until the emulator stops. The HTTP handlers that serve them live in `media.rs`.

use axum::body::Bytes;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// One stored blob; cloning it shares the bytes.
#[derive(Clone)]
pub(crate) struct Blob {
    pub mime: String,
    pub bytes: Bytes,
    /// Hex SHA-256 of `bytes`, as Meta reports it.
    pub sha256: String,
    /// The opaque part of the download URL.
    pub key: String,
}

#[derive(Default)]
struct Blobs {
    by_id: HashMap<String, Blob>,
    /// Download key → media id.
    by_key: HashMap<String, String>,
}

/// The emulator's media blobs by id.
#[derive(Default)]
pub(crate) struct MediaStore {
    blobs: Mutex<Blobs>,
}

fn random_alnum(n: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

impl MediaStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Blobs> {
        self.blobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The blob with media id `id`.
    pub fn get(&self, id: &str) -> Option<Blob> {
        self.lock().by_id.get(id).cloned()
    }

    /// The blob whose download URL carries `key`.
    pub fn by_key(&self, key: &str) -> Option<Blob> {
        let blobs = self.lock();
        blobs
            .by_key
            .get(key)
            .and_then(|id| blobs.by_id.get(id))
            .cloned()
    }

    /// Stores `bytes` and returns a new media id, 16 digits like Meta's.
    pub fn add(&self, mime: &str, bytes: Vec<u8>) -> String {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let mut blobs = self.lock();
        let id = loop {
            let id = rand::rng().random_range(1_000_000_000_000_000u64..10_000_000_000_000_000);
            let id = id.to_string();
            if !blobs.by_id.contains_key(&id) {
                break id;
            }
        };
        let key = random_alnum(32);
        blobs.by_key.insert(key.clone(), id.clone());
        blobs.by_id.insert(
            id.clone(),
            Blob {
                mime: mime.to_owned(),
                bytes: Bytes::from(bytes),
                sha256,
                key,
            },
        );
        id
    }

    /// Fills `mime_type` and `sha256` of a media message object (`{type, <type>: {id, …}}`)
    /// whose id is a stored blob, unless the caller gave them.
    pub fn complete_message(&self, message: &mut Value) {
        let Some(kind) = message["type"].as_str().map(str::to_owned) else {
            return;
        };
        let Some(obj) = message.get_mut(&kind).and_then(Value::as_object_mut) else {
            return;
        };
        let Some(id) = obj.get("id").and_then(Value::as_str) else {
            return;
        };
        let blobs = self.lock();
        let Some(blob) = blobs.by_id.get(id) else {
            return;
        };
        obj.entry("mime_type").or_insert_with(|| json!(blob.mime));
        obj.entry("sha256").or_insert_with(|| json!(blob.sha256));
    }
}
