//! What the build cache holds and what removing it would free (`kiln cache ls/du/prune`,
//! `kiln system df`). One row per:
//! - cached layer (the `cache` table; its blob and the blob's gzip form, if made);
//! - cache-mount directory (`cache-mounts/`);
//! - unpacked layer directory (`layers/`, [`super::unpacked`]);
//! - context snapshot (the digests kept of a build context, [`super::contexts`]);
//! - base image a build used ([`super::bases`]).
//!
//! An entry is *shared* when a tagged image or another entry needs one of its blobs (removing
//! the entry alone then does not free them). It is *in use* when a tagged image needs it, and
//! *pinned* when something running holds it: a RUN step its cache mount, a container its
//! unpacked layers. Pruning never removes a blob a tagged image needs nor anything pinned, and
//! waits for running builds, loads, saves, tags, verifies and container starts (`build.lock`):
//! they hold it shared while they choose what they use, so an entry cannot disappear under them.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use super::{Store, StoreError, db::now, io_err};
use crate::digest::Digest;

/// An entry's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Layer,
    CacheMount,
    Unpacked,
    Context,
    BaseImage,
    /// A blob nothing references (an image's manifest or config after its tag moved on, a
    /// failed load's layers): never listed as an entry, removed by prune (as filters allow).
    Unreferenced,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Layer => "layer",
            Kind::CacheMount => "cache-mount",
            Kind::Unpacked => "unpacked",
            Kind::Context => "context",
            Kind::BaseImage => "base-image",
            Kind::Unreferenced => "unreferenced",
        }
    }

    /// A `type=` filter's value: kiln's names, and BuildKit's where one means the same.
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "layer" | "regular" => Kind::Layer,
            "cache-mount" | "exec.cachemount" => Kind::CacheMount,
            "unpacked" => Kind::Unpacked,
            "context" | "source.local" => Kind::Context,
            "base-image" => Kind::BaseImage,
            "unreferenced" => Kind::Unreferenced,
            _ => return None,
        })
    }
}

/// One cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The cache key (layers), the cache-mount directory's name, `layers/<chain id>`
    /// (unpacked), the context's directory, or the base image's manifest digest.
    pub key: String,
    pub kind: Kind,
    pub size: u64,
    /// Some of its bytes are also used by an image or another entry.
    pub shared: bool,
    /// How many of its bytes those are (the rest are its own).
    pub shared_size: u64,
    /// A tagged image needs it, or something running holds it.
    pub in_use: bool,
    pub created: i64,
    pub last_used: i64,
    /// Cache hits or uses by builds; not counted for cache mounts.
    pub uses: Option<u64>,
    /// The step that made it (`[build 3/7] RUN make (Dockerfile:12)`), the cache mount's id,
    /// the directory, or the base image's name.
    pub description: String,
    /// Held by something running (a RUN step, a container): never removed.
    pinned: bool,
    /// The blobs it accounts for (digest, bytes); `size` is their sum when there are any.
    blobs: Vec<(String, u64)>,
}

impl Usage {
    /// The short id `kiln cache ls` shows (12 hex digits of the key's hash).
    pub fn id(&self) -> String {
        Digest::of(self.key.as_bytes()).hex()[..12].to_string()
    }
}

/// Totals for `kiln cache du`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub entries: usize,
    /// Bytes also used by images (or shared between entries).
    pub shared: u64,
    pub private: u64,
    /// What `kiln cache prune` (no flags) would free.
    pub reclaimable: u64,
    pub total: u64,
}

/// What to prune.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Also entries an image uses (their blobs stay: the image needs them).
    pub all: bool,
    /// Only entries last used more than this many seconds ago.
    pub until: Option<i64>,
    pub kinds: Vec<Kind>,
    pub description: Option<regex::Regex>,
    /// Remove least recently used first, only until the cache is at most this size.
    pub keep_storage: Option<u64>,
    pub dry_run: bool,
}

impl PruneOptions {
    /// From `--filter` values: `type=layer|cache-mount` (BuildKit's `regular` and
    /// `exec.cachemount` too), `until=DURATION` (`10s`, `30m`, `24h`, `7d`: last used before),
    /// `description~=REGEX`.
    pub fn from_filters(filters: &[String]) -> Result<PruneOptions, String> {
        let mut o = PruneOptions::default();
        for f in filters {
            if let Some(re) = f.strip_prefix("description~=") {
                o.description = Some(
                    regex::Regex::new(re)
                        .map_err(|e| format!("--filter {f}: bad regular expression: {e}"))?,
                );
            } else if let Some(d) = f.strip_prefix("until=") {
                o.until = Some(duration(d).map_err(|e| format!("--filter {f}: {e}"))?);
            } else if let Some(t) = f.strip_prefix("type=") {
                o.kinds.push(Kind::parse(t).ok_or_else(|| {
                    format!(
                        "--filter {f}: types are layer, cache-mount, unpacked, context and \
                         base-image"
                    )
                })?);
            } else {
                return Err(format!(
                    "--filter {f}: expected type=, until= or description~="
                ));
            }
        }
        Ok(o)
    }

    /// Whether the filters (type, until, description) select `u` at time `now`.
    pub fn selects(&self, u: &Usage, now: i64) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&u.kind))
            && self.until.is_none_or(|s| u.last_used <= now - s)
            && self
                .description
                .as_ref()
                .is_none_or(|re| re.is_match(&u.description))
    }
}

/// A Go duration (`90s`, `1h30m`, `24h`: what docker's `until=` takes) or whole days (`7d`),
/// in seconds.
pub fn duration(s: &str) -> Result<i64, String> {
    let days = s.strip_suffix('d').and_then(|n| n.parse::<i64>().ok());
    let secs = match days {
        Some(d) => Some(i128::from(d) * 86_400),
        None => kiln_parser::instruction::values::parse_go_duration(s).map(|ns| ns / 1_000_000_000),
    };
    secs.and_then(|v| i64::try_from(v).ok()).ok_or_else(|| {
        format!("invalid duration {s:?}: use a Go duration (90s, 1h30m) or days (7d)")
    })
}

/// `kiln system df`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Df {
    pub images: usize,
    pub image_bytes: u64,
    pub containers: usize,
    pub container_bytes: u64,
    pub cache: Totals,
}

/// Bytes on disk under `p` (allocated blocks, not followed through symlinks).
pub fn dir_size(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if let Ok(m) = e.path().symlink_metadata() {
                total += m.blocks() * 512;
                if m.is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }
    total
}

pub(super) fn mtime(p: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).map_or(0, |m| m.mtime())
}

/// What tagged images need: their blobs (manifests, configs, layers) and the ChainIDs of their
/// layer stacks (the unpacked directories a `kiln run` of them uses).
#[derive(Debug, Default)]
struct ImageNeeds {
    blobs: BTreeSet<String>,
    chains: BTreeSet<String>,
}

fn n64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    fn image_needs(&self) -> Result<ImageNeeds, StoreError> {
        let mut needs = ImageNeeds::default();
        // A tag's image, or every image of a tagged index.
        let tagged: Vec<Digest> = self
            .tags()?
            .iter()
            .flat_map(|t| self.manifests_of(&t.digest))
            .collect();
        for digest in tagged {
            needs.blobs.insert(digest.to_string());
            if let Ok((m, config, c)) = self.image_of_manifest(&digest) {
                needs.blobs.insert(c.to_string());
                needs
                    .blobs
                    .extend(m.layers.iter().map(|l| l.digest.clone()));
                let diffs: Vec<Digest> = config
                    .rootfs
                    .diff_ids
                    .iter()
                    .filter_map(|d| Digest::parse(d).ok())
                    .collect();
                for i in 0..diffs.len() {
                    if let Some(c) = crate::oci::chain_id(&diffs[..=i]) {
                        needs.chains.insert(c.hex().to_string());
                    }
                }
            }
        }
        Ok(needs)
    }

    /// Every blob that neither `needed` nor one of the entries `chosen` for removal accounts
    /// for: garbage, as one entry each. Safe only under `build.lock` held exclusively (no build,
    /// load or save is writing a blob it has not referenced yet).
    fn unreferenced_blobs(
        &self,
        needed: &BTreeSet<String>,
        chosen: &[Usage],
    ) -> Result<Vec<Usage>, StoreError> {
        let accounted: BTreeSet<&String> = chosen
            .iter()
            .flat_map(|u| u.blobs.iter().map(|(b, _)| b))
            .collect();
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let digest = format!("sha256:{name}");
            if Digest::parse(&digest).is_err()
                || needed.contains(&digest)
                || accounted.contains(&digest)
            {
                continue;
            }
            let Ok(meta) = e.metadata() else { continue };
            let modified = meta
                .modified()
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            out.push(Usage {
                key: digest.clone(),
                kind: Kind::Unreferenced,
                size: meta.len(),
                shared: false,
                shared_size: 0,
                in_use: false,
                created: modified,
                last_used: modified,
                uses: None,
                description: format!("blob {digest} that nothing references"),
                pinned: false,
                blobs: vec![(digest, meta.len())],
            });
        }
        Ok(out)
    }

    /// The unpacked layers running containers use (recorded by each when it starts,
    /// [`Store::note_container_layers`]).
    fn pinned_chains(&self) -> Result<BTreeSet<String>, StoreError> {
        let mut out = BTreeSet::new();
        for c in self.containers()? {
            if c.state().is_live() {
                let p = self.root.join("containers").join(&c.id).join("layers");
                let text = std::fs::read_to_string(p).unwrap_or_default();
                out.extend(text.lines().map(str::to_string));
            }
        }
        Ok(out)
    }

    /// Records which unpacked layers (`layers/<chain>`, top first, as
    /// [`Store::unpacked_layers`] returned them) container `id` uses while it runs. Call it
    /// while holding [`Store::build_guard`] from before choosing the layers, so a prune either
    /// ran before (and the layers were unpacked again) or sees this.
    pub fn note_container_layers(
        &self,
        id: &str,
        dirs: &[std::path::PathBuf],
    ) -> Result<(), StoreError> {
        let dir = self.root.join("containers").join(id);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let text: String = dirs
            .iter()
            .filter_map(|d| d.file_name())
            .map(|n| format!("{}\n", n.to_string_lossy()))
            .collect();
        let p = dir.join("layers");
        crate::inplace::overwrite(&p, text.as_bytes()).map_err(io_err(&p))
    }

    /// The cache's layer entries, each with its blob and the blob's gzip form.
    fn layer_rows(
        &self,
        gz: &BTreeMap<String, Vec<(String, u64)>>,
        needs: &ImageNeeds,
    ) -> Result<Vec<Usage>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT key, layer, size, description, created, last_used, uses, origin FROM cache",
            )
            .map_err(self.db_err())?;
        let rows = stmt
            .query_map([], |r| {
                let layer: String = r.get(1)?;
                let mut blobs = vec![(layer.clone(), n64(r.get(2)?))];
                blobs.extend(gz.get(&layer).into_iter().flatten().cloned());
                Ok(Usage {
                    key: r.get(0)?,
                    kind: Kind::Layer,
                    size: blobs.iter().map(|b| b.1).sum(),
                    shared: false,
                    shared_size: 0,
                    in_use: needs.blobs.contains(&layer),
                    created: r.get(4)?,
                    last_used: r.get(5)?,
                    uses: Some(n64(r.get(6)?)),
                    // An imported entry says where it came from.
                    description: match r.get::<_, Option<String>>(7)? {
                        Some(o) => format!("{} (imported from {o})", r.get::<_, String>(3)?),
                        None => r.get(3)?,
                    },
                    pinned: false,
                    blobs,
                })
            })
            .map_err(self.db_err())?;
        rows.collect::<Result<_, _>>().map_err(self.db_err())
    }

    fn cache_mount_rows(&self) -> Vec<Usage> {
        let mut out = Vec::new();
        let cm = self.root.join("cache-mounts");
        let Ok(entries) = std::fs::read_dir(&cm) else {
            return out;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !e.path().is_dir() {
                continue;
            }
            let lock = cm.join(format!("{name}.lock"));
            // Held by a RUN step (shared or exclusive) when an exclusive try fails.
            let held = std::fs::File::open(&lock).is_ok_and(|f| {
                rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err()
            });
            let id = std::fs::read_to_string(cm.join(format!("{name}.id"))).unwrap_or_default();
            out.push(Usage {
                key: name.clone(),
                kind: Kind::CacheMount,
                size: dir_size(&e.path()),
                shared: false,
                shared_size: 0,
                in_use: held,
                created: mtime(&cm.join(format!("{name}.id"))),
                last_used: mtime(&lock),
                uses: None,
                description: format!("cache mount id={id}"),
                pinned: held,
                blobs: Vec::new(),
            });
        }
        out
    }

    fn unpacked_rows(
        &self,
        needs: &ImageNeeds,
        made_by: &BTreeMap<String, String>,
    ) -> Result<Vec<Usage>, StoreError> {
        let pinned = self.pinned_chains()?;
        Ok(self
            .unpacked_dirs()?
            .into_iter()
            .map(|u| {
                let running = pinned.contains(&u.chain);
                let what = u.diff_id.as_ref().and_then(|d| made_by.get(d));
                Usage {
                    key: format!("layers/{}", u.chain),
                    kind: Kind::Unpacked,
                    size: u.size,
                    shared: false,
                    shared_size: 0,
                    in_use: running || needs.chains.contains(&u.chain),
                    created: u.created,
                    last_used: u.last_used,
                    uses: Some(u.uses),
                    description: match what {
                        Some(w) => format!("unpacked {w}"),
                        // Any name (a stray directory too): never sliced inside a character.
                        None => format!(
                            "unpacked layer {}",
                            u.chain.chars().take(12).collect::<String>()
                        ),
                    },
                    pinned: running,
                    blobs: Vec::new(),
                }
            })
            .collect())
    }

    fn context_rows(&self) -> Result<Vec<Usage>, StoreError> {
        Ok(self
            .contexts()?
            .into_iter()
            .map(|c| Usage {
                description: format!(
                    "context {} ({} files, {} read)",
                    c.dir,
                    c.files,
                    kiln_parser::instruction::values::format_size(c.bytes)
                ),
                key: c.dir,
                kind: Kind::Context,
                size: c.size,
                shared: false,
                shared_size: 0,
                in_use: false,
                created: c.created,
                last_used: c.last_used,
                uses: Some(c.uses),
                pinned: false,
                blobs: Vec::new(),
            })
            .collect())
    }

    /// The base images builds used; notes in `made_by` which base each layer (diff_id) is of.
    fn base_rows(
        &self,
        gz: &BTreeMap<String, Vec<(String, u64)>>,
        needs: &ImageNeeds,
        made_by: &mut BTreeMap<String, String>,
    ) -> Result<Vec<Usage>, StoreError> {
        let mut out = Vec::new();
        for b in self.bases()? {
            let size_of = |d: &str| {
                Digest::parse(d)
                    .ok()
                    .and_then(|d| std::fs::metadata(self.blob_path(&d)).ok())
                    .map(|m| m.len())
            };
            let mut names = vec![b.manifest.to_string()];
            if let Ok((m, c, config)) = self.image(&b.manifest) {
                names.push(config.to_string());
                let n = c.rootfs.diff_ids.len();
                for (i, d) in c.rootfs.diff_ids.iter().enumerate() {
                    // The step that made it says more, when the cache has it.
                    made_by.entry(d.clone()).or_insert_with(|| {
                        format!("layer {}/{n} of base image {}", i + 1, b.reference)
                    });
                }
                for l in &m.layers {
                    names.push(l.digest.clone());
                    for g in gz.get(&l.digest).into_iter().flatten() {
                        names.push(g.0.clone());
                    }
                }
            }
            let blobs: Vec<(String, u64)> = names
                .into_iter()
                .filter_map(|n| Some((n.clone(), size_of(&n)?)))
                .collect();
            let manifest = b.manifest.to_string();
            out.push(Usage {
                size: blobs.iter().map(|b| b.1).sum(),
                shared: false,
                shared_size: 0,
                in_use: needs.blobs.contains(&manifest),
                created: b.created,
                last_used: b.last_used,
                uses: Some(b.uses),
                description: format!("base image {} ({})", b.reference, &manifest[..19]),
                key: manifest,
                kind: Kind::BaseImage,
                pinned: false,
                blobs,
            });
        }
        Ok(out)
    }

    /// Every cache entry, least recently used first.
    pub fn cache_usage(&self) -> Result<Vec<Usage>, StoreError> {
        let needs = self.image_needs()?;
        let gz = self.compressed_forms()?;
        let mut out = self.layer_rows(&gz, &needs)?;
        // What made each layer (by diff_id: a cache entry's blob is its uncompressed tar), to
        // say what an unpacked directory holds.
        let mut made_by: BTreeMap<String, String> = out
            .iter()
            .filter_map(|u| Some((u.blobs.first()?.0.clone(), u.description.clone())))
            .collect();
        out.extend(self.base_rows(&gz, &needs, &mut made_by)?);
        out.extend(self.unpacked_rows(&needs, &made_by)?);
        out.extend(self.cache_mount_rows());
        out.extend(self.context_rows()?);
        // Shared: a blob an image needs, or that another entry accounts for too.
        let mut refs: BTreeMap<&str, usize> = BTreeMap::new();
        for u in &out {
            for (b, _) in &u.blobs {
                *refs.entry(b.as_str()).or_default() += 1;
            }
        }
        // (any, bytes) of each entry's blobs that are needed elsewhere.
        let shared: Vec<(bool, u64)> = out
            .iter()
            .map(|u| {
                let elsewhere: Vec<u64> = u
                    .blobs
                    .iter()
                    .filter(|(b, _)| {
                        needs.blobs.contains(b) || refs.get(b.as_str()).is_some_and(|n| *n > 1)
                    })
                    .map(|(_, n)| *n)
                    .collect();
                (!elsewhere.is_empty(), elsewhere.iter().sum())
            })
            .collect();
        for (u, (any, bytes)) in out.iter_mut().zip(shared) {
            u.shared = any;
            u.shared_size = bytes;
        }
        out.sort_by(|a, b| (a.last_used, &a.key).cmp(&(b.last_used, &b.key)));
        Ok(out)
    }

    /// Sums for `kiln cache du`.
    pub fn cache_totals(&self) -> Result<Totals, StoreError> {
        Ok(totals(&self.cache_usage()?))
    }

    /// Images, containers and the build cache, summed.
    pub fn system_df(&self) -> Result<Df, StoreError> {
        let images = self.images()?;
        let containers = self.containers()?;
        Ok(Df {
            images: images.len(),
            image_bytes: images.iter().map(|i| i.size).sum(),
            containers: containers.len(),
            container_bytes: containers
                .iter()
                .map(|c| dir_size(&self.root.join("containers").join(&c.id)))
                .sum(),
            cache: self.cache_totals()?,
        })
    }

    /// The store-wide default log options of containers: `ROOT/kiln.json`
    /// `{"log-opts": {"max-size": "10m", "max-file": "3"}}`, as docker's `daemon.json`, each as
    /// `key=value` (a container's own `--log-opt` wins key by key, as docker merges them).
    pub fn default_log_opts(&self) -> Result<Vec<String>, StoreError> {
        let p = self.root.join("kiln.json");
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&p)(e)),
        };
        let bad = |why: String| StoreError::Destination {
            path: p.clone(),
            reason: format!("log-opts: {why}"),
        };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        match &v["log-opts"] {
            serde_json::Value::Null => Ok(Vec::new()),
            serde_json::Value::Object(m) => m
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => Ok(format!("{k}={s}")),
                    serde_json::Value::Number(n) => Ok(format!("{k}={n}")),
                    _ => Err(bad(format!("{k}: expected a string such as \"10m\""))),
                })
                .collect(),
            _ => Err(bad(
                "expected an object such as {\"max-size\": \"10m\"}".into()
            )),
        }
    }

    /// The automatic GC policy: `ROOT/kiln.json` `{"gc": {"keep_storage": "10GB"}}` (bytes or
    /// a size with a unit). `None`: no automatic GC.
    pub fn gc_keep_storage(&self) -> Result<Option<u64>, StoreError> {
        let p = self.root.join("kiln.json");
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&p)(e)),
        };
        let bad = |why: &str| StoreError::Destination {
            path: p.clone(),
            reason: format!("gc.keep_storage: {why}"),
        };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
        match &v["gc"]["keep_storage"] {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::Number(n) => n.as_u64().map(Some).ok_or_else(|| bad("not a size")),
            // The same units as `--keep-storage` and `--memory` (docker's RAMInBytes).
            serde_json::Value::String(s) => kiln_parser::instruction::values::parse_ram_size(s)
                .map(Some)
                .ok_or_else(|| bad(&format!("{s:?} is not a size (e.g. 10GB, 512MB)"))),
            _ => Err(bad("expected a size")),
        }
    }

    /// After a build: when a GC policy is set and the cache is over it, removes least
    /// recently used entries no image uses until it fits. Returns the bytes freed.
    pub fn auto_gc(&self) -> Result<u64, StoreError> {
        let Some(keep) = self.gc_keep_storage()? else {
            return Ok(0);
        };
        if self.cache_totals()?.total <= keep {
            return Ok(0);
        }
        let opts = PruneOptions {
            keep_storage: Some(keep),
            ..PruneOptions::default()
        };
        Ok(self.cache_prune(&opts)?.1)
    }

    /// Holds off `kiln cache prune` while a build runs (shared; prune takes it exclusively).
    pub fn build_guard(&self) -> Result<std::fs::File, StoreError> {
        super::lock_file(
            &self.root.join("build.lock"),
            rustix::fs::FlockOperation::LockShared,
        )
    }

    /// Removes what `opts` selects; returns the removed entries and the bytes freed. Waits for
    /// running builds to finish first.
    pub fn cache_prune(&self, opts: &PruneOptions) -> Result<(Vec<Usage>, u64), StoreError> {
        let _exclusive = super::lock_file(
            &self.root.join("build.lock"),
            rustix::fs::FlockOperation::LockExclusive,
        )?;
        let usage = self.cache_usage()?;
        let t = now();
        let mut total = totals(&usage).total;
        let mut chosen = Vec::new();
        // The blobs of the entries that stay (nothing can add one: builds, loads and tags wait).
        let mut kept_blobs = BTreeSet::new();
        for u in usage {
            let fits = opts.keep_storage.is_some_and(|keep| total <= keep);
            // In use: only --all forgets it (never a blob an image needs: those stay); pinned:
            // never.
            let free = !u.pinned && (!u.in_use || opts.all);
            if !fits && free && opts.selects(&u, t) {
                // What removing it frees: not bytes an image or another entry keeps.
                if !u.shared {
                    total = total.saturating_sub(u.size);
                }
                chosen.push(u);
            } else {
                kept_blobs.extend(u.blobs.into_iter().map(|(b, _)| b));
            }
        }
        // Everything that stays needs: images, the remaining entries, and the remembered gzip
        // form of any layer they keep.
        let mut needed = self.image_needs()?.blobs;
        needed.append(&mut kept_blobs);
        for (diff_id, forms) in self.compressed_forms()? {
            if needed.contains(&diff_id) {
                needed.extend(forms.into_iter().map(|(d, _)| d));
            }
        }
        // Filters choose among them as among entries (`until=` by the blob's age).
        let orphans = self.unreferenced_blobs(&needed, &chosen)?;
        chosen.extend(orphans.into_iter().filter(|u| opts.selects(u, t)));
        if opts.dry_run {
            let freed = chosen.iter().filter(|u| !u.shared).map(|u| u.size).sum();
            return Ok((chosen, freed));
        }
        let mut freed = 0;
        for u in &chosen {
            match u.kind {
                // Its blob goes below, with the blobs of the entries removed.
                Kind::Unreferenced => {}
                Kind::Layer => self.cache_remove(&u.key)?,
                Kind::BaseImage => self.forget_base(&u.key)?,
                Kind::Context => {
                    self.forget_context(&u.key)?;
                    freed += u.size;
                }
                Kind::Unpacked => {
                    self.remove_unpacked(u.key.trim_start_matches("layers/"))?;
                    freed += u.size;
                }
                Kind::CacheMount => {
                    let cm = self.root.join("cache-mounts");
                    self.discard_dir(&cm.join(&u.key))?;
                    let _ = std::fs::remove_file(cm.join(format!("{}.id", u.key)));
                    freed += u.size;
                }
            }
        }
        // Blobs of removed entries that nothing needs any more: no image, no remaining entry.
        let mut gone = BTreeSet::new();
        for (b, size) in chosen.iter().flat_map(|u| &u.blobs) {
            if needed.contains(b) || !gone.insert(b.clone()) {
                continue;
            }
            if let Ok(d) = Digest::parse(b) {
                let p: PathBuf = self.blob_path(&d);
                if std::fs::remove_file(&p).is_ok() {
                    freed += size;
                }
                self.forget_compressed(b)?;
            }
        }
        Ok((chosen, freed))
    }
}

/// Sums over `usage`: a blob several entries account for counts once.
fn totals(usage: &[Usage]) -> Totals {
    let mut t = Totals {
        entries: usage.len(),
        ..Totals::default()
    };
    let mut counted = BTreeSet::new();
    for u in usage {
        // A blob several entries account for counts once.
        let size = if u.blobs.is_empty() {
            u.size
        } else {
            u.blobs
                .iter()
                .filter(|(b, _)| counted.insert(b.clone()))
                .map(|(_, n)| n)
                .sum()
        };
        t.total += size;
        if u.shared {
            t.shared += size;
        } else {
            t.private += size;
            if !u.in_use {
                t.reclaimable += size;
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind, shared: bool, in_use: bool, blobs: &[(&str, u64)], size: u64) -> Usage {
        Usage {
            key: format!("{kind:?}{blobs:?}"),
            kind,
            size,
            shared,
            shared_size: 0,
            in_use,
            created: 0,
            last_used: 0,
            uses: None,
            description: String::new(),
            pinned: false,
            blobs: blobs.iter().map(|(b, n)| ((*b).to_string(), *n)).collect(),
        }
    }

    #[test]
    fn a_blob_two_entries_account_for_counts_once() {
        let t = totals(&[
            // A base image and a layer entry holding the same blob "l".
            entry(Kind::BaseImage, true, true, &[("m", 1), ("l", 100)], 101),
            entry(Kind::Layer, true, false, &[("l", 100), ("gz", 40)], 140),
            entry(Kind::Unpacked, false, false, &[], 1000),
            entry(Kind::CacheMount, false, true, &[], 7),
        ]);
        assert_eq!(
            t,
            Totals {
                entries: 4,
                shared: 141,
                private: 1007,
                reclaimable: 1000,
                total: 1148,
            }
        );
    }
}
