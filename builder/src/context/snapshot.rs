//! A snapshot of the build context: every path a build may read after `.dockerignore`, with its
//! metadata and, for regular files, a content digest (mtime is not part of it, so a touched but
//! unchanged file is still a cache hit).
//!
//! Symlinks are recorded as links, never followed, so nothing outside the context is read.
//! Digests are computed in parallel (rayon) and remembered in the store by file identity, so an
//! unchanged file is read once across builds.

use std::{
    io::Read,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use bstr::{BString, ByteSlice};
use kiln_runtime::{
    digest::Digest,
    layer::view::as_path,
    store::{FileStamp, StatIndex, Store, Xattrs, decode_xattrs},
};
use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use super::ignore::{IgnoreError, Matcher};

/// Problems reading the context.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Ignore { path: PathBuf, source: IgnoreError },
    #[error(transparent)]
    Store(#[from] kiln_runtime::store::StoreError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File {
        size: u64,
        digest: Digest,
    },
    Dir,
    Symlink {
        target: BString,
    },
    /// Sockets, fifos and devices: recorded, never copied.
    Other,
}

/// One path of the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the context root, `/`-separated, no leading `./`. Bytes, as the directory
    /// names it: a name that is not UTF-8 is copied as it is, as BuildKit copies it.
    pub path: BString,
    pub kind: EntryKind,
    /// Permission and special bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    /// (device, inode) of a regular file with more than one name, so a COPY of a directory
    /// keeps its hard links as BuildKit does; `None` for every other entry.
    pub inode: Option<(u64, u64)>,
    /// A regular file's extended attributes, as a COPY carries them (remembered in the store's
    /// stat cache with its digest: an unchanged file is not asked again).
    pub xattrs: kiln_runtime::store::Xattrs,
}

/// How much work a scan did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    pub files: usize,
    /// Files whose content was read and hashed in this scan.
    pub hashed: usize,
    pub bytes_hashed: u64,
}

/// The context after `.dockerignore`, sorted by path.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub root: PathBuf,
    pub entries: Vec<Entry>,
    pub stats: ScanStats,
}

impl Snapshot {
    /// The entry at `path`.
    pub fn find(&self, path: impl AsRef<[u8]>) -> Option<&Entry> {
        find_sorted(&self.entries, path.as_ref(), |e| &e.path)
    }

    /// The entries below directory `dir` (`""`: all of them), in path order.
    pub fn below(&self, dir: impl AsRef<[u8]>) -> &[Entry] {
        below_sorted(&self.entries, dir.as_ref(), |e| &e.path)
    }
}

/// The item at `path` among `items` sorted by path (bytewise), found by binary search.
pub fn find_sorted<'i, T>(
    items: &'i [T],
    path: &[u8],
    path_of: impl Fn(&T) -> &[u8],
) -> Option<&'i T> {
    items
        .binary_search_by(|e| path_of(e).cmp(path))
        .ok()
        .map(|i| &items[i])
}

/// The items below directory `dir` (`""`: all) among `items` sorted by path: one contiguous
/// run, since every path that starts with `dir/` sorts after `dir/` and before `dir0`.
pub fn below_sorted<'i, T>(items: &'i [T], dir: &[u8], path_of: impl Fn(&T) -> &[u8]) -> &'i [T] {
    if dir.is_empty() {
        return items;
    }
    let mut prefix = dir.to_vec();
    prefix.push(b'/');
    let from = items.partition_point(|e| path_of(e) < prefix.as_slice());
    let len = items[from..].partition_point(|e| path_of(e).starts_with(&prefix));
    &items[from..from + len]
}

/// Reads the ignore file for a build: `<Dockerfile>.dockerignore` beside the Dockerfile takes
/// precedence over `<context>/.dockerignore`. Missing files mean no patterns.
pub fn load_ignore(context: &Path, dockerfile: Option<&Path>) -> Result<Matcher, ContextError> {
    let mut candidates = Vec::new();
    if let Some(df) = dockerfile {
        let mut name = df.as_os_str().to_owned();
        name.push(".dockerignore");
        candidates.push(PathBuf::from(name));
    }
    candidates.push(context.join(".dockerignore"));
    for path in candidates {
        match std::fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                return Matcher::from_file_text(&text)
                    .map_err(|source| ContextError::Ignore { path, source });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ContextError::Io { path, source: e }),
        }
    }
    Ok(Matcher::default())
}

/// A `statx` result with the accessors the scan uses (std's `MetadataExt` names).
struct Meta(rustix::fs::Stat);

impl Meta {
    fn file_type(&self) -> rustix::fs::FileType {
        rustix::fs::FileType::from_raw_mode(self.0.st_mode)
    }
    fn mode(&self) -> u32 {
        self.0.st_mode
    }
    fn uid(&self) -> u32 {
        self.0.st_uid
    }
    fn gid(&self) -> u32 {
        self.0.st_gid
    }
    fn dev(&self) -> u64 {
        self.0.st_dev
    }
    fn ino(&self) -> u64 {
        self.0.st_ino
    }
    fn nlink(&self) -> u64 {
        self.0.st_nlink
    }
    fn size(&self) -> u64 {
        self.0.st_size as u64
    }
    fn mtime(&self) -> i64 {
        self.0.st_mtime
    }
    fn mtime_nsec(&self) -> i64 {
        self.0.st_mtime_nsec as i64
    }
    fn ctime(&self) -> i64 {
        self.0.st_ctime
    }
    fn ctime_nsec(&self) -> i64 {
        self.0.st_ctime_nsec as i64
    }
}

fn stamp(m: &Meta) -> FileStamp {
    FileStamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    }
}

fn hash_file(path: &Path, expected: u64) -> Result<Digest, ContextError> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    if total != expected {
        return Err(ContextError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other("file changed size while the context was read"),
        });
    }
    Ok(Digest::from_sha256(h))
}

/// One entry the walk found, with what the digest step needs of a regular file.
struct Found {
    entry: Entry,
    /// A regular file's identity.
    stamp: Option<FileStamp>,
    /// An excluded directory kept for now (something below may be re-included).
    excluded_dir: bool,
}

/// The walk's result in path order, as runs of entries: a directory's entries with each
/// subdirectory's own runs where its paths sort. Runs are moved, never their entries, until
/// the one copy into the snapshot.
type Runs = Vec<Vec<Found>>;

/// Whether every path below directory `dir` sorts before `path` (byte order: `dir/` < `path`).
fn below_sorts_first(dir: &[u8], path: &[u8]) -> bool {
    dir.iter()
        .copied()
        .chain(std::iter::once(b'/'))
        .cmp(path.iter().copied())
        .is_lt()
}

/// The entries of directory `dir` (`rel` in the context; opened relative to its parent's
/// descriptor, `parent`, when there is one) and of everything below it, in path order, the
/// subdirectories read on every core.
fn walk(
    parent: Option<&rustix::fd::OwnedFd>,
    (dir, name): (&Path, &[u8]),
    rel: &[u8],
    ignore: &Matcher,
) -> Result<Runs, ContextError> {
    let flags = rustix::fs::OFlags::RDONLY
        | rustix::fs::OFlags::DIRECTORY
        | rustix::fs::OFlags::NOFOLLOW
        | rustix::fs::OFlags::CLOEXEC;
    let dir_fd = match parent {
        Some(p) => rustix::fs::openat(
            p,
            std::ffi::OsStr::from_bytes(name),
            flags,
            rustix::fs::Mode::empty(),
        ),
        None => rustix::fs::open(dir, flags, rustix::fs::Mode::empty()),
    }
    .map_err(|e| io_err(dir)(e.into()))?;
    let mut found = Vec::new();
    // Subdirectories to descend into: (path in the context, name as the directory has it).
    let mut subdirs: Vec<(BString, Vec<u8>)> = Vec::new();
    for e in rustix::fs::Dir::read_from(&dir_fd).map_err(|e| io_err(dir)(e.into()))? {
        let e = e.map_err(|e| io_err(dir)(e.into()))?;
        let c_name = e.file_name();
        let raw = c_name.to_bytes();
        if raw == b"." || raw == b".." {
            continue;
        }
        let mut path = BString::from(Vec::with_capacity(rel.len() + 1 + raw.len()));
        if !rel.is_empty() {
            path.extend_from_slice(rel);
            path.push(b'/');
        }
        path.extend_from_slice(raw);
        // The absolute path, made only where it is needed (an error).
        let abs = || dir.join(std::ffi::OsStr::from_bytes(raw));
        // Each entry is stat-ed relative to its directory's descriptor: one path walk per
        // directory, not one per file.
        let meta = Meta(
            rustix::fs::statat(&dir_fd, c_name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_err(&abs())(e.into()))?,
        );
        // Patterns are text: a name that is not UTF-8 is matched with each stray byte as one
        // U+FFFD, as Go's matcher (BuildKit's) reads it.
        let excluded = ignore.excludes(&path.to_str_lossy());
        let ft = meta.file_type();
        let is_dir = ft == rustix::fs::FileType::Directory;
        if excluded && !(is_dir && ignore.has_exclusions()) {
            continue;
        }
        let mut file_stamp = None;
        let kind = if is_dir {
            subdirs.push((path.clone(), raw.to_vec()));
            EntryKind::Dir
        } else if ft == rustix::fs::FileType::Symlink {
            let t = rustix::fs::readlinkat(&dir_fd, c_name, Vec::new())
                .map_err(|e| io_err(&abs())(e.into()))?;
            EntryKind::Symlink {
                target: BString::from(t.into_bytes()),
            }
        } else if ft == rustix::fs::FileType::RegularFile {
            file_stamp = Some(stamp(&meta));
            // The digest is set once the file is matched or read.
            EntryKind::File {
                size: meta.size(),
                digest: Digest::from_bytes([0; 32]),
            }
        } else {
            EntryKind::Other
        };
        found.push(Found {
            excluded_dir: excluded,
            stamp: file_stamp,
            entry: Entry {
                path,
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: meta.mtime(),
                inode: (ft == rustix::fs::FileType::RegularFile && meta.nlink() > 1)
                    .then(|| (meta.dev(), meta.ino())),
                xattrs: Vec::new(),
            },
        });
    }
    found.sort_unstable_by(|a, b| a.entry.path.cmp(&b.entry.path));
    // By where their paths go: `lib-a/` before `lib/` though `lib` sorts before `lib-a`.
    subdirs.sort_unstable_by(|(a, _), (b, _)| a.iter().chain(b"/").cmp(b.iter().chain(b"/")));
    let below = subdirs
        .par_iter()
        .map(|(path, raw)| {
            walk(
                Some(&dir_fd),
                (&dir.join(std::ffi::OsStr::from_bytes(raw)), raw),
                path,
                ignore,
            )
        })
        .collect::<Result<Vec<Runs>, ContextError>>()?;
    // This directory's entries, each subdirectory's runs placed where `name/` sorts.
    let mut runs: Runs = Vec::new();
    let mut below = subdirs.iter().map(|(p, _)| p).zip(below).peekable();
    let mut current: Vec<Found> = Vec::with_capacity(found.len());
    for f in found {
        while let Some((_, sub)) = below.next_if(|(d, _)| below_sorts_first(d, &f.entry.path)) {
            runs.push(std::mem::take(&mut current));
            runs.extend(sub);
        }
        current.push(f);
    }
    runs.push(current);
    for (_, sub) in below {
        runs.extend(sub);
    }
    runs.retain(|r| !r.is_empty());
    Ok(runs)
}

/// Scans `root` honouring `ignore`; with a store, digests of unchanged files are reused.
pub fn scan(
    root: &Path,
    ignore: &Matcher,
    store: Option<&Store>,
) -> Result<Snapshot, ContextError> {
    // Absolute, so digests recorded for a context are found again from any working directory.
    let canonical = std::fs::canonicalize(root).map_err(io_err(root))?;
    let root = canonical.as_path();
    // The walk, and the digests recorded by earlier scans (one row), side by side.
    let root_str = root.to_string_lossy().to_string();
    let (walked, known) = rayon::join(
        || walk(None, (root, b""), b"", ignore),
        || match store {
            Some(s) => s.context_files(&root_str),
            None => Ok(StatIndex::default()),
        },
    );
    let (runs, known) = (walked?, known?);
    // Already in path order: the runs are joined, each entry moved once, its stamp and
    // exclusion kept beside it.
    let total = runs.iter().map(Vec::len).sum();
    let mut entries: Vec<Entry> = Vec::with_capacity(total);
    let mut stamps: Vec<Option<FileStamp>> = Vec::with_capacity(total);
    let mut excluded: Vec<bool> = Vec::with_capacity(total);
    for f in runs.into_iter().flatten() {
        entries.push(f.entry);
        stamps.push(f.stamp);
        excluded.push(f.excluded_dir);
    }
    // Lookups are binary searches: checked (one comparison per entry), never assumed.
    if !entries.is_sorted_by(|a, b| a.path < b.path) {
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_unstable_by(|&a, &b| entries[a].path.cmp(&entries[b].path));
        let mut taken: Vec<Option<Entry>> = entries.into_iter().map(Some).collect();
        entries = order.iter().filter_map(|&i| taken[i].take()).collect();
        stamps = order.iter().map(|&i| stamps[i]).collect();
        excluded = order.iter().map(|&i| excluded[i]).collect();
    }
    drop_excluded_dirs(&mut entries, &mut stamps, &excluded);

    let files = stamps.iter().flatten().count();
    let file_bytes: u64 = stamps.iter().flatten().map(|s| s.size).sum();
    // Both sorted by path: the remembered files are matched in one pass. A digest is reused
    // only for the same path with the same stamp.
    let mut remembered = known.iter().peekable();
    let mut todo: Vec<usize> = Vec::new();
    // Remembered files passed over (gone, or not matched): any means the index changes.
    let mut passed = 0usize;
    for (i, (e, stamp)) in entries.iter_mut().zip(&stamps).enumerate() {
        let Some(stamp) = *stamp else { continue };
        while remembered.next_if(|r| r.path < e.path.as_slice()).is_some() {
            passed += 1;
        }
        let hit = remembered
            .peek()
            .filter(|r| r.path == e.path.as_slice() && r.stamp == stamp)
            .and_then(|r| Some((r.digest, decode_xattrs(r.xattrs)?)));
        match hit {
            Some((digest, xattrs)) => {
                remembered.next();
                set_digest(e, digest);
                e.xattrs = xattrs;
            }
            None => todo.push(i),
        }
    }
    passed += remembered.count();
    // Read and hashed on every core, with the extended attributes of each.
    let hashed: Vec<(usize, Digest, Xattrs)> = todo
        .par_iter()
        .map(|&i| {
            let abs = root.join(as_path(&entries[i].path));
            let size = stamps[i].map_or(0, |s| s.size);
            let d = hash_file(&abs, size)?;
            let x = kiln_runtime::layer::diff::host_xattrs(&abs)
                .into_iter()
                .collect();
            Ok((i, d, x))
        })
        .collect::<Result<_, ContextError>>()?;
    let bytes_hashed = todo.iter().filter_map(|&i| stamps[i]).map(|s| s.size).sum();
    let n_hashed = hashed.len();
    for (i, d, x) in hashed {
        set_digest(&mut entries[i], d);
        entries[i].xattrs = x;
    }
    if let Some(s) = store {
        // Rewritten only when a file was read or one remembered is gone.
        let changed = n_hashed > 0 || passed > 0;
        let index =
            changed.then(|| {
                StatIndex::encode(entries.iter().zip(&stamps).filter_map(|(e, s)| {
                    match (&e.kind, s) {
                        (EntryKind::File { digest, .. }, Some(stamp)) => {
                            Some((e.path.as_slice(), *stamp, *digest, &e.xattrs))
                        }
                        _ => None,
                    }
                }))
            });
        s.record_context(&root_str, (files as u64, file_bytes), index.as_ref())?;
    }
    Ok(Snapshot {
        root: root.to_path_buf(),
        entries,
        stats: ScanStats {
            files,
            hashed: n_hashed,
            bytes_hashed,
        },
    })
}

/// An excluded directory stays only as an ancestor of something re-included below it: the
/// ancestors of every entry that is not an excluded directory are kept (O(entries × depth)).
fn drop_excluded_dirs(
    entries: &mut Vec<Entry>,
    stamps: &mut Vec<Option<FileStamp>>,
    excluded: &[bool],
) {
    if !excluded.contains(&true) {
        return;
    }
    let mut needed: std::collections::BTreeSet<&[u8]> = std::collections::BTreeSet::new();
    for (e, _) in entries.iter().zip(excluded).filter(|(_, ex)| !**ex) {
        let mut p = e.path.as_slice();
        while let Some(slash) = p.rfind_byte(b'/') {
            p = &p[..slash];
            if !needed.insert(p) {
                break;
            }
        }
    }
    let keep: Vec<bool> = entries
        .iter()
        .zip(excluded)
        .map(|(e, ex)| !ex || needed.contains(e.path.as_slice()))
        .collect();
    let mut k = keep.iter();
    entries.retain(|_| k.next().copied().unwrap_or(true));
    let mut k = keep.iter();
    stamps.retain(|_| k.next().copied().unwrap_or(true));
}

fn set_digest(e: &mut Entry, d: Digest) {
    if let EntryKind::File { digest, .. } = &mut e.kind {
        *digest = d;
    }
}
