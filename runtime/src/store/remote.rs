//! Where blobs are known to be on registries (`registry`, `repository`), recorded by pull and
//! push: `kiln push` to another repository of the same registry mounts a blob from there
//! instead of uploading it again (the distribution spec's cross-repository mount).

use super::{Store, StoreError, db::now};
use crate::digest::Digest;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS blob_sources (
    digest   TEXT NOT NULL,
    registry TEXT NOT NULL,
    repo     TEXT NOT NULL,
    seen     INTEGER NOT NULL,
    PRIMARY KEY (digest, registry, repo)
);
CREATE TABLE IF NOT EXISTS remote_layers (
    blob       TEXT PRIMARY KEY,
    diff_id    TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS remote_layers_by_diff ON remote_layers (diff_id);
";

/// Brings blob `digest` into the store from where it is known to be (a registry), checked.
pub type FetchFn = dyn Fn(&Store, &Digest) -> Result<(), StoreError> + Send + Sync;

/// [`FetchFn`], boxed for the store to keep.
pub struct Fetcher(pub Box<FetchFn>);

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fetcher")
    }
}

/// A layer a registry has and the store may not: its descriptor there and its diff_id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteLayer {
    pub descriptor: crate::oci::Descriptor,
    pub diff_id: Digest,
}

impl Store {
    /// Installs what [`Store::ensure_blob`] fetches with (once; a second call is ignored).
    pub fn set_fetcher(&self, fetch: Box<FetchFn>) {
        let _ = self.fetcher.set(Fetcher(fetch));
    }

    /// Makes sure the store has blob `digest`: present, or fetched from the registry it is
    /// known to be on when a fetcher is installed. The content that only a registry had (a
    /// layer of a remote cache hit, an image joined from a registry) is brought in when it is
    /// first needed, not before.
    pub fn ensure_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        if self.has_blob(digest) {
            return Ok(());
        }
        match self.fetcher.get() {
            Some(f) => {
                (f.0)(self, digest)?;
                if self.has_blob(digest) {
                    Ok(())
                } else {
                    Err(StoreError::MissingBlob(*digest))
                }
            }
            None => Err(StoreError::MissingBlob(*digest)),
        }
    }

    /// Records that the layer `descriptor` (a registry's blob, compressed as it was sent) is
    /// the layer `diff_id`: a remote cache hit uses it without downloading it.
    pub fn record_remote_layer(
        &self,
        descriptor: &crate::oci::Descriptor,
        diff_id: &Digest,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO remote_layers (blob, diff_id, media_type, size) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(blob) DO UPDATE SET diff_id = excluded.diff_id,
                   media_type = excluded.media_type, size = excluded.size",
                rusqlite::params![
                    descriptor.digest,
                    diff_id.to_string(),
                    descriptor.media_type,
                    descriptor.size as i64
                ],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// Forgets that a registry has layer blob `blob` (it failed to come in): cache entries that
    /// named it are misses from now on. Whether it was recorded.
    pub fn forget_remote_layer(&self, blob: &Digest) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM remote_layers WHERE blob = ?1",
                [blob.to_string()],
            )
            .map_err(self.db_err())?;
        Ok(n > 0)
    }

    /// The remote layer blob `blob` is, when one was recorded.
    pub fn remote_layer(&self, blob: &Digest) -> Result<Option<RemoteLayer>, StoreError> {
        self.remote_layer_where("blob", &blob.to_string())
    }

    /// A remote layer whose content is `diff_id`, when one was recorded.
    pub fn remote_layer_of(&self, diff_id: &Digest) -> Result<Option<RemoteLayer>, StoreError> {
        self.remote_layer_where("diff_id", &diff_id.to_string())
    }

    fn remote_layer_where(
        &self,
        column: &str,
        value: &str,
    ) -> Result<Option<RemoteLayer>, StoreError> {
        let sql = format!(
            "SELECT blob, diff_id, media_type, size FROM remote_layers WHERE {column} = ?1 LIMIT 1"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql).map_err(self.db_err())?;
        let mut rows = stmt.query([value]).map_err(self.db_err())?;
        let Some(r) = rows.next().map_err(self.db_err())? else {
            return Ok(None);
        };
        let (blob, diff_id, media_type, size): (String, String, String, i64) = (
            r.get(0).map_err(self.db_err())?,
            r.get(1).map_err(self.db_err())?,
            r.get(2).map_err(self.db_err())?,
            r.get(3).map_err(self.db_err())?,
        );
        let Ok(diff_id) = Digest::parse(&diff_id) else {
            return Ok(None);
        };
        Ok(Some(RemoteLayer {
            descriptor: crate::oci::Descriptor {
                media_type,
                digest: blob,
                size: u64::try_from(size).unwrap_or(0),
                annotations: Default::default(),
                platform: None,
            },
            diff_id,
        }))
    }

    /// Every registry and repository known to have `digest`, most recently seen first.
    pub fn blob_sources_anywhere(
        &self,
        digest: &Digest,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT registry, repo FROM blob_sources WHERE digest = ?1 ORDER BY seen DESC",
            )
            .map_err(self.db_err())?;
        stmt.query_map([digest.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.db_err())?
            .collect::<Result<_, _>>()
            .map_err(self.db_err())
    }

    /// Records that `registry/repo` has the blob `digest`.
    pub fn record_blob_source(
        &self,
        digest: &Digest,
        registry: &str,
        repo: &str,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO blob_sources (digest, registry, repo, seen) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO UPDATE SET seen = excluded.seen",
                rusqlite::params![digest.to_string(), registry, repo, now()],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// The repositories of `registry` known to have `digest`, most recently seen first.
    /// Whether a registry is known to hold blob `digest` (a layer of an image joined from a
    /// registry, which kiln's store need not have).
    pub fn is_remote_blob(&self, digest: &Digest) -> Result<bool, StoreError> {
        self.conn()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM blob_sources WHERE digest = ?1)",
                [digest.to_string()],
                |r| r.get(0),
            )
            .map_err(self.db_err())
    }

    pub fn blob_sources(&self, digest: &Digest, registry: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT repo FROM blob_sources WHERE digest = ?1 AND registry = ?2
                 ORDER BY seen DESC, repo",
            )
            .map_err(self.db_err())?;
        let rows = stmt
            .query_map(rusqlite::params![digest.to_string(), registry], |r| {
                r.get::<_, String>(0)
            })
            .map_err(self.db_err())?;
        rows.collect::<Result<_, _>>().map_err(self.db_err())
    }
}
