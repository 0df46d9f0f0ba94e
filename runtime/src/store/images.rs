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
    /// Sum of the layer blob sizes.
    pub size: u64,
}

impl Store {
    /// The manifest digest a user's word names: a tag, or a manifest digest in the store.
    /// A reference pinned by digest (`app@sha256:...`, `app:1@sha256:...`) names that
    /// manifest, whatever the tag says now, as in docker.
    pub fn resolve(&self, name: &str) -> Result<Option<Digest>, StoreError> {
        if let Ok(d) = Digest::parse(name) {
            return Ok(self.has_blob(&d).then_some(d));
        }
        if let Some(pinned) = crate::reference::parse(name)?.digest {
            let d = Digest::parse(&pinned).map_err(|e| StoreError::BadTag(e.to_string()))?;
            return Ok(self.has_blob(&d).then_some(d));
        }
        self.resolve_tag(name)
    }

    /// Reads a manifest and its config.
    pub fn image(&self, manifest: &Digest) -> Result<(Manifest, ImageConfig, Digest), StoreError> {
        let bad = |what: &str, e: serde_json::Error| StoreError::BadLayout {
            path: self.blob_path(manifest),
            reason: format!("{what}: {e}"),
        };
        let m: Manifest =
            serde_json::from_slice(&self.read_blob(manifest)?).map_err(|e| bad("manifest", e))?;
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
        let size = m.layers.iter().map(|l| l.size).sum::<u64>();
        let comment = c
            .history
            .last()
            .and_then(|h| h.comment.clone())
            .unwrap_or_default();
        Ok(serde_json::json!({
            "Id": config.to_string(),
            "RepoTags": tags,
            "RepoDigests": [],
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
            "History": c.history,
        }))
    }

    /// Every tagged image, sorted by name.
    pub fn images(&self) -> Result<Vec<ImageSummary>, StoreError> {
        let mut out = Vec::new();
        for t in self.tags()? {
            let (m, c, config) = self.image(&t.digest)?;
            out.push(ImageSummary {
                name: t.name,
                manifest: t.digest,
                config,
                created: c.created,
                size: m.layers.iter().map(|l| l.size).sum(),
            });
        }
        Ok(out)
    }
}
