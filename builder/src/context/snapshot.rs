//! A snapshot of the build context: every path a build may read after `.dockerignore`, with its
//! metadata and, for regular files, a content digest (mtime is not part of it, so a touched but
//! unchanged file is still a cache hit).
//!
//! Symlinks are recorded as links, never followed, so nothing outside the context is read.
//! Digests are computed in parallel (rayon) and remembered in the store by file identity, so an
//! unchanged file is read once across builds.

use std::{
    io::Read,
    os::unix::fs::MetadataExt,
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
    abs: PathBuf,
    stamp: FileStamp,
}

fn stamp(m: &std::fs::Metadata) -> FileStamp {
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

/// Scans `root` honouring `ignore`; with a store, digests of unchanged files are reused.
pub fn scan(
    root: &Path,
    ignore: &Matcher,
    store: Option<&Store>,
) -> Result<Snapshot, ContextError> {
    // Absolute, so digests recorded by path are found again from any working directory.
    let canonical = std::fs::canonicalize(root).map_err(io_err(root))?;
    let root = canonical.as_path();
    let mut entries: Vec<Entry> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    // Directories still to read: (absolute path, path relative to the context).
    let mut stack: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    let mut excluded_dirs: Vec<usize> = Vec::new();
    while let Some((dir, rel)) = stack.pop() {
        let mut children: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .map(|e| {
                let e = e.map_err(io_err(&dir))?;
                Ok((e.file_name().to_string_lossy().to_string(), e.path()))
            })
            .collect::<Result<_, ContextError>>()?;
        children.sort();
        let mut subdirs = Vec::new();
        for (name, abs) in children {
            // A name that is not UTF-8 was made lossy above: refuse it by its real path, unless
            // .dockerignore leaves it out (then it is never read).
            let lossy = abs.file_name().is_some_and(|n| n.to_str().is_none());
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = std::fs::symlink_metadata(&abs).map_err(io_err(&abs))?;
            let excluded = ignore.excludes(&path);
            let is_dir = meta.file_type().is_dir();
            if excluded && !(is_dir && ignore.has_exclusions()) {
                continue;
            }
            if lossy && !excluded {
                return Err(ContextError::NotUtf8 { path: abs });
            }
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                EntryKind::Dir
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&abs).map_err(io_err(&abs))?;
                EntryKind::Symlink {
                    target: t.to_string_lossy().to_string(),
                }
            } else if ft.is_file() {
                pending.push(Pending {
                    index: entries.len(),
                    abs: abs.clone(),
                    stamp: stamp(&meta),
                });
                EntryKind::File {
                    size: meta.size(),
                    digest: Digest::of(b""),
                }
            } else {
                EntryKind::Other
            };
            if excluded {
                excluded_dirs.push(entries.len());
            }
            entries.push(Entry {
                path: path.clone(),
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: meta.mtime(),
                inode: (ft.is_file() && meta.nlink() > 1).then(|| (meta.dev(), meta.ino())),
            });
            if is_dir {
                subdirs.push((abs, path));
            }
        }
        // Reversed so the stack pops directories in name order.
        stack.extend(subdirs.into_iter().rev());
    }

    let files = pending.len();
    let file_bytes: u64 = pending.iter().map(|p| p.stamp.size).sum();
    // Reuse recorded digests (loaded in one query); hash the rest in parallel.
    let known = match store {
        Some(s) => s.cached_digests_under(&root.to_string_lossy())?,
        None => Default::default(),
    };
    let mut todo = Vec::new();
    for p in pending {
        let key = p.abs.to_string_lossy().to_string();
        match known.get(&key) {
            Some((stamp, d)) if *stamp == p.stamp => set_digest(&mut entries[p.index], d.clone()),
            _ => todo.push(p),
        }
    }
    let hashed: Vec<(usize, String, FileStamp, Digest)> = todo
        .par_iter()
        .map(|p| {
            let d = hash_file(&p.abs, p.stamp.size)?;
            Ok((p.index, p.abs.to_string_lossy().to_string(), p.stamp, d))
        })
        .collect::<Result<_, ContextError>>()?;
    let bytes_hashed = todo.iter().map(|p| p.stamp.size).sum();
    if let Some(s) = store {
        let rows: Vec<(String, FileStamp, Digest)> = hashed
            .iter()
            .map(|(_, path, st, d)| (path.clone(), *st, d.clone()))
            .collect();
        s.record_digests(&rows)?;
        s.record_context(&root.to_string_lossy(), files as u64, file_bytes)?;
    }
    let n_hashed = hashed.len();
    for (i, _, _, d) in hashed {
        set_digest(&mut entries[i], d);
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
