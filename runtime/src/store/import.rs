//! `kiln load`: images from an OCI image layout (a directory, or a tar of one, optionally
//! gzipped) into the store. Every blob is copied with its digest and size checked, and every
//! image is checked whole ([`super::integrity`]: media types, sizes, layer count, each layer's
//! diff_id) before its manifest is stored; a nested index (multi-platform image) comes in
//! whole, with every image of it the layout holds.

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
};

use super::{Store, StoreError, io_err};
use crate::{
    digest::Digest,
    oci::{self, Descriptor, Index, Manifest},
};

/// An image that was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The tag it was stored under, when the layout named one.
    pub reference: Option<String>,
    pub manifest: Digest,
}

fn bad(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::BadLayout {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The name to tag an imported manifest with: containerd's full name, else the OCI ref name
/// when it is a full reference. When the ref name is only a tag (as `skopeo copy
/// oci-archive:x.tar:latest` and `docker save` write), the image is named after the archive:
/// `localhost/<archive name>:<tag>`, the way podman names local images (docker would leave it
/// unnamed).
fn reference_of(
    annotations: &BTreeMap<String, String>,
    archive_name: Option<&str>,
) -> Option<String> {
    if let Some(n) = annotations.get("io.containerd.image.name") {
        return Some(n.clone());
    }
    let r = annotations.get("org.opencontainers.image.ref.name")?;
    if r.contains(':') || r.contains('/') {
        return Some(r.clone());
    }
    archive_name.map(|repo| format!("localhost/{repo}:{r}"))
}

/// A repository name from an archive or directory name: `busybox-oci.tar` → `busybox`.
pub(crate) fn archive_repo(path: &Path) -> Option<String> {
    let mut name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    for ext in [".tar.gz", ".tgz", ".tar", ".gz"] {
        if let Some(s) = name.strip_suffix(ext) {
            name = s.to_string();
            break;
        }
    }
    for suffix in ["-oci", ".oci", "_oci", "-docker", "-image"] {
        if let Some(s) = name.strip_suffix(suffix) {
            name = s.to_string();
            break;
        }
    }
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches(|c| "._-".contains(c)).to_string();
    (!clean.is_empty()).then_some(clean)
}

impl Store {
    /// Loads a layout directory or an archive of one. Holds off `kiln cache prune` until the
    /// images are tagged: a blob found already in the store (and not written again) must not be
    /// pruned before the tag that needs it exists.
    pub fn load(&self, path: &Path) -> Result<Vec<Loaded>, StoreError> {
        self.load_path(path, archive_repo(path))
    }

    /// [`Store::load`], naming tag-only images after `repo` (none: they stay unnamed).
    fn load_path(&self, path: &Path, repo: Option<String>) -> Result<Vec<Loaded>, StoreError> {
        let _guard = self.build_guard()?;
        let meta = std::fs::metadata(path).map_err(io_err(path))?;
        if meta.is_dir() {
            return self.load_layout_named(path, repo.as_deref());
        }
        let dir = self
            .root
            .join("tmp")
            .join(format!("load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let result = (|| {
            let mut file = std::fs::File::open(path).map_err(io_err(path))?;
            let mut magic = [0u8; 2];
            let n = file.read(&mut magic).map_err(io_err(path))?;
            let file = std::fs::File::open(path).map_err(io_err(path))?;
            let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
                Box::new(flate2::read::GzDecoder::new(file))
            } else {
                Box::new(file)
            };
            // `Archive::unpack` refuses entries that would land outside `dir` (`..`, absolute
            // paths, links leading out), so a hostile archive cannot write elsewhere.
            tar::Archive::new(reader)
                .unpack(&dir)
                .map_err(|e| bad(path, format!("not a readable tar archive: {e}")))?;
            self.load_layout_named(&dir, repo.as_deref())
        })();
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// Loads an archive read from `r` (`kiln load < x.tar`, as docker does): copied into the
    /// store's `tmp/` first (a tar must be read whole before its index is known), then loaded
    /// as a file, and removed either way.
    pub fn load_from(&self, mut r: impl Read) -> Result<Vec<Loaded>, StoreError> {
        let path = self
            .root
            .join("tmp")
            .join(format!("stdin-{}.tar", super::blobs::tmp_name()));
        let result = (|| {
            let mut f = std::fs::File::create(&path).map_err(io_err(&path))?;
            std::io::copy(&mut r, &mut f).map_err(io_err(&path))?;
            drop(f);
            // No archive name to name a tag-only image after: it stays unnamed, as in docker.
            self.load_path(&path, None)
        })();
        let _ = std::fs::remove_file(&path);
        result
    }

    /// Loads every image named by `dir/index.json`.
    pub fn load_layout(&self, dir: &Path) -> Result<Vec<Loaded>, StoreError> {
        let _guard = self.build_guard()?;
        self.load_layout_named(dir, archive_repo(dir).as_deref())
    }

    /// A legacy docker archive (`manifest.json` with `Config`, `RepoTags`, `Layers`, as
    /// `docker save` wrote before Docker 25): turned into OCI manifests in the store.
    fn load_docker_archive(&self, dir: &Path) -> Result<Vec<Loaded>, StoreError> {
        let mf = dir.join("manifest.json");
        let entries: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(&mf).map_err(io_err(&mf))?)
                .map_err(|e| bad(&mf, e.to_string()))?;
        for e in &entries {
            for t in e["RepoTags"].as_array().into_iter().flatten() {
                let t = t.as_str().unwrap_or_default();
                super::normalize_tag(t).map_err(|err| bad(&mf, err.to_string()))?;
            }
        }
        let mut out = Vec::new();
        for e in entries {
            let rel = |v: &serde_json::Value| -> Result<PathBuf, StoreError> {
                let s = v
                    .as_str()
                    .ok_or_else(|| bad(&mf, "expected a path string"))?;
                // Paths inside the archive only: no absolute paths, no `..`.
                if s.starts_with('/') || s.split('/').any(|c| c == "..") {
                    return Err(bad(&mf, format!("path {s:?} leaves the archive")));
                }
                Ok(dir.join(s))
            };
            let config_path = rel(&e["Config"])?;
            let config_bytes = std::fs::read(&config_path).map_err(io_err(&config_path))?;
            let config_digest = self.put_blob(&config_bytes)?;
            let mut layers = Vec::new();
            for l in e["Layers"]
                .as_array()
                .ok_or_else(|| bad(&mf, "no Layers"))?
            {
                let p = rel(l)?;
                let mut f = std::fs::File::open(&p).map_err(io_err(&p))?;
                let mut magic = [0u8; 2];
                let gz = f.read(&mut magic).map_err(io_err(&p))? == 2 && magic == [0x1f, 0x8b];
                let (digest, size) =
                    self.put_blob_from(std::fs::File::open(&p).map_err(io_err(&p))?)?;
                layers.push(Descriptor {
                    media_type: if gz {
                        oci::MEDIA_LAYER_GZIP
                    } else {
                        oci::MEDIA_LAYER_TAR
                    }
                    .to_string(),
                    digest: digest.to_string(),
                    size,
                    annotations: BTreeMap::new(),
                    platform: None,
                });
            }
            let manifest = Manifest {
                schema_version: 2,
                media_type: oci::MEDIA_MANIFEST.into(),
                config: Descriptor {
                    media_type: oci::MEDIA_CONFIG.into(),
                    digest: config_digest.to_string(),
                    size: config_bytes.len() as u64,
                    annotations: BTreeMap::new(),
                    platform: None,
                },
                layers,
                annotations: BTreeMap::new(),
            };
            self.check_image(&manifest).map_err(|e| bad(&mf, e))?;
            let w = oci::write_json(&manifest, oci::MEDIA_MANIFEST);
            let digest = self.put_blob(&w.bytes)?;
            self.note_image(&digest)?;
            let tags: Vec<String> = e["RepoTags"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            for t in &tags {
                self.set_tag(t, &digest)?;
            }
            out.push(Loaded {
                reference: tags.first().cloned(),
                manifest: digest,
            });
        }
        if out.is_empty() {
            return Err(bad(&mf, "no images in manifest.json"));
        }
        Ok(out)
    }

    fn load_layout_named(
        &self,
        dir: &Path,
        archive_name: Option<&str>,
    ) -> Result<Vec<Loaded>, StoreError> {
        if !dir.join("oci-layout").exists() && dir.join("manifest.json").exists() {
            return self.load_docker_archive(dir);
        }
        let layout_file = dir.join("oci-layout");
        let layout: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&layout_file).map_err(io_err(&layout_file))?)
                .map_err(|e| bad(&layout_file, e.to_string()))?;
        if layout["imageLayoutVersion"] != "1.0.0" {
            return Err(bad(
                &layout_file,
                "unsupported imageLayoutVersion (want 1.0.0)",
            ));
        }
        let index_file = dir.join("index.json");
        let index: Index =
            serde_json::from_slice(&std::fs::read(&index_file).map_err(io_err(&index_file))?)
                .map_err(|e| bad(&index_file, e.to_string()))?;
        // Every name is checked before anything is imported: a hostile archive's name (such
        // as `../../../etc/passwd`) is refused as `kiln tag` refuses it.
        for desc in &index.manifests {
            if let Some(r) = reference_of(&desc.annotations, archive_name) {
                super::normalize_tag(&r).map_err(|e| bad(&index_file, e.to_string()))?;
            }
        }
        let mut out = Vec::new();
        for desc in &index.manifests {
            let reference = reference_of(&desc.annotations, archive_name);
            let Some(manifest) = self.import_descriptor(dir, desc)? else {
                continue;
            };
            self.note_image(&manifest)?;
            if let Some(r) = &reference {
                self.set_tag(r, &manifest)?;
            }
            out.push(Loaded {
                reference,
                manifest,
            });
        }
        if out.is_empty() {
            return Err(bad(&index_file, "no image for this platform in the layout"));
        }
        Ok(out)
    }

    fn blob_in(&self, dir: &Path, desc: &Descriptor) -> Result<(Digest, PathBuf), StoreError> {
        let digest = Digest::parse(&desc.digest).map_err(|e| bad(dir, e.to_string()))?;
        let path = dir.join("blobs/sha256").join(digest.hex());
        Ok((digest, path))
    }

    /// Copies one blob in, checking digest and size.
    fn copy_blob(&self, dir: &Path, desc: &Descriptor) -> Result<Digest, StoreError> {
        let (digest, path) = self.blob_in(dir, desc)?;
        if self.has_blob(&digest) {
            return Ok(digest);
        }
        let file = std::fs::File::open(&path).map_err(io_err(&path))?;
        let (got, size) = self.put_blob_from(file)?;
        if got != digest || size != desc.size {
            // The wrong content is in the store under its own (correct) name; nothing refers
            // to it, and `kiln store verify --repair` will collect it.
            return Err(bad(
                &path,
                format!(
                    "blob is {got} ({size} bytes), the layout says {digest} ({} bytes)",
                    desc.size
                ),
            ));
        }
        Ok(digest)
    }

    /// Imports a manifest, or a nested index with each of its images the layout holds.
    fn import_descriptor(
        &self,
        dir: &Path,
        desc: &Descriptor,
    ) -> Result<Option<Digest>, StoreError> {
        let (_, path) = self.blob_in(dir, desc)?;
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        match desc.media_type.as_str() {
            oci::MEDIA_INDEX | "application/vnd.docker.distribution.manifest.list.v2+json" => {
                let nested: Index =
                    serde_json::from_slice(&bytes).map_err(|e| bad(&path, e.to_string()))?;
                // Every image the layout holds (a layout may hold some platforms only, and
                // attestations are no image); the index is kept whole, naming them all.
                let mut any = false;
                for m in &nested.manifests {
                    // Images only ([`super::entry_platform`]): an index nested deeper is left
                    // out, so a hostile layout cannot nest indexes without end.
                    if super::entry_platform(m).is_none() || !self.blob_in(dir, m)?.1.is_file() {
                        continue;
                    }
                    if self.import_descriptor(dir, m)?.is_some() {
                        any = true;
                    }
                }
                if !any {
                    return Ok(None);
                }
                self.copy_blob(dir, desc).map(Some)
            }
            oci::MEDIA_MANIFEST | "application/vnd.docker.distribution.manifest.v2+json" => {
                let manifest: Manifest =
                    serde_json::from_slice(&bytes).map_err(|e| bad(&path, e.to_string()))?;
                if manifest.layers.len() > super::integrity::MAX_LAYERS {
                    // Refused before anything is copied.
                    return Err(bad(
                        &path,
                        format!(
                            "{} layers: at most {} are supported",
                            manifest.layers.len(),
                            super::integrity::MAX_LAYERS
                        ),
                    ));
                }
                self.copy_blob(dir, &manifest.config)?;
                for layer in &manifest.layers {
                    self.copy_blob(dir, layer)?;
                }
                // Before the manifest is in (and so before any tag or ChainID refers to it).
                self.check_image(&manifest).map_err(|e| bad(&path, e))?;
                // The manifest last: once it is in, everything it refers to is too.
                self.copy_blob(dir, desc).map(Some)
            }
            other => Err(bad(&path, format!("unsupported media type {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_for_tag_only_refs() {
        let ann = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        let tag_only = ann("org.opencontainers.image.ref.name", "latest");
        assert_eq!(
            reference_of(&tag_only, Some("busybox")).as_deref(),
            Some("localhost/busybox:latest")
        );
        assert_eq!(reference_of(&tag_only, None), None);
        let full = ann("org.opencontainers.image.ref.name", "app:1");
        assert_eq!(reference_of(&full, Some("x")).as_deref(), Some("app:1"));
        assert_eq!(
            archive_repo(Path::new("/a/busybox-oci.tar")).as_deref(),
            Some("busybox")
        );
        assert_eq!(
            archive_repo(Path::new("My Image.tar.gz")).as_deref(),
            Some("my-image")
        );
        assert_eq!(
            archive_repo(Path::new("/x/layout")).as_deref(),
            Some("layout")
        );
    }
}
