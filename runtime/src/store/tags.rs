//! Tags (`name:tag` → manifest digest) in SQLite, one transaction per change.

use super::{Store, StoreError, db::now};
use crate::digest::Digest;

/// A tag and what it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    pub digest: Digest,
    /// Seconds since the epoch when the tag was last set.
    pub updated: i64,
}

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tags (
    name    TEXT PRIMARY KEY,
    digest  TEXT NOT NULL,
    updated INTEGER NOT NULL
);
";

/// Normalises a reference the way docker does for local names ([`crate::reference::parse`]):
/// a missing tag means `latest`; a digest has no place in a tag's name.
/// Docker Hub names are kept in docker's short form: `docker.io/library/alpine` is `alpine`,
/// `docker.io/team/app` is `team/app`, so both spellings name one image.
pub fn normalize_tag(name: &str) -> Result<String, StoreError> {
    let mut r = crate::reference::parse(name)?;
    if r.digest.is_some() {
        return Err(StoreError::BadTag(name.to_string()));
    }
    if matches!(r.host.as_deref(), Some("docker.io" | "index.docker.io")) {
        r.host = None;
        if let Some(rest) = r.path.strip_prefix("library/").filter(|p| !p.contains('/')) {
            r.path = rest.to_string();
        }
    }
    Ok(r.tagged())
}

impl Store {
    /// Points `name` at `digest` (creating or moving the tag).
    pub fn set_tag(&self, name: &str, digest: &Digest) -> Result<String, StoreError> {
        let name = normalize_tag(name)?;
        // Its ID names it too; a manifest that cannot be read as an image is only tagged.
        let _ = self.note_image(digest);
        self.conn()
            .execute(
                "INSERT INTO tags (name, digest, updated) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET digest = excluded.digest, updated = excluded.updated",
                rusqlite::params![name, digest.to_string(), now()],
            )
            .map_err(self.db_err())?;
        Ok(name)
    }

    /// Names the image `source` (a tag or a manifest digest) `target` too; `None` when `source`
    /// names no image. Holds off `kiln cache prune` meanwhile, so an untagged image cannot be
    /// removed between finding it and tagging it.
    pub fn tag_image(&self, source: &str, target: &str) -> Result<Option<String>, StoreError> {
        let _guard = self.build_guard()?;
        match self.resolve(source)? {
            Some(d) => self.set_tag(target, &d).map(Some),
            None => Ok(None),
        }
    }

    /// The digest `name` points at.
    pub fn resolve_tag(&self, name: &str) -> Result<Option<Digest>, StoreError> {
        let name = normalize_tag(name)?;
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT digest FROM tags WHERE name = ?1")
            .map_err(self.db_err())?;
        let mut rows = stmt.query([&name]).map_err(self.db_err())?;
        match rows.next().map_err(self.db_err())? {
            None => Ok(None),
            Some(row) => {
                let s: String = row.get(0).map_err(self.db_err())?;
                Ok(Digest::parse(&s).ok())
            }
        }
    }

    /// Removes a tag; true when it existed.
    pub fn remove_tag(&self, name: &str) -> Result<bool, StoreError> {
        let name = normalize_tag(name)?;
        let n = self
            .conn()
            .execute("DELETE FROM tags WHERE name = ?1", [&name])
            .map_err(self.db_err())?;
        Ok(n > 0)
    }

    /// Every tag, sorted by name.
    pub fn tags(&self) -> Result<Vec<Tag>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT name, digest, updated FROM tags ORDER BY name")
            .map_err(self.db_err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(self.db_err())?;
        let mut out = Vec::new();
        for row in rows {
            let (name, digest, updated) = row.map_err(self.db_err())?;
            if let Ok(digest) = Digest::parse(&digest) {
                out.push(Tag {
                    name,
                    digest,
                    updated,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_normalisation() {
        assert_eq!(normalize_tag("app").unwrap(), "app:latest");
        assert_eq!(normalize_tag("app:1.0").unwrap(), "app:1.0");
        assert_eq!(
            normalize_tag("localhost:5000/team/app").unwrap(),
            "localhost:5000/team/app:latest"
        );
        assert_eq!(
            normalize_tag("docker.io/library/alpine").unwrap(),
            "alpine:latest"
        );
        assert_eq!(
            normalize_tag("index.docker.io/team/app:1").unwrap(),
            "team/app:1"
        );
        assert_eq!(
            normalize_tag("localhost:5000/app:v2").unwrap(),
            "localhost:5000/app:v2"
        );
        for bad in [
            "",
            "App",
            "a b",
            "app:",
            "app:-x",
            "a//b",
            "app:t@g",
            "../../../etc/passwd",
            "a:b:c",
        ] {
            assert!(normalize_tag(bad).is_err(), "{bad}");
        }
    }
}
