//! Volumes, docker's `local` driver: a directory `volumes/NAME/_data` in the store that
//! containers mount, outliving them. Named ones (`kiln volume create NAME`, `-v NAME:/path`)
//! and anonymous ones (an image's VOLUME, `-v /path`), whose names are 64 hex digits and which
//! `rm -v`, `--rm` and `volume prune` remove. Names follow docker's grammar, so a name never
//! leaves the volumes directory.

use std::{collections::BTreeMap, path::PathBuf};

use super::{Store, StoreError, db::now, io_err};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS volumes (
    name      TEXT PRIMARY KEY,
    labels    TEXT NOT NULL,
    created   INTEGER NOT NULL,
    anonymous INTEGER NOT NULL
);
";

/// Columns added since the table was first made (applied once; an existing one is kept).
pub(super) const ADDED_COLUMNS: [&str; 1] =
    ["ALTER TABLE volumes ADD COLUMN options TEXT NOT NULL DEFAULT '{}'"];

/// One volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub created: i64,
    pub anonymous: bool,
    /// Where its data is (`Mountpoint`).
    pub mountpoint: PathBuf,
    /// The local driver's `-o` options (`type`, `device`, `o`): what is mounted at the
    /// mountpoint while containers use it ([`crate::container::volume_mount`]); empty: a
    /// plain directory.
    pub options: BTreeMap<String, String>,
}

/// docker's volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_volume_name(name: &str) -> bool {
    let mut b = name.bytes();
    name.len() >= 2
        && b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

impl Store {
    /// The directory volume `name`'s data is in.
    pub fn volume_path(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name).join("_data")
    }

    /// Creates volume `name` (a new anonymous one with `None`) with `labels` and driver
    /// `options`; an existing volume of that name is returned as it is, as docker's `volume
    /// create` does.
    pub fn create_volume(
        &self,
        name: Option<&str>,
        (labels, options): (&BTreeMap<String, String>, &BTreeMap<String, String>),
    ) -> Result<Volume, StoreError> {
        let (name, anonymous) = match name {
            Some(n) if !valid_volume_name(n) => {
                return Err(StoreError::Conflict(format!(
                    "{n:?} includes invalid characters for a local volume name, only \
                     \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed"
                )));
            }
            Some(n) => (n.to_string(), false),
            None => (crate::container::new_id(), true),
        };
        if let Some(v) = self.volume(&name)? {
            return Ok(v);
        }
        let data = self.volume_path(&name);
        std::fs::create_dir_all(&data).map_err(io_err(&data))?;
        let labels_json = serde_json::to_string(labels).unwrap_or_else(|_| "{}".into());
        let options_json = serde_json::to_string(options).unwrap_or_else(|_| "{}".into());
        self.conn()
            .execute(
                "INSERT OR IGNORE INTO volumes (name, labels, created, anonymous, options) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![name, labels_json, now(), anonymous, options_json],
            )
            .map_err(self.db_err())?;
        self.volume(&name)?
            .ok_or_else(|| StoreError::Conflict(format!("volume {name} vanished")))
    }

    /// Volume `name`, if there is one.
    pub fn volume(&self, name: &str) -> Result<Option<Volume>, StoreError> {
        Ok(self.volumes()?.into_iter().find(|v| v.name == name))
    }

    /// Every volume, by name.
    pub fn volumes(&self) -> Result<Vec<Volume>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT name, labels, created, anonymous, options FROM volumes ORDER BY name",
            )
            .map_err(self.db_err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(self.db_err())?;
        let mut out = Vec::new();
        for row in rows {
            let (name, labels, created, anonymous, options) = row.map_err(self.db_err())?;
            out.push(Volume {
                mountpoint: self.volume_path(&name),
                labels: serde_json::from_str(&labels).unwrap_or_default(),
                options: serde_json::from_str(&options).unwrap_or_default(),
                name,
                created,
                anonymous,
            });
        }
        Ok(out)
    }

    /// Forgets volume `name` and removes its data (the caller checked no container uses it).
    pub fn remove_volume(&self, name: &str) -> Result<bool, StoreError> {
        if !valid_volume_name(name) {
            return Ok(false);
        }
        let n = self
            .conn()
            .execute("DELETE FROM volumes WHERE name = ?1", [name])
            .map_err(self.db_err())?;
        let dir = self.root.join("volumes").join(name);
        // What a volume's options mounted there (a tmpfs, a bound host directory) comes off
        // first: removing the tree with it still mounted would delete what it is bound to.
        for m in super::mounts_under(&dir) {
            let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
        }
        if !super::mounts_under(&dir).is_empty() {
            return Err(StoreError::Conflict(format!(
                "volume {name}: its filesystem is still mounted at {}",
                dir.display()
            )));
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&dir)(e)),
        }
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_grammar_and_create_is_idempotent() {
        for ok in ["db", "my_vol.1", "A-b", "0x"] {
            assert!(valid_volume_name(ok), "{ok}");
        }
        for bad in ["", "a", "-a", ".a", "../x", "a/b", "a b", "_x"] {
            assert!(!valid_volume_name(bad), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let labels = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let none = BTreeMap::new();
        let v = store.create_volume(Some("data"), (&labels, &none)).unwrap();
        assert!(v.mountpoint.is_dir() && !v.anonymous);
        assert_eq!(v.mountpoint, dir.path().join("volumes/data/_data"));
        std::fs::write(v.mountpoint.join("kept"), "x").unwrap();
        // Again: the same volume, its data kept.
        let again = store.create_volume(Some("data"), (&none, &none)).unwrap();
        assert_eq!(again.labels, labels);
        assert!(again.mountpoint.join("kept").exists());
        let anon = store.create_volume(None, (&none, &none)).unwrap();
        assert!(anon.anonymous && anon.name.len() == 64);
        assert!(store.create_volume(Some("../etc"), (&none, &none)).is_err());
        assert_eq!(store.volumes().unwrap().len(), 2);
        assert!(store.remove_volume("data").unwrap());
        assert!(!dir.path().join("volumes/data").exists());
        assert!(!store.remove_volume("data").unwrap());
    }
}
