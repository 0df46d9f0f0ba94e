//! The build cache as an OCI artifact, so it can leave one store and seed another: a CI runner
//! exports what its build made (`--cache-to`), a fresh runner imports it (`--cache-from`) and
//! its steps hit instead of running.
//!
//! The artifact is an OCI image manifest whose config has its own media type,
//! [`CONFIG_MEDIA_TYPE`] (ECR and every OCI registry store such manifests; ECR refuses
//! BuildKit's original index-shaped cache). Its layers are ordinary layer blobs, the same bytes
//! an image of the build has, so a registry keeps them once. The config is a JSON object:
//!
//! ```json
//! { "architecture": "amd64", "os": "linux",
//!   "rootfs": { "type": "layers", "diff_ids": ["sha256:..."] },
//!   "kiln.cache.v1": {
//!     "entries": [ { "key": "sha256:...", "layer": "sha256:<diff_id>", "size": 1024,
//!                    "description": "[stage-0 2/3] COPY . /app (Dockerfile:3)",
//!                    "created": 1733500000 } ],
//!     "times": [ { "key": "sha256:...", "time": 1733500000 } ] } }
//! ```
//!
//! `rootfs.diff_ids` lists the layers in the manifest's order, so the store's own loader checks
//! each layer's content against its diff_id on the way in, as it checks any image. An entry is
//! a cache key (see [`super::key`]) and the layer its step made; `times` are the times of the
//! metadata steps (ENV, LABEL...), so the importing build writes the same history times, and an
//! image whose every step hit is the same image, digest for digest.

use std::collections::{BTreeMap, BTreeSet};

use kiln_runtime::{
    digest::Digest,
    oci::{self, Descriptor, Manifest},
    store::{CacheEntry, Store, StoreError},
};
use serde::{Deserialize, Serialize};

/// The config media type of kiln's cache artifact.
pub const CONFIG_MEDIA_TYPE: &str = oci::MEDIA_KILN_CACHE_CONFIG;

/// Which steps a cache export carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The steps whose layers are in the final image (BuildKit's `mode=min`).
    #[default]
    Min,
    /// Every keyed step of every stage built.
    Max,
}

/// One step's cache entry as the artifact carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    /// The layer's diff_id (the digest of its uncompressed tar).
    pub layer: String,
    pub size: u64,
    pub description: String,
    pub created: i64,
}

/// A metadata step's time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Time {
    pub key: String,
    pub time: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Contents {
    pub entries: Vec<Entry>,
    pub times: Vec<Time>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Config {
    architecture: String,
    os: String,
    rootfs: RootFs,
    #[serde(rename = "kiln.cache.v1")]
    cache: Contents,
}

/// What a build leaves for an export: the keys of its keyed steps, in order, the metadata
/// steps' times, and the layers of the image it made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Made {
    pub keys: Vec<String>,
    pub times: Vec<(String, i64)>,
    pub image_layers: BTreeSet<String>,
}

/// Why a cache could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what} is not a kiln build cache: {reason}")]
    NotACache { what: String, reason: String },
}

/// Writes the cache artifact of what `made` says into the store (config and manifest blobs; the
/// layers are the store's own); its manifest's digest, and how many entries it holds.
pub fn make(store: &Store, made: &Made, mode: Mode) -> Result<(Digest, usize), TransferError> {
    let mut entries = Vec::new();
    let mut seen = BTreeSet::new();
    for key in &made.keys {
        if !seen.insert(key.as_str()) {
            continue;
        }
        let Some(e) = store.cache_peek(key)? else {
            continue;
        };
        let layer = e.layer.to_string();
        if mode == Mode::Min && !made.image_layers.contains(&layer) {
            continue;
        }
        entries.push(Entry {
            key: e.key,
            layer,
            size: e.size,
            description: e.description,
            created: e.created,
        });
    }
    // Each layer once, in the order the entries first name it.
    let mut layers: Vec<(String, u64)> = Vec::new();
    for e in &entries {
        if !layers.iter().any(|(l, _)| *l == e.layer) {
            layers.push((e.layer.clone(), e.size));
        }
    }
    let host = oci::host_platform();
    let config = Config {
        architecture: host.architecture,
        os: host.os,
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|(l, _)| l.clone()).collect(),
        },
        cache: Contents {
            times: made
                .times
                .iter()
                .map(|(key, time)| Time {
                    key: key.clone(),
                    time: *time,
                })
                .collect(),
            entries,
        },
    };
    let count = config.cache.entries.len();
    let written = oci::write_json(&config, CONFIG_MEDIA_TYPE);
    let config_digest = store.put_blob(&written.bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: oci::MEDIA_MANIFEST.into(),
        config: Descriptor {
            media_type: CONFIG_MEDIA_TYPE.into(),
            digest: config_digest.to_string(),
            size: written.bytes.len() as u64,
            ..Default::default()
        },
        layers: layers
            .into_iter()
            .map(|(digest, size)| Descriptor {
                media_type: oci::MEDIA_LAYER_TAR.into(),
                digest,
                size,
                ..Default::default()
            })
            .collect(),
        annotations: BTreeMap::from([(
            "org.opencontainers.image.description".to_string(),
            "kiln build cache".to_string(),
        )]),
    };
    let written = oci::write_json(&manifest, oci::MEDIA_MANIFEST);
    Ok((store.put_blob(&written.bytes)?, count))
}

/// Reads the cache artifact whose manifest is `manifest` (loaded or pulled into the store, its
/// layers checked on the way in) and records its entries as the store's own, with the times of
/// its metadata steps; how many entries it added. `what` names it in errors.
pub fn import(store: &Store, manifest: &Digest, what: &str) -> Result<usize, TransferError> {
    let not_a_cache = |reason: String| TransferError::NotACache {
        what: what.to_string(),
        reason,
    };
    let m: Manifest = serde_json::from_slice(&store.read_blob(manifest)?)
        .map_err(|e| not_a_cache(format!("manifest: {e}")))?;
    if m.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(not_a_cache(format!(
            "its config is {:?}, not {CONFIG_MEDIA_TYPE:?}",
            m.config.media_type
        )));
    }
    let config_digest =
        Digest::parse(&m.config.digest).map_err(|e| not_a_cache(format!("config: {e}")))?;
    let config: Config = serde_json::from_slice(&store.read_blob(&config_digest)?)
        .map_err(|e| not_a_cache(format!("config: {e}")))?;
    if m.layers.len() != config.rootfs.diff_ids.len() {
        return Err(not_a_cache(format!(
            "the manifest lists {} layers, the config {} diff_ids",
            m.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    // Layers came in as they were sent (compressed): the cache's entries name them by their
    // uncompressed form, which the store keeps.
    for (l, diff_id) in m.layers.iter().zip(&config.rootfs.diff_ids) {
        let blob = Digest::parse(&l.digest).map_err(|e| not_a_cache(e.to_string()))?;
        let diff_id = Digest::parse(diff_id).map_err(|e| not_a_cache(e.to_string()))?;
        store.expand_layer(&diff_id, &blob)?;
    }
    let mut added = 0;
    for e in &config.cache.entries {
        // Only layers the artifact carried (and the loader checked) are trusted.
        if !config.rootfs.diff_ids.contains(&e.layer) {
            return Err(not_a_cache(format!(
                "entry {} names layer {}, which the cache does not carry",
                e.key, e.layer
            )));
        }
        let layer = Digest::parse(&e.layer).map_err(|err| not_a_cache(err.to_string()))?;
        if !store.has_blob(&layer) {
            continue;
        }
        if store.cache_peek(&e.key)?.is_none() {
            store.cache_put(&CacheEntry {
                key: e.key.clone(),
                layer,
                size: e.size,
                description: e.description.clone(),
                created: e.created,
            })?;
            added += 1;
        }
    }
    let times: Vec<(String, i64)> = config
        .cache
        .times
        .iter()
        .map(|t| (t.key.clone(), t.time))
        .collect();
    store.seed_step_times(&times)?;
    Ok(added)
}

/// Where a cache goes to or comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An OCI layout directory (`type=local,dest=DIR` / `src=DIR`).
    Local(std::path::PathBuf),
    /// A registry reference (`type=registry,ref=REPO:TAG`, or `--cache-from REPO:TAG`).
    Registry(String),
}

/// A `--cache-to` or `--cache-from` as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub location: Location,
    pub mode: Mode,
    pub compression: kiln_runtime::store::LayerCompression,
    /// `ignore-error=true`: a failed export is a warning (it always is for an import).
    pub ignore_error: bool,
}

/// Parses `--cache-to` (`to`) or `--cache-from`: BuildKit's `type=...,key=value` forms, and for
/// `--cache-from` docker's short form, a bare reference.
pub fn parse_spec(text: &str, to: bool) -> Result<Spec, String> {
    let flag = if to { "--cache-to" } else { "--cache-from" };
    let mut fields = BTreeMap::new();
    if !text.contains('=') && !to {
        fields.insert("type".to_string(), "registry".to_string());
        fields.insert("ref".to_string(), text.to_string());
    } else {
        for f in text.split(',').filter(|f| !f.is_empty()) {
            let (k, v) = f
                .split_once('=')
                .ok_or_else(|| format!("{flag} {text}: {f:?} is not KEY=VALUE"))?;
            fields.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    let get = |k: &str| fields.get(k).map(String::as_str);
    let location = match get("type").unwrap_or("registry") {
        "local" => {
            let key = if to { "dest" } else { "src" };
            Location::Local(
                get(key)
                    .filter(|d| !d.is_empty())
                    .ok_or_else(|| format!("{flag} {text}: type=local needs {key}=DIR"))?
                    .into(),
            )
        }
        "registry" => Location::Registry(
            get("ref")
                .filter(|r| !r.is_empty())
                .ok_or_else(|| format!("{flag} {text}: type=registry needs ref=REPOSITORY:TAG"))?
                .to_string(),
        ),
        "inline" => {
            return Err(format!(
                "{flag} {text}: type=inline is not supported yet; use type=registry,ref=REPO:TAG \
                 (a cache of its own beside the image)"
            ));
        }
        other => {
            return Err(format!(
                "{flag} {text}: unknown cache type {other:?} (local or registry)"
            ));
        }
    };
    let mode = match get("mode") {
        None | Some("min") => Mode::Min,
        Some("max") => Mode::Max,
        Some(m) => return Err(format!("{flag} {text}: mode={m}: min or max")),
    };
    let compression = match get("compression") {
        None | Some("gzip") => kiln_runtime::store::LayerCompression::Gzip,
        Some("zstd") => kiln_runtime::store::LayerCompression::Zstd,
        Some(c) => return Err(format!("{flag} {text}: compression={c}: gzip or zstd")),
    };
    let ignore_error = match get("ignore-error") {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => return Err(format!("{flag} {text}: ignore-error={v}: true or false")),
    };
    for k in fields.keys() {
        if ![
            "type",
            "dest",
            "src",
            "ref",
            "mode",
            "compression",
            "ignore-error",
        ]
        .contains(&k.as_str())
        {
            return Err(format!("{flag} {text}: unknown option {k:?}"));
        }
    }
    Ok(Spec {
        location,
        mode,
        compression,
        ignore_error,
    })
}

/// Why a cache could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] kiln_runtime::registry::RegistryError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Imports the cache at `spec` into the store; how many entries it added.
pub fn import_from(
    store: &Store,
    spec: &Spec,
    registry: &kiln_runtime::registry::Options,
) -> Result<usize, MoveError> {
    match &spec.location {
        Location::Local(dir) => {
            let loaded = store.load(dir)?;
            let mut added = 0;
            for l in loaded {
                // The artifact is no image: it leaves no name behind.
                if let Some(r) = &l.reference {
                    let _ = store.remove_tag(r);
                }
                added += import(store, &l.manifest, &dir.display().to_string())?;
            }
            Ok(added)
        }
        Location::Registry(reference) => {
            let had = store.resolve_tag(reference).ok().flatten();
            let opts = kiln_runtime::registry::PullOptions {
                registry: registry.clone(),
                platform: None,
                jobs: 0,
            };
            let pulled = kiln_runtime::registry::pull(store, reference, &opts, &|_| {})?;
            if let Some(t) = &pulled.tag {
                match had {
                    Some(d) => {
                        store.set_tag(t, &d)?;
                    }
                    None => {
                        let _ = store.remove_tag(t);
                    }
                }
            }
            Ok(import(store, &pulled.manifest, reference)?)
        }
    }
}

/// Exports the cache of a build (`made`) to `spec`; the artifact's digest in the store and how
/// many entries it holds.
pub fn export_to(
    store: &Store,
    made: &Made,
    spec: &Spec,
    registry: &kiln_runtime::registry::Options,
) -> Result<(Digest, usize), MoveError> {
    let (manifest, count) = make(store, made, spec.mode)?;
    match &spec.location {
        Location::Local(dest) => {
            // Written beside, then swapped in: a reader sees the old layout or the new one,
            // never half of one; of two writers at once, the last one's stays.
            let parent = dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let io = |path: &std::path::Path| {
                let path = path.to_path_buf();
                move |source| MoveError::Io { path, source }
            };
            std::fs::create_dir_all(parent).map_err(io(parent))?;
            let base = dest
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "cache".into());
            let tmp = parent.join(format!(".{base}.new-{}", std::process::id()));
            let old = parent.join(format!(".{base}.old-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            store.save(
                &[("kiln-cache".into(), manifest)],
                &tmp,
                true,
                spec.compression,
            )?;
            let had = dest.exists();
            if had {
                std::fs::rename(dest, &old).map_err(io(dest))?;
            }
            std::fs::rename(&tmp, dest).map_err(io(dest))?;
            if had {
                let _ = std::fs::remove_dir_all(&old);
            }
        }
        Location::Registry(reference) => {
            let opts = kiln_runtime::registry::PushOptions {
                registry: registry.clone(),
                jobs: 0,
                compression: spec.compression,
            };
            kiln_runtime::registry::push(store, &manifest.to_string(), reference, &opts, &|_| {})?;
        }
    }
    Ok((manifest, count))
}
