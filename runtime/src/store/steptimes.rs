//! When each metadata step (ENV, CMD, LABEL...: a history entry without a layer) first ran, by
//! a key of the step and what came before it. A rebuild that repeats a step finds its time,
//! so the image's config (and digest) comes out the same; a changed step gets the time of the
//! build that changed it, as `docker history` users expect.

use super::{Store, StoreError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS step_times (
    key  TEXT PRIMARY KEY,
    time INTEGER NOT NULL
);
";

impl Store {
    /// The time the step `key` first ran: `now` when this is the first time it is asked.
    pub fn step_time(&self, key: &str, now: i64) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT OR IGNORE INTO step_times (key, time) VALUES (?1, ?2)",
            rusqlite::params![key, now],
        )
        .map_err(self.db_err())?;
        conn.query_row("SELECT time FROM step_times WHERE key = ?1", [key], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(self.db_err())
    }
}
