//! Unpacking a layer into a directory that serves as an overlayfs lower layer (each
//! layer unpacked once, keyed by ChainID, shared by builds and containers).
//!
//! Safety: every path is resolved inside the
//! target directory with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so `..`
//! components, absolute symlinks and symlinked parents all stay inside it (the directory acts
//! as `/` for resolution); hard links may only point at paths inside it; an existing entry is
//! unlinked before a new one is created with `O_EXCL | O_NOFOLLOW`, so nothing is ever written
//! through a link. This is the class of bugs behind CVE-2018-15664-style tar breakouts.
//!
//! Whiteouts become what overlayfs reads: `.wh.<name>` a 0/0 character device named `<name>`,
//! `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory.
//!
//! A layer can be unpacked next to a *donor*: an unpacked directory of another layer (the one
//! an earlier build wrote at the same step). A regular file whose bytes, size, mode, owner and
//! time are those of the donor's file at the same path becomes a hard link to it instead of a
//! new file: rebuilding a 30,000-file COPY after one edit links 29,999 files instead of
//! creating them. Unpacked layers are never written after they are placed (overlayfs copies a
//! file up before changing it), so sharing an inode between two of them shares nothing that
//! changes. The donor is resolved inside its own root like the target.

use sha2::Digest as _;
use std::{
    io::Read,
    os::fd::{AsFd, OwnedFd},
    path::Path,
};

use bstr::{BString, ByteSlice};
use rustix::{
    fs::{
        AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid, XattrFlags,
    },
    io::Errno,
};

/// Why a layer could not be unpacked; names the entry at fault.
#[derive(Debug, thiserror::Error)]
#[error("{entry}: {message}")]
pub struct UnpackError {
    pub entry: String,
    pub message: String,
}

fn err(entry: &str, message: impl std::fmt::Display) -> UnpackError {
    UnpackError {
        entry: entry.to_string(),
        message: message.to_string(),
    }
}

/// Lexically cleans an entry path inside the root: `..` stops at the root (as in a chroot).
/// Names are bytes: one that is not UTF-8 is created as the tar has it.
fn components(path: &[u8]) -> Vec<BString> {
    let mut out: Vec<BString> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c.into()),
        }
    }
    out
}

/// `comps` joined by `/`, or `.` for none: a path relative to a directory descriptor.
fn joined(comps: &[BString]) -> Vec<u8> {
    if comps.is_empty() {
        return b".".to_vec();
    }
    bstr::join("/", comps)
}

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// Opens directory `comps` (relative to `root`, resolved inside it), creating missing ones.
fn open_dir(root: &OwnedFd, comps: &[BString], entry: &str) -> Result<OwnedFd, UnpackError> {
    let dir_flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    let mut fd = rustix::fs::openat2(root, ".", dir_flags, Mode::empty(), RESOLVE)
        .map_err(|e| err(entry, e))?;
    for i in 0..comps.len() {
        let prefix = joined(&comps[..=i]);
        let shown = prefix.as_bstr();
        fd = match rustix::fs::openat2(root, &prefix, dir_flags, Mode::empty(), RESOLVE) {
            Ok(next) => next,
            Err(Errno::NOENT) => {
                // Created in the directory resolved so far, by name: no link is followed.
                match rustix::fs::mkdirat(&fd, comps[i].as_slice(), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(err(entry, format!("creating {shown}: {e}"))),
                }
                rustix::fs::openat2(root, &prefix, dir_flags, Mode::empty(), RESOLVE)
                    .map_err(|e| err(entry, format!("opening {shown}: {e}")))?
            }
            Err(e) => {
                return Err(err(
                    entry,
                    format!("{shown} is not a usable directory: {e}"),
                ));
            }
        };
    }
    Ok(fd)
}

/// Removes `name` in `dir` unless it is a directory (which a directory entry merges into).
fn clear(dir: &OwnedFd, name: &[u8], keep_dir: bool, entry: &str) -> Result<(), UnpackError> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(err(entry, e)),
        Ok(st) => {
            let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
            if is_dir && keep_dir {
                return Ok(());
            }
            let flags = if is_dir {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            };
            rustix::fs::unlinkat(dir, name, flags)
                .map_err(|e| err(entry, format!("replacing the existing entry: {e}")))
        }
    }
}

/// The owner a tar header gives, as this process can set it: rootless without a subordinate
/// range only root exists, so other owners become root.
fn owner_of(h: &tar::Header) -> (Uid, Gid) {
    let id = |n: u64| {
        let n = n as u32;
        if crate::sandbox::userns::mapped(n) {
            n
        } else {
            0
        }
    };
    (
        Uid::from_raw(id(h.uid().unwrap_or(0))),
        Gid::from_raw(id(h.gid().unwrap_or(0))),
    )
}

fn times_of(h: &tar::Header) -> Timestamps {
    let t = Timespec {
        tv_sec: h.mtime().unwrap_or(0) as i64,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn mode_of(h: &tar::Header) -> Mode {
    Mode::from_raw_mode(h.mode().unwrap_or(0o644) & 0o7777)
}

/// Owner, mode and time of `name` in `dir`, by name (a link is never followed).
fn set_owner_mode_time(
    dir: &OwnedFd,
    name: &[u8],
    h: &tar::Header,
    symlink: bool,
    entry: &str,
) -> Result<(), UnpackError> {
    let (uid, gid) = owner_of(h);
    rustix::fs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| err(entry, format!("chown: {e}")))?;
    if !symlink {
        // After chown, which clears setuid/setgid bits.
        rustix::fs::chmodat(dir, name, mode_of(h), AtFlags::empty())
            .map_err(|e| err(entry, format!("chmod: {e}")))?;
    }
    rustix::fs::utimensat(dir, name, &times_of(h), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| err(entry, format!("utimensat: {e}")))
}

/// Owner, mode and time of a regular file this unpack created, by its descriptor (no lookup).
fn set_file_owner_mode_time(
    file: &std::fs::File,
    h: &tar::Header,
    entry: &str,
) -> Result<(), UnpackError> {
    let (uid, gid) = owner_of(h);
    rustix::fs::fchown(file, Some(uid), Some(gid))
        .map_err(|e| err(entry, format!("chown: {e}")))?;
    // After chown, which clears setuid/setgid bits.
    rustix::fs::fchmod(file, mode_of(h)).map_err(|e| err(entry, format!("chmod: {e}")))?;
    rustix::fs::futimens(file, &times_of(h)).map_err(|e| err(entry, format!("utimensat: {e}")))
}

/// Unpacks the layer tar `reader` into `dir` (which must exist) in overlayfs lower-layer form.
pub fn unpack_for_overlay(reader: impl Read, dir: &Path) -> Result<(), UnpackError> {
    unpack_indexed(reader, dir).map(drop)
}

/// [`unpack_for_overlay`], also returning the layer's index (its entries, as
/// [`crate::layer::view::read_entries`] gives them), so a pulled layer is read once.
pub fn unpack_indexed(
    reader: impl Read,
    dir: &Path,
) -> Result<Vec<crate::layer::view::RawEntry>, UnpackError> {
    unpack_with_donor(reader, dir, None, false).map(|u| u.index)
}

/// What [`unpack_with_donor`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// The layer's index.
    pub index: Vec<crate::layer::view::RawEntry>,
    /// Files linked to the donor's.
    pub linked: usize,
    /// About the disk space it took: the files and directories it made, in 4 KiB blocks
    /// (a linked file takes none).
    pub size: u64,
    /// The content digest of each regular file, when asked for (sorted by path).
    pub files: crate::store::FileDigests,
}

/// [`unpack_indexed`] with the files that equal the `donor` directory's linked to them (see the
/// module's text).
pub fn unpack_with_donor(
    reader: impl Read,
    dir: &Path,
    donor: Option<(&Path, crate::store::FileDigests)>,
    with_digests: bool,
) -> Result<Unpacked, UnpackError> {
    let open = |d: &Path| {
        rustix::fs::open(
            d,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| err(&d.display().to_string(), e))
    };
    let root = open(dir)?;
    let mut donor = match donor {
        Some((d, files)) => Some(Donor {
            root: open(d)?,
            files,
            parent: None,
            linked: 0,
        }),
        None => None,
    };
    let mut files = with_digests.then(Vec::new);
    let (index, size) = unpack_into(reader, &root, true, donor.as_mut(), files.as_mut())?;
    let mut files = files.unwrap_or_default();
    // Sorted by path, the last of a path's entries kept (a later entry replaces the file).
    files.reverse();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files.dedup_by(|a, b| a.0 == b.0);
    Ok(Unpacked {
        index,
        linked: donor.map_or(0, |d| d.linked),
        size,
        files,
    })
}

/// Unpacks a plain tar (`kiln cp - CONTAINER:DIR`) into the directory `root` (a descriptor, so
/// that the caller resolved it inside a container's root), every entry resolved inside it as a
/// layer's. A `.wh.` name is refused: only layers have whiteouts.
pub fn unpack_plain(reader: impl Read, root: &OwnedFd) -> Result<(), UnpackError> {
    unpack_into(reader, root, false, None, None).map(drop)
}

/// A size in whole 4 KiB blocks.
fn blocks(n: u64) -> u64 {
    n.div_ceil(4096) * 4096
}

/// A layer unpacked while it is being written: what is written here is handed, in chunks and
/// without a copy through the kernel, to a thread unpacking it (with a donor, see
/// [`unpack_with_donor`]), so a layer a build writes is ready as an overlay lower layer when
/// the write ends, its files written once. At most [`IN_FLIGHT`] chunks wait: a writer ahead of
/// the unpacking waits for it, and memory stays bounded.
#[derive(Debug)]
pub struct Background {
    chunks: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    thread: std::thread::JoinHandle<Result<Unpacked, UnpackError>>,
}

/// Chunks handed over and not yet unpacked, at most.
pub const IN_FLIGHT: usize = 8;

/// The unpacking side: the chunks received, read as one stream.
struct Chunks {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.recv() {
                Ok(next) => {
                    self.current = next;
                    self.at = 0;
                }
                // The writer is done (or gone): the end of the stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Background {
    /// Starts unpacking into `dir` (which must exist). The donor is a directory of another
    /// layer, with that layer's file digests; the digests of this layer's files are collected.
    pub fn start(
        dir: std::path::PathBuf,
        donor: Option<(std::path::PathBuf, crate::store::FileDigests)>,
    ) -> std::io::Result<Background> {
        let (tx, rx) = std::sync::mpsc::sync_channel(IN_FLIGHT);
        let thread = std::thread::Builder::new()
            .name("unpack".into())
            .spawn(move || {
                let mut r = Chunks {
                    rx,
                    current: Vec::new(),
                    at: 0,
                };
                let out = match donor {
                    Some((d, files)) => unpack_with_donor(&mut r, &dir, Some((&d, files)), true),
                    None => unpack_with_donor(&mut r, &dir, None, true),
                };
                // The tar's trailing padding: taken to the end so the writer never waits.
                let _ = std::io::copy(&mut r, &mut std::io::sink());
                out
            })?;
        Ok(Background {
            chunks: Some(tx),
            thread,
        })
    }

    /// Ends the input and waits for the unpacking.
    pub fn finish(mut self) -> Result<Unpacked, UnpackError> {
        drop(self.chunks.take());
        self.thread
            .join()
            .unwrap_or_else(|_| Err(err("layer", "the unpacking thread failed")))
    }
}

impl std::io::Write for Background {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.chunks {
            Some(tx) if tx.send(buf.to_vec()).is_ok() => Ok(buf.len()),
            // The unpacking stopped: its own error says why.
            _ => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Files up to this size are compared with a donor's (read whole); larger ones are written.
const DONOR_MAX: u64 = 1 << 20;

/// The directory files may be linked from, and its directory last looked in.
struct Donor {
    root: OwnedFd,
    /// The content digest of each of the donor layer's regular files, sorted by path.
    files: crate::store::FileDigests,
    /// (components, the directory there if it exists).
    parent: Option<(Vec<BString>, Option<OwnedFd>)>,
    linked: usize,
}

impl Donor {
    /// The donor's directory `comps`, resolved inside the donor (`None`: it has none).
    fn dir(&mut self, comps: &[BString]) -> Option<&OwnedFd> {
        if self
            .parent
            .as_ref()
            .is_none_or(|(c, _)| c.as_slice() != comps)
        {
            let fd = rustix::fs::openat2(
                &self.root,
                joined(comps),
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            )
            .ok();
            self.parent = Some((comps.to_vec(), fd));
        }
        self.parent.as_ref().and_then(|(_, fd)| fd.as_ref())
    }

    /// Whether the donor has, at `path` (`comps`/`name`), a regular file whose content has
    /// `digest` (as its layer's digests say) and whose size, mode, owner and time are `h`'s.
    fn has_same(
        &mut self,
        (path, comps, name): (&[u8], &[BString], &[u8]),
        h: &tar::Header,
        digest: &[u8; 32],
    ) -> bool {
        let known = self
            .files
            .binary_search_by(|(p, _)| p.as_slice().cmp(path))
            .is_ok_and(|i| self.files[i].1 == *digest);
        if !known {
            return false;
        }
        let Some(dir) = self.dir(comps) else {
            return false;
        };
        // Not followed: a link at the name is no regular file.
        let Ok(st) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            return false;
        };
        let (uid, gid) = owner_of(h);
        FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
            && st.st_size as u64 == h.size().unwrap_or(u64::MAX)
            && st.st_mode & 0o7777 == mode_of(h).as_raw_mode()
            && st.st_uid == uid.as_raw()
            && st.st_gid == gid.as_raw()
            && st.st_mtime == h.mtime().unwrap_or(0) as i64
            && st.st_mtime_nsec == 0
    }
}

/// A reader that hashes what it passes on.
struct Hashing<R> {
    inner: R,
    sha: sha2::Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

/// With `digests`, the content digest of every regular file is added to it.
fn unpack_into(
    reader: impl Read,
    root: &OwnedFd,
    layer: bool,
    mut donor: Option<&mut Donor>,
    mut digests: Option<&mut crate::store::FileDigests>,
) -> Result<(Vec<crate::layer::view::RawEntry>, u64), UnpackError> {
    let mut index = Vec::new();
    let mut size = 0u64;
    let mut ar = tar::Archive::new(reader);
    // Directory times are set last: creating entries inside a directory changes its mtime.
    let mut dir_times: Vec<(Vec<BString>, tar::Header)> = Vec::new();
    // The last entry's parent directory, kept open: a layer's entries come grouped by
    // directory, so most entries need no resolution at all. Reusing it is sound because an
    // entry can change what a directory path resolves to (replace it, or an ancestor, by a
    // link) only if it is that path or an ancestor of it, and such an entry has another parent,
    // which replaces the one kept: the next entry under the old path resolves it afresh,
    // inside the root. Entries within the kept directory only add or remove its children.
    let mut kept_parent: Option<(Vec<BString>, OwnedFd)> = None;
    for e in ar.entries().map_err(|e| err("layer", e))? {
        let mut e = e.map_err(|e| err("layer", e))?;
        index.extend(crate::layer::view::RawEntry::of(&e).map_err(|x| err("layer", x))?);
        let comps = components(&e.path_bytes());
        // The entry as errors name it.
        let raw = e.path_bytes().to_str_lossy().into_owned();
        let Some((name, parent)) = comps.split_last() else {
            continue;
        };
        let name = name.as_slice();
        let h = e.header().clone();
        if !layer && name.starts_with(b".wh.") {
            return Err(err(
                &raw,
                "a name starting with .wh. is a whiteout in a layer",
            ));
        }
        let pdir = match kept_parent.take() {
            Some((comps, fd)) if comps.as_slice() == parent => (comps, fd),
            _ => (parent.to_vec(), open_dir(root, parent, &raw)?),
        };
        let pdir = &kept_parent.insert(pdir).1;
        if name == b".wh..wh..opq" {
            rustix::fs::fsetxattr(pdir, "trusted.overlay.opaque", b"y", XattrFlags::empty())
                .map_err(|x| err(&raw, format!("opaque xattr: {x}")))?;
            continue;
        }
        if let Some(victim) = name.strip_prefix(b".wh.") {
            clear(pdir, victim, false, &raw)?;
            rustix::fs::mknodat(
                pdir,
                victim,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(|x| err(&raw, format!("whiteout: {x}")))?;
            continue;
        }
        let mode = mode_of(&h);
        match h.entry_type() {
            tar::EntryType::Directory => {
                clear(pdir, name, true, &raw)?;
                match rustix::fs::mkdirat(pdir, name, mode) {
                    Ok(()) => size += blocks(1),
                    Err(Errno::EXIST) => {}
                    Err(x) => return Err(err(&raw, x)),
                }
                dir_times.push((comps.clone(), h.clone()));
                continue;
            }
            t if t.is_file() => {
                clear(pdir, name, false, &raw)?;
                let xattrs: Vec<(String, Vec<u8>)> = match e.pax_extensions() {
                    Ok(Some(exts)) => exts
                        .flatten()
                        .filter_map(|ext| {
                            let attr = ext.key().ok()?.strip_prefix("SCHILY.xattr.")?;
                            Some((attr.to_string(), ext.value_bytes().to_vec()))
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                // A file whose content the donor layer has at the same path, with the same
                // metadata: linked (a file with extended attributes is always written, as they
                // are not compared). Small files are read whole and hashed first; with digests
                // wanted, larger ones are hashed as they are written.
                let path = BString::from(joined(&comps));
                let mut read = None;
                if digests.is_some() || donor.is_some() {
                    let len = h.size().unwrap_or(u64::MAX);
                    if len <= DONOR_MAX {
                        let mut data = Vec::with_capacity(len as usize + 1);
                        e.read_to_end(&mut data).map_err(|x| err(&raw, x))?;
                        let digest: [u8; 32] = sha2::Sha256::digest(&data).into();
                        if let Some(list) = digests.as_mut() {
                            list.push((path.clone(), digest));
                        }
                        if let Some(d) = donor.as_deref_mut().filter(|_| xattrs.is_empty()) {
                            if d.has_same((&path, parent, name), &h, &digest) {
                                let linked = d.dir(parent).is_some_and(|from| {
                                    rustix::fs::linkat(from, name, pdir, name, AtFlags::empty())
                                        .is_ok()
                                });
                                if linked {
                                    d.linked += 1;
                                    continue;
                                }
                            }
                        }
                        read = Some(data);
                    }
                }
                let fd = rustix::fs::openat(
                    pdir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|x| err(&raw, x))?;
                let mut file = std::fs::File::from(fd);
                size += blocks(h.size().unwrap_or(0));
                match (read, digests.as_mut()) {
                    (Some(data), _) => std::io::Write::write_all(&mut file, &data),
                    (None, Some(list)) => {
                        let mut hashing = Hashing {
                            inner: &mut e,
                            sha: sha2::Sha256::new(),
                        };
                        std::io::copy(&mut hashing, &mut file).map(|_| {
                            list.push((path.clone(), hashing.sha.finalize().into()));
                        })
                    }
                    (None, None) => std::io::copy(&mut e, &mut file).map(drop),
                }
                .map_err(|x| err(&raw, x))?;
                // Owner and mode first, extended attributes after: chown(2) clears
                // `security.capability` (file capabilities such as ping's cap_net_raw), even to
                // the same owner, so attributes set before it would be lost.
                set_file_owner_mode_time(&file, &h, &raw)?;
                for (attr, value) in &xattrs {
                    rustix::fs::fsetxattr(file.as_fd(), attr, value, XattrFlags::empty())
                        .map_err(|x| err(&raw, format!("xattr {attr}: {x}")))?;
                }
                continue;
            }
            tar::EntryType::Symlink => {
                clear(pdir, name, false, &raw)?;
                let target = e.link_name_bytes().unwrap_or_default().into_owned();
                // Stored as written: an absolute target is resolved inside the rootfs when used.
                rustix::fs::symlinkat(target.as_slice(), pdir, name).map_err(|x| err(&raw, x))?;
                set_owner_mode_time(pdir, name, &h, true, &raw)?;
                continue;
            }
            tar::EntryType::Link => {
                let target = e.link_name_bytes().unwrap_or_default().into_owned();
                let tcomps = components(&target);
                let target = target.as_bstr();
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(err(&raw, "hard link with an empty target"));
                };
                // The target's directory is resolved inside the root; linkat does not follow a
                // symlink at the target itself, so a link can never reach a host file.
                let tdir = rustix::fs::openat2(
                    root,
                    joined(tparent),
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                    RESOLVE,
                )
                .map_err(|x| err(&raw, format!("hard link target {target}: {x}")))?;
                clear(pdir, name, false, &raw)?;
                rustix::fs::linkat(&tdir, tname.as_slice(), pdir, name, AtFlags::empty())
                    .map_err(|x| err(&raw, format!("hard link to {target}: {x}")))?;
                continue;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                clear(pdir, name, false, &raw)?;
                let ft = match h.entry_type() {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rustix::fs::makedev(
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                );
                rustix::fs::mknodat(pdir, name, ft, mode, dev).map_err(|x| err(&raw, x))?;
            }
            // Sockets and unknown types are not part of a filesystem layer.
            _ => continue,
        }
        set_owner_mode_time(pdir, name, &h, false, &raw)?;
    }
    for (comps, h) in dir_times.iter().rev() {
        let Some((name, parent)) = comps.split_last() else {
            continue;
        };
        let shown = name.to_str_lossy();
        let pdir = open_dir(root, parent, &shown)?;
        set_owner_mode_time(&pdir, name, h, false, &shown)?;
    }
    Ok((index, size))
}
