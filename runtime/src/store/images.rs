//! Image summaries for `kiln images`, and resolving what a user names (tag or digest).

use super::{Store, StoreError};
use crate::{
    digest::Digest,
    oci::{ImageConfig, Manifest},
};

/// One tagged image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// `repository:tag`.
    pub name: String,
    pub manifest: Digest,
    /// The image ID, as docker shows it: the config digest.
    pub config: Digest,
    /// RFC 3339, as written in the config.
    pub created: Option<String>,
    /// What the layers hold unpacked, as docker counts it ([`Store::content_size`]).
    pub size: u64,
}

/// What `kiln rmi` removed: tags, and the image ID once nothing names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub untagged: Vec<String>,
    pub deleted: Option<Digest>,
}

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS images (
    manifest TEXT PRIMARY KEY,
    config   TEXT NOT NULL,
    created  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS images_by_config ON images (config);
CREATE TABLE IF NOT EXISTS repo_digests (
    repo     TEXT NOT NULL,
    digest   TEXT NOT NULL,
    manifest TEXT NOT NULL,
    PRIMARY KEY (repo, manifest)
);
";

/// The repository part of a reference as docker's RepoDigests name it (`busybox`,
/// `localhost:5000/app`): the local name without its tag or digest.
fn repository_of(reference: &str) -> Option<String> {
    let tagged = super::normalize_tag(reference.split('@').next().unwrap_or(reference)).ok()?;
    let slash = tagged.rfind('/').map_or(0, |i| i + 1);
    Some(match tagged[slash..].rfind(':') {
        Some(i) => tagged[..slash + i].to_string(),
        None => tagged,
    })
}

/// Whether `s` may be an image ID or a prefix of one (`sha256:` optional): lowercase hex.
fn id_prefix(s: &str) -> Option<&str> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    (!hex.is_empty()
        && hex.len() <= 64
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    .then_some(hex)
}

impl Store {
    /// The manifest digest a user's word names, with docker's precedence: a full image ID
    /// (`sha256:` and 64 hex digits: the config digest; or a manifest digest in the store), a
    /// reference pinned by digest (`app@sha256:...` names that manifest, whatever the tag says
    /// now), a tag, and last a unique prefix of an image ID (`439ae1339be8`, as `kiln images`
    /// shows it). A prefix that several images share is an error.
    pub fn resolve(&self, name: &str) -> Result<Option<Digest>, StoreError> {
        let full = match Digest::parse(name) {
            Ok(d) => Some(d),
            Err(_) if name.len() == 64 => Digest::parse(&format!("sha256:{name}")).ok(),
            Err(_) => None,
        };
        if let Some(d) = full {
            if let Some(m) = self.image_by_id(d.hex())? {
                return Ok(Some(m));
            }
            return Ok(self.has_blob(&d).then_some(d));
        }
        if let Some(pinned) = crate::reference::parse(name).ok().and_then(|r| r.digest) {
            let d = Digest::parse(&pinned).map_err(|e| StoreError::BadTag(e.to_string()))?;
            return Ok(self.has_blob(&d).then_some(d));
        }
        let tagged = match crate::reference::parse(name) {
            Ok(_) => self.resolve_tag(name)?,
            // Not a name at all: only an ID prefix (`sha256:439a`) can still match.
            Err(e) if id_prefix(name).is_none() => return Err(e.into()),
            Err(_) => None,
        };
        if tagged.is_some() {
            return Ok(tagged);
        }
        match id_prefix(name) {
            Some(hex) => self.image_by_id(hex),
            None => Ok(None),
        }
    }

    /// An image's size as `docker images` shows it: what its layers hold unpacked, counted as
    /// docker's `directory.Size` counts a layer's directory (every regular file's size once,
    /// hard links not again, a symlink's target length, directories nothing), summed over the
    /// layers. The same for every tag of the image, and whatever the compression.
    pub fn content_size(&self, m: &Manifest) -> Result<u64, StoreError> {
        let mut total = 0u64;
        for l in &m.layers {
            total += self.layer_content_size(&l.digest)?;
        }
        Ok(total)
    }

    /// One layer's part of [`Store::content_size`] (`docker history`'s SIZE), by its blob
    /// digest.
    pub fn layer_content_size(&self, digest: &str) -> Result<u64, StoreError> {
        // Checked when the image came in; a digest that is not one names nothing to count.
        let Ok(blob) = Digest::parse(digest) else {
            return Ok(0);
        };
        let entries = match self.layer_entries(&blob) {
            Ok(e) => e,
            // A layer only a registry has (an image joined by `kiln manifest create`).
            Err(_) if !self.has_blob(&blob) => return Ok(0),
            Err(e) => return Err(e),
        };
        Ok(entries
            .iter()
            .map(|e| match e.typeflag {
                b'0' | b'\0' | b'7' => e.size,
                b'2' => e.link.as_ref().map_or(0, |t| t.len() as u64),
                _ => 0,
            })
            .sum())
    }

    /// `kiln rmi NAME|ID`, as docker: a tag is removed; an ID removes every tag of the image
    /// (refused without `force` when they name more than one repository). Once no tag names
    /// the image, its ID no longer does either (`Deleted`); its blobs go with the next prune.
    /// `Ok(None)`: nothing is named so.
    pub fn remove_image(&self, name: &str, force: bool) -> Result<Option<Removed>, StoreError> {
        let is_tag = super::normalize_tag(name)
            .ok()
            .filter(|_| self.resolve_tag(name).ok().flatten().is_some());
        let (manifest, untag) = match is_tag {
            Some(tag) => {
                let Some(m) = self.resolve_tag(&tag)? else {
                    return Ok(None);
                };
                (m, vec![tag])
            }
            None => {
                let Some(m) = self.resolve(name)? else {
                    return Ok(None);
                };
                let id = self.image_id(&m)?;
                let tags: Vec<String> = self
                    .tags()?
                    .into_iter()
                    .filter(|t| self.image_id(&t.digest).is_ok_and(|i| i == id))
                    .map(|t| t.name)
                    .collect();
                let mut repos: Vec<&str> = tags
                    .iter()
                    .map(|t| t.rsplit_once(':').map_or(t.as_str(), |(r, _)| r))
                    .collect();
                repos.sort_unstable();
                repos.dedup();
                if repos.len() > 1 && !force {
                    return Err(StoreError::Conflict(format!(
                        "unable to delete {} (must be forced): the image is referenced in \
                         multiple repositories ({})",
                        &id.hex()[..12],
                        repos.join(", ")
                    )));
                }
                (m, tags)
            }
        };
        let (id, config) = self.id_and_config(&manifest)?;
        for t in &untag {
            self.remove_tag(t)?;
        }
        // What the names left hold, each read once.
        let left: Vec<(Digest, Digest)> = self
            .tags()?
            .iter()
            .filter_map(|t| self.id_and_config(&t.digest).ok())
            .collect();
        // A multi-platform image's ID is its index's; its row is its host image's config's,
        // which another name may still use alone.
        if !left.iter().any(|(_, c)| *c == config) {
            self.conn()
                .execute("DELETE FROM images WHERE config = ?1", [config.to_string()])
                .map_err(self.db_err())?;
        }
        let deleted = (!left.iter().any(|(i, _)| *i == id)).then_some(id);
        Ok(Some(Removed {
            untagged: untag,
            deleted,
        }))
    }

    /// The image's ID as docker shows it: its config's digest, or for a multi-platform image its
    /// index's digest (docker's containerd store).
    pub fn image_id(&self, manifest: &Digest) -> Result<Digest, StoreError> {
        Ok(self.id_and_config(manifest)?.0)
    }

    /// [`Store::image_id`] and the digest of the config this machine would run.
    fn id_and_config(&self, manifest: &Digest) -> Result<(Digest, Digest), StoreError> {
        let config = self.image(manifest)?.2;
        Ok((self.id_with(manifest, config)?, config))
    }

    /// The ID of the image `manifest` names, its host image's config (`config`) already known.
    fn id_with(&self, manifest: &Digest, config: Digest) -> Result<Digest, StoreError> {
        Ok(if self.read_index(manifest)?.is_some() {
            *manifest
        } else {
            config
        })
    }

    /// `kiln image prune`: forgets untagged images (`all`: also untags every image no
    /// container was made from), then removes the blobs nothing references any more, as
    /// `kiln cache prune --filter type=unreferenced` would (build cache entries stay). Returns
    /// the IDs of the images that went and the bytes freed.
    pub fn prune_images(&self, all: bool) -> Result<(Vec<Digest>, u64), StoreError> {
        let tagged: Vec<super::Tag> = self.tags()?;
        let mut gone = std::collections::BTreeSet::new();
        if all {
            let used: std::collections::BTreeSet<Digest> = self
                .containers()?
                .iter()
                .filter_map(|c| self.resolve(&c.image).ok().flatten())
                .collect();
            for t in &tagged {
                if !used.contains(&t.digest) {
                    self.remove_tag(&t.name)?;
                    if let Ok((_, _, config)) = self.image(&t.digest) {
                        gone.insert(config);
                    }
                }
            }
        }
        let still: std::collections::BTreeSet<String> = self
            .tags()?
            .iter()
            .flat_map(|t| self.manifests_of(&t.digest))
            .map(|d| d.to_string())
            .collect();
        let dangling: Vec<(String, String)> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare("SELECT manifest, config FROM images")
                .map_err(self.db_err())?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(self.db_err())?
                .collect::<Result<_, _>>()
                .map_err(self.db_err())?
        };
        for (manifest, config) in dangling {
            if still.contains(&manifest) {
                continue;
            }
            self.conn()
                .execute("DELETE FROM images WHERE manifest = ?1", [&manifest])
                .map_err(self.db_err())?;
            if let Ok(d) = Digest::parse(&config) {
                gone.insert(d);
            }
        }
        // An image a tag still names (through another manifest of the same config) stays.
        for t in self.tags()? {
            if let Ok((_, _, config)) = self.image(&t.digest) {
                gone.remove(&config);
            }
        }
        let opts = super::PruneOptions {
            kinds: vec![super::usage::Kind::Unreferenced],
            ..Default::default()
        };
        let (_, freed) = self.cache_prune(&opts)?;
        Ok((gone.into_iter().collect(), freed))
    }

    /// Records that the local image `manifest` is served by a registry as `reference`'s
    /// repository at `digest` (after a pull or a push): docker's `RepoDigests`, which
    /// deploy-by-digest scripts read.
    pub fn record_repo_digest(
        &self,
        reference: &str,
        digest: &Digest,
        manifest: &Digest,
    ) -> Result<(), StoreError> {
        let Some(repo) = repository_of(reference) else {
            return Ok(());
        };
        self.conn()
            .execute(
                "INSERT INTO repo_digests (repo, digest, manifest) VALUES (?1, ?2, ?3)
                 ON CONFLICT(repo, manifest) DO UPDATE SET digest = excluded.digest",
                rusqlite::params![repo, digest.to_string(), manifest.to_string()],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// `repo@digest` for every registry digest recorded for the image whose ID is `config`.
    pub fn repo_digests(&self, config: &Digest) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT DISTINCT r.repo || '@' || r.digest FROM repo_digests r
                 JOIN images i ON i.manifest = r.manifest WHERE i.config = ?1 ORDER BY 1",
            )
            .map_err(self.db_err())?;
        stmt.query_map([config.to_string()], |r| r.get(0))
            .map_err(self.db_err())?
            .collect::<Result<_, _>>()
            .map_err(self.db_err())
    }

    /// Records every tagged image when the `images` table is still empty (a store made before
    /// it existed), so their IDs name them; once, under the store's open lock.
    pub(super) fn backfill_images(&self) -> Result<(), StoreError> {
        let empty: bool = self
            .conn()
            .query_row("SELECT NOT EXISTS (SELECT 1 FROM images)", [], |r| r.get(0))
            .map_err(self.db_err())?;
        if empty {
            for t in self.tags()? {
                // A damaged manifest must not keep the store from opening (verify reports it).
                let _ = self.note_image(&t.digest);
            }
        }
        Ok(())
    }

    /// Records that `manifest` is an image (its config digest is its ID), so its ID names it
    /// even with no tag (`kiln run $(kiln build -q .)`). A manifest kiln cannot read as an image
    /// is not recorded.
    pub fn note_image(&self, manifest: &Digest) -> Result<(), StoreError> {
        let bytes = match self.read_blob(manifest) {
            Ok(b) => b,
            Err(StoreError::MissingBlob(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if super::is_index(&bytes) {
            // Each image of an index names itself by its own ID; the index's ID is its digest.
            for child in self.manifests_of(manifest).into_iter().skip(1) {
                self.note_image(&child)?;
            }
            self.conn()
                .execute(
                    "INSERT INTO images (manifest, config, created) VALUES (?1, ?1, ?2)
                     ON CONFLICT(manifest) DO UPDATE SET created = excluded.created",
                    rusqlite::params![manifest.to_string(), super::db::now()],
                )
                .map_err(self.db_err())?;
            return Ok(());
        }
        let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) else {
            return Ok(());
        };
        self.conn()
            .execute(
                "INSERT INTO images (manifest, config, created) VALUES (?1, ?2, ?3)
                 ON CONFLICT(manifest) DO UPDATE SET created = excluded.created",
                rusqlite::params![manifest.to_string(), m.config.digest, super::db::now()],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// The manifest of the image whose ID (config digest) is, or starts with, `hex`: the one a
    /// tag points at when there is one, else the newest recorded whose manifest is still in
    /// the store. `None` when none; an error when the prefix names several images.
    fn image_by_id(&self, hex: &str) -> Result<Option<Digest>, StoreError> {
        let pattern = format!("sha256:{hex}%");
        let rows: Vec<(String, String)> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT config, manifest FROM images WHERE config LIKE ?1
                     ORDER BY (SELECT COUNT(*) FROM tags WHERE tags.digest = images.manifest) DESC,
                              created DESC",
                )
                .map_err(self.db_err())?;
            stmt.query_map([&pattern], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(self.db_err())?
                .collect::<Result<_, _>>()
                .map_err(self.db_err())?
        };
        let present: Vec<(String, Digest)> = rows
            .into_iter()
            .filter_map(|(c, m)| Some((c, Digest::parse(&m).ok()?)))
            .filter(|(_, m)| self.has_blob(m))
            .collect();
        let mut ids: Vec<&str> = present.iter().map(|(c, _)| c.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > 1 {
            return Err(StoreError::Ambiguous {
                prefix: hex.to_string(),
                count: ids.len(),
            });
        }
        Ok(present.into_iter().next().map(|(_, m)| m))
    }

    /// Reads an image's manifest and config: `digest`'s own, or for an index, the image for
    /// this machine's platform (else its first; [`Store::platform_manifest`]).
    pub fn image(&self, digest: &Digest) -> Result<(Manifest, ImageConfig, Digest), StoreError> {
        // Read once: an image manifest (the usual case) is parsed from these bytes.
        let bytes = self.read_blob(digest)?;
        if super::is_index(&bytes) {
            return self.image_of_manifest(&self.platform_manifest(digest, None)?);
        }
        self.image_from(digest, &bytes)
    }

    /// Reads the image for `want` that `digest` names (an index's entry for it, or a manifest
    /// for it); returns the manifest's digest too.
    pub fn image_for(
        &self,
        digest: &Digest,
        want: &crate::oci::Platform,
    ) -> Result<(Digest, Manifest, ImageConfig, Digest), StoreError> {
        let manifest = self.platform_manifest(digest, Some(want))?;
        let (m, c, config) = self.image_of_manifest(&manifest)?;
        Ok((manifest, m, c, config))
    }

    /// Reads a manifest and its config.
    pub(super) fn image_of_manifest(
        &self,
        manifest: &Digest,
    ) -> Result<(Manifest, ImageConfig, Digest), StoreError> {
        self.image_from(manifest, &self.read_blob(manifest)?)
    }

    /// [`Store::image_of_manifest`] of a manifest already read (`bytes`).
    fn image_from(
        &self,
        manifest: &Digest,
        bytes: &[u8],
    ) -> Result<(Manifest, ImageConfig, Digest), StoreError> {
        let bad = |what: &str, e: serde_json::Error| StoreError::BadLayout {
            path: self.blob_path(manifest),
            reason: format!("{what}: {e}"),
        };
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad("manifest", e))?;
        let config_digest = Digest::parse(&m.config.digest).map_err(|e| StoreError::BadLayout {
            path: self.blob_path(manifest),
            reason: e.to_string(),
        })?;
        let c: ImageConfig = serde_json::from_slice(&self.read_blob(&config_digest)?)
            .map_err(|e| bad("config", e))?;
        Ok((m, c, config_digest))
    }

    /// `docker inspect`-shaped JSON for an image.
    pub fn inspect(&self, manifest: &Digest) -> Result<serde_json::Value, StoreError> {
        let (m, c, config) = self.image(manifest)?;
        let platforms: Vec<String> = self
            .platforms_of(manifest)?
            .iter()
            .map(|(p, _)| p.to_string())
            .collect();
        // The rest describes the image this machine would run.
        let id = self.id_with(manifest, config)?;
        let tags: Vec<String> = self
            .tags()?
            .into_iter()
            .filter(|t| &t.digest == manifest)
            .map(|t| t.name)
            .collect();
        // docker's Config shape: every field, at its zero value when the image sets none, so
        // scripts reading `.Config.Tty` or `.Config.Cmd` with jq get what docker gives them.
        let mut cfg = serde_json::json!({
            "Hostname": "", "Domainname": "", "User": "",
            "AttachStdin": false, "AttachStdout": false, "AttachStderr": false,
            "Tty": false, "OpenStdin": false, "StdinOnce": false,
            "Env": null, "Cmd": null, "Image": "", "Volumes": null, "WorkingDir": "",
            "Entrypoint": null, "OnBuild": null, "Labels": null,
        });
        if let (Some(all), serde_json::Value::Object(set)) = (
            cfg.as_object_mut(),
            serde_json::to_value(&c.config).unwrap_or_default(),
        ) {
            all.extend(set);
        }
        // docker's Size: what the layers hold unpacked.
        let size = self.content_size(&m)?;
        let comment = c
            .history
            .last()
            .and_then(|h| h.comment.clone())
            .unwrap_or_default();
        Ok(serde_json::json!({
            "Id": id.to_string(),
            "RepoTags": tags,
            "RepoDigests": self.repo_digests(&config)?,
            "Parent": "",
            "Comment": comment,
            "Created": c.created,
            "Container": "",
            "DockerVersion": "",
            "Author": c.author.clone().unwrap_or_default(),
            "Config": cfg,
            "Architecture": c.architecture,
            "Os": c.os,
            "Variant": c.variant,
            "Size": size,
            "VirtualSize": size,
            "RootFS": {"Type": c.rootfs.kind, "Layers": c.rootfs.diff_ids},
            "Manifest": manifest.to_string(),
            "Platforms": platforms,
            "History": c.history,
        }))
    }

    /// Every tagged image, sorted by name.
    /// Images no tag names (an untagged build, an image whose tag moved on) whose manifest is
    /// still in the store, one per ID: docker's dangling `<none>:<none>` rows.
    pub fn dangling_images(&self) -> Result<Vec<ImageSummary>, StoreError> {
        let tagged: std::collections::BTreeSet<Digest> = self
            .tags()?
            .iter()
            .flat_map(|t| self.manifests_of(&t.digest))
            .filter_map(|d| self.image_of_manifest(&d).ok().map(|(_, _, c)| c))
            .collect();
        let rows: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached("SELECT manifest FROM images ORDER BY created DESC")
                .map_err(self.db_err())?;
            stmt.query_map([], |r| r.get(0))
                .map_err(self.db_err())?
                .collect::<Result<_, _>>()
                .map_err(self.db_err())?
        };
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for m in rows {
            let Ok(manifest) = Digest::parse(&m) else {
                continue;
            };
            if !self.has_blob(&manifest) {
                continue;
            }
            // An index is listed through its images.
            if self.read_index(&manifest).ok().flatten().is_some() {
                continue;
            }
            let Ok((doc, c, config)) = self.image(&manifest) else {
                continue;
            };
            // A build cache imported (`--cache-from`) is no image.
            if doc.config.media_type == crate::oci::MEDIA_KILN_CACHE_CONFIG {
                continue;
            }
            if tagged.contains(&config) || !seen.insert(config) {
                continue;
            }
            out.push(ImageSummary {
                name: "<none>:<none>".into(),
                manifest,
                config,
                created: c.created,
                size: self.content_size(&doc)?,
            });
        }
        Ok(out)
    }

    pub fn images(&self) -> Result<Vec<ImageSummary>, StoreError> {
        let mut out = Vec::new();
        for t in self.tags()? {
            let (m, c, config) = self.image(&t.digest)?;
            // A multi-platform image's ID is its index's digest, as docker's containerd store
            // shows it; its size, the image this machine would run.
            let is_index = self.read_index(&t.digest)?.is_some();
            out.push(ImageSummary {
                name: t.name,
                manifest: t.digest,
                config: if is_index { t.digest } else { config },
                created: c.created,
                size: self.content_size(&m)?,
            });
        }
        Ok(out)
    }
}
