//! The records of past builds in the store ([`super::explain::Record`]): saved after each
//! successful build, read back to explain the next one's misses and to show what went into a
//! cache entry (`kiln cache inspect`).

use kiln_runtime::{digest::Digest, store::Store, store::StoreError};

use super::explain::Record;

/// The last build of `identity` (context, Dockerfile, target), if one was recorded.
pub fn load(store: &Store, identity: &str) -> Result<Option<Vec<Record>>, StoreError> {
    Ok(store
        .build_record(identity)?
        .and_then(|t| serde_json::from_str(&t).ok()))
}

/// Keeps `records` as `identity`'s last build, and each under its key.
pub fn save(store: &Store, identity: &str, records: &[Record]) -> Result<(), StoreError> {
    let Ok(json) = serde_json::to_string(records) else {
        return Ok(());
    };
    store.save_build_record(identity, &json)?;
    let rows: Vec<(String, String)> = records
        .iter()
        .filter(|r| r.kind != "FROM")
        .filter_map(|r| Some((r.key.clone(), serde_json::to_string(r).ok()?)))
        .collect();
    store.save_key_records(&rows)
}

/// What went into the cache entry `id`: its full key, or the 12-digit id `kiln cache ls`
/// shows.
pub fn find(store: &Store, id: &str) -> Result<Option<Record>, StoreError> {
    let key = if id.starts_with("sha256:") {
        Some(id.to_string())
    } else {
        store
            .cache_layers()?
            .into_iter()
            .map(|(k, _)| k)
            .find(|k| !id.is_empty() && Digest::of(k.as_bytes()).hex().starts_with(id))
    };
    let Some(key) = key else { return Ok(None) };
    Ok(store
        .key_record(&key)?
        .and_then(|t| serde_json::from_str(&t).ok()))
}
