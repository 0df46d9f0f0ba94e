//! File digests remembered by file identity, so an unchanged file is never read twice across
//! builds: the key is (path, device, inode, size, mtime, ctime); any change to the file changes
//! ctime, so a hit means the same bytes.

use super::{Store, StoreError};
use crate::digest::Digest;

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stat_cache (
    path     TEXT PRIMARY KEY,
    dev      INTEGER NOT NULL,
    ino      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    digest   TEXT NOT NULL
);
";

impl Store {
    /// The digest recorded for `path` if the file still has exactly `stamp`.
    pub fn cached_digest(
        &self,
        path: &str,
        stamp: &FileStamp,
    ) -> Result<Option<Digest>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT digest FROM stat_cache WHERE path = ?1 AND dev = ?2 AND ino = ?3
                 AND size = ?4 AND mtime_ns = ?5 AND ctime_ns = ?6",
            )
            .map_err(self.db_err())?;
        let mut rows = stmt
            .query(rusqlite::params![
                path,
                stamp.dev as i64,
                stamp.ino as i64,
                stamp.size as i64,
                stamp.mtime_ns,
                stamp.ctime_ns
            ])
            .map_err(self.db_err())?;
        match rows.next().map_err(self.db_err())? {
            None => Ok(None),
            Some(r) => {
                let s: String = r.get(0).map_err(self.db_err())?;
                Ok(Digest::parse(&s).ok())
            }
        }
    }

    /// Records digests for many files in one transaction.
    pub fn record_digests(&self, rows: &[(String, FileStamp, Digest)]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.db_err())?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO stat_cache (path, dev, ino, size, mtime_ns, ctime_ns, digest)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(self.db_err())?;
            for (path, s, d) in rows {
                stmt.execute(rusqlite::params![
                    path,
                    s.dev as i64,
                    s.ino as i64,
                    s.size as i64,
                    s.mtime_ns,
                    s.ctime_ns,
                    d.to_string()
                ])
                .map_err(self.db_err())?;
            }
        }
        tx.commit().map_err(self.db_err())
    }
}
