//! Context snapshots: what kiln keeps of a build context between builds is the digest of each
//! file, by file identity (the stat cache, [`super::statcache`]), in the context's row of the
//! `contexts` table with when it was read and how much; `kiln cache ls` shows it as one entry,
//! and pruning it forgets its digests (the next build reads every file again).

use super::{Store, StoreError, db::now, statcache::StatIndex};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS contexts (
    dir       TEXT PRIMARY KEY,
    files     INTEGER NOT NULL,
    bytes     INTEGER NOT NULL,
    created   INTEGER NOT NULL,
    last_used INTEGER NOT NULL,
    uses      INTEGER NOT NULL DEFAULT 0
);
-- A context's StatIndex, apart from its row: a build updates the row (last_used, uses) without
-- rewriting megabytes of index it did not change.
CREATE TABLE IF NOT EXISTS context_files (
    dir   TEXT PRIMARY KEY,
    files BLOB NOT NULL
);
-- Per-file rows of older kilns: their digests now live in context_files.
DROP TABLE IF EXISTS stat_cache;
";

/// One context's snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Context {
    pub dir: String,
    pub files: u64,
    pub bytes: u64,
    /// The bytes its digests take in `meta.db`.
    pub size: u64,
    pub created: i64,
    pub last_used: i64,
    pub uses: u64,
}

impl Store {
    /// Notes that a build read the context `dir`: `files` regular files, `bytes` in all, and
    /// its files' stat index when it changed (`None`: the stored one still holds).
    pub fn record_context(
        &self,
        dir: &str,
        (files, bytes): (u64, u64),
        index: Option<&StatIndex>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.db_err())?;
        tx.execute(
            "INSERT INTO contexts (dir, files, bytes, created, last_used, uses)
             VALUES (?1, ?2, ?3, ?4, ?4, 1)
             ON CONFLICT(dir) DO UPDATE SET files = excluded.files, bytes = excluded.bytes,
               last_used = excluded.last_used, uses = uses + 1",
            rusqlite::params![
                dir,
                i64::try_from(files).unwrap_or(i64::MAX),
                i64::try_from(bytes).unwrap_or(i64::MAX),
                now(),
            ],
        )
        .map_err(self.db_err())?;
        if let Some(index) = index {
            tx.execute(
                "INSERT OR REPLACE INTO context_files (dir, files) VALUES (?1, ?2)",
                rusqlite::params![dir, index.as_bytes()],
            )
            .map_err(self.db_err())?;
        }
        tx.commit().map_err(self.db_err())
    }

    /// The stat index an earlier build of the context `dir` recorded (empty if none).
    pub fn context_files(&self, dir: &str) -> Result<StatIndex, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT files FROM context_files WHERE dir = ?1")
            .map_err(self.db_err())?;
        let mut rows = stmt.query([dir]).map_err(self.db_err())?;
        Ok(match rows.next().map_err(self.db_err())? {
            Some(r) => r
                .get::<_, Option<Vec<u8>>>(0)
                .map_err(self.db_err())?
                .map(StatIndex::from_bytes)
                .unwrap_or_default(),
            None => StatIndex::default(),
        })
    }

    pub(super) fn contexts(&self) -> Result<Vec<Context>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT c.dir, c.files, c.bytes, c.created, c.last_used, c.uses,
                   coalesce((SELECT length(f.files) FROM context_files f WHERE f.dir = c.dir), 0)
                 FROM contexts c",
            )
            .map_err(self.db_err())?;
        let rows = stmt
            .query_map([], |r| {
                let n = |i: usize| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
                Ok(Context {
                    dir: r.get(0)?,
                    files: n(1)?,
                    bytes: n(2)?,
                    created: r.get(3)?,
                    last_used: r.get(4)?,
                    uses: n(5)?,
                    size: n(6)?,
                })
            })
            .map_err(self.db_err())?;
        rows.collect::<Result<_, _>>().map_err(self.db_err())
    }

    /// Forgets a context's digests and its row.
    pub(super) fn forget_context(&self, dir: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.db_err())?;
        for table in ["contexts", "context_files"] {
            tx.execute(&format!("DELETE FROM {table} WHERE dir = ?1"), [dir])
                .map_err(self.db_err())?;
        }
        tx.commit().map_err(self.db_err())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test fails by panicking
    use super::*;
    use crate::{digest::Digest, store::FileStamp};

    #[test]
    fn a_context_keeps_its_own_index_until_forgotten() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let stamp = FileStamp {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: 4,
            ctime_ns: 5,
        };
        let none = Vec::new();
        let index = |names: &[&'static str]| {
            StatIndex::encode(
                names
                    .iter()
                    .map(|p| (p.as_bytes(), stamp, Digest::of(p.as_bytes()), &none)),
            )
        };
        let a = index(&["a", "sub/b"]);
        store.record_context("/ctx", (2, 6), Some(&a)).unwrap();
        store
            .record_context("/ctx-b", (1, 3), Some(&index(&["c"])))
            .unwrap();
        // A build that changed nothing keeps the stored index.
        store.record_context("/ctx", (2, 6), None).unwrap();
        let c: Vec<Context> = store
            .contexts()
            .unwrap()
            .into_iter()
            .filter(|c| c.dir == "/ctx")
            .collect();
        assert_eq!((c[0].files, c[0].bytes, c[0].uses), (2, 6, 2));
        assert_eq!(c[0].size, a.as_bytes().len() as u64);
        assert_eq!(store.context_files("/ctx").unwrap(), a);
        store.forget_context("/ctx").unwrap();
        assert_eq!(store.contexts().unwrap().len(), 1);
        assert_eq!(store.context_files("/ctx").unwrap().iter().count(), 0);
        assert_eq!(
            store
                .context_files("/ctx-b")
                .unwrap()
                .iter()
                .map(|r| r.path)
                .collect::<Vec<_>>(),
            [b"c"]
        );
    }
}
