//! The records of past builds in the store ([`super::explain::Record`]): saved after each
//! successful build, read back to explain the next one's misses and to show what went into a
//! cache entry (`kiln cache inspect`).

use kiln_runtime::{digest::Digest, store::Store, store::StoreError};

use super::explain::Record;

/// The last build of `identity` (context, Dockerfile, target), if one was recorded, with each
/// step's fields and inputs read back from its key's record.
pub fn load(store: &Store, identity: &str) -> Result<Option<Vec<Record>>, StoreError> {
    let Some(mut records) = store
        .build_record(identity)?
        .and_then(|t| serde_json::from_str::<Vec<Record>>(&t).ok())
    else {
        return Ok(None);
    };
    for r in records.iter_mut().filter(|r| r.kind != "FROM") {
        if let Some(full) = store
            .key_record(&r.key)?
            .and_then(|t| serde_json::from_str::<Record>(&t).ok())
        {
            r.fields = full.fields;
            r.inputs = full.inputs;
            r.sources = full.sources;
        }
    }
    Ok(Some(records))
}

/// Keeps `records` as `identity`'s last build. A step's fields and inputs are kept once per
/// key (a key is a hash of them, so they never change): only keys seen for the first time are
/// written, and the build's own record holds just the keys, so a warm build writes one small
/// row.
pub fn save(store: &Store, identity: &str, records: &[Record]) -> Result<(), StoreError> {
    let keys: Vec<&str> = records
        .iter()
        .filter(|r| r.kind != "FROM")
        .map(|r| r.key.as_str())
        .collect();
    let new = store.keys_without_record(&keys)?;
    let rows: Vec<(String, String)> = records
        .iter()
        .filter(|r| r.kind != "FROM" && new.contains(&r.key))
        .filter_map(|r| Some((r.key.clone(), serde_json::to_string(r).ok()?)))
        .collect();
    store.save_key_records(&rows)?;
    let compact: Vec<Record> = records
        .iter()
        .map(|r| Record {
            fields: if r.kind == "FROM" {
                r.fields.clone()
            } else {
                Default::default()
            },
            inputs: Default::default(),
            sources: Default::default(),
            stage: r.stage.clone(),
            index: r.index,
            name: r.name.clone(),
            kind: r.kind.clone(),
            parent: r.parent.clone(),
            key: r.key.clone(),
            hit: r.hit,
            from: r.from.clone(),
        })
        .collect();
    match serde_json::to_string(&compact) {
        Ok(json) => store.save_build_record(identity, &json),
        Err(_) => Ok(()),
    }
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
