//! Context snapshots: what kiln keeps of a build context between builds is the digest of each
//! file, by file identity (the stat cache, [`super::statcache`]). A context's row (`contexts`
//! table) says when it was read and how much; `kiln cache ls` shows it as one entry, and
//! pruning it forgets its digests (the next build reads every file again).

use super::{Store, StoreError, db::now};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS contexts (
    dir       TEXT PRIMARY KEY,
    files     INTEGER NOT NULL,
    bytes     INTEGER NOT NULL,
    created   INTEGER NOT NULL,
    last_used INTEGER NOT NULL,
    uses      INTEGER NOT NULL DEFAULT 0
);
";

/// About what one stat-cache row takes in `meta.db` besides its path: five integers, the
/// digest's text and SQLite's row and index overhead.
const ROW_BYTES: u64 = 120;

/// One context's snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Context {
    pub dir: String,
    pub files: u64,
    pub bytes: u64,
    /// About the bytes its digests take in `meta.db`.
    pub size: u64,
    pub created: i64,
    pub last_used: i64,
    pub uses: u64,
}

/// The half-open range of stat-cache paths under `dir`: TEXT compares byte-wise, so every path
/// starting with `dir/` sorts below `dir0` ('0' follows '/').
pub(super) fn range(dir: &str) -> (String, String) {
    let d = dir.trim_end_matches('/');
    (format!("{d}/"), format!("{d}0"))
}

impl Store {
    /// Notes that a build read the context `dir`: `files` regular files, `bytes` in all.
    pub fn record_context(&self, dir: &str, files: u64, bytes: u64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO contexts (dir, files, bytes, created, last_used, uses)
                 VALUES (?1, ?2, ?3, ?4, ?4, 1)
                 ON CONFLICT(dir) DO UPDATE SET files = excluded.files, bytes = excluded.bytes,
                   last_used = excluded.last_used, uses = uses + 1",
                rusqlite::params![
                    dir,
                    i64::try_from(files).unwrap_or(i64::MAX),
                    i64::try_from(bytes).unwrap_or(i64::MAX),
                    now()
                ],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    pub(super) fn contexts(&self) -> Result<Vec<Context>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT c.dir, c.files, c.bytes, c.created, c.last_used, c.uses,
                   (SELECT count(*) * ?1 + coalesce(sum(length(s.path)), 0) FROM stat_cache s
                    WHERE s.path >= rtrim(c.dir, '/') || '/' AND s.path < rtrim(c.dir, '/') || '0')
                 FROM contexts c",
            )
            .map_err(self.db_err())?;
        let rows = stmt
            .query_map([ROW_BYTES as i64], |r| {
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
        let (lo, hi) = range(dir);
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.db_err())?;
        tx.execute(
            "DELETE FROM stat_cache WHERE path >= ?1 AND path < ?2",
            rusqlite::params![lo, hi],
        )
        .map_err(self.db_err())?;
        tx.execute("DELETE FROM contexts WHERE dir = ?1", [dir])
            .map_err(self.db_err())?;
        tx.commit().map_err(self.db_err())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test fails by panicking
    use super::*;
    use crate::{digest::Digest, store::FileStamp};

    #[test]
    fn forgetting_a_context_forgets_only_its_own_digests() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let stamp = FileStamp {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: 4,
            ctime_ns: 5,
        };
        let row = |p: &str| (p.to_string(), stamp, Digest::of(p.as_bytes()), Vec::new());
        // `/ctx-b` and `/ctx.txt` share the prefix `/ctx` but are not under `/ctx/`.
        store
            .record_digests(&[
                row("/ctx/a"),
                row("/ctx/sub/b"),
                row("/ctx-b/c"),
                row("/ctx.txt"),
            ])
            .unwrap();
        store.record_context("/ctx", 2, 6).unwrap();
        store.record_context("/ctx", 2, 6).unwrap();
        let c = store.contexts().unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].files, c[0].bytes, c[0].uses), (2, 6, 2));
        assert_eq!(
            c[0].size,
            2 * ROW_BYTES + ("/ctx/a".len() + "/ctx/sub/b".len()) as u64
        );
        store.forget_context("/ctx").unwrap();
        assert!(store.contexts().unwrap().is_empty());
        assert!(store.cached_digests_under("/ctx").unwrap().is_empty());
        assert_eq!(store.cached_digests_under("/ctx-b").unwrap().len(), 1);
        let all: Vec<String> = store
            .cached_digests_under("/")
            .unwrap()
            .into_keys()
            .collect();
        assert_eq!(all, ["/ctx-b/c", "/ctx.txt"]);
    }
}
