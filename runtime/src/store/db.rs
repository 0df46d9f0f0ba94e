//! The metadata database: SQLite in WAL mode, one connection per open store.

use std::path::Path;

use super::{Store, StoreError};

pub(super) fn open_db(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let db_err = |source| StoreError::Db {
        path: path.to_path_buf(),
        source,
    };
    let db = rusqlite::Connection::open(path).map_err(db_err)?;
    // WAL: readers never block the writer and a crash rolls back only the open transaction.
    // busy_timeout: other kiln processes hold the write lock for milliseconds; wait for them.
    // The busy timeout first: switching to WAL and creating the schema take locks, and a store
    // opened while another kiln process holds one must wait instead of failing at once
    // (found by the concurrent-open test under CI load).
    db.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(db_err)?;
    db.pragma_update(None, "synchronous", "NORMAL")
        .map_err(db_err)?;
    // The last connection to close leaves the WAL as it is instead of copying it into the
    // database (two fsyncs) and deleting it; the next writer then appends to it without
    // creating it again (one more fsync of the WAL and one of the directory): 1.0 ms of a
    // 10 ms `kiln run --rm`, measured. The first connection of every process reads the whole WAL to
    // rebuild its index (0.5 ms at 700 pages), so the WAL is checkpointed at 64 pages instead of
    // SQLite's 1,000: a `kiln run --rm` adds about 8.
    db.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .map_err(db_err)?;
    db.pragma_update(None, "wal_autocheckpoint", 64)
        .map_err(db_err)?;
    // And the file cut back to 1 MiB when the WAL starts over (it only ever grows otherwise,
    // to the largest transaction's size).
    db.pragma_update(None, "journal_size_limit", 1 << 20)
        .map_err(db_err)?;
    // The schema, set up once per version of it: `user_version` holds a digest of its text,
    // so an open of an up-to-date database runs no DDL (about 0.15 ms of every kiln command;
    // SQLite's own read of the schema, 0.35 ms, stays).
    let stamp = schema_stamp();
    let have: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db_err)?;
    if have == stamp {
        return Ok(db);
    }
    db.pragma_update(None, "journal_mode", "WAL")
        .map_err(db_err)?;
    for schema in SCHEMAS {
        db.execute_batch(schema).map_err(db_err)?;
    }
    for add in ADDED_COLUMNS.iter().flat_map(|a| a.iter()) {
        match db.execute_batch(add) {
            Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("duplicate column") => {}
            r => r.map_err(db_err)?,
        }
    }
    db.pragma_update(None, "user_version", stamp)
        .map_err(db_err)?;
    Ok(db)
}

/// Every table's schema, in the order they are created.
const SCHEMAS: [&str; 14] = [
    super::tags::SCHEMA,
    super::images::SCHEMA,
    super::cache::SCHEMA,
    super::export::SCHEMA,
    super::layerindex::SCHEMA,
    super::containers::SCHEMA,
    super::contexts::SCHEMA,
    super::volumes::SCHEMA,
    super::builds::SCHEMA,
    super::unpacked::SCHEMA,
    super::bases::SCHEMA,
    super::remote::SCHEMA,
    super::steptimes::SCHEMA,
    super::networks::SCHEMA,
];

/// Columns added to tables after their first release (an older database gets them once).
const ADDED_COLUMNS: [&[&str]; 3] = [
    &super::containers::ADDED_COLUMNS,
    &super::volumes::ADDED_COLUMNS,
    &super::cache::ADDED_COLUMNS,
];

/// `PRAGMA user_version` of a database whose schema is this binary's: a digest (FNV-1a, 31
/// bits, never 0, which is a new database's) of the schema's text, so any change to it sets the
/// schema up again.
fn schema_stamp() -> i64 {
    let mut h: u32 = 0x811c_9dc5;
    for text in SCHEMAS
        .iter()
        .copied()
        .chain(ADDED_COLUMNS.iter().flat_map(|a| a.iter().copied()))
    {
        for b in text.bytes().chain([0]) {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
    i64::from((h & 0x7fff_ffff).max(1))
}

/// Seconds since the epoch, for metadata timestamps.
pub(super) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    pub(super) fn db_err(&self) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Db {
            path: self.db_path.clone(),
            source,
        }
    }

    pub(super) fn conn(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (its own
        // transactions protect it), so a poisoned lock is safe to reuse.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }
}
