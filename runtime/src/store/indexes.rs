//! Image indexes in the store: a tag may name an index (a multi-platform image) as well as a
//! manifest. Reading one picks the manifest for a platform; writing one joins manifests the
//! store holds under their platforms.

use super::{Store, StoreError};
use crate::{
    digest::Digest,
    oci::{self, Descriptor, Index, Platform},
};

/// docker's manifest list, which registries and `docker save` still serve.
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Whether a document is an index: its media type says so, or (OCI allows it to be left out)
/// it has `manifests` and no `config`.
pub fn is_index(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
    }
    let Ok(p) = serde_json::from_slice::<Probe>(bytes) else {
        return false;
    };
    match p.media_type.as_deref() {
        Some(oci::MEDIA_INDEX | MEDIA_DOCKER_LIST) => true,
        Some(_) => false,
        None => p.manifests.is_some() && p.config.is_none(),
    }
}

/// The platform an index entry is for; `None` for entries that are no image: attestations
/// (BuildKit's `unknown/unknown`), and indexes nested in the index (OCI allows them, no tool
/// writes them, and following them would let a hostile index nest without end).
pub fn entry_platform(d: &Descriptor) -> Option<Platform> {
    let image = matches!(
        d.media_type.as_str(),
        oci::MEDIA_MANIFEST | "application/vnd.docker.distribution.manifest.v2+json"
    );
    if !image {
        return None;
    }
    let p = d.platform.as_ref()?;
    (p.os != "unknown" && p.architecture != "unknown").then(|| p.normalized())
}

impl Store {
    /// The index `digest` names, when it names one the store holds.
    pub fn read_index(&self, digest: &Digest) -> Result<Option<Index>, StoreError> {
        let bytes = self.read_blob(digest)?;
        if !is_index(&bytes) {
            return Ok(None);
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::BadLayout {
                path: self.blob_path(digest),
                reason: format!("index: {e}"),
            })
    }

    /// The platforms an image holds and each one's manifest, in the index's order: one entry
    /// for an image manifest (its config's platform), one per image the store has for an
    /// index. Entries whose manifest the store lacks are left out.
    pub fn platforms_of(&self, digest: &Digest) -> Result<Vec<(Platform, Digest)>, StoreError> {
        match self.read_index(digest)? {
            Some(index) => Ok(index
                .manifests
                .iter()
                .filter_map(|m| Some((entry_platform(m)?, Digest::parse(&m.digest).ok()?)))
                .filter(|(_, d)| self.has_blob(d))
                .collect()),
            None => {
                let config = self.image_config_only(digest)?;
                Ok(vec![(config.platform().normalized(), *digest)])
            }
        }
    }

    /// The image manifest `digest` names for `want`: itself when it is a manifest (for
    /// another platform than `want`, an error, as docker's "does not match the specified
    /// platform"); the entry for `want` when it is an index. With no platform asked for, an
    /// index gives this machine's image, or when it has none, its first image (as docker
    /// runs an image for another platform, through an emulator).
    pub fn platform_manifest(
        &self,
        digest: &Digest,
        want: Option<&Platform>,
    ) -> Result<Digest, StoreError> {
        if self.read_index(digest)?.is_none()
            && (want.is_none() || self.image_config_only(digest)?.architecture.is_empty())
        {
            // An image manifest, with no platform asked for or none in its config to check.
            return Ok(*digest);
        }
        let have = self.platforms_of(digest)?;
        let host = oci::host_platform();
        let found = match want {
            Some(w) => have.iter().find(|(p, _)| p.matches(w)),
            None => have
                .iter()
                .find(|(p, _)| p.matches(&host))
                .or_else(|| have.first()),
        };
        match found {
            Some((_, d)) => Ok(*d),
            None => Err(StoreError::NoPlatform {
                image: digest.to_string(),
                wanted: want.map_or_else(|| host.normalized().to_string(), |w| w.to_string()),
                have: have
                    .iter()
                    .map(|(p, _)| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Whether the store can run `digest`'s image for `want` (this machine's, else the first,
    /// when `None`): it has the image and every layer of it, or knows the layer is a registry's
    /// (a remote cache hit's, fetched when needed). An image joined from a registry by `kiln
    /// manifest create` has none of its layers, and is pulled instead.
    pub fn has_runnable(&self, digest: &Digest, want: Option<&Platform>) -> bool {
        self.platform_manifest(digest, want)
            .and_then(|m| self.image_of_manifest(&m))
            .is_ok_and(|(m, _, _)| {
                m.layers.iter().all(|l| {
                    Digest::parse(&l.digest).is_ok_and(|d| {
                        self.has_blob(&d) || self.remote_layer(&d).ok().flatten().is_some()
                    })
                })
            })
    }

    /// Fetches each layer of `digest`'s image for `want` that the store lacks
    /// ([`Store::ensure_blob`]); how many it fetched.
    pub fn fetch_missing_layers(
        &self,
        digest: &Digest,
        want: Option<&Platform>,
    ) -> Result<usize, StoreError> {
        let (m, _, _) = self.image_of_manifest(&self.platform_manifest(digest, want)?)?;
        let mut fetched = 0;
        for l in &m.layers {
            let Ok(d) = Digest::parse(&l.digest) else {
                continue;
            };
            if !self.has_blob(&d) {
                self.ensure_blob(&d)?;
                fetched += 1;
            }
        }
        Ok(fetched)
    }

    /// The digests an image keeps in the store: itself, and each manifest of an index.
    pub fn manifests_of(&self, digest: &Digest) -> Vec<Digest> {
        let mut out = vec![*digest];
        if let Ok(Some(index)) = self.read_index(digest) {
            out.extend(
                index
                    .manifests
                    .iter()
                    .filter_map(|m| Digest::parse(&m.digest).ok())
                    .filter(|d| self.has_blob(d)),
            );
        }
        out
    }

    /// `kiln manifest create`: one index of `images` (image manifests, or indexes whose
    /// images are all taken), in order, each platform once; recorded as an image. Two
    /// different images for one platform are refused.
    pub fn join_images(&self, images: &[Digest]) -> Result<Digest, StoreError> {
        let mut manifests: Vec<(Platform, Digest)> = Vec::new();
        for d in images {
            for (p, m) in self.platforms_of(d)? {
                match manifests.iter().find(|(q, _)| q.matches(&p)) {
                    Some((_, other)) if *other == m => {}
                    Some((_, other)) => {
                        return Err(StoreError::Conflict(format!(
                            "two images for {p}: {other} and {m}"
                        )));
                    }
                    None => manifests.push((p, m)),
                }
            }
        }
        let digests: Vec<Digest> = manifests.into_iter().map(|(_, m)| m).collect();
        let index = self.put_index(&digests)?;
        self.note_image(&index)?;
        Ok(index)
    }

    /// Writes an OCI index of `manifests` (image manifests the store holds), each under the
    /// platform its config names, in the order given; returns its digest.
    pub fn put_index(&self, manifests: &[Digest]) -> Result<Digest, StoreError> {
        let mut entries = Vec::with_capacity(manifests.len());
        for m in manifests {
            let bytes = self.read_blob(m)?;
            let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
                .unwrap_or_else(|| oci::MEDIA_MANIFEST.to_string());
            let config = self.image_config_only(m)?;
            entries.push(Descriptor {
                media_type,
                digest: m.to_string(),
                size: bytes.len() as u64,
                annotations: Default::default(),
                platform: Some(config.platform()),
            });
        }
        let index = Index {
            schema_version: 2,
            media_type: Some(oci::MEDIA_INDEX.to_string()),
            manifests: entries,
            annotations: Default::default(),
        };
        let written = oci::write_json(&index, oci::MEDIA_INDEX);
        self.put_blob(&written.bytes)
    }

    /// The index `index` as it leaves the store (`kiln push`, `kiln save`, `-o type=oci`):
    /// each image the store holds made distributable ([`Store::distributable`]) and the
    /// index rewritten to name them; entries the store lacks are kept as they are (a
    /// registry may have them). The index's bytes and digest, and each image's (its digest
    /// in the store, and its manifest as it leaves: `None` for one the store lacks).
    #[allow(clippy::type_complexity)]
    pub fn distributable_index(
        &self,
        index: &Digest,
        c: super::LayerCompression,
    ) -> Result<(Vec<u8>, Digest, Vec<(Digest, Option<(Vec<u8>, Digest)>)>), StoreError> {
        let original = self.read_blob(index)?;
        let mut doc: Index =
            serde_json::from_slice(&original).map_err(|e| StoreError::BadLayout {
                path: self.blob_path(index),
                reason: format!("index: {e}"),
            })?;
        let mut children = Vec::new();
        let mut changed = false;
        for entry in &mut doc.manifests {
            let d = Digest::parse(&entry.digest).map_err(|e| StoreError::BadLayout {
                path: self.blob_path(index),
                reason: e.to_string(),
            })?;
            if !self.has_blob(&d) || self.read_index(&d)?.is_some() {
                children.push((d, None));
                continue;
            }
            let (_, bytes, out) = self.distributable(&d, c)?;
            if out != d {
                entry.digest = out.to_string();
                entry.size = bytes.len() as u64;
                changed = true;
            }
            children.push((d, Some((bytes, out))));
        }
        if !changed {
            // Byte for byte as stored: an index pulled keeps its digest.
            return Ok((original, *index, children));
        }
        let written = oci::write_json(&doc, oci::MEDIA_INDEX);
        // Kept, as the images' compressed manifests are: an export copies it from the store.
        let digest = self.put_blob(&written.bytes)?;
        Ok((written.bytes, digest, children))
    }

    /// An image's or an index's bytes and digest as it leaves the store
    /// ([`Store::distributable`], [`Store::distributable_index`]).
    pub fn distributable_any(
        &self,
        digest: &Digest,
        c: super::LayerCompression,
    ) -> Result<(Vec<u8>, Digest), StoreError> {
        if self.read_index(digest)?.is_some() {
            let (bytes, d, _) = self.distributable_index(digest, c)?;
            Ok((bytes, d))
        } else {
            let (_, bytes, d) = self.distributable(digest, c)?;
            Ok((bytes, d))
        }
    }

    /// An image manifest's config, read without choosing a platform (`digest` must name a
    /// manifest).
    fn image_config_only(&self, digest: &Digest) -> Result<oci::ImageConfig, StoreError> {
        self.image_of_manifest(digest).map(|(_, c, _)| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_told_from_manifests() {
        assert!(is_index(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#
        ));
        assert!(is_index(br#"{"schemaVersion":2,"manifests":[]}"#));
        assert!(is_index(
            br#"{"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#
        ));
        assert!(!is_index(
            br#"{"schemaVersion":2,"config":{},"layers":[],"manifests":[]}"#
        ));
        assert!(!is_index(
            br#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#
        ));
        assert!(!is_index(b"not json"));
    }

    #[test]
    fn attestation_entries_are_no_platform() {
        let d = |os: &str, arch: &str| Descriptor {
            media_type: oci::MEDIA_MANIFEST.into(),
            platform: Some(Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: None,
            }),
            ..Default::default()
        };
        assert_eq!(entry_platform(&d("unknown", "unknown")), None);
        assert_eq!(
            entry_platform(&d("linux", "aarch64")).unwrap().to_string(),
            "linux/arm64"
        );
        let nested = Descriptor {
            media_type: oci::MEDIA_INDEX.into(),
            ..d("linux", "amd64")
        };
        assert_eq!(entry_platform(&nested), None);
    }
}
