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
";

impl Store {
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
