//! Containers (`kiln run` without `--rm` keeps them): id, unique name, image, command, when,
//! and how it ended. A row is written before the container starts, so its name is reserved
//! across concurrent `kiln run`s by the database's unique index.

use super::{Store, StoreError, db::now};
use crate::procid::ProcessId;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS containers (
    id        TEXT PRIMARY KEY,
    name      TEXT NOT NULL UNIQUE,
    image     TEXT NOT NULL,
    command   TEXT NOT NULL,
    created   INTEGER NOT NULL,
    pid       INTEGER,
    finished  INTEGER,
    exit_code INTEGER
);
";

/// Columns added since the table was first made (an error that one exists is expected).
pub(super) const ADDED_COLUMNS: [&str; 11] = [
    "ALTER TABLE containers ADD COLUMN pid_start INTEGER",
    "ALTER TABLE containers ADD COLUMN init_pid INTEGER",
    "ALTER TABLE containers ADD COLUMN init_start INTEGER",
    "ALTER TABLE containers ADD COLUMN health TEXT",
    "ALTER TABLE containers ADD COLUMN started INTEGER",
    "ALTER TABLE containers ADD COLUMN restarting INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE containers ADD COLUMN restart_count INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE containers ADD COLUMN stop_requested INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE containers ADD COLUMN paused INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE containers ADD COLUMN oom_killed INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE containers ADD COLUMN never_started INTEGER NOT NULL DEFAULT 0",
];

/// One container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    /// The argv, space-joined (for display).
    pub command: String,
    pub created: i64,
    /// The `kiln run` process serving it, while it runs (pid and start time: a pid alone may
    /// name another process by now).
    pub pid: Option<ProcessId>,
    pub finished: Option<i64>,
    pub exit_code: Option<i32>,
    /// When its process last started (`kiln start` and restarts move it).
    pub started: Option<i64>,
    /// Its monitor waits to start it again (`--restart`).
    pub restarting: bool,
    /// How many times its monitor started it again.
    pub restart_count: i64,
    /// Frozen by `kiln pause`.
    pub paused: bool,
    /// Its last run was ended by the kernel's OOM killer.
    pub oom_killed: bool,
    /// Made by `kiln create` and never started.
    pub never_started: bool,
}

/// What a container is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    /// Running, its processes frozen (`kiln pause`).
    Paused,
    /// Ended with this code; its monitor starts it again after a delay (`--restart`).
    Restarting(i32),
    Exited(i32),
    /// Its `kiln run` died without recording an end (killed with SIGKILL, machine reset).
    Dead,
    /// Made by `kiln create`, not started yet.
    Created,
}

impl State {
    /// Whether a monitor still serves the container (running, paused or between restarts):
    /// what `rm` without `-f` refuses and what `stop` acts on.
    pub fn is_live(self) -> bool {
        matches!(self, State::Running | State::Paused | State::Restarting(_))
    }

    /// docker's word for it (`State.Status`, `ps --filter status=`): `running`, `exited`,
    /// `dead`.
    pub fn name(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Paused => "paused",
            State::Restarting(_) => "restarting",
            State::Exited(_) => "exited",
            State::Dead => "dead",
            State::Created => "created",
        }
    }
}

impl Container {
    pub fn state(&self) -> State {
        let alive = self.pid.is_some_and(|p| p.alive());
        match self.exit_code {
            Some(c) if self.restarting && alive => State::Restarting(c),
            Some(c) => State::Exited(c),
            None if alive && self.paused => State::Paused,
            None if alive => State::Running,
            None if self.never_started => State::Created,
            None => State::Dead,
        }
    }
}

impl Store {
    /// Marks container `id` as made by `kiln create`, never started.
    pub fn set_container_created_only(&self, id: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE containers SET never_started = 1, pid = NULL, pid_start = NULL, \
                 started = NULL WHERE id = ?1",
                [id],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// Records a new container; fails with [`StoreError::NameInUse`] when the name is taken.
    pub fn add_container(&self, c: &Container) -> Result<(), StoreError> {
        let r = self.conn().execute(
            "INSERT INTO containers (id, name, image, command, created, pid, pid_start, started)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?5)",
            rusqlite::params![
                c.id,
                c.name,
                c.image,
                c.command,
                c.created,
                c.pid.map(|p| p.pid),
                c.pid.and_then(|p| i64::try_from(p.start).ok())
            ],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                let holder = self
                    .find_container(&c.name)?
                    .map_or_else(String::new, |o| o.id.chars().take(12).collect());
                Err(StoreError::NameInUse {
                    name: c.name.clone(),
                    id: holder,
                })
            }
            Err(e) => Err(self.db_err()(e)),
        }
    }

    /// Records how container `id` ended.
    pub fn finish_container(&self, id: &str, exit_code: i32) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE containers SET finished = ?2, exit_code = ?3, pid = NULL, pid_start = NULL,
                 restarting = 0, paused = 0 WHERE id = ?1",
                rusqlite::params![id, now(), exit_code],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// Container `id` starts again (`kiln start`, a restart), served by `monitor`: its end,
    /// init, health and pause are cleared, its start time is now.
    pub fn restart_container(
        &self,
        id: &str,
        monitor: Option<ProcessId>,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE containers SET pid = ?2, pid_start = ?3, started = ?4, finished = NULL,
                 exit_code = NULL, restarting = 0, init_pid = NULL, init_start = NULL,
                 health = NULL, paused = 0, oom_killed = 0, never_started = 0 WHERE id = ?1",
                rusqlite::params![
                    id,
                    monitor.map(|p| p.pid),
                    monitor.and_then(|p| i64::try_from(p.start).ok()),
                    now()
                ],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// Container `id` ended with `exit_code` and its monitor will start it again: it stays
    /// served (`pid` kept), its restart count grows.
    pub fn set_container_restarting(&self, id: &str, exit_code: i32) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE containers SET finished = ?2, exit_code = ?3, restarting = 1,
                 restart_count = restart_count + 1, init_pid = NULL, init_start = NULL,
                 paused = 0 WHERE id = ?1",
                rusqlite::params![id, now(), exit_code],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// `kiln stop` asks (`true`) that container `id` is not started again by its restart
    /// policy; `kiln start` clears it.
    pub fn set_container_stop_requested(&self, id: &str, stop: bool) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE containers SET stop_requested = ?2 WHERE id = ?1",
                rusqlite::params![id, stop],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// Whether `kiln stop` asked that container `id` stays stopped.
    pub fn container_stop_requested(&self, id: &str) -> Result<bool, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT stop_requested FROM containers WHERE id = ?1")
            .map_err(self.db_err())?;
        let mut rows = stmt.query([id]).map_err(self.db_err())?;
        Ok(match rows.next().map_err(self.db_err())? {
            Some(r) => r.get::<_, i64>(0).map_err(self.db_err())? != 0,
            None => false,
        })
    }

    /// Records whether the OOM killer ended container `id`'s run.
    pub fn set_container_oom_killed(&self, id: &str, killed: bool) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE containers SET oom_killed = ?2 WHERE id = ?1",
                rusqlite::params![id, killed],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// Records whether container `id` is frozen (`kiln pause`, `kiln unpause`).
    pub fn set_container_paused(&self, id: &str, paused: bool) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE containers SET paused = ?2 WHERE id = ?1",
                rusqlite::params![id, paused],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// Records the host pid of the container's process 1, once it runs (what `kiln stop` and
    /// `kiln kill` signal).
    pub fn set_container_init(&self, id: &str, init: ProcessId) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE containers SET init_pid = ?2, init_start = ?3 WHERE id = ?1",
                rusqlite::params![id, init.pid, i64::try_from(init.start).unwrap_or(-1)],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// The container's process 1, while it runs.
    pub fn container_init(&self, id: &str) -> Result<Option<ProcessId>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT init_pid, init_start FROM containers WHERE id = ?1 AND exit_code IS NULL",
            )
            .map_err(self.db_err())?;
        let mut rows = stmt.query([id]).map_err(self.db_err())?;
        let Some(r) = rows.next().map_err(self.db_err())? else {
            return Ok(None);
        };
        let (pid, start): (Option<i32>, Option<i64>) = (
            r.get(0).map_err(self.db_err())?,
            r.get(1).map_err(self.db_err())?,
        );
        Ok(match (pid, start.and_then(|s| u64::try_from(s).ok())) {
            (Some(pid), Some(start)) => Some(ProcessId { pid, start }).filter(|p| p.alive()),
            _ => None,
        })
    }

    /// Gives container `id` the name `name`; [`StoreError::NameInUse`] when another has it.
    pub fn rename_container(&self, id: &str, name: &str) -> Result<(), StoreError> {
        let r = self.conn().execute(
            "UPDATE containers SET name = ?2 WHERE id = ?1",
            rusqlite::params![id, name],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                let holder = self
                    .find_container(name)?
                    .map_or_else(String::new, |o| o.id.chars().take(12).collect());
                Err(StoreError::NameInUse {
                    name: name.to_string(),
                    id: holder,
                })
            }
            Err(e) => Err(self.db_err()(e)),
        }
    }

    /// Records the health of container `id` (docker's `State.Health` as JSON: Status,
    /// FailingStreak, Log).
    pub fn set_container_health(
        &self,
        id: &str,
        health: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE containers SET health = ?2 WHERE id = ?1",
                rusqlite::params![id, health.to_string()],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// The health of container `id`, when it has a health check.
    pub fn container_health(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT health FROM containers WHERE id = ?1")
            .map_err(self.db_err())?;
        let mut rows = stmt.query([id]).map_err(self.db_err())?;
        let Some(r) = rows.next().map_err(self.db_err())? else {
            return Ok(None);
        };
        let text: Option<String> = r.get(0).map_err(self.db_err())?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Forgets container `id` (its directory is the caller's to remove first).
    pub fn remove_container(&self, id: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM containers WHERE id = ?1", [id])
            .map_err(self.db_err())?;
        Ok(())
    }

    /// Every container, newest first.
    pub fn containers(&self) -> Result<Vec<Container>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, name, image, command, created, pid, finished, exit_code, pid_start,
                 started, restarting, restart_count, paused, oom_killed, never_started
                 FROM containers ORDER BY created DESC, id",
            )
            .map_err(self.db_err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Container {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    image: r.get(2)?,
                    command: r.get(3)?,
                    created: r.get(4)?,
                    // A row without a start time (an older kiln wrote it) names no process
                    // for sure: it is taken as gone, never signalled by pid alone.
                    pid: match (r.get::<_, Option<i32>>(5)?, r.get::<_, Option<i64>>(8)?) {
                        (Some(pid), Some(start)) => u64::try_from(start)
                            .ok()
                            .map(|start| ProcessId { pid, start }),
                        _ => None,
                    },
                    finished: r.get(6)?,
                    exit_code: r.get(7)?,
                    started: r.get(9)?,
                    restarting: r.get::<_, i64>(10)? != 0,
                    restart_count: r.get(11)?,
                    paused: r.get::<_, i64>(12)? != 0,
                    oom_killed: r.get::<_, i64>(13)? != 0,
                    never_started: r.get::<_, i64>(14)? != 0,
                })
            })
            .map_err(self.db_err())?;
        rows.collect::<Result<_, _>>().map_err(self.db_err())
    }

    /// The container named `what`, or whose id is or starts with `what`.
    pub fn find_container(&self, what: &str) -> Result<Option<Container>, StoreError> {
        let all = self.containers()?;
        if let Some(c) = all.iter().find(|c| c.name == what || c.id == what) {
            return Ok(Some(c.clone()));
        }
        let mut by_prefix = all
            .into_iter()
            .filter(|c| !what.is_empty() && c.id.starts_with(what));
        Ok(match (by_prefix.next(), by_prefix.next()) {
            (Some(c), None) => Some(c),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, name: &str) -> Container {
        Container {
            id: id.into(),
            name: name.into(),
            image: "img".into(),
            command: "sh".into(),
            created: 1,
            pid: ProcessId::current(),
            ..Default::default()
        }
    }

    #[test]
    fn names_are_unique_and_states_follow_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.add_container(&c("aaaa1111", "web")).unwrap();
        let err = store.add_container(&c("bbbb2222", "web")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the container name \"web\" is already in use by container aaaa1111"
        );
        let found = store.find_container("aaaa").unwrap().unwrap();
        assert_eq!(found.state(), State::Running, "this test process is alive");
        store.finish_container("aaaa1111", 3).unwrap();
        assert_eq!(
            store.find_container("web").unwrap().unwrap().state(),
            State::Exited(3)
        );
        let mut dead = c("cccc3333", "gone");
        dead.pid = ProcessId::current().map(|p| ProcessId {
            start: p.start + 1,
            ..p
        });
        store.add_container(&dead).unwrap();
        assert_eq!(
            store.find_container("gone").unwrap().unwrap().state(),
            State::Dead
        );
        store.remove_container("aaaa1111").unwrap();
        assert!(store.find_container("web").unwrap().is_none());
        // The name is free again.
        store.add_container(&c("dddd4444", "web")).unwrap();
    }
}
