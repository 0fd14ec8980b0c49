//! The pass that fills `{ stored: NAME }` references from storage once it is open (at start, on
//! every reload, in the CLI commands that call Meta), re-encrypting values still under a previous
//! key when asked to; and storing a new value. Names appear in logs and errors, values never.

use crate::config::Config;
use crate::store::{Store, StoreError, StoredSecretRow};
use crate::vault::{EncryptionKey, KEY_FORMAT, Keyring, Sealed};
use std::collections::HashMap;
use std::path::Path;

/// A problem with one stored reference: the field path and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredIssue {
    pub path: String,
    pub message: String,
}

/// Why stored references could not be filled.
#[derive(Debug, thiserror::Error)]
pub enum StoredSecretError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}", lines(.0))]
    Issues(Vec<StoredIssue>),
}

fn lines(issues: &[StoredIssue]) -> String {
    issues
        .iter()
        .map(|i| format!("{}: {}", i.path, i.message))
        .collect::<Vec<_>>()
        .join("\n")
}

impl StoredSecretError {
    /// As configuration diagnostics placed at the fields' positions in `file`.
    pub fn located(&self, file: &Path) -> String {
        match self {
            StoredSecretError::Store(e) => {
                format!("{}: stored secrets could not be read: {e}", file.display())
            }
            StoredSecretError::Issues(issues) => crate::config::load::diagnostics_at(
                file,
                issues.iter().map(|i| (i.path.clone(), i.message.clone())),
            )
            .to_string(),
        }
    }
}

/// What a resolution pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// References filled from storage.
    pub filled: usize,
    /// Names re-encrypted under the current key.
    pub rotated: Vec<String>,
}

/// The keyring `config` declares, `None` without `meta.encryption_key`. Keys were checked when
/// the file was loaded; a key that still does not parse is reported at its path.
pub fn keyring_of(config: &Config) -> Result<Option<Keyring>, Vec<StoredIssue>> {
    let Some(current) = &config.meta.encryption_key else {
        return Ok(None);
    };
    let mut issues = Vec::new();
    let mut parse = |path: String, secret: &crate::config::Secret| {
        EncryptionKey::parse(secret.expose())
            .map_err(|e| {
                issues.push(StoredIssue {
                    path,
                    message: e.to_string(),
                })
            })
            .ok()
    };
    let current = parse("meta.encryption_key".into(), current);
    let previous: Vec<_> = config
        .meta
        .previous_encryption_keys
        .iter()
        .enumerate()
        .filter_map(|(i, k)| parse(format!("meta.previous_encryption_keys[{i}]"), k))
        .collect();
    match current {
        Some(current) if issues.is_empty() => Ok(Some(Keyring::new(current, previous))),
        _ => Err(issues),
    }
}

fn sealed(row: &StoredSecretRow) -> Sealed {
    Sealed {
        key_id: row.key_id.clone(),
        nonce: row.nonce.clone(),
        ciphertext: row.ciphertext.clone(),
    }
}

/// The `(field path, name)` of every stored reference in `config`.
fn references(config: &Config) -> Vec<(String, String)> {
    let mut config = config.clone();
    config
        .secrets_mut()
        .into_iter()
        .filter_map(|(path, s)| s.stored_name().map(|n| (path, n.to_owned())))
        .collect()
}

/// What to do about a stored reference whose name storage (`kind`) does not hold.
fn not_in_storage(name: &str, kind: &str) -> String {
    format!(
        "stored secret {name} is not in storage ({kind}): run `wa-gateway signup --code CODE \
         --waba-id WABA_ID --name {name}` or `wa-gateway secret put {name}` with this config, or \
         point the reference elsewhere"
    )
}

/// The stored references of `config` whose name is not in its storage, read without creating,
/// migrating or locking anything (`wa-gateway validate`); an error when storage is unreachable.
pub async fn missing_stored(config: &Config) -> Result<Vec<StoredIssue>, StoreError> {
    let refs = references(config);
    if refs.is_empty() {
        return Ok(Vec::new());
    }
    let names = crate::store::peek_stored_secret_names(&config.storage).await?;
    let kind = match config.storage.url.starts_with("sqlite:") {
        true => "sqlite",
        false => "postgres",
    };
    Ok(refs
        .into_iter()
        .filter(|(_, name)| !names.contains(name))
        .map(|(path, name)| StoredIssue {
            path,
            message: not_in_storage(&name, kind),
        })
        .collect())
}

/// Fills every stored reference of `config` from `store`. With `rotate`, first re-encrypts under
/// the current key every value still under a previous one (all rows, referenced or not).
pub async fn resolve_stored(
    config: &mut Config,
    store: &Store,
    rotate: bool,
) -> Result<Resolved, StoredSecretError> {
    let refs = references(config);
    let ring = keyring_of(config).map_err(StoredSecretError::Issues)?;
    let Some(ring) = ring else {
        // Validation refuses stored references without a key; nothing to do otherwise.
        return match refs.is_empty() {
            true => Ok(Resolved::default()),
            false => Err(StoredSecretError::Issues(
                refs.into_iter()
                    .map(|(path, _)| StoredIssue {
                        path,
                        message: "stored secrets need meta.encryption_key to be decrypted".into(),
                    })
                    .collect(),
            )),
        };
    };
    if refs.is_empty() && !rotate {
        return Ok(Resolved::default());
    }
    let mut rows: HashMap<String, StoredSecretRow> = store
        .stored_secrets()
        .await?
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    let mut done = Resolved::default();
    if rotate {
        for row in rows.values_mut() {
            let old = sealed(row);
            if !ring.is_stale(&old) {
                continue;
            }
            match ring.open(&row.name, &old) {
                Ok(plain) => {
                    let new = ring.seal(&row.name, &plain);
                    let swapped = store
                        .reencrypt_stored_secret(
                            &row.name,
                            &old.key_id,
                            &new.key_id,
                            &new.nonce,
                            &new.ciphertext,
                        )
                        .await?;
                    if swapped {
                        tracing::info!(name = %row.name, from_key = %old.key_id, to_key = %new.key_id,
                            "stored secret re-encrypted under the current key");
                        done.rotated.push(row.name.clone());
                        row.key_id = new.key_id;
                        row.nonce = new.nonce;
                        row.ciphertext = new.ciphertext;
                    }
                }
                // Referenced ones are reported below; others wait for their key to come back.
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }
    let mut values: HashMap<String, String> = HashMap::new();
    let mut issues = Vec::new();
    for (path, name) in &refs {
        match rows.get(name) {
            None => issues.push(StoredIssue {
                path: path.clone(),
                message: not_in_storage(name, store.kind()),
            }),
            Some(row) => match ring.open(name, &sealed(row)) {
                Ok(plain) => {
                    values.insert(name.clone(), plain);
                }
                Err(e) => issues.push(StoredIssue {
                    path: path.clone(),
                    message: e.to_string(),
                }),
            },
        }
    }
    if !issues.is_empty() {
        return Err(StoredSecretError::Issues(issues));
    }
    for (_, secret) in config.secrets_mut() {
        if let Some(value) = secret.stored_name().and_then(|n| values.get(n)) {
            secret.set_stored_value(value);
            done.filled += 1;
        }
    }
    Ok(done)
}

/// Encrypts `value` under the config's current key and stores it as `name`.
pub async fn put(
    config: &Config,
    store: &Store,
    name: &str,
    value: &str,
) -> Result<String, StoredSecretError> {
    let issue = |message: String| {
        StoredSecretError::Issues(vec![StoredIssue {
            path: "meta.encryption_key".into(),
            message,
        }])
    };
    if !crate::config::secret::is_stored_name(name) {
        return Err(StoredSecretError::Issues(vec![StoredIssue {
            path: "name".into(),
            message: format!(
                "{name:?} is not a stored secret name: use 1 to 64 letters, digits, `_`, `-` or `.`"
            ),
        }]));
    }
    let ring = keyring_of(config)
        .map_err(StoredSecretError::Issues)?
        .ok_or_else(|| {
            issue(format!(
                "is not set, so nothing can be stored encrypted: add meta.encryption_key: \
                 {{ env: WA_ENCRYPTION_KEY }} holding {}",
                KEY_FORMAT
            ))
        })?;
    let sealed = ring.seal(name, value);
    store
        .put_stored_secret(name, &sealed.key_id, &sealed.nonce, &sealed.ciphertext)
        .await?;
    tracing::info!(%name, key = %sealed.key_id, "secret stored encrypted");
    Ok(sealed.key_id)
}

/// Loads the file and, when it has stored references, opens storage to fill them (no rotation:
/// CLI commands only read). For commands that call Meta with the file's secrets.
pub async fn load_resolved(path: &Path) -> anyhow::Result<Config> {
    let mut config = crate::config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    if references(&config).is_empty() {
        return Ok(config);
    }
    let store = Store::connect_for_command(&config.storage)
        .await
        .map_err(|e| anyhow::anyhow!("opening storage for the stored secrets: {e}"))?;
    let resolved = resolve_stored(&mut config, &store, false).await;
    store.close().await;
    resolved.map_err(|e| anyhow::anyhow!("{}", e.located(path)))?;
    Ok(config)
}
