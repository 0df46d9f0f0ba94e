//! `kiln store verify` (fsck): every blob matches its digest, every reference resolves (tags to
//! manifests, configs and layers; cache entries to layers; kept containers to their
//! directories), every tagged image passes the checks `kiln load` makes (descriptor sizes,
//! media types, each layer's diff_id: [`super::integrity`]), nothing half-written is
//! visible under `blobs/`, and no mount or directory outlived the container monitor that made
//! it. With `repair`, what is
//! broken is removed (a corrupt blob, then every tag and cache entry that needed it) and so is
//! what nothing references any more; repair needs the store to itself.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use super::{Store, StoreError, io_err};
use crate::digest::Digest;

/// What [`Store::verify`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Blobs whose content was checked.
    pub blobs: usize,
    /// One line per problem, naming the path or reference.
    pub problems: Vec<String>,
    /// What `repair` removed.
    pub repaired: Vec<String>,
}

fn hash_file(p: &Path) -> std::io::Result<String> {
    super::integrity::sha256_of(std::fs::File::open(p)?).map(|d| d.hex().to_string())
}

impl Store {
    /// Checks the store; with `repair`, fixes it. Fails with `Ok(None)` when `repair` is asked
    /// while another kiln process has the store open.
    pub fn verify(&self, repair: bool) -> Result<Option<Report>, StoreError> {
        if repair {
            return self.exclusively(|| self.verify_inner(true))?.transpose();
        }
        self.verify_inner(false).map(Some)
    }

    fn verify_inner(&self, repair: bool) -> Result<Report, StoreError> {
        // No prune meanwhile: a blob it removes between the listing and the reading would look
        // missing (found by the load-and-tag-beside-prune test). Builds may go on: they only add.
        let _guard = self.build_guard()?;
        let mut r = Report::default();
        let dir = self.root.join("blobs/sha256");
        let mut good: BTreeSet<String> = BTreeSet::new();
        let mut bad: Vec<PathBuf> = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let p = entry.path();
            let hex_name = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex_name || !entry.file_type().is_ok_and(|t| t.is_file()) {
                r.problems
                    .push(format!("{}: not a blob (stray entry)", p.display()));
                bad.push(p);
                continue;
            }
            r.blobs += 1;
            match hash_file(&p) {
                Ok(h) if h == name => {
                    good.insert(name);
                }
                Ok(h) => {
                    r.problems
                        .push(format!("{}: content has digest sha256:{h}", p.display()));
                    bad.push(p);
                }
                Err(e) => {
                    r.problems.push(format!("{}: {e}", p.display()));
                    bad.push(p);
                }
            }
        }
        let have = |d: &Digest| good.contains(d.hex());
        // What is reachable: from tags, cache entries, the gzip map and kept containers.
        let mut reachable: BTreeSet<String> = BTreeSet::new();
        let mut broken_tags = Vec::new();
        let mut checked = BTreeSet::new();
        for t in self.tags()? {
            let mut missing = Vec::new();
            if !have(&t.digest) {
                missing.push(format!("manifest {}", t.digest));
            } else {
                // A multi-platform image: the index and each of its images the store holds.
                for manifest in self.manifests_of(&t.digest) {
                    reachable.insert(manifest.hex().to_string());
                    if self.read_index(&manifest).ok().flatten().is_some() {
                        continue;
                    }
                    match self.image_of_manifest(&manifest) {
                        Ok((m, _, config)) => {
                            let mut refs = vec![("config", config.to_string())];
                            refs.extend(m.layers.iter().map(|l| ("layer", l.digest.clone())));
                            let mut layers_here = true;
                            for (what, d) in refs {
                                match Digest::parse(&d) {
                                    Ok(d) if have(&d) => {
                                        reachable.insert(d.hex().to_string());
                                    }
                                    // Joined by `kiln manifest create` from a registry, which
                                    // keeps its layers.
                                    Ok(d) if what == "layer" && self.is_remote_blob(&d)? => {
                                        layers_here = false;
                                    }
                                    _ => missing.push(format!("{what} {d}")),
                                }
                            }
                            // Sizes, media types and each layer's diff_id, as `kiln load`
                            // checks.
                            if missing.is_empty() && layers_here {
                                if let Err(e) = self.check_image_memo(&m, &mut checked) {
                                    r.problems.push(format!("tag {}: {e}", t.name));
                                    broken_tags.push(t.name.clone());
                                }
                            }
                        }
                        Err(e) => missing.push(format!("manifest {manifest}: {e}")),
                    }
                }
            }
            if !missing.is_empty() {
                r.problems
                    .push(format!("tag {}: missing {}", t.name, missing.join(", ")));
                broken_tags.push(t.name);
            }
        }
        let mut broken_cache = Vec::new();
        for (key, layer) in self.cache_layers()? {
            match Digest::parse(&layer) {
                Ok(d) if have(&d) => {
                    reachable.insert(d.hex().to_string());
                }
                // A remote cache hit's layer: the registry has it (the compressed form, kept
                // when it was fetched).
                Ok(d) if self.remote_layer_of(&d)?.is_some() => {
                    if let Some(r) = self.remote_layer_of(&d)? {
                        reachable.insert(r.descriptor.digest.trim_start_matches("sha256:").into());
                    }
                }
                _ => {
                    r.problems.push(format!(
                        "cache entry {}: missing layer {layer}",
                        &key[..key.len().min(19)]
                    ));
                    broken_cache.push(key);
                }
            }
        }
        for (diff_id, forms) in self.compressed_forms()? {
            if reachable.contains(diff_id.trim_start_matches("sha256:")) {
                for (d, _) in forms {
                    reachable.insert(d.trim_start_matches("sha256:").to_string());
                }
            }
        }
        let containers = self.containers()?;
        for c in &containers {
            let dir = self.root.join("containers").join(&c.id);
            if !c.state().is_live() && !dir.is_dir() {
                r.problems.push(format!(
                    "container {}: {} is missing",
                    c.name,
                    dir.display()
                ));
            }
        }
        // What a killed monitor left: mounts under a container no live monitor serves, and
        // directories of containers the store no longer knows.
        let live = |id: &str| containers.iter().any(|c| c.id == id && c.state().is_live());
        let cdir = self.root.join("containers");
        let mut leftover_mounts = Vec::new();
        for m in super::recover::mounts_under(&cdir) {
            let id = m
                .strip_prefix(&cdir)
                .ok()
                .and_then(|rel| rel.components().next())
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default();
            if !live(&id) {
                r.problems.push(format!(
                    "{}: left mounted by a container monitor that is gone",
                    m.display()
                ));
                leftover_mounts.push(m);
            }
        }
        let mut stray_dirs = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&cdir) {
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if e.path().is_dir() && !containers.iter().any(|c| c.id == id) {
                    r.problems.push(format!(
                        "{}: the directory of a container kiln no longer knows",
                        e.path().display()
                    ));
                    stray_dirs.push(e.path());
                }
            }
        }
        if repair {
            for m in leftover_mounts {
                crate::sandbox::overlay::unmount_all(&m);
                r.repaired.push(format!("unmounted {}", m.display()));
            }
            for d in stray_dirs {
                // Only once nothing is mounted there any more (a mount that would not go is
                // reported again by the next verify, never removed through).
                if super::recover::mounts_under(&d).is_empty() {
                    std::fs::remove_dir_all(&d).map_err(io_err(&d))?;
                    r.repaired.push(format!("removed {}", d.display()));
                }
            }
            for p in bad {
                let _ = std::fs::remove_file(&p).or_else(|_| std::fs::remove_dir_all(&p));
                r.repaired.push(format!("removed {}", p.display()));
            }
            for t in broken_tags {
                self.remove_tag(&t)?;
                r.repaired.push(format!("removed tag {t}"));
            }
            for k in broken_cache {
                self.cache_remove(&k)?;
                r.repaired
                    .push(format!("removed cache entry {}", &k[..k.len().min(19)]));
            }
            for h in good.difference(&reachable) {
                let p = dir.join(h);
                std::fs::remove_file(&p).map_err(io_err(&p))?;
                r.repaired
                    .push(format!("removed unreferenced blob sha256:{h}"));
            }
        }
        Ok(r)
    }
}
