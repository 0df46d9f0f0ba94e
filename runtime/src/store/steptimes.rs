//! When each metadata step (ENV, CMD, LABEL...: a history entry without a layer) first ran, by
//! a key of the step and what came before it. A rebuild that repeats a step finds its time,
//! so the image's config (and digest) comes out the same; a changed step gets the time of the
//! build that changed it, as `docker history` users expect.

use rusqlite::OptionalExtension;

use super::{Store, StoreError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS step_times (
    key  TEXT PRIMARY KEY,
    time INTEGER NOT NULL
);
";

impl Store {
    /// The time each step of `keys` first ran: `now` for those asked for the first time. One
    /// transaction for all of them (a Dockerfile of 100,000 ENV lines asks 100,000).
    pub fn step_times(&self, keys: &[String], now: i64) -> Result<Vec<i64>, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.db_err())?;
        let mut out = Vec::with_capacity(keys.len());
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO step_times (key, time) VALUES (?1, ?2)")
                .map_err(self.db_err())?;
            let mut select = tx
                .prepare_cached("SELECT time FROM step_times WHERE key = ?1")
                .map_err(self.db_err())?;
            for key in keys {
                let known = select
                    .query_row([key], |r| r.get::<_, i64>(0))
                    .optional()
                    .map_err(self.db_err())?;
                out.push(match known {
                    Some(t) => t,
                    None => {
                        insert
                            .execute(rusqlite::params![key, now])
                            .map_err(self.db_err())?;
                        now
                    }
                });
            }
        }
        tx.commit().map_err(self.db_err())?;
        Ok(out)
    }
}

impl Store {
    /// Records the times of steps another store ran (an imported build cache), unless this
    /// store has its own for a key already.
    pub fn seed_step_times(&self, times: &[(String, i64)]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.db_err())?;
        {
            let mut insert = tx
                .prepare_cached("INSERT OR IGNORE INTO step_times (key, time) VALUES (?1, ?2)")
                .map_err(self.db_err())?;
            for (key, time) in times {
                insert
                    .execute(rusqlite::params![key, time])
                    .map_err(self.db_err())?;
            }
        }
        tx.commit().map_err(self.db_err())
    }
}
