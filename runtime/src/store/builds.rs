//! What the last successful build of each (context, Dockerfile, target) fed into its cache keys,
//! as the builder's JSON: `kiln cache explain` compares a new build against it.

use super::{Store, StoreError, db::now};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS build_records (
    identity TEXT PRIMARY KEY,
    updated  INTEGER NOT NULL,
    records  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS key_records (
    key    TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
";

impl Store {
    /// Replaces the record of `identity`'s last build.
    pub fn save_build_record(&self, identity: &str, records: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO build_records (identity, updated, records) VALUES (?1, ?2, ?3)
                 ON CONFLICT(identity) DO UPDATE SET updated = excluded.updated,
                   records = excluded.records",
                rusqlite::params![identity, now(), records],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// The record of `identity`'s last build.
    pub fn build_record(&self, identity: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT records FROM build_records WHERE identity = ?1")
            .map_err(self.db_err())?;
        let mut rows = stmt.query([identity]).map_err(self.db_err())?;
        match rows.next().map_err(self.db_err())? {
            Some(r) => Ok(Some(r.get(0).map_err(self.db_err())?)),
            None => Ok(None),
        }
    }
}

impl Store {
    /// Keeps what went into each key (`kiln cache inspect`), in one transaction.
    pub fn save_key_records(&self, rows: &[(String, String)]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.db_err())?;
        for (key, record) in rows {
            tx.execute(
                "INSERT OR REPLACE INTO key_records (key, record) VALUES (?1, ?2)",
                rusqlite::params![key, record],
            )
            .map_err(self.db_err())?;
        }
        tx.commit().map_err(self.db_err())
    }

    /// Which of `keys` have no record yet.
    pub fn keys_without_record(&self, keys: &[&str]) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT 1 FROM key_records WHERE key = ?1")
            .map_err(self.db_err())?;
        let mut out = Vec::new();
        for k in keys {
            if !stmt.exists([k]).map_err(self.db_err())? {
                out.push((*k).to_string());
            }
        }
        Ok(out)
    }

    /// What went into `key`, if a build recorded it.
    pub fn key_record(&self, key: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT record FROM key_records WHERE key = ?1")
            .map_err(self.db_err())?;
        let mut rows = stmt.query([key]).map_err(self.db_err())?;
        match rows.next().map_err(self.db_err())? {
            Some(r) => Ok(Some(r.get(0).map_err(self.db_err())?)),
            None => Ok(None),
        }
    }
}
