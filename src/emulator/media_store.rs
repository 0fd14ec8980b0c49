//! The media blobs the emulator holds, by id and by download key, with the number that uploaded
//! each (a media id belongs to its number): the part of media the state owns, kept until the
//! emulator stops. The HTTP handlers that serve them live in `media.rs`.

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
    /// The number that uploaded it with `POST /{phone-number-id}/media` (none: added by a test
    /// or the control API, as a customer's media).
    pub owner: Option<String>,
    /// The file name the upload carried.
    pub filename: Option<String>,
}

/// The uploaded file a media message names, as a sent message records it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SentFile {
    /// The name the upload carried.
    pub filename: Option<String>,
    pub size: u64,
}

/// A file a number uploaded, as the emulator received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadedMedia {
    pub id: String,
    pub phone_number_id: String,
    pub mime_type: String,
    pub filename: Option<String>,
    pub bytes: Vec<u8>,
}

#[derive(Default)]
struct Blobs {
    by_id: HashMap<String, Blob>,
    /// Download key → media id.
    by_key: HashMap<String, String>,
    /// The ids of the numbers' uploads, in the order they came.
    uploads: Vec<String>,
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
        self.insert(mime, bytes, None, None)
    }

    /// Stores a file number `pnid` uploaded; its new media id.
    pub fn upload(
        &self,
        pnid: &str,
        mime: &str,
        bytes: Vec<u8>,
        filename: Option<String>,
    ) -> String {
        let id = self.insert(mime, bytes, Some(pnid.to_owned()), filename);
        self.lock().uploads.push(id.clone());
        id
    }

    /// Forgets media `id`, as Meta forgets an upload after 30 days (or when it is deleted).
    /// False if it was not known.
    pub fn forget(&self, id: &str) -> bool {
        let mut blobs = self.lock();
        let Some(blob) = blobs.by_id.remove(id) else {
            return false;
        };
        blobs.by_key.remove(&blob.key);
        true
    }

    /// The name and size of the media `id`.
    pub fn file(&self, id: &str) -> Option<SentFile> {
        let blobs = self.lock();
        let blob = blobs.by_id.get(id)?;
        Some(SentFile {
            filename: blob.filename.clone(),
            size: blob.bytes.len() as u64,
        })
    }

    /// Whether number `pnid` uploaded the media `id` (a number sends only its own uploads).
    pub fn owned_by(&self, id: &str, pnid: &str) -> bool {
        self.lock()
            .by_id
            .get(id)
            .is_some_and(|b| b.owner.as_deref() == Some(pnid))
    }

    /// Every file the numbers uploaded, in order.
    pub fn uploads(&self) -> Vec<UploadedMedia> {
        let blobs = self.lock();
        blobs
            .uploads
            .iter()
            .filter_map(|id| {
                let b = blobs.by_id.get(id)?;
                Some(UploadedMedia {
                    id: id.clone(),
                    phone_number_id: b.owner.clone().unwrap_or_default(),
                    mime_type: b.mime.clone(),
                    filename: b.filename.clone(),
                    bytes: b.bytes.to_vec(),
                })
            })
            .collect()
    }

    fn insert(
        &self,
        mime: &str,
        bytes: Vec<u8>,
        owner: Option<String>,
        filename: Option<String>,
    ) -> String {
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
                owner,
                filename,
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
