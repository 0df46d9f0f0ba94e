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
//!     "times": [ { "key": "sha256:...", "time": 1733500000 } ],
//!     "mounts": [ { "id": "pkgs", "layer": "sha256:<diff_id>" } ] } }
//! ```
//!
//! `rootfs.diff_ids` lists the layers in the manifest's order, so the store's own loader checks
//! each layer's content against its diff_id on the way in, as it checks any image. An entry is
//! a cache key (see [`super::key`]) and the layer its step made; `times` are the times of the
//! metadata steps (ENV, LABEL...), so the importing build writes the same history times, and an
//! image whose every step hit is the same image, digest for digest; `mounts` (exported with
//! `mounts=true`) are `RUN --mount=type=cache` directories, each as a layer, that seed a store
//! which lacks them.

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

/// A cache mount's contents (`RUN --mount=type=cache`), carried as a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountContents {
    /// The cache mount's id (with `BUILDKIT_CACHE_MOUNT_NS`, as the build named it).
    pub id: String,
    /// The layer holding its files (diff_id).
    pub layer: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Contents {
    pub entries: Vec<Entry>,
    pub times: Vec<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountContents>,
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
    /// Each layer's entries (paths, kinds, modes, owners, links; no content): a runner plans a
    /// COPY or WORKDIR that hits on top of a layer only the registry has against this, so the
    /// hit downloads nothing.
    #[serde(
        rename = "kiln.layer-indexes.v1",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    indexes: Vec<LayerIndex>,
}

/// A layer's index as a cache artifact carries it: its diff_id, and its entries in the store's
/// binary form, zstd-compressed, base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LayerIndex {
    layer: String,
    entries: String,
}

/// What an index may expand to: far more than any real layer's entries need.
const MAX_INDEX_BYTES: u64 = 256 << 20;

/// The index of `layer` (a diff_id of the artifact), from the store's record of it: the local
/// blob's (read from the tar when it has none yet), or a remote layer's recorded one. `None`
/// when the store has neither.
fn index_of(store: &Store, layer: &str) -> Option<LayerIndex> {
    use base64::Engine;
    let diff_id = Digest::parse(layer).ok()?;
    let bytes = if store.has_blob(&diff_id) {
        let _ = store.layer_entries(&diff_id).ok()?;
        store.recorded_layer_index(&diff_id).ok()??
    } else {
        let remote = store.remote_layer_of(&diff_id).ok()??;
        let blob = Digest::parse(&remote.descriptor.digest).ok()?;
        store.recorded_layer_index(&blob).ok()??
    };
    let packed = zstd::bulk::compress(&bytes, 3).ok()?;
    Some(LayerIndex {
        layer: layer.to_string(),
        entries: base64::engine::general_purpose::STANDARD.encode(packed),
    })
}

/// Records the index an artifact carries for a layer only the registry has (`blob`, its
/// compressed form there), unless the store has one: a build then plans on it without the
/// blob. One that cannot be read is left out (the layer is then fetched when planned on).
fn record_index(store: &Store, blob: &Digest, index: &LayerIndex) -> Result<(), TransferError> {
    use base64::Engine;
    if store.has_blob(blob) || store.recorded_layer_index(blob)?.is_some() {
        return Ok(());
    }
    let Ok(packed) = base64::engine::general_purpose::STANDARD.decode(&index.entries) else {
        return Ok(());
    };
    let mut bytes = Vec::new();
    let read = zstd::stream::read::Decoder::new(packed.as_slice()).and_then(|d| {
        std::io::Read::read_to_end(&mut std::io::Read::take(d, MAX_INDEX_BYTES), &mut bytes)
    });
    if read.is_err() {
        return Ok(());
    }
    if let Some(entries) = kiln_runtime::store::decode_layer_index(&bytes) {
        store.record_layer_entries(blob, &entries)?;
    }
    Ok(())
}

/// What a build leaves for an export: the keys of its keyed steps, in order, the metadata
/// steps' times, and the layers of the image it made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Made {
    pub keys: Vec<String>,
    pub times: Vec<(String, i64)>,
    pub image_layers: BTreeSet<String>,
    /// The ids of the cache mounts its RUN steps used.
    pub mounts: Vec<String>,
}

impl Made {
    /// Adds what another build made (one platform's of a multi-platform build).
    pub fn merge(&mut self, other: Made) {
        self.keys.extend(other.keys);
        self.times.extend(other.times);
        self.image_layers.extend(other.image_layers);
        for m in other.mounts {
            if !self.mounts.contains(&m) {
                self.mounts.push(m);
            }
        }
    }
}

/// Which cache mounts an export carries: none, or those used whose contents are at most
/// `max_size` bytes (a larger one is left out with a warning, so a 5 GB cache never rides
/// along by accident), but the ids in `exclude`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountsPolicy {
    pub export: bool,
    pub max_size: u64,
    pub exclude: Vec<String>,
}

/// What an export left out, said as warnings.
pub type Warnings = Vec<String>;

/// The default `mounts-max-size`: 1 GiB.
pub const MOUNTS_MAX_SIZE: u64 = 1 << 30;

/// Why a cache could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what} is not a kiln build cache: {reason}")]
    NotACache { what: String, reason: String },
}

/// The entries (`mode=min`: those of the image's layers) and times of `made`, and the layers
/// they name (diff_id, size), each once.
fn contents_of(
    store: &Store,
    made: &Made,
    mode: Mode,
) -> Result<(Contents, Vec<(String, u64)>), TransferError> {
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
    let mut layers: Vec<(String, u64)> = Vec::new();
    for e in &entries {
        if !layers.iter().any(|(l, _)| *l == e.layer) {
            layers.push((e.layer.clone(), e.size));
        }
    }
    let times = made
        .times
        .iter()
        .map(|(key, time)| Time {
            key: key.clone(),
            time: *time,
        })
        .collect();
    Ok((
        Contents {
            entries,
            times,
            mounts: Vec::new(),
        },
        layers,
    ))
}

/// The inline cache of an image (`--cache-to type=inline`): its steps' entries (whose layers
/// are the image's own) and times, as its config's `kiln.cache.v1`.
pub fn inline(store: &Store, made: &Made) -> Result<serde_json::Value, TransferError> {
    let (contents, _) = contents_of(store, made, Mode::Min)?;
    serde_json::to_value(&contents).map_err(|e| TransferError::NotACache {
        what: "the inline cache".into(),
        reason: e.to_string(),
    })
}

/// Writes the cache artifact of what `made` says into the store (config and manifest blobs; the
/// layers are the store's own, and a layer for each cache mount `mounts` takes); its manifest's
/// digest, how many entries it holds, and warnings (cache mounts left out).
pub fn make(
    store: &Store,
    made: &Made,
    mode: Mode,
    mounts: &MountsPolicy,
) -> Result<(Digest, usize, Vec<String>), TransferError> {
    let (Contents { entries, times, .. }, mut layers) = contents_of(store, made, mode)?;
    let (mount_contents, warnings) = if mounts.export {
        mount_layers(store, &made.mounts, mounts)?
    } else {
        (Vec::new(), Vec::new())
    };
    for (m, size) in &mount_contents {
        if !layers.iter().any(|(l, _)| *l == m.layer) {
            layers.push((m.layer.clone(), *size));
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
            times,
            entries,
            mounts: mount_contents.into_iter().map(|(m, _)| m).collect(),
        },
        indexes: layers
            .iter()
            .filter_map(|(l, _)| index_of(store, l))
            .collect(),
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
        // A layer only a registry has (this build's remote hits) is named as that registry
        // has it: an export to it finds the blob there, one elsewhere fetches it first.
        layers: layers
            .into_iter()
            .map(|(digest, size)| {
                let remote = Digest::parse(&digest)
                    .ok()
                    .filter(|d| !store.has_blob(d))
                    .and_then(|d| store.remote_layer_of(&d).ok().flatten());
                match remote {
                    Some(r) => r.descriptor,
                    None => Descriptor {
                        media_type: oci::MEDIA_LAYER_TAR.into(),
                        digest,
                        size,
                        ..Default::default()
                    },
                }
            })
            .collect(),
        annotations: BTreeMap::from([(
            "org.opencontainers.image.description".to_string(),
            "kiln build cache".to_string(),
        )]),
    };
    let written = oci::write_json(&manifest, oci::MEDIA_MANIFEST);
    Ok((store.put_blob(&written.bytes)?, count, warnings))
}

/// The cache mounts `ids` as layers (each directory's files, written as a layer of the store
/// while a shared lock keeps steps that lock it out), those `policy` takes.
fn mount_layers(
    store: &Store,
    ids: &[String],
    policy: &MountsPolicy,
) -> Result<(Vec<(MountContents, u64)>, Warnings), TransferError> {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let base = store.root().join("cache-mounts");
    for id in ids {
        if policy.exclude.contains(id) {
            continue;
        }
        let name = crate::exec::mounts::cache_mount_name(id);
        let dir = base.join(&name);
        if !dir.is_dir() {
            continue;
        }
        let io = |e: std::io::Error| {
            TransferError::Store(StoreError::Io {
                path: dir.clone(),
                source: e,
            })
        };
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(base.join(format!("{name}.lock")))
            .map_err(io)?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockShared)
            .map_err(|e| io(e.into()))?;
        let size = kiln_runtime::store::dir_size(&dir);
        if size > policy.max_size {
            warnings.push(format!(
                "cache mount {id} left out: {size} bytes, more than mounts-max-size ({})",
                policy.max_size
            ));
            continue;
        }
        let blob = store.new_blob_file()?;
        let mut w = crate::image::layer::LayerWriter::new(
            std::io::BufWriter::new(blob.file.try_clone().map_err(io)?),
            None,
        );
        w.append_upper(&dir)
            .map_err(|e| io(std::io::Error::other(format!("cache mount {id}: {e}"))))?;
        let (info, mut file) = w.finish().map_err(io)?;
        std::io::Write::flush(&mut file).map_err(io)?;
        drop(file);
        store.commit_blob(blob, &info.diff_id)?;
        out.push((
            MountContents {
                id: id.clone(),
                layer: info.diff_id.to_string(),
            },
            info.size,
        ));
    }
    Ok((out, warnings))
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
    let config_digest =
        Digest::parse(&m.config.digest).map_err(|e| not_a_cache(format!("config: {e}")))?;
    let config_bytes = store.read_blob(&config_digest)?;
    let config: Config = if m.config.media_type == CONFIG_MEDIA_TYPE {
        serde_json::from_slice(&config_bytes).map_err(|e| not_a_cache(format!("config: {e}")))?
    } else {
        // An image: its inline cache (`--cache-to type=inline`), over its own layers.
        let image: oci::ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| not_a_cache(format!("config: {e}")))?;
        let inline = image.inline_cache.ok_or_else(|| {
            not_a_cache("an image without an inline cache (--cache-to type=inline)".into())
        })?;
        Config {
            architecture: image.architecture,
            os: image.os,
            rootfs: RootFs {
                kind: image.rootfs.kind,
                diff_ids: image.rootfs.diff_ids,
            },
            cache: serde_json::from_value(inline)
                .map_err(|e| not_a_cache(format!("inline cache: {e}")))?,
            indexes: Vec::new(),
        }
    };
    if m.layers.len() != config.rootfs.diff_ids.len() {
        return Err(not_a_cache(format!(
            "the manifest lists {} layers, the config {} diff_ids",
            m.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    // The cache's entries name layers by their uncompressed form (diff_id). A layer that came
    // in (a local cache) is kept in that form, as the store keeps its own; a layer only the
    // registry has (a registry cache, read without its layers) is recorded as being there,
    // and fetched when a build first needs its files: a hit alone costs no download, and a
    // push to that registry mounts it.
    for (l, diff_id) in m.layers.iter().zip(&config.rootfs.diff_ids) {
        let blob = Digest::parse(&l.digest).map_err(|e| not_a_cache(e.to_string()))?;
        let diff_id = Digest::parse(diff_id).map_err(|e| not_a_cache(e.to_string()))?;
        if store.has_blob(&blob) {
            store.expand_layer(&diff_id, &blob)?;
        } else {
            store.record_remote_layer(l, &diff_id)?;
            if let Some(index) = config
                .indexes
                .iter()
                .find(|i| i.layer == diff_id.to_string())
            {
                record_index(store, &blob, index)?;
            }
        }
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
        if !store.has_blob(&layer) && store.remote_layer_of(&layer)?.is_none() {
            continue;
        }
        if store.cache_peek(&e.key)?.is_none() {
            store.cache_put(&CacheEntry {
                key: e.key.clone(),
                layer,
                size: e.size,
                description: e.description.clone(),
                created: e.created,
                origin: Some(what.to_string()),
                remote: None,
            })?;
            added += 1;
        }
    }
    for m in &config.cache.mounts {
        if !config.rootfs.diff_ids.contains(&m.layer) {
            return Err(not_a_cache(format!(
                "cache mount {} names layer {}, which the cache does not carry",
                m.id, m.layer
            )));
        }
        let layer = Digest::parse(&m.layer).map_err(|err| not_a_cache(err.to_string()))?;
        // A cache mount's files are read now: fetched when only the registry has them, and
        // read from the blob as it came (compressed), not expanded first.
        let blob = match (store.has_blob(&layer), store.remote_layer_of(&layer)?) {
            (false, Some(r)) => {
                let blob =
                    Digest::parse(&r.descriptor.digest).map_err(|e| not_a_cache(e.to_string()))?;
                store.ensure_blob(&blob)?;
                blob
            }
            _ => layer,
        };
        seed_mount(store, &m.id, &blob)?;
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

/// Seeds cache mount `id` with the files of layer blob `layer` (compressed or not), unless the
/// store has that cache mount
/// already (its own contents win). Unpacked as any layer is, every path inside the directory,
/// and placed as a build places a new cache mount ([`crate::exec::mounts::make_cache_mount`]).
fn seed_mount(store: &Store, id: &str, layer: &Digest) -> Result<(), TransferError> {
    let base = store.root().join("cache-mounts");
    let name = crate::exec::mounts::cache_mount_name(id);
    let dir = base.join(&name);
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| TransferError::Store(StoreError::Io { path, source: e })
    };
    if std::fs::symlink_metadata(&dir).is_ok() {
        return Ok(());
    }
    // A cache mount holds files a build made: a device node in one from a shared cache is
    // refused, so no cache can hand a build a device (the sandbox's device list would deny
    // its use anyway; this keeps it out of the store).
    let blob = store.blob_path(layer);
    let open = || kiln_runtime::layer::view::open_layer(&blob);
    let mut archive = tar::Archive::new(open().map_err(io(&blob))?);
    for entry in archive.entries().map_err(io(&blob))? {
        let entry = entry.map_err(io(&blob))?;
        let kind = entry.header().entry_type();
        if kind.is_block_special() || kind.is_character_special() {
            return Err(TransferError::NotACache {
                what: format!("cache mount {id}"),
                reason: format!(
                    "it holds a device node ({})",
                    String::from_utf8_lossy(&entry.path_bytes())
                ),
            });
        }
    }
    std::fs::create_dir_all(&base).map_err(io(&base))?;
    crate::exec::mounts::make_cache_mount(&base, &name, id, &|tmp| {
        kiln_runtime::layer::unpack::unpack_for_overlay(open()?, tmp)
            .map_err(|e| std::io::Error::other(e.to_string()))
    })
    .map_err(io(&dir))?;
    Ok(())
}

/// Where a cache goes to or comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An OCI layout directory (`type=local,dest=DIR` / `src=DIR`).
    Local(std::path::PathBuf),
    /// A registry reference (`type=registry,ref=REPO:TAG`, or `--cache-from REPO:TAG`).
    Registry(String),
    /// `--cache-to type=inline`: in the image's own config, read back by `--cache-from IMAGE`.
    Inline,
}

/// A `--cache-to` or `--cache-from` as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub location: Location,
    pub mode: Mode,
    pub compression: kiln_runtime::store::LayerCompression,
    /// `ignore-error=true`: a failed export is a warning (it always is for an import).
    pub ignore_error: bool,
    /// `mounts=true[,mounts-max-size=SIZE][,mounts-exclude=ID:ID]`: cache mounts ride along.
    pub mounts: MountsPolicy,
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
        "inline" if to => Location::Inline,
        "inline" => {
            return Err(format!(
                "{flag} {text}: an inline cache is read from its image: --cache-from IMAGE"
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
    let mounts = MountsPolicy {
        export: match get("mounts") {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => return Err(format!("{flag} {text}: mounts={v}: true or false")),
        },
        max_size: match get("mounts-max-size") {
            None => MOUNTS_MAX_SIZE,
            Some(v) => parse_size(v)
                .ok_or_else(|| format!("{flag} {text}: mounts-max-size={v}: a size (512m, 2g)"))?,
        },
        exclude: get("mounts-exclude")
            .map(|v| {
                v.split(':')
                    .filter(|i| !i.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    };
    const KNOWN: [&str; 10] = [
        "type",
        "dest",
        "src",
        "ref",
        "mode",
        "compression",
        "ignore-error",
        "mounts",
        "mounts-max-size",
        "mounts-exclude",
    ];
    if let Some(k) = fields.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!("{flag} {text}: unknown option {k:?}"));
    }
    Ok(Spec {
        location,
        mode,
        compression,
        ignore_error,
        mounts,
    })
}

/// `512m`, `2g`, `1024k` or bytes.
fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_lowercase();
    let (num, mult) = match v.strip_suffix('b').unwrap_or(&v) {
        s if s.ends_with('k') => (&s[..s.len() - 1], 1u64 << 10),
        s if s.ends_with('m') => (&s[..s.len() - 1], 1 << 20),
        s if s.ends_with('g') => (&s[..s.len() - 1], 1 << 30),
        s => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
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
            // Its manifest and config only: the layers stay in the registry until a build
            // needs their files (a hit needs none). Nothing is named by it.
            let opts = kiln_runtime::registry::PullOptions {
                registry: registry.clone(),
                ..Default::default()
            };
            let mut added = 0;
            for manifest in kiln_runtime::registry::fetch_images(store, reference, &opts)? {
                added += import(store, &manifest, reference)?;
            }
            Ok(added)
        }
        Location::Inline => Ok(0),
    }
}

/// Puts the directory `new` at `dest` in one step: exchanged with the one there (renameat2's
/// RENAME_EXCHANGE, so `dest` never goes missing), the old one then removed; or renamed into
/// place when there is none. Another writer doing the same at once makes it try again.
fn swap_in(new: &std::path::Path, dest: &std::path::Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    for _ in 0..100 {
        match renameat_with(CWD, new, CWD, dest, RenameFlags::EXCHANGE) {
            Ok(()) => {
                // `new` now holds what was at `dest`.
                return std::fs::remove_dir_all(new);
            }
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        match renameat_with(CWD, new, CWD, dest, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(std::io::Error::other("another export kept replacing it"))
}

/// Exports the cache of a build (`made`) to `spec`; how many entries it holds, and warnings
/// (cache mounts left out).
pub fn export_to(
    store: &Store,
    made: &Made,
    spec: &Spec,
    registry: &kiln_runtime::registry::Options,
) -> Result<(usize, Warnings), MoveError> {
    if spec.location == Location::Inline {
        // Already in the image's config (the build wrote it there); it goes where the image
        // goes.
        return Ok((
            contents_of(store, made, Mode::Min)?.0.entries.len(),
            Vec::new(),
        ));
    }
    let (manifest, count, warnings) = make(store, made, spec.mode, &spec.mounts)?;
    match &spec.location {
        Location::Local(dest) => {
            // Written beside, then swapped in: a reader sees the old layout or the new one,
            // never half of one, and never none; of two writers at once, the last one's stays.
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
            let _ = std::fs::remove_dir_all(&tmp);
            store.save(
                &[("kiln-cache".into(), manifest)],
                &tmp,
                true,
                spec.compression,
            )?;
            swap_in(&tmp, dest).map_err(io(dest))?;
        }
        Location::Registry(reference) => {
            let opts = kiln_runtime::registry::PushOptions {
                registry: registry.clone(),
                jobs: 0,
                compression: spec.compression,
            };
            kiln_runtime::registry::push(store, &manifest.to_string(), reference, &opts, &|_| {})?;
        }
        Location::Inline => {}
    }
    Ok((count, warnings))
}
