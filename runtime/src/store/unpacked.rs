//! Unpacked layers, keyed by ChainID (REFERENCE §6.3) and shared by every build and container:
//! `ROOT/layers/<chain-id hex>/` holds one layer in overlayfs lower-layer form. A layer is
//! unpacked into `tmp/` and renamed into place, so no process ever sees a half-unpacked layer;
//! when two processes or threads unpack the same one, the first rename wins and the other copy
//! is dropped.

use std::path::PathBuf;

use super::{Store, StoreError, io_err};
use crate::{
    digest::Digest,
    layer::{unpack::unpack_for_overlay, view::open_layer},
    oci::chain_id,
};

impl Store {
    /// The unpacked directories of a layer stack (`blobs` bottom first, `diff_ids` alike), as
    /// overlayfs `lowerdir` wants them: top first.
    pub fn unpacked_layers(
        &self,
        blobs: &[Digest],
        diff_ids: &[Digest],
    ) -> Result<Vec<PathBuf>, StoreError> {
        let mut dirs = Vec::new();
        for i in 0..blobs.len() {
            let Some(chain) = chain_id(&diff_ids[..=i]) else {
                continue;
            };
            let dest = self.root.join("layers").join(chain.hex());
            if !dest.is_dir() {
                // Unique per call: two stages of one build (threads of one process) may unpack
                // the same layer at once, and must not share or remove each other's directory.
                let tmp = self.root.join("tmp").join(format!(
                    "unpack-{}-{}",
                    chain.hex(),
                    super::blobs::tmp_name()
                ));
                std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
                let src = self.blob_path(&blobs[i]);
                let result = open_layer(&src).map_err(io_err(&src)).and_then(|r| {
                    unpack_for_overlay(r, &tmp).map_err(|e| StoreError::BadLayout {
                        path: src.clone(),
                        reason: e.to_string(),
                    })
                });
                if let Err(e) = result {
                    let _ = std::fs::remove_dir_all(&tmp);
                    return Err(e);
                }
                let parent = self.root.join("layers");
                std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
                if std::fs::rename(&tmp, &dest).is_err() {
                    // Another process finished the same layer first; theirs is identical.
                    let _ = std::fs::remove_dir_all(&tmp);
                    if !dest.is_dir() {
                        return Err(StoreError::Io {
                            path: dest,
                            source: std::io::Error::other("could not place the unpacked layer"),
                        });
                    }
                }
            }
            dirs.push(dest);
        }
        dirs.reverse();
        Ok(dirs)
    }
}
