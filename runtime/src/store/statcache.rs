//! File digests remembered by file identity, so an unchanged file is never read twice across
//! builds: the key is (path, device, inode, size, mtime, ctime); any change to the file changes
//! ctime, so a hit means the same bytes. Its extended attributes are remembered alongside (a
//! change of them changes ctime too), so an unchanged file costs one stat per build.

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

/// Columns added since the table was first made (an error that one exists is expected).
/// `xattrs`: NULL when not recorded, else [`encode_xattrs`] (empty: none).
pub(super) const ADDED_COLUMNS: [&str; 1] = ["ALTER TABLE stat_cache ADD COLUMN xattrs BLOB"];

/// A file's extended attributes, as the stat cache keeps them.
pub type Xattrs = Vec<(String, Vec<u8>)>;

/// `name NUL length(u32 LE) value`, one after the other.
pub fn encode_xattrs(x: &Xattrs) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in x {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(v);
    }
    out
}

/// The inverse of [`encode_xattrs`]; `None` for bytes it did not write.
pub fn decode_xattrs(mut b: &[u8]) -> Option<Xattrs> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let nul = b.iter().position(|c| *c == 0)?;
        let name = String::from_utf8(b[..nul].to_vec()).ok()?;
        b = &b[nul + 1..];
        let len = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let value = b.get(4..4 + len)?.to_vec();
        b = &b[4 + len..];
        out.push((name, value));
    }
    Some(out)
}

/// What the stat cache remembers of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub stamp: FileStamp,
    pub digest: Digest,
    /// `None`: not recorded (an older kiln's row).
    pub xattrs: Option<Xattrs>,
}

impl Store {
    /// Every recorded digest for paths under `dir` (one range query): a scan compares stamps in
    /// memory instead of asking once per file.
    pub fn cached_digests_under(
        &self,
        dir: &str,
    ) -> Result<BTreeMap<String, Remembered>, StoreError> {
        let (lo, hi) = super::contexts::range(dir);
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT path, dev, ino, size, mtime_ns, ctime_ns, digest, xattrs FROM stat_cache
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
                    r.get::<_, Option<Vec<u8>>>(7)?,
                ))
            })
            .map_err(self.db_err())?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (path, stamp, digest, xattrs) = row.map_err(self.db_err())?;
            if let Ok(digest) = Digest::parse(&digest) {
                let xattrs = xattrs.and_then(|b| decode_xattrs(&b));
                out.insert(
                    path,
                    Remembered {
                        stamp,
                        digest,
                        xattrs,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Records digests (and extended attributes) for many files in one transaction.
    pub fn record_digests(
        &self,
        rows: &[(String, FileStamp, Digest, Xattrs)],
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.db_err())?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO stat_cache
                     (path, dev, ino, size, mtime_ns, ctime_ns, digest, xattrs)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(self.db_err())?;
            for (path, s, d, x) in rows {
                stmt.execute(rusqlite::params![
                    path,
                    s.dev as i64,
                    s.ino as i64,
                    s.size as i64,
                    s.mtime_ns,
                    s.ctime_ns,
                    d.to_string(),
                    encode_xattrs(x)
                ])
                .map_err(self.db_err())?;
            }
        }
        tx.commit().map_err(self.db_err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattrs_round_trip() {
        let x: Xattrs = vec![
            ("user.a".into(), b"1".to_vec()),
            ("user.empty".into(), Vec::new()),
            ("trusted.bin".into(), vec![0, 255, 0]),
        ];
        assert_eq!(decode_xattrs(&encode_xattrs(&x)), Some(x));
        assert_eq!(decode_xattrs(&[]), Some(Vec::new()));
        assert_eq!(decode_xattrs(b"name-without-end"), None);
    }
}
