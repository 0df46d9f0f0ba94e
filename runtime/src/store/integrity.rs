//! What an image from outside must satisfy before anything in the store is keyed by it.
//! Unpacked layers are shared by ChainID, which is computed from the
//! config's `rootfs.diff_ids`: an image whose layer content does not have the diff_id its
//! config claims could put its own files into the directory every user of that diff_id shares.
//! So, for every image `kiln load` brings in (and `kiln store verify` rechecks):
//! - the config and every layer have a media type kiln can use (foreign and non-distributable
//!   layers and unknown types are refused with what they are);
//! - every descriptor's size is the blob's real size (a lying size would be shown and summed);
//! - there are as many diff_ids as layers, and at most [`MAX_LAYERS`] (docker's overlay limit);
//! - every layer decompresses whole (a truncated gzip stream is an error) to content whose
//!   sha256 is its diff_id, in the compression its media type names.

use std::io::Read;

use sha2::{Digest as _, Sha256};

use super::Store;
use crate::{
    digest::Digest,
    oci::{self, ImageConfig, Manifest},
};

/// The most layers an image may have (docker's limit for overlay: 127 lower directories).
pub const MAX_LAYERS: usize = 127;

/// Config media types kiln reads.
const CONFIG_TYPES: [&str; 3] = [
    oci::MEDIA_CONFIG,
    "application/vnd.docker.container.image.v1+json",
    // kiln's build cache: an image's layers with the cache's entries in its config.
    oci::MEDIA_KILN_CACHE_CONFIG,
];

/// How a layer blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression a layer media type names, or why kiln cannot use it.
pub(crate) fn layer_compression(media_type: &str) -> Result<Compression, String> {
    match media_type {
        oci::MEDIA_LAYER_TAR | "application/vnd.docker.image.rootfs.diff.tar" => {
            Ok(Compression::None)
        }
        oci::MEDIA_LAYER_GZIP | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            Ok(Compression::Gzip)
        }
        t if t.contains("nondistributable") || t.contains("foreign") => Err(format!(
            "foreign (non-distributable) layer {t:?}: its content lives outside the image, and \
             kiln does not fetch it"
        )),
        oci::MEDIA_LAYER_ZSTD | "application/vnd.docker.image.rootfs.diff.tar.zstd" => {
            Ok(Compression::Zstd)
        }
        t => Err(format!("unsupported layer media type {t:?}")),
    }
}

/// The content's first bytes (two or more) are what its media type says: gzip's magic for
/// gzip, zstd's for zstd, neither for an uncompressed layer. For a loaded layer and for one
/// arriving from a registry alike.
pub(crate) fn check_magic(compression: Compression, head: &[u8]) -> Result<(), &'static str> {
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let zstd = head.len() >= 2 && crate::layer::view::ZSTD_MAGIC.starts_with(head);
    match compression {
        Compression::None if gzip => Err("the media type says uncompressed, the content is gzip"),
        Compression::Gzip if !gzip => Err("the media type says gzip, the content is not gzip"),
        Compression::Zstd if !zstd => Err("the media type says zstd, the content is not zstd"),
        _ => Ok(()),
    }
}

/// Hashes everything `r` yields.
pub(crate) fn sha256_of(mut r: impl Read) -> std::io::Result<Digest> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(Digest::from_sha256(h));
        }
        h.update(&buf[..n]);
    }
}

impl Store {
    /// Checks an image whose manifest, config and layers are all in the store; the reason it
    /// cannot be used otherwise, naming the layer.
    pub(super) fn check_image(&self, manifest: &Manifest) -> Result<ImageConfig, String> {
        self.check_image_memo(manifest, &mut std::collections::BTreeSet::new())
    }

    /// [`Store::check_image`], skipping the (layer, diff_id) pairs in `good` and adding those
    /// it finds good (`kiln store verify` reads each shared layer once).
    pub(crate) fn check_image_memo(
        &self,
        manifest: &Manifest,
        good: &mut std::collections::BTreeSet<(String, String)>,
    ) -> Result<ImageConfig, String> {
        let config = &manifest.config;
        if !CONFIG_TYPES.contains(&config.media_type.as_str()) {
            return Err(format!(
                "unsupported config media type {:?}",
                config.media_type
            ));
        }
        let config_digest = Digest::parse(&config.digest).map_err(|e| e.to_string())?;
        self.check_size("config", &config_digest, config.size)?;
        let bytes = self
            .read_blob(&config_digest)
            .map_err(|e| format!("config: {e}"))?;
        let parsed: ImageConfig =
            serde_json::from_slice(&bytes).map_err(|e| format!("config {config_digest}: {e}"))?;
        let (layers, diff_ids) = (&manifest.layers, &parsed.rootfs.diff_ids);
        if layers.len() > MAX_LAYERS {
            return Err(format!(
                "{} layers: at most {MAX_LAYERS} are supported",
                layers.len()
            ));
        }
        if layers.len() != diff_ids.len() {
            return Err(format!(
                "the manifest lists {} layers, the config {} diff_ids",
                layers.len(),
                diff_ids.len()
            ));
        }
        for (i, (l, diff_id)) in layers.iter().zip(diff_ids).enumerate() {
            let what = format!("layer {} of {} ({})", i + 1, layers.len(), l.digest);
            let pair = (l.digest.clone(), diff_id.clone());
            if good.contains(&pair) {
                continue;
            }
            let check = || -> Result<(), String> {
                let compression = layer_compression(&l.media_type)?;
                let digest = Digest::parse(&l.digest).map_err(|e| e.to_string())?;
                let diff_id = Digest::parse(diff_id).map_err(|e| format!("diff_id: {e}"))?;
                self.check_size("layer", &digest, l.size)?;
                self.check_content(&digest, compression, &diff_id)
            };
            check().map_err(|e| format!("{what}: {e}"))?;
            good.insert(pair);
        }
        Ok(parsed)
    }

    /// The blob's real size is what its descriptor says.
    fn check_size(&self, what: &str, digest: &Digest, claimed: u64) -> Result<(), String> {
        let path = self.blob_path(digest);
        let real = std::fs::metadata(&path)
            .map_err(|e| format!("{what} {digest}: {e}"))?
            .len();
        if real == claimed {
            Ok(())
        } else {
            Err(format!(
                "the descriptor says {claimed} bytes, the {what} blob has {real}"
            ))
        }
    }

    /// The layer blob, decompressed as its media type says, has `diff_id`'s digest.
    fn check_content(
        &self,
        digest: &Digest,
        compression: Compression,
        diff_id: &Digest,
    ) -> Result<(), String> {
        let path = self.blob_path(digest);
        let mut f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        let mut magic = [0u8; 4];
        let n = f.read(&mut magic).map_err(|e| e.to_string())?;
        check_magic(compression, &magic[..n])?;
        let actual = match compression {
            // The blob's digest, which the store checked when it was written.
            Compression::None => *digest,
            Compression::Gzip => {
                let f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
                // Every member, as unpacking reads it (`layer::view::open_layer`) and Go's gzip does.
                let gz = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f));
                sha256_of(gz).map_err(|e| format!("the gzip stream is damaged: {e}"))?
            }
            Compression::Zstd => {
                let f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
                let z = zstd::stream::read::Decoder::new(f).map_err(|e| e.to_string())?;
                sha256_of(z).map_err(|e| format!("the zstd stream is damaged: {e}"))?
            }
        };
        if &actual == diff_id {
            Ok(())
        } else {
            Err(format!(
                "its content has diff_id {actual}, the config says {diff_id}"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(
            layer_compression(oci::MEDIA_LAYER_GZIP),
            Ok(Compression::Gzip)
        );
        assert_eq!(
            layer_compression("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Ok(Compression::Gzip)
        );
        assert_eq!(
            layer_compression(oci::MEDIA_LAYER_TAR),
            Ok(Compression::None)
        );
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar+zstd"),
            Ok(Compression::Zstd)
        );
        for (t, says) in [
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                "foreign",
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                "foreign",
            ),
            ("text/plain", "unsupported layer media type"),
        ] {
            assert!(layer_compression(t).unwrap_err().contains(says), "{t}");
        }
    }
}
