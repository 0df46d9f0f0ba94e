//! File digests remembered by file identity, so an unchanged file is never read twice across
//! builds: the key is (path, device, inode, size, mtime, ctime); any change to the file changes
//! ctime, so a hit means the same bytes.

use std::collections::BTreeMap;

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
    /// Every recorded digest for paths under `dir` (one range query): a scan compares stamps in
    /// memory instead of asking once per file.
    pub fn cached_digests_under(
        &self,
        dir: &str,
    ) -> Result<BTreeMap<String, (FileStamp, Digest)>, StoreError> {
        let (lo, hi) = super::contexts::range(dir);
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT path, dev, ino, size, mtime_ns, ctime_ns, digest FROM stat_cache
                 WHERE path >= ?1 AND path < ?2",
            )
            .map_err(self.db_err())?;
        let rows = stmt
            .query_map(rusqlite::params![lo, hi], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    FileStamp {
                        dev: r.get::<_, i64>(1)? as u64,
                        ino: r.get::<_, i64>(2)? as u64,
                        size: r.get::<_, i64>(3)? as u64,
                        mtime_ns: r.get(4)?,
                        ctime_ns: r.get(5)?,
                    },
                    r.get::<_, String>(6)?,
                ))
            })
            .map_err(self.db_err())?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (path, stamp, digest) = row.map_err(self.db_err())?;
            if let Ok(d) = Digest::parse(&digest) {
                out.insert(path, (stamp, d));
            }
        }
        Ok(out)
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
