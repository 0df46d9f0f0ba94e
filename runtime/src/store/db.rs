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
    db.pragma_update(None, "journal_mode", "WAL")
        .map_err(db_err)?;
    db.pragma_update(None, "synchronous", "NORMAL")
        .map_err(db_err)?;
    db.execute_batch(super::tags::SCHEMA).map_err(db_err)?;
    db.execute_batch(super::images::SCHEMA).map_err(db_err)?;
    db.execute_batch(super::cache::SCHEMA).map_err(db_err)?;
    db.execute_batch(super::export::SCHEMA).map_err(db_err)?;
    db.execute_batch(super::layerindex::SCHEMA)
        .map_err(db_err)?;
    db.execute_batch(super::containers::SCHEMA)
        .map_err(db_err)?;
    db.execute_batch(super::contexts::SCHEMA).map_err(db_err)?;
    db.execute_batch(super::volumes::SCHEMA).map_err(db_err)?;
    for add in super::containers::ADDED_COLUMNS
        .iter()
        .chain(super::volumes::ADDED_COLUMNS.iter())
        .chain(super::cache::ADDED_COLUMNS.iter())
    {
        match db.execute_batch(add) {
            Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("duplicate column") => {}
            r => r.map_err(db_err)?,
        }
    }
    db.execute_batch(super::builds::SCHEMA).map_err(db_err)?;
    db.execute_batch(super::unpacked::SCHEMA).map_err(db_err)?;
    db.execute_batch(super::bases::SCHEMA).map_err(db_err)?;
    db.execute_batch(super::remote::SCHEMA).map_err(db_err)?;
    db.execute_batch(super::steptimes::SCHEMA).map_err(db_err)?;
    db.execute_batch(super::networks::SCHEMA).map_err(db_err)?;
    Ok(db)
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
