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

use kiln_runtime::{
    digest::Digest,
    store::{FileStamp, Store},
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
    #[error(
        "{path}: the name is not valid UTF-8; kiln copies only UTF-8 names (rename it, or \
         exclude it in .dockerignore)"
    )]
    NotUtf8 { path: PathBuf },
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
        target: String,
    },
    /// Sockets, fifos and devices: recorded, never copied.
    Other,
}

/// One path of the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the context root, `/`-separated, no leading `./`.
    pub path: String,
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

/// Reads the ignore file for a build: `<Dockerfile>.dockerignore` beside the Dockerfile takes
/// precedence over `<context>/.dockerignore` (REFERENCE §1.8). Missing files mean no patterns.
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

struct Pending {
    index: usize,
    stamp: FileStamp,
}

/// A file to read: its entry, absolute path and identity.
struct Todo {
    index: usize,
    abs: PathBuf,
    stamp: FileStamp,
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

/// The entries of directory `dir` (`rel` in the context) and of everything below it, the
/// subdirectories read on every core (the order does not matter: the scan sorts at the end).
fn walk(dir: &Path, rel: &str, ignore: &Matcher) -> Result<Vec<Found>, ContextError> {
    let mut found = Vec::new();
    // Each entry is stat-ed relative to its directory's descriptor: one path walk per
    // directory, not one per file.
    let dir_fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| io_err(dir)(e.into()))?;
    let mut children: Vec<(String, std::ffi::OsString)> = Vec::new();
    for e in rustix::fs::Dir::read_from(&dir_fd).map_err(|e| io_err(dir)(e.into()))? {
        let e = e.map_err(|e| io_err(dir)(e.into()))?;
        let raw = e.file_name().to_bytes();
        if raw == b"." || raw == b".." {
            continue;
        }
        let os = std::ffi::OsStr::from_bytes(raw).to_os_string();
        children.push((os.to_string_lossy().to_string(), os));
    }
    children.sort();
    let mut subdirs = Vec::new();
    for (name, os_name) in children {
        // The absolute path, made only where it is needed (a directory, an error).
        let abs = || dir.join(&os_name);
        // A name that is not UTF-8 was made lossy above: refuse it by its real path, unless
        // .dockerignore leaves it out (then it is never read).
        let lossy = os_name.to_str().is_none();
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta = Meta(
            rustix::fs::statat(
                &dir_fd,
                os_name.as_os_str(),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_err(&abs())(e.into()))?,
        );
        let excluded = ignore.excludes(&path);
        let ft = meta.file_type();
        let is_dir = ft == rustix::fs::FileType::Directory;
        if excluded && !(is_dir && ignore.has_exclusions()) {
            continue;
        }
        if lossy && !excluded {
            return Err(ContextError::NotUtf8 { path: abs() });
        }
        let mut file_stamp = None;
        let kind = if is_dir {
            EntryKind::Dir
        } else if ft == rustix::fs::FileType::Symlink {
            let t = rustix::fs::readlinkat(&dir_fd, os_name.as_os_str(), Vec::new())
                .map_err(|e| io_err(&abs())(e.into()))?;
            EntryKind::Symlink {
                target: String::from_utf8_lossy(t.as_bytes()).into_owned(),
            }
        } else if ft == rustix::fs::FileType::RegularFile {
            file_stamp = Some(stamp(&meta));
            EntryKind::File {
                size: meta.size(),
                digest: Digest::of(b""),
            }
        } else {
            EntryKind::Other
        };
        found.push(Found {
            excluded_dir: excluded,
            stamp: file_stamp,
            entry: Entry {
                path: path.clone(),
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
        if is_dir {
            subdirs.push((abs(), path));
        }
    }
    let below = subdirs
        .par_iter()
        .map(|(abs, path): &(PathBuf, String)| walk(abs, path, ignore))
        .collect::<Result<Vec<_>, ContextError>>()?;
    for b in below {
        found.extend(b);
    }
    Ok(found)
}

/// Scans `root` honouring `ignore`; with a store, digests of unchanged files are reused.
pub fn scan(
    root: &Path,
    ignore: &Matcher,
    store: Option<&Store>,
) -> Result<Snapshot, ContextError> {
    // Absolute, so digests recorded by path are found again from any working directory.
    let canonical = std::fs::canonicalize(root).map_err(io_err(root))?;
    let root = canonical.as_path();
    // The walk, and the digests recorded by earlier scans (one query), side by side.
    let root_str = root.to_string_lossy().to_string();
    let (walked, known) = rayon::join(
        || walk(root, "", ignore),
        || match store {
            Some(s) => s.cached_digests_under(&root_str),
            None => Ok(Default::default()),
        },
    );
    let (walked, known) = (walked?, known?);
    let mut entries: Vec<Entry> = Vec::with_capacity(walked.len());
    let mut pending: Vec<Pending> = Vec::new();
    let mut excluded_dirs: Vec<usize> = Vec::new();
    for f in walked {
        if let Some(stamp) = f.stamp {
            pending.push(Pending {
                index: entries.len(),
                stamp,
            });
        }
        if f.excluded_dir {
            excluded_dirs.push(entries.len());
        }
        entries.push(f.entry);
    }

    let files = pending.len();
    let file_bytes: u64 = pending.iter().map(|p| p.stamp.size).sum();
    // Reuse recorded digests; hash the rest in parallel.
    let mut todo = Vec::new();
    // The stat cache's key of a file is its absolute path: one buffer, the root kept.
    let mut key = format!("{}/", root_str.trim_end_matches('/'));
    let base = key.len();
    for p in pending {
        key.truncate(base);
        key.push_str(&entries[p.index].path);
        match known.get(key.as_str()) {
            Some(kiln_runtime::store::Remembered {
                stamp,
                digest,
                xattrs: Some(x),
            }) if *stamp == p.stamp => {
                set_digest(&mut entries[p.index], digest.clone());
                entries[p.index].xattrs = x.clone();
            }
            _ => todo.push(Todo {
                index: p.index,
                abs: root.join(&entries[p.index].path),
                stamp: p.stamp,
            }),
        }
    }
    // Read and hashed on every core, with the extended attributes of each.
    type Hashed = (
        usize,
        String,
        FileStamp,
        Digest,
        kiln_runtime::store::Xattrs,
    );
    let hashed: Vec<Hashed> = todo
        .par_iter()
        .map(|p| {
            let d = hash_file(&p.abs, p.stamp.size)?;
            let x = kiln_runtime::layer::diff::host_xattrs(&p.abs)
                .into_iter()
                .collect();
            Ok((p.index, p.abs.to_string_lossy().to_string(), p.stamp, d, x))
        })
        .collect::<Result<_, ContextError>>()?;
    let bytes_hashed = todo.iter().map(|p| p.stamp.size).sum();
    if let Some(s) = store {
        let rows: Vec<(String, FileStamp, Digest, kiln_runtime::store::Xattrs)> = hashed
            .iter()
            .map(|(_, path, st, d, x)| (path.clone(), *st, d.clone(), x.clone()))
            .collect();
        s.record_digests(&rows)?;
        s.record_context(&root.to_string_lossy(), files as u64, file_bytes)?;
    }
    let n_hashed = hashed.len();
    for (i, _, _, d, x) in hashed {
        set_digest(&mut entries[i], d);
        entries[i].xattrs = x;
    }

    // An excluded directory stays only as an ancestor of something re-included below it: mark
    // the ancestors of every entry that is not an excluded directory (O(entries × depth)).
    if !excluded_dirs.is_empty() {
        let mut excluded = vec![false; entries.len()];
        for &i in &excluded_dirs {
            excluded[i] = true;
        }
        let mut needed: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
        for (e, ex) in entries.iter().zip(&excluded) {
            if !ex {
                let mut p = e.path.as_str();
                while let Some((parent, _)) = p.rsplit_once('/') {
                    needed.insert(parent);
                    p = parent;
                }
            }
        }
        let keep: Vec<bool> = entries
            .iter()
            .zip(&excluded)
            .map(|(e, ex)| !ex || needed.contains(e.path.as_str()))
            .collect();
        let mut i = 0;
        entries.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
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

fn set_digest(e: &mut Entry, d: Digest) {
    if let EntryKind::File { digest, .. } = &mut e.kind {
        *digest = d;
    }
}
