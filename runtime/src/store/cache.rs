//! The build cache index: a cache key maps to the layer a step produced, with the usage data
//! `kiln cache` shows. One row per key; each change is one transaction.

use super::{Store, StoreError, db::now};
use crate::digest::Digest;

/// A cached step result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub key: String,
    /// The layer blob (uncompressed tar: its digest is also its diff_id).
    pub layer: Digest,
    pub size: u64,
    /// What made it, e.g. `[build 3/7] COPY . /app (Dockerfile:12)`.
    pub description: String,
    /// When the step first ran (seconds since the epoch): reused on every hit so a cached
    /// rebuild gives the same image.
    pub created: i64,
    /// Where an imported entry came from (`--cache-from`'s reference or directory); `None` for
    /// a step this store ran.
    pub origin: Option<String>,
    /// For an entry whose layer only a registry has (a remote cache hit): the layer as that
    /// registry has it (compressed), which a build uses as it is and fetches only when it
    /// needs the files ([`Store::ensure_blob`]).
    pub remote: Option<crate::oci::Descriptor>,
}

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cache (
    key         TEXT PRIMARY KEY,
    layer       TEXT NOT NULL,
    size        INTEGER NOT NULL,
    description TEXT NOT NULL,
    created     INTEGER NOT NULL,
    last_used   INTEGER NOT NULL,
    uses        INTEGER NOT NULL DEFAULT 0
);
";

/// Columns added since the table was first made (applied once; an existing one is kept).
pub(super) const ADDED_COLUMNS: [&str; 1] = ["ALTER TABLE cache ADD COLUMN origin TEXT"];

impl Store {
    /// The entry for `key` whose layer is still in the store (counted as a use).
    pub fn cache_get(&self, key: &str) -> Result<Option<CacheEntry>, StoreError> {
        self.cache_entry(key, true)
    }

    /// [`Store::cache_get`] without counting a use (an export reads entries, no build uses them).
    pub fn cache_peek(&self, key: &str) -> Result<Option<CacheEntry>, StoreError> {
        self.cache_entry(key, false)
    }

    fn cache_entry(&self, key: &str, used: bool) -> Result<Option<CacheEntry>, StoreError> {
        let conn = self.conn();
        let row = {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT layer, size, description, created, origin FROM cache WHERE key = ?1",
                )
                .map_err(self.db_err())?;
            let mut rows = stmt.query([key]).map_err(self.db_err())?;
            match rows.next().map_err(self.db_err())? {
                None => None,
                Some(r) => Some((
                    r.get::<_, String>(0).map_err(self.db_err())?,
                    r.get::<_, i64>(1).map_err(self.db_err())?,
                    r.get::<_, String>(2).map_err(self.db_err())?,
                    r.get::<_, i64>(3).map_err(self.db_err())?,
                    r.get::<_, Option<String>>(4).map_err(self.db_err())?,
                )),
            }
        };
        // The connection's lock is not held across the lookups below, which take it again.
        drop(conn);
        let Some((layer, size, description, created, origin)) = row else {
            return Ok(None);
        };
        let Ok(layer) = Digest::parse(&layer) else {
            return Ok(None);
        };
        let remote = if self.has_blob(&layer) {
            None
        } else {
            match self.remote_layer_of(&layer)? {
                Some(r) => Some(r.descriptor),
                None => return Ok(None),
            }
        };
        if used {
            self.conn()
                .execute(
                    "UPDATE cache SET last_used = ?2, uses = uses + 1 WHERE key = ?1",
                    rusqlite::params![key, now()],
                )
                .map_err(self.db_err())?;
        }
        Ok(Some(CacheEntry {
            key: key.to_string(),
            layer,
            size: size as u64,
            description,
            created,
            origin,
            remote,
        }))
    }

    /// Records what `entry.key` produced (after its layer blob is committed).
    pub fn cache_put(&self, entry: &CacheEntry) -> Result<(), StoreError> {
        let t = now();
        self.conn()
            .execute(
                "INSERT INTO cache (key, layer, size, description, created, last_used, uses, origin)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7)
                 ON CONFLICT(key) DO UPDATE SET layer = excluded.layer, size = excluded.size,
                   description = excluded.description, created = excluded.created,
                   last_used = excluded.last_used, origin = excluded.origin",
                rusqlite::params![
                    entry.key,
                    entry.layer.to_string(),
                    entry.size as i64,
                    entry.description,
                    entry.created,
                    t,
                    entry.origin
                ],
            )
            .map_err(self.db_err())?;
        Ok(())
    }
}

impl Store {
    /// Every cache entry's key and layer digest (for `kiln store verify`).
    pub fn cache_layers(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT key, layer FROM cache ORDER BY key")
            .map_err(self.db_err())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.db_err())?;
        rows.collect::<Result<_, _>>().map_err(self.db_err())
    }

    /// Forgets one cache entry (and what went into its key).
    pub fn cache_remove(&self, key: &str) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.execute("DELETE FROM cache WHERE key = ?1", [key])
            .map_err(self.db_err())?;
        conn.execute("DELETE FROM key_records WHERE key = ?1", [key])
            .map_err(self.db_err())?;
        Ok(())
    }
}
