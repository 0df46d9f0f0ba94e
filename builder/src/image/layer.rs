//! Deterministic layer tars: ustar headers set explicitly, PAX records
//! only where ustar cannot say it (long names, large ids, xattrs), mtime in whole seconds and
//! clamped to `SOURCE_DATE_EPOCH` when given, no user or group names, directories ending in
//! `/`, whiteouts with mtime 0. The same calls always give the same bytes, and the `diff_id`
//! (sha256 of the uncompressed tar) is computed while writing.
//!
//! Entry order is the caller's: a sorted walk, with whiteouts before their siblings.

use std::{
    collections::BTreeSet,
    io::{self, Read, Write},
    path::Path,
};

use bstr::{BString, ByteSlice};
use kiln_runtime::{
    digest::Digest,
    layer::{
        diff::{Change, DiffError, Special, walk_upper},
        view::RawEntry,
    },
};
use sha2::{Digest as _, Sha256};

/// Metadata of one entry: mode bits, owner, mtime in whole seconds (sub-second precision is
/// dropped by design), xattrs written as `SCHILY.xattr.<name>` in key order.
pub use kiln_runtime::layer::diff::Meta as EntryMeta;

/// Counts and hashes what passes through.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The finished layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar: the image config's `diff_id`.
    pub diff_id: Digest,
    pub size: u64,
    /// The entries written, in order (the layer's index, kept in the store).
    pub entries: Vec<RawEntry>,
}

/// Writes one layer.
pub struct LayerWriter<W: Write> {
    tar: tar::Builder<Hashing<W>>,
    epoch: Option<i64>,
    written: BTreeSet<BString>,
    entries: Vec<RawEntry>,
    /// Device numbers for the entry being written (`special`).
    device: Option<(u32, u32)>,
}

impl<W: Write> std::fmt::Debug for LayerWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerWriter")
            .field("entries", &self.written.len())
            .finish()
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Checks that `path` is relative, clean and not empty; returns it without a trailing `/`.
/// Paths are bytes: a name that is not UTF-8 is written as it is.
fn check_path(path: &[u8]) -> io::Result<&[u8]> {
    let p = path.trim_end_with(|c| c == '/');
    let bad = p.is_empty()
        || p.starts_with(b"/")
        || p.contains(&0)
        || p.split(|&b| b == b'/')
            .any(|c| c.is_empty() || c == b"." || c == b"..");
    if bad {
        return Err(invalid(format!("invalid layer path {:?}", path.as_bstr())));
    }
    Ok(p)
}

const USTAR_ID_MAX: u32 = 0o7_777_777;

impl<W: Write> LayerWriter<W> {
    /// A writer into `out`; with `epoch`, every mtime later than it is clamped to it.
    pub fn new(out: W, epoch: Option<i64>) -> Self {
        let mut tar = tar::Builder::new(Hashing {
            inner: out,
            hasher: Sha256::new(),
            size: 0,
        });
        tar.mode(tar::HeaderMode::Complete);
        LayerWriter {
            tar,
            epoch,
            written: BTreeSet::new(),
            entries: Vec::new(),
            device: None,
        }
    }

    fn mtime(&self, t: i64) -> u64 {
        let t = match self.epoch {
            Some(e) if t > e => e,
            _ => t,
        };
        t.max(0) as u64
    }

    /// Writes the header (with PAX records first when needed) and the data.
    fn entry(
        &mut self,
        name: &[u8],
        kind: tar::EntryType,
        meta: &EntryMeta,
        link: Option<&[u8]>,
        size: u64,
        data: impl Read,
    ) -> io::Result<()> {
        let base = BString::from(name.trim_end_with(|c| c == '/'));
        if !self.written.insert(base.clone()) {
            return Err(invalid(format!(
                "duplicate layer path {:?}",
                name.as_bstr()
            )));
        }
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut h = tar::Header::new_ustar();
        if name.len() > 100 {
            // The whole name in a PAX record (its bytes as they are, as Go's archive/tar
            // writes them); the header's field holds its first 100 bytes for old readers.
            pax.push(("path".into(), name.to_vec()));
            h.as_old_mut().name.copy_from_slice(&name[..100]);
        } else {
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
        }
        if let Some(link) = link {
            if link.len() > 100 {
                pax.push(("linkpath".into(), link.to_vec()));
            } else {
                h.set_link_name_literal(link)?;
            }
        }
        for (key, id) in [("uid", meta.uid), ("gid", meta.gid)] {
            if id > USTAR_ID_MAX {
                pax.push((key.into(), id.to_string().into_bytes()));
            }
        }
        h.set_uid(u64::from(if meta.uid > USTAR_ID_MAX {
            0
        } else {
            meta.uid
        }));
        h.set_gid(u64::from(if meta.gid > USTAR_ID_MAX {
            0
        } else {
            meta.gid
        }));
        for (k, v) in &meta.xattrs {
            pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }
        h.set_entry_type(kind);
        h.set_mode(meta.mode & 0o7777);
        h.set_mtime(self.mtime(meta.mtime));
        h.set_size(size);
        if let Some(u) = h.as_ustar_mut() {
            u.dev_major = [0; 8];
            u.dev_minor = [0; 8];
        }
        let (major, minor) = self.device.unwrap_or((0, 0));
        h.set_device_major(major).ok();
        h.set_device_minor(minor).ok();
        h.set_cksum();
        self.entries.push(RawEntry {
            path: base,
            typeflag: kind.as_byte(),
            mode: meta.mode & 0o7777,
            uid: meta.uid,
            gid: meta.gid,
            mtime: self.mtime(meta.mtime) as i64,
            size,
            link: link.map(BString::from),
        });
        if !pax.is_empty() {
            self.tar
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        self.tar.append(&h, data)
    }

    /// A directory.
    pub fn dir(&mut self, path: impl AsRef<[u8]>, meta: &EntryMeta) -> io::Result<()> {
        let mut p = check_path(path.as_ref())?.to_vec();
        p.push(b'/');
        self.entry(&p, tar::EntryType::Directory, meta, None, 0, io::empty())
    }

    /// A regular file of `size` bytes read from `data` (exactly `size` bytes must come).
    pub fn file(
        &mut self,
        path: impl AsRef<[u8]>,
        meta: &EntryMeta,
        size: u64,
        data: impl Read,
    ) -> io::Result<()> {
        let p = check_path(path.as_ref())?.to_vec();
        let mut counted = data.take(size);
        // Small files are buffered to check their size; large ones are streamed with a check.
        if size <= 1 << 20 {
            // Sized up front: one read of the whole file, not a probe and a series of grows.
            let mut buf = Vec::with_capacity(size as usize + 1);
            counted.read_to_end(&mut buf)?;
            if buf.len() as u64 != size {
                return Err(invalid(format!(
                    "{}: expected {size} bytes, got {}",
                    p.as_bstr(),
                    buf.len()
                )));
            }
            return self.entry(
                &p,
                tar::EntryType::Regular,
                meta,
                None,
                size,
                buf.as_slice(),
            );
        }
        self.entry(
            &p,
            tar::EntryType::Regular,
            meta,
            None,
            size,
            ExactReader(counted, size),
        )
    }

    /// A symbolic link to `target` (stored as written).
    pub fn symlink(
        &mut self,
        path: impl AsRef<[u8]>,
        target: impl AsRef<[u8]>,
        meta: &EntryMeta,
    ) -> io::Result<()> {
        let p = check_path(path.as_ref())?.to_vec();
        self.entry(
            &p,
            tar::EntryType::Symlink,
            meta,
            Some(target.as_ref()),
            0,
            io::empty(),
        )
    }

    /// A hard link to `target`, an entry written earlier in this layer.
    pub fn hardlink(
        &mut self,
        path: impl AsRef<[u8]>,
        target: impl AsRef<[u8]>,
        meta: &EntryMeta,
    ) -> io::Result<()> {
        let p = check_path(path.as_ref())?.to_vec();
        let t = check_path(target.as_ref())?.to_vec();
        if !self.written.contains(t.as_bstr()) {
            return Err(invalid(format!(
                "hard link {:?} to {:?}, which is not in the layer",
                p.as_bstr(),
                t.as_bstr()
            )));
        }
        self.entry(&p, tar::EntryType::Link, meta, Some(&t), 0, io::empty())
    }

    /// A fifo or device node.
    pub fn special(
        &mut self,
        path: impl AsRef<[u8]>,
        kind: Special,
        meta: &EntryMeta,
    ) -> io::Result<()> {
        let p = check_path(path.as_ref())?.to_vec();
        let (ty, dev) = match kind {
            Special::Fifo => (tar::EntryType::Fifo, None),
            Special::Char { major, minor } => (tar::EntryType::Char, Some((major, minor))),
            Special::Block { major, minor } => (tar::EntryType::Block, Some((major, minor))),
        };
        self.device = dev;
        let r = self.entry(&p, ty, meta, None, 0, io::empty());
        self.device = None;
        r
    }

    /// Appends what a RUN step changed, read from its overlayfs upper directory.
    pub fn append_upper(&mut self, upper: &Path) -> Result<(), DiffError> {
        walk_upper(upper, &mut |change| match change {
            Change::Dir(p, m) => self.dir(&p, &m),
            Change::File(p, m, size, f) => self.file(&p, &m, size, f),
            Change::Symlink(p, t, m) => self.symlink(&p, &t, &m),
            Change::Hardlink(p, t, m) => self.hardlink(&p, &t, &m),
            Change::Special(p, k, m) => self.special(&p, k, &m),
            Change::Whiteout(p) => self.whiteout(&p),
            Change::Opaque(p) => self.opaque(&p),
        })
    }

    /// Deletes `path` from lower layers (`.wh.<name>`, mtime 0).
    pub fn whiteout(&mut self, path: impl AsRef<[u8]>) -> io::Result<()> {
        let p = check_path(path.as_ref())?;
        let (dir, name) = match p.rfind_byte(b'/') {
            Some(i) => (&p[..=i], &p[i + 1..]),
            None => (&b""[..], p),
        };
        let wh = [dir, b".wh.", name].concat();
        let meta = EntryMeta::default();
        self.entry(&wh, tar::EntryType::Regular, &meta, None, 0, io::empty())
    }

    /// Hides every lower-layer child of `dir` (`.wh..wh..opq`).
    pub fn opaque(&mut self, dir: impl AsRef<[u8]>) -> io::Result<()> {
        let p = [check_path(dir.as_ref())?, b"/.wh..wh..opq"].concat();
        let meta = EntryMeta::default();
        self.entry(&p, tar::EntryType::Regular, &meta, None, 0, io::empty())
    }

    /// Ends the archive; returns the layer's digest and size, and the output.
    pub fn finish(self) -> io::Result<(LayerInfo, W)> {
        let h = self.tar.into_inner()?;
        Ok((
            LayerInfo {
                diff_id: Digest::from_sha256(h.hasher),
                size: h.size,
                entries: self.entries,
            },
            h.inner,
        ))
    }
}

/// Fails when the source yields fewer bytes than announced (a file that shrank while read).
struct ExactReader<R>(R, u64);

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        if n == 0 && self.1 > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file shrank while being read: {} bytes missing", self.1),
            ));
        }
        self.1 -= n as u64;
        Ok(n)
    }
}
