//! The root filesystem where overlayfs cannot be mounted (no overlay module, a store on a
//! filesystem overlayfs refuses as upper, or `KILN_ROOTFS=copy`): the layers are copied into
//! the root directory (whiteouts and opaque directories applied, hard links kept), and after the
//! run the changes are written into the upper directory in overlayfs' own format (0/0
//! character devices for deletions, `trusted.overlay.opaque` for replaced directories), so the
//! layer diff ([`crate::layer::diff`]) and everything after it are the same for both.
//!
//! Changes are found by inode number and ctime, recorded right after the copy: every write,
//! chmod, chown, rename or utime changes ctime, and the process cannot set it, so a file
//! rewritten with the same size and mtime is still seen. Slower than overlayfs (a full copy and
//! two walks), but correct.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, BufRead, Write},
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};

const OPAQUE: &str = "trusted.overlay.opaque";

/// What each path was right after the copy: identity, ctime (ns), directory or not.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot(BTreeMap<String, (u64, i128, bool)>);

fn ctime_ns(m: &fs::Metadata) -> i128 {
    i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec())
}

/// Which file this is: the inode number mixed with its birth time where the filesystem keeps
/// one, since a directory deleted and made again often gets the same inode number back (and
/// must then be told apart: overlayfs marks it opaque).
fn identity(p: &Path, m: &fs::Metadata) -> u64 {
    let birth = rustix::fs::statx(
        CWD,
        p,
        AtFlags::SYMLINK_NOFOLLOW,
        rustix::fs::StatxFlags::BTIME,
    )
    .ok()
    .filter(|x| x.stx_mask & rustix::fs::StatxFlags::BTIME.bits() != 0)
    .map_or(0, |x| {
        (x.stx_btime.tv_sec as u64).wrapping_mul(1_000_000_007) ^ u64::from(x.stx_btime.tv_nsec)
    });
    m.ino() ^ birth.rotate_left(32)
}

fn children(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut v: Vec<(String, PathBuf)> = fs::read_dir(dir)?
        .map(|e| e.map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())))
        .collect::<io::Result<_>>()?;
    v.sort();
    Ok(v)
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

pub(super) fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

pub(super) fn is_opaque(p: &Path) -> bool {
    let mut b = [0u8; 1];
    rustix::fs::lgetxattr(p, OPAQUE, &mut b).is_ok_and(|n| n == 1 && b[0] == b'y')
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copies `src`'s owner, mode, extended attributes (not overlayfs' own) and times onto `dst`,
/// never following a symlink.
fn copy_meta(src: &Path, m: &fs::Metadata, dst: &Path) -> io::Result<()> {
    std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid()))?;
    if !m.file_type().is_symlink() {
        fs::set_permissions(
            dst,
            std::os::unix::fs::PermissionsExt::from_mode(m.mode() & 0o7777),
        )?;
    }
    let mut names = vec![0u8; 4096];
    if let Ok(n) = rustix::fs::llistxattr(src, &mut names) {
        for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
            let name = String::from_utf8_lossy(name).into_owned();
            if name.starts_with("trusted.overlay.") {
                continue;
            }
            let mut value = vec![0u8; 65536];
            if let Ok(len) = rustix::fs::lgetxattr(src, name.as_str(), &mut value) {
                rustix::fs::lsetxattr(
                    dst,
                    name.as_str(),
                    &value[..len],
                    rustix::fs::XattrFlags::empty(),
                )?;
            }
        }
    }
    let t = Timespec {
        tv_sec: m.mtime(),
        tv_nsec: m.mtime_nsec(),
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(CWD, dst, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// Copies one non-directory entry; `links` maps a source inode to its first copy, so hard
/// links stay hard links.
fn copy_entry(
    src: &Path,
    m: &fs::Metadata,
    dst: &Path,
    links: &mut BTreeMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let ft = m.file_type();
    if ft.is_file() && m.nlink() > 1 {
        if let Some(first) = links.get(&(m.dev(), m.ino())) {
            return fs::hard_link(first, dst);
        }
        links.insert((m.dev(), m.ino()), dst.to_path_buf());
    }
    if ft.is_file() {
        fs::copy(src, dst)?;
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
    } else {
        let kind = if ft.is_fifo() {
            FileType::Fifo
        } else if ft.is_char_device() {
            FileType::CharacterDevice
        } else if ft.is_block_device() {
            FileType::BlockDevice
        } else {
            return Ok(()); // sockets are not kept in images
        };
        rustix::fs::mknodat(
            CWD,
            dst,
            kind,
            Mode::from_raw_mode(m.mode() & 0o7777),
            m.rdev(),
        )?;
    }
    copy_meta(src, m, dst)
}

/// Applies one unpacked layer (`src`) onto `dst`.
fn apply(src: &Path, dst: &Path, links: &mut BTreeMap<(u64, u64), PathBuf>) -> io::Result<()> {
    for (name, from) in children(src)? {
        let to = dst.join(&name);
        let m = fs::symlink_metadata(&from)?;
        if is_whiteout(&m) {
            remove_any(&to)?;
            continue;
        }
        if m.is_dir() {
            let existing = fs::symlink_metadata(&to).ok();
            if is_opaque(&from) || existing.as_ref().is_some_and(|e| !e.is_dir()) {
                remove_any(&to)?;
            }
            if fs::symlink_metadata(&to).is_err() {
                fs::create_dir(&to)?;
            }
            apply(&from, &to, links)?;
            copy_meta(&from, &m, &to)?;
        } else {
            remove_any(&to)?;
            copy_entry(&from, &m, &to, links)?;
        }
    }
    Ok(())
}

/// Copies the tree `src` into the directory `dst` with owners, modes, times, extended
/// attributes and hard links (a cache mount seeded from a stage).
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    apply(src, dst, &mut BTreeMap::new())
}

/// Copies `lower` (top first, as overlayfs takes them) into the empty directory `root`.
pub fn populate(lower: &[PathBuf], root: &Path) -> io::Result<()> {
    let mut links = BTreeMap::new();
    for layer in lower.iter().rev() {
        links.clear();
        apply(layer, root, &mut links)?;
    }
    Ok(())
}

/// Records what `root` holds now.
pub fn snapshot(root: &Path) -> io::Result<Snapshot> {
    fn walk(dir: &Path, rel: &str, out: &mut Snapshot) -> io::Result<()> {
        for (name, p) in children(dir)? {
            let m = fs::symlink_metadata(&p)?;
            let r = join(rel, &name);
            out.0
                .insert(r.clone(), (identity(&p, &m), ctime_ns(&m), m.is_dir()));
            if m.is_dir() {
                walk(&p, &r, out)?;
            }
        }
        Ok(())
    }
    let mut s = Snapshot::default();
    walk(root, "", &mut s)?;
    Ok(s)
}

impl Snapshot {
    /// Saves the snapshot as lines `ino ctime dir path`.
    pub fn save(&self, file: &Path) -> io::Result<()> {
        let mut w = io::BufWriter::new(fs::File::create(file)?);
        for (p, (ino, ct, dir)) in &self.0 {
            writeln!(w, "{ino} {ct} {} {p}", u8::from(*dir))?;
        }
        w.flush()
    }

    pub fn load(file: &Path) -> io::Result<Snapshot> {
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: bad line", file.display()),
            )
        };
        let mut s = Snapshot::default();
        for line in io::BufReader::new(fs::File::open(file)?).lines() {
            let line = line?;
            let mut f = line.splitn(4, ' ');
            let ino = f.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
            let ct = f.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
            let dir = f.next().ok_or_else(bad)? == "1";
            let p = f.next().ok_or_else(bad)?;
            s.0.insert(p.to_string(), (ino, ct, dir));
        }
        Ok(s)
    }
}

/// Writes what changed in `root` since `before` into the empty directory `upper`, in overlayfs'
/// format.
pub fn changes(root: &Path, before: &Snapshot, upper: &Path) -> io::Result<()> {
    let mut links = BTreeMap::new();
    // Which directories of the upper directory exist already (parents made on demand).
    let ensure_parents = |rel: &str| -> io::Result<()> {
        let mut cur = String::new();
        for part in rel
            .split('/')
            .collect::<Vec<_>>()
            .iter()
            .rev()
            .skip(1)
            .rev()
        {
            cur = join(&cur, part);
            let u = upper.join(&cur);
            if fs::symlink_metadata(&u).is_err() {
                let r = root.join(&cur);
                let m = fs::symlink_metadata(&r)?;
                fs::create_dir(&u)?;
                copy_meta(&r, &m, &u)?;
            }
        }
        Ok(())
    };
    let mut seen = std::collections::BTreeSet::new();
    fn walk(
        dir: &Path,
        rel: &str,
        before: &Snapshot,
        upper: &Path,
        seen: &mut std::collections::BTreeSet<String>,
        links: &mut BTreeMap<(u64, u64), PathBuf>,
        ensure_parents: &dyn Fn(&str) -> io::Result<()>,
    ) -> io::Result<()> {
        for (name, p) in children(dir)? {
            let m = fs::symlink_metadata(&p)?;
            let r = join(rel, &name);
            seen.insert(r.clone());
            let old = before.0.get(&r);
            let id = identity(&p, &m);
            let changed = old.is_none_or(|(old_id, ct, _)| *old_id != id || *ct != ctime_ns(&m));
            if changed {
                ensure_parents(&r)?;
                let u = upper.join(&r);
                if m.is_dir() {
                    if fs::symlink_metadata(&u).is_err() {
                        fs::create_dir(&u)?;
                    }
                    copy_meta(&p, &m, &u)?;
                    // A directory deleted and made again hides everything below it.
                    if old.is_some_and(|(old_id, _, was_dir)| *was_dir && *old_id != id) {
                        rustix::fs::lsetxattr(&u, OPAQUE, b"y", rustix::fs::XattrFlags::empty())?;
                    }
                } else {
                    copy_entry(&p, &m, &u, links)?;
                }
            }
            if m.is_dir() {
                walk(&p, &r, before, upper, seen, links, ensure_parents)?;
            }
        }
        Ok(())
    }
    walk(
        root,
        "",
        before,
        upper,
        &mut seen,
        &mut links,
        &ensure_parents,
    )?;
    // Deletions: the topmost missing path of each deleted subtree, unless its directory was
    // replaced (opaque already hides it).
    for r in before.0.keys() {
        if seen.contains(r) {
            continue;
        }
        let parent = r.rsplit_once('/').map(|(p, _)| p);
        let parent_gone = parent.is_some_and(|p| !seen.contains(p));
        let parent_replaced = parent.is_some_and(|p| {
            let mut b = [0u8; 1];
            rustix::fs::lgetxattr(upper.join(p), OPAQUE, &mut b).is_ok()
        });
        if parent_gone || parent_replaced {
            continue;
        }
        ensure_parents(r)?;
        rustix::fs::mknodat(
            CWD,
            upper.join(r),
            FileType::CharacterDevice,
            Mode::empty(),
            0,
        )?;
    }
    // Last, every directory of the upper tree takes its times from the root again (writing
    // below moved them; overlayfs keeps a copied-up parent's times too).
    fn fix_times(root: &Path, upper: &Path) -> io::Result<()> {
        for (name, u) in children(upper)? {
            let m = fs::symlink_metadata(&u)?;
            if m.is_dir() {
                let r = root.join(&name);
                fix_times(&r, &u)?;
                copy_meta(&r, &fs::symlink_metadata(&r)?, &u)?;
            }
        }
        Ok(())
    }
    fix_times(root, upper)
}
