//! Base images builds have used (`bases` table: manifest, the reference it was named by, first
//! and last use). `kiln cache ls` shows each as an entry. While a tag points at it the image
//! keeps it; once untagged (`kiln rmi`), pruning the entry frees the blobs no image and no
//! other entry needs.

use super::{Store, StoreError, db::now};
use crate::digest::Digest;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bases (
    manifest  TEXT PRIMARY KEY,
    reference TEXT NOT NULL,
    created   INTEGER NOT NULL,
    last_used INTEGER NOT NULL,
    uses      INTEGER NOT NULL DEFAULT 0
);
";

/// One base image a build used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Base {
    pub manifest: Digest,
    pub reference: String,
    pub created: i64,
    pub last_used: i64,
    pub uses: u64,
}

impl Store {
    /// Notes that a build's `FROM reference` resolved to `manifest`.
    pub fn record_base(&self, reference: &str, manifest: &Digest) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO bases (manifest, reference, created, last_used, uses)
                 VALUES (?1, ?2, ?3, ?3, 1)
                 ON CONFLICT(manifest) DO UPDATE SET reference = excluded.reference,
                   last_used = excluded.last_used, uses = uses + 1",
                rusqlite::params![manifest.to_string(), reference, now()],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// The newest base image recorded for `reference` that is for `platform` and still in
    /// the store: what a build for another platform pulled (its tag names this machine's).
    pub fn base_for(
        &self,
        reference: &str,
        platform: &crate::oci::Platform,
    ) -> Result<Option<Digest>, StoreError> {
        let rows: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT manifest FROM bases WHERE reference = ?1 ORDER BY last_used DESC",
                )
                .map_err(self.db_err())?;
            stmt.query_map([reference], |r| r.get(0))
                .map_err(self.db_err())?
                .collect::<Result<_, _>>()
                .map_err(self.db_err())?
        };
        for m in rows {
            let Ok(d) = Digest::parse(&m) else { continue };
            if self.has_blob(&d) && self.platform_manifest(&d, Some(platform)).is_ok() {
                return Ok(Some(d));
            }
        }
        Ok(None)
    }

    /// Every recorded base image whose manifest is still in the store.
    pub(super) fn bases(&self) -> Result<Vec<Base>, StoreError> {
        let rows: Vec<(String, String, i64, i64, i64)> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached("SELECT manifest, reference, created, last_used, uses FROM bases")
                .map_err(self.db_err())?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .map_err(self.db_err())?;
            rows.collect::<Result<_, _>>().map_err(self.db_err())?
        };
        Ok(rows
            .into_iter()
            .filter_map(|(m, reference, created, last_used, uses)| {
                let manifest = Digest::parse(&m).ok()?;
                self.has_blob(&manifest).then(|| Base {
                    manifest,
                    reference,
                    created,
                    last_used,
                    uses: u64::try_from(uses).unwrap_or(0),
                })
            })
            .collect())
    }

    /// Forgets a base image's row (its blobs are the pruner's to remove).
    pub(super) fn forget_base(&self, manifest: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM bases WHERE manifest = ?1", [manifest])
            .map_err(self.db_err())?;
        Ok(())
    }
}
