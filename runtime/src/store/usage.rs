//! What the build cache holds and what removing it would free (`kiln cache ls/du/prune`,
//! `kiln system df`): one row per cached layer (the `cache` table) and per cache-mount
//! directory (`cache-mounts/`).
//!
//! A layer is *shared* when a tagged image uses its blob or another entry has the same blob
//! (its size then is not freed by removing the entry alone); a cache mount is *in use* while a
//! RUN step holds its lock. Pruning never removes a blob a tagged image needs, never a cache
//! mount in use, and waits for running builds (`build.lock`): a build holds it shared from start
//! to end, so an entry it has just hit cannot disappear under it.

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
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Layer => "layer",
            Kind::CacheMount => "cache-mount",
        }
    }
}

/// One cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The cache key (layers) or the cache-mount directory name.
    pub key: String,
    pub kind: Kind,
    pub size: u64,
    /// Its bytes are also used by an image or another entry.
    pub shared: bool,
    /// A tagged image uses it (layers), or a RUN step holds it now (cache mounts).
    pub in_use: bool,
    pub created: i64,
    pub last_used: i64,
    /// Cache hits (layers); uses are not counted for cache mounts.
    pub uses: Option<u64>,
    /// The step that made it, or the cache mount's id.
    pub description: String,
    layer: Option<String>,
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
                o.kinds.push(match t {
                    "layer" | "regular" => Kind::Layer,
                    "cache-mount" | "exec.cachemount" => Kind::CacheMount,
                    _ => return Err(format!("--filter {f}: types are layer and cache-mount")),
                });
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
pub(crate) fn dir_size(p: &Path) -> u64 {
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

fn mtime(p: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).map_or(0, |m| m.mtime())
}

impl Store {
    /// Blobs tagged images use (manifests, configs, layers).
    fn image_blobs(&self) -> Result<BTreeSet<String>, StoreError> {
        let mut used = BTreeSet::new();
        for t in self.tags()? {
            used.insert(t.digest.to_string());
            if let Ok((m, _, config)) = self.image(&t.digest) {
                used.insert(config.to_string());
                used.extend(m.layers.iter().map(|l| l.digest.clone()));
            }
        }
        Ok(used)
    }

    /// Every cache entry, oldest use first.
    pub fn cache_usage(&self) -> Result<Vec<Usage>, StoreError> {
        let images = self.image_blobs()?;
        let rows: Vec<(String, String, i64, String, i64, i64, i64)> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT key, layer, size, description, created, last_used, uses FROM cache",
                )
                .map_err(self.db_err())?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })
                .map_err(self.db_err())?;
            rows.collect::<Result<_, _>>().map_err(self.db_err())?
        };
        let mut per_blob: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &rows {
            *per_blob.entry(r.1.as_str()).or_default() += 1;
        }
        let mut out: Vec<Usage> = rows
            .iter()
            .map(|(key, layer, size, desc, created, last_used, uses)| {
                let by_image = images.contains(layer);
                Usage {
                    key: key.clone(),
                    kind: Kind::Layer,
                    size: u64::try_from(*size).unwrap_or(0),
                    shared: by_image || per_blob.get(layer.as_str()).is_some_and(|n| *n > 1),
                    in_use: by_image,
                    created: *created,
                    last_used: *last_used,
                    uses: u64::try_from(*uses).ok(),
                    description: desc.clone(),
                    layer: Some(layer.clone()),
                }
            })
            .collect();
        let cm = self.root.join("cache-mounts");
        if let Ok(entries) = std::fs::read_dir(&cm) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !e.path().is_dir() {
                    continue;
                }
                let lock = cm.join(format!("{name}.lock"));
                // Held by a RUN step (shared or exclusive) when an exclusive try fails.
                let in_use = std::fs::File::open(&lock).is_ok_and(|f| {
                    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                        .is_err()
                });
                let id = std::fs::read_to_string(cm.join(format!("{name}.id"))).unwrap_or_default();
                out.push(Usage {
                    key: name.clone(),
                    kind: Kind::CacheMount,
                    size: dir_size(&e.path()),
                    shared: false,
                    in_use,
                    created: mtime(&cm.join(format!("{name}.id"))),
                    last_used: mtime(&lock),
                    uses: None,
                    description: format!("cache mount id={id}"),
                    layer: None,
                });
            }
        }
        out.sort_by(|a, b| (a.last_used, &a.key).cmp(&(b.last_used, &b.key)));
        Ok(out)
    }

    /// Sums for `kiln cache du`.
    pub fn cache_totals(&self) -> Result<Totals, StoreError> {
        let usage = self.cache_usage()?;
        let mut t = Totals {
            entries: usage.len(),
            ..Totals::default()
        };
        let mut counted = BTreeSet::new();
        for u in &usage {
            // A blob shared by several entries counts once.
            if let Some(l) = &u.layer {
                if !counted.insert(l.clone()) {
                    continue;
                }
            }
            t.total += u.size;
            if u.shared {
                t.shared += u.size;
            } else {
                t.private += u.size;
                if !u.in_use {
                    t.reclaimable += u.size;
                }
            }
        }
        Ok(t)
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
        let mut total: u64 = usage.iter().map(|u| u.size).sum();
        let mut chosen = Vec::new();
        for u in usage {
            if let Some(keep) = opts.keep_storage {
                if total <= keep {
                    break;
                }
            }
            // In use: an image needs the layer (only --all forgets the entry, never the blob),
            // or a RUN step holds the cache mount (never removed).
            let free = !u.in_use || (opts.all && u.kind == Kind::Layer);
            let selected = free && opts.selects(&u, t);
            if selected {
                total = total.saturating_sub(u.size);
                chosen.push(u);
            }
        }
        if opts.dry_run {
            let freed = chosen.iter().filter(|u| !u.shared).map(|u| u.size).sum();
            return Ok((chosen, freed));
        }
        let mut freed = 0;
        for u in &chosen {
            match u.kind {
                Kind::Layer => self.cache_remove(&u.key)?,
                Kind::CacheMount => {
                    let cm = self.root.join("cache-mounts");
                    let dir = cm.join(&u.key);
                    std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
                    let _ = std::fs::remove_file(cm.join(format!("{}.id", u.key)));
                    freed += u.size;
                }
            }
        }
        // Blobs of removed layers that nothing needs any more: no image, no remaining entry.
        let mut needed = self.image_blobs()?;
        needed.extend(self.cache_layers()?.into_iter().map(|(_, l)| l));
        let mut gone = BTreeSet::new();
        for u in chosen.iter().filter(|u| u.kind == Kind::Layer) {
            let Some(l) = &u.layer else { continue };
            if needed.contains(l) || !gone.insert(l.clone()) {
                continue;
            }
            if let Ok(d) = Digest::parse(l) {
                let p: PathBuf = self.blob_path(&d);
                if std::fs::remove_file(&p).is_ok() {
                    freed += u.size;
                }
            }
        }
        Ok((chosen, freed))
    }
}
