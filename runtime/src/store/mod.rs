//! The on-disk store: content-addressed blobs and tags, safe with several kiln processes at
//! once and after a `kill -9` at any point (its layout is also in docs/cache-and-store.md, its
//! invariants in docs/architecture.md).
//!
//! Layout under the root:
//! - `blobs/sha256/<hex>`: immutable blobs, written to `tmp/` first, fsynced, renamed into place
//!   (a reader never sees a partial blob; a crash leaves at most a file in `tmp/`);
//! - `tmp/`: files being written; anything there is garbage after a crash;
//! - `meta.db`: SQLite in WAL mode: tags and (later) cache and container metadata. Each change is
//!   one transaction, so a crash loses at most the change in progress.

mod bases;
mod blobs;
mod builds;
mod cache;
mod containers;
mod contexts;
mod db;
mod export;
mod images;
mod import;
mod indexes;
pub(crate) mod integrity;
mod layerindex;
mod networks;
mod recover;
mod remote;
mod rootfs;
mod statcache;
mod steptimes;
mod tags;
mod unpacked;
mod usage;
mod verify;
mod volumes;

use std::path::{Path, PathBuf};

pub use blobs::BlobFile;
pub use cache::CacheEntry;
pub use containers::{Container, State as ContainerState};
pub use export::LayerCompression;
pub use images::{ImageSummary, Removed};
pub use import::Loaded;
pub use indexes::{MEDIA_DOCKER_LIST, entry_platform, is_index};
pub use integrity::MAX_LAYERS;
pub use layerindex::{FileDigests, decode_layer_index, encode_layer_index};
pub use networks::Network as NetworkInfo;
pub use recover::Recovered;
pub(crate) use recover::mounts_under;
pub use remote::{FetchFn, RemoteLayer};
pub use statcache::{FileStamp, Remembered, StatIndex, Xattrs, decode_xattrs, encode_xattrs};
pub use tags::{Tag, normalize_tag};
pub use usage::{
    Df, Kind as CacheKind, PruneOptions, Totals as CacheTotals, Usage as CacheUsage, dir_size,
    duration,
};
pub use verify::Report as VerifyReport;
pub use volumes::{Volume as VolumeInfo, valid_volume_name};

/// Store failures, each naming the path or value involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store metadata {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("blob {0} is not in the store")]
    MissingBlob(crate::digest::Digest),
    #[error("blob {expected} has wrong content: its digest is {actual}")]
    DigestMismatch {
        // Boxed: two inline digests would make every store result 128 bytes wider.
        expected: Box<crate::digest::Digest>,
        actual: Box<crate::digest::Digest>,
    },
    #[error("invalid tag {0:?}: a tag names no digest")]
    BadTag(String),
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
    #[error("{path}: not a usable OCI image layout: {reason}")]
    BadLayout { path: PathBuf, reason: String },
    #[error("layer {path}: cannot unpack it: {reason}")]
    BadLayer { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Destination { path: PathBuf, reason: String },
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("image ID prefix {prefix:?} names {count} images: give more of it")]
    Ambiguous { prefix: String, count: usize },
    #[error("image {image} has no image for {wanted} (it has {have})")]
    NoPlatform {
        image: String,
        wanted: String,
        have: String,
    },
    #[error("layer {digest} is not in the store and could not be fetched: {reason}")]
    Fetch {
        digest: Box<crate::digest::Digest>,
        reason: String,
    },
    #[error("the container name {name:?} is already in use by container {id}")]
    NameInUse { name: String, id: String },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    db: std::sync::Mutex<rusqlite::Connection>,
    db_path: PathBuf,
    /// Held shared while the store is open ([`recover`]); exclusive means no other process.
    active: std::fs::File,
    /// What brings a blob the store lacks but a registry is known to have ([`Store::ensure_blob`]);
    /// installed by the commands that may fetch (a build, a run), never by those that only look.
    fetcher: std::sync::OnceLock<remote::Fetcher>,
}

use rustix::fs::FlockOperation as Op;

/// `flock(2)` on `file` (at `path`, for the error).
fn flock(file: &std::fs::File, path: &Path, op: Op) -> Result<(), StoreError> {
    rustix::fs::flock(file, op).map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// Who is told, once per wait, that a lock is busy and kiln waits for it (the CLI prints it).
static LOCK_WAIT_NOTICE: std::sync::OnceLock<fn(&str)> = std::sync::OnceLock::new();

/// Sets what is called with a sentence when a command waits for a store lock another process
/// holds (`kiln cache prune` behind a running pull, a build behind a prune), so a wait is
/// never silent. Set once; later calls are ignored.
pub fn on_lock_wait(notice: fn(&str)) {
    let _ = LOCK_WAIT_NOTICE.set(notice);
}

/// The processes holding a lock on `f` (from `/proc/locks`), as `pid N (command line)`.
fn lock_holders(f: &std::fs::File) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = f.metadata() else {
        return Vec::new();
    };
    let (major, minor) = (rustix::fs::major(m.dev()), rustix::fs::minor(m.dev()));
    let id = format!("{major:02x}:{minor:02x}:{}", m.ino());
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let mut out = Vec::new();
    for line in locks.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // `N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF`; waiters have `->` after `N:`.
        if fields.get(1) == Some(&"->") || fields.get(5) != Some(&id.as_str()) {
            continue;
        }
        let Some(pid) = fields.get(4).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                let words: Vec<String> = c
                    .split(|b| *b == 0)
                    .filter(|w| !w.is_empty())
                    .map(|w| String::from_utf8_lossy(w).into_owned())
                    .collect();
                let line = words.join(" ");
                line.chars().take(120).collect::<String>()
            })
            .unwrap_or_default();
        let who = if cmd.is_empty() {
            format!("pid {pid}")
        } else {
            format!("pid {pid} ({cmd})")
        };
        if !out.contains(&who) {
            out.push(who);
        }
    }
    out
}

/// Opens (creating) the lock file `path` and locks it with `op`; the lock lives as long as the
/// returned file. A blocking lock that is busy is announced through [`on_lock_wait`] first,
/// naming the processes that hold it.
pub(crate) fn lock_file(path: &Path, op: Op) -> Result<std::fs::File, StoreError> {
    let f = open_lock_file(path)?;
    let try_op = match op {
        Op::LockShared => Some(Op::NonBlockingLockShared),
        Op::LockExclusive => Some(Op::NonBlockingLockExclusive),
        _ => None,
    };
    if let (Some(try_op), Some(notice)) = (try_op, LOCK_WAIT_NOTICE.get()) {
        match rustix::fs::flock(&f, try_op) {
            Ok(()) => return Ok(f),
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let holders = lock_holders(&f);
                let by = if holders.is_empty() {
                    "another kiln process".to_string()
                } else {
                    holders.join(", ")
                };
                notice(&format!(
                    "waiting for {by} to release {} ({})",
                    path.display(),
                    if op == Op::LockExclusive {
                        "running builds, pulls and pushes hold it; a prune waits for them"
                    } else {
                        "a prune or repair holds it; builds, pulls and pushes wait for it"
                    }
                ));
            }
            Err(_) => {}
        }
    }
    flock(&f, path, op)?;
    Ok(f)
}

fn open_lock_file(path: &Path) -> Result<std::fs::File, StoreError> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(path))
}

/// [`lock_file`] without the announcement: for the store's own short-lived locks (opening it).
fn lock_file_quiet(path: &Path, op: Op) -> Result<std::fs::File, StoreError> {
    let f = open_lock_file(path)?;
    flock(&f, path, op)?;
    Ok(f)
}

/// The store directory: `--root`, else `$KILN_ROOT`, else `/var/lib/kiln` as root, else
/// `$XDG_DATA_HOME/kiln` (default `~/.local/share/kiln`).
pub fn default_root(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("KILN_ROOT").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    // Root of the host only: rootless kiln is root in its own namespace.
    if crate::sandbox::userns::host_uid() == 0 {
        return PathBuf::from("/var/lib/kiln");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("kiln")
}

/// The store's directories that hold image content or containers (each made private too, in
/// case the root is opened up again by hand).
const PRIVATE_DIRS: [&str; 5] = ["blobs", "layers", "containers", "cache-mounts", "tmp"];

/// Makes the store private to its owner, creating the root when missing: the root and the
/// directories holding content are 0700, for an existing store too (repaired on open). Without
/// it every local user could run a setuid-root program of any unpacked layer, use the device
/// nodes a RUN made, and read files an image keeps private (`COPY --chmod=600`); docker keeps
/// `/var/lib/docker` 0710 for the same reason.
fn make_private(root: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let dirs = std::iter::once(root.to_path_buf()).chain(PRIVATE_DIRS.iter().map(|d| root.join(d)));
    for dir in dirs {
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            made => made.map_err(io_err(&dir))?,
        }
        // An existing store made before, or opened up by hand.
        let m = std::fs::metadata(&dir).map_err(io_err(&dir))?;
        if m.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err(&dir))?;
        }
    }
    Ok(())
}

/// Marks `dir` (where layers are unpacked and RUN steps write) as the top of directory
/// hierarchies for ext4's Orlov allocator (`chattr +T`, as for `/home`): each unpacked layer
/// made in it then starts in a block group of its own instead of beside the last ones. Measured
/// on this project's 30,000-file context, a fresh build wrote its COPY layer in 1 s instead of
/// 9 s: without a journal, ext4 scans past every recently deleted inode of a group before
/// giving one out, and the groups a pruned store just freed are full of them. A hint only:
/// filesystems without the flag refuse it, and nothing changes.
fn spread_new_trees(dir: &Path) {
    let Ok(fd) = rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) else {
        return;
    };
    if let Ok(flags) = rustix::fs::ioctl_getflags(&fd) {
        if !flags.contains(rustix::fs::IFlags::TOPDIR) {
            let _ = rustix::fs::ioctl_setflags(&fd, flags | rustix::fs::IFlags::TOPDIR);
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        make_private(root)?;
        for dir in [root.join("blobs/sha256"), root.join("tmp")] {
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        spread_new_trees(&root.join("tmp"));
        let db_path = root.join("meta.db");
        // Setting up the database (WAL mode, schema) is serialised across processes by an
        // exclusive flock: racing connections switching a new database to WAL can get
        // SQLITE_BUSY without SQLite's busy handler being consulted. The lock is released when
        // `lock` is dropped, right after; normal operations use SQLite's own locking.
        let lock = lock_file_quiet(&root.join("store.lock"), Op::LockExclusive)?;
        let db = db::open_db(&db_path)?;
        // Still under the setup lock, so two openers cannot both see themselves alone.
        let active_path = root.join("active.lock");
        let (active, alone) = match lock_file_quiet(&active_path, Op::NonBlockingLockExclusive) {
            Ok(f) => (f, true),
            Err(_) => (lock_file_quiet(&active_path, Op::LockShared)?, false),
        };
        let store = Store {
            root: root.to_path_buf(),
            db: std::sync::Mutex::new(db),
            db_path,
            active,
            fetcher: std::sync::OnceLock::new(),
        };
        if alone {
            store.recover()?;
            flock(&store.active, &active_path, Op::LockShared)?;
        }
        // A store made before images were recorded by ID: its tagged images recorded once.
        store.backfill_images()?;
        drop(lock);
        Ok(store)
    }

    /// Takes the store for this process alone (no other kiln process has it open), for
    /// operations that must not race a build (`kiln store verify --repair`); `None` when another
    /// process is using it. Gives the store back to shared use when `f` returns.
    pub fn exclusively<T>(&self, f: impl FnOnce() -> T) -> Result<Option<T>, StoreError> {
        let path = self.root.join("active.lock");
        if flock(&self.active, &path, Op::NonBlockingLockExclusive).is_err() {
            return Ok(None);
        }
        let out = f();
        flock(&self.active, &path, Op::LockShared)?;
        Ok(Some(out))
    }

    /// Removes the directory `dir` of the store (a missing one is fine): renamed into `tmp/`
    /// first, so it vanishes at once and whole, and a crash mid-removal leaves the rest only
    /// where recovery looks, never a half-removed layer or cache mount a build would use.
    pub(crate) fn discard_dir(&self, dir: &Path) -> Result<(), StoreError> {
        let name = dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let gone = self
            .root
            .join("tmp")
            .join(format!("gone-{name}-{}", blobs::tmp_name()));
        match std::fs::rename(dir, &gone) {
            Ok(()) => std::fs::remove_dir_all(&gone).map_err(io_err(&gone)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(dir)(e)),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}
